"""The serving routes' contract: identifiers, limits and JSON bodies, shared by the Lambda handler, the
local API and the benchmarks."""

from __future__ import annotations

import json
import string
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

from feedbackloop.api_errors import ERROR_SCHEMA, GATEWAY_ERROR_SCHEMA
from feedbackloop.schemas.registry import event_schema
from feedbackloop.serving import Recommendations

# A user id as the event schema defines it: one pattern for events and for the routes.
USER_ID_PATTERN = event_schema()["properties"]["user_id"]["pattern"]
USER_ID_MAX_LENGTH = event_schema()["properties"]["user_id"]["maxLength"]
DEFAULT_K, MAX_K = 10, 100
# A recommendations request id as the event schema's context.request_id (1.2) takes it back
REQUEST_ID_PATTERN = event_schema()["properties"]["context"]["properties"]["request_id"]["pattern"]
REQUEST_ID_MAX_LENGTH = event_schema()["properties"]["context"]["properties"]["request_id"]["maxLength"]


class PreferencesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "no" is not a boolean

    personalization: bool = Field(description="false: rankings stop using this user's feedback, and their new "
                                              "events stop feeding training and the online store")


def recommendations_body(ranked: Recommendations) -> dict[str, Any]:
    return {
        "user_id": ranked.user_id,
        "model_version": ranked.model_version,
        "segment": ranked.segment,
        "personalized": ranked.personalized,
        "strategy": ranked.strategy,
        "ranker": ranked.ranker,
        "ranker_propensity": round(ranked.ranker_propensity, 9),
        "items": [{"item_id": r.item_id, "score": round(r.score, 6), "reason": r.reason,
                   "propensity": round(r.propensity, 9)} for r in ranked.items],
    }


_REF = "#/components/schemas/"
_GATEWAY_STATUSES = {403, 413, 429}
# what every route may answer besides its own statuses: API Gateway's refusals and an unexpected error
_EVERY_ROUTE = {403: "No or a wrong API key (API Gateway)", 413: "A body over API Gateway's limit",
                429: "Throttled by API Gateway: retry later",
                500: "An unexpected error, logged under the request id the reason names"}
# each route's statuses, its success first (the body shapes are the handler's)
ROUTE_RESPONSES: dict[tuple[str, str], dict[int, str]] = {
    ("get", "/users/{user_id}/recommendations"): {
        200: "Ranked items with a reason for each; before the first model, the most counted items with "
             "`strategy: popularity` and `model_version: null`", 422: "An invalid user id or k",
        503: "No model is published and no event is counted yet"},
    ("get", "/users/{user_id}/config"): {
        200: "The user's UI configuration", 422: "An invalid user id", 503: "No UI configuration is deployed yet"},
    ("put", "/users/{user_id}/preferences"): {
        200: "The preference as stored", 415: "The body is not application/json",
        422: "An invalid user id or body (not strict JSON, a field missing, extra or of the wrong type)"},
    ("delete", "/users/{user_id}"): {
        202: "Erasure requested: the online profile is gone, the lake follows (see status_url)",
        422: "An invalid user id", 501: "Erasure is not configured in this deployment"},
    ("get", "/users/{user_id}/erasure"): {
        200: "The user's erasure record", 404: "No erasure was requested for this user", 422: "An invalid user id"},
}
OPENAPI_FILE = "docs/openapi.json"  # the published copy; a test keeps it equal to the handler's


def openapi_document() -> str:
    """The serving API as the Powertools resolver describes it (routes, parameters, validation), with the
    API key every route needs, under the same scheme as the ingest API's document."""
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

    from feedbackloop.ingest_api import SECURITY_SCHEME
    from feedbackloop.local.api import API_KEY_HEADER
    from lambdas.serving.handler import app

    document = json.loads(app.get_openapi_json_schema(
        title="feedbackloop serving API", version="1",
        description="Recommendations, UI preferences and erasure per user. "
                    f"Every route needs the {API_KEY_HEADER} header. Errors have one shape, `Error`, as the ingest "
                    "API's; API Gateway's own answers (no key, no such route, throttled) are `GatewayError`.",
        security_schemes={SECURITY_SCHEME: APIKey(name=API_KEY_HEADER, in_=APIKeyIn.header)},
        security=[{SECURITY_SCHEME: []}]))
    schemas = document["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(unused, None)
    schemas["Error"], schemas["GatewayError"] = ERROR_SCHEMA, GATEWAY_ERROR_SCHEMA
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = ROUTE_RESPONSES[(method, path)]
            success = next(iter(declared))
            responses = {str(success): {"description": declared[success],
                                        "content": {"application/json": {"schema": {"type": "object"}}}}}
            for status, description in [*list(declared.items())[1:], *_EVERY_ROUTE.items()]:
                schema = "GatewayError" if status in _GATEWAY_STATUSES else "Error"
                responses[str(status)] = {"description": description,
                                          "content": {"application/json": {"schema": {"$ref": _REF + schema}}}}
            operation["responses"] = responses
    return json.dumps(document, indent=2)


# What a route's path parameter may hold, as the resolver matches it (Powertools' `<user_id>`: RFC 3986's
# unreserved and sub-delims characters, the few API Gateway decodes itself, letters, digits and `_`)
_ROUTABLE = frozenset(string.ascii_letters + string.digits + "_-.~()'!*:@,;=+&$%<> []{}|^")


def decoded_path(path: str) -> str:
    """A request path with each segment percent-decoded once, as clients encode ids such as `a@b` or
    `x:y` (`/users/a%40b/config`). A segment that would decode to a character a route cannot match (`/`, `?`,
    `#`, a backquote, anything not printable ASCII) stays as sent, so it can neither add a segment nor miss
    the route (a 404 the documents do not declare): it reaches the route, and the id's pattern refuses it."""
    segments = []
    for segment in path.split("/"):
        try:
            decoded = unquote(segment, errors="strict")
        except UnicodeDecodeError:  # not UTF-8 once decoded: as sent, for the pattern to refuse
            decoded = segment
        segments.append(decoded if decoded and set(decoded) <= _ROUTABLE else segment)
    return "/".join(segments)
