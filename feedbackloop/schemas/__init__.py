"""The schema registry: versioned JSON Schemas for feedback events, one folder per schema."""
