"""Lambda entry points: thin adapters over the feedbackloop core."""
