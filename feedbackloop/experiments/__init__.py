"""A/B test analysis: the pure statistics (tests, intervals, power, CUPED, guardrails, the verdict) over
the per-variant aggregates of the engagement table."""
