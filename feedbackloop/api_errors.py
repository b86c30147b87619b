"""One error shape for both APIs (ingest and serving): `{"error", "field", "reason"}`.

`error` is a stable code a client can branch on, `field` names what was wrong (`events[3].timestamp`,
`path.user_id`, `$` for the request as a whole) and `reason` says why in words. A body may carry more
members (the ingest route's per event results, the serving validation's `detail` list); these three are
always there. API Gateway's own answers, given before any function runs, are `{"message"}`.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "field", "reason"],
    "properties": {
        "error": {"type": "string", "minLength": 1, "description": "a stable code, e.g. `schema_violation`"},
        "field": {"type": "string", "minLength": 1,
                  "description": "what was wrong, e.g. `events[3].timestamp`; `$` for the request as a whole"},
        "reason": {"type": "string", "minLength": 1},
    },
}
GATEWAY_ERROR_SCHEMA: dict[str, Any] = {
    "title": "GatewayError",
    "description": "API Gateway's own answer, before any function runs (a missing or wrong key, no such route, "
                   "a body over its limit).",
    "type": "object", "required": ["message"], "properties": {"message": {"type": "string", "minLength": 1}},
}
WHOLE_REQUEST = "$"


def error_body(error: str, reason: str, field: str = WHOLE_REQUEST, **extra: Any) -> dict[str, Any]:
    return {"error": error, "field": field or WHOLE_REQUEST, "reason": reason, **extra}
