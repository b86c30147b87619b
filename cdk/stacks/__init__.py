"""Stacks only compose components: stateful resources (data) apart from stateless ones (compute)."""
