"""Construct and output ids derived from the shared keys of `feedbackloop.resources` and `glue_jobs`."""

from __future__ import annotations


def pascal_case(key: str) -> str:
    """ "query-results" -> "QueryResults", "feedback_daily" -> "FeedbackDaily": CloudFormation drops the
    separators from logical ids and output names, so `key.capitalize()` would give "Queryresults"."""
    return "".join(part.capitalize() for part in key.replace("_", "-").split("-"))
