"""The fuzz run's rule for a rejection: a 4xx says in JSON what was wrong, in one of the API's shapes."""

from __future__ import annotations

import pytest

from feedbackloop.local.fuzz import explanation

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("body", "said"), [
    ({"error": "schema_violation", "field": "events[0].value", "reason": "must be a number"},
     "events[0].value: must be a number"),
    ({"error": "throttled", "reason": "retry the events marked retryable"},
     "throttled: retry the events marked retryable"),
    ({"statusCode": 422, "detail": [{"loc": ["query", "k"], "type": "greater_than_equal", "msg": "at least 1"}]},
     "query.k: at least 1"),
    ({"statusCode": 415, "detail": [{"loc": ["body"], "type": "unsupported_content_type"}]},
     "body: unsupported_content_type"),
    ({"error": "not_found", "message": "no erasure requested"}, "no erasure requested"),
    ({"message": "Forbidden"}, "Forbidden"),
])
def test_the_apis_rejections_explain_themselves(body, said):
    assert explanation(body) == said


@pytest.mark.parametrize("body", [
    None, "Bad request", [], {}, {"error": "schema_violation"}, {"field": "events", "reason": ""},
    {"statusCode": 422, "detail": []}, {"statusCode": 422, "detail": [{"loc": [], "msg": "bad"}]},
    {"statusCode": 422, "detail": [{"loc": ["body"], "type": ""}]}, {"message": "  "},
])
def test_a_rejection_that_says_nothing_useful_is_unclear(body):
    assert explanation(body) is None
