"""Shipped data: the UCI Online Retail dataset (CC BY 4.0; see ONLINE_RETAIL.md for attribution)."""
