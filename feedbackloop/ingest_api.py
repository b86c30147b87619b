"""The ingest route's contract as an OpenAPI document: `POST /events` with the event schema's batch as
its request body, the bodies it answers with, and the API key it needs. The serving routes' document
comes from their Powertools resolver (`serving_api.openapi_document`); this route's handler validates
against the schema registry instead, so its document is built from the registry."""

from __future__ import annotations

import json
from typing import Any

from feedbackloop.api_errors import ERROR_SCHEMA, GATEWAY_ERROR_SCHEMA
from feedbackloop.ingest import RETRY_AFTER_SECONDS
from feedbackloop.local.api import API_KEY_HEADER
from feedbackloop.schemas.registry import MAX_BATCH_EVENTS, MAX_BODY_BYTES, batch_schema, event_type_rules

OPENAPI_FILE = "docs/openapi-ingest.json"  # the published copy; a test keeps it equal to openapi_document()
SECURITY_SCHEME = "api_key"

_REF = "#/components/schemas/"
_ERROR_CODES = ["payload_too_large", "invalid_encoding", "malformed_json", "schema_violation", "batch_size",
                "unsupported_media_type"]


def _event_type_rules() -> list[dict[str, Any]]:
    """The per event type value rules (event_types.json) as JSON Schema 2020-12 conditions, so the document
    says what the route refuses: a rating needs a value from 1 to 5, a click may leave it out."""
    conditions = []
    for name, rule in event_type_rules().items():
        value: dict[str, Any] = {"type": ["number", "null"] if rule.impute else "number",
                                 "minimum": rule.min, "maximum": rule.max}
        if rule.integer:
            value["multipleOf"] = 1
        then: dict[str, Any] = {"properties": {"value": value}}
        if not rule.impute:
            then["required"] = ["value"]
        conditions.append({"if": {"properties": {"event_type": {"const": name}}, "required": ["event_type"]},
                           "then": then})
    return conditions


def _event_result(*, retryable: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "index": {"type": "integer", "minimum": 0, "description": "the event's position in the batch"},
        "event_id": {"type": ["string", "null"]},
        "accepted": {"type": "boolean"},
        "error": {"$ref": f"{_REF}FieldError"},
    }
    if retryable:
        properties["retryable"] = {"type": "boolean", "description": "resend this event, with the same event_id"}
    return {"type": "object", "required": ["index", "event_id", "accepted"], "properties": properties}


def _schemas() -> dict[str, Any]:
    batch = batch_schema()
    batch.pop("$schema")  # draft-04's; OpenAPI 3.1 reads its schemas as JSON Schema 2020-12
    event = batch["properties"]["events"].pop("items")
    batch["properties"]["events"]["items"] = {"$ref": f"{_REF}FeedbackEvent"}
    explanation = {"type": "string", "minLength": 1}
    return {
        "FeedbackEventBatch": batch,
        "FeedbackEvent": {"title": "FeedbackEvent", **event, "allOf": _event_type_rules()},
        "Error": ERROR_SCHEMA,
        "FieldError": {
            "type": "object", "required": ["field", "reason"],
            "properties": {"field": explanation | {"description": "`$` for the event as a whole"},
                           "reason": explanation},
        },
        "BatchAccepted": {
            "type": "object", "required": ["accepted", "rejected", "results"],
            "properties": {"accepted": {"type": "integer", "minimum": 0}, "rejected": {"type": "integer", "const": 0},
                           "results": {"type": "array", "items": _event_result(retryable=False)}},
        },
        "BatchRefused": {
            "description": "The whole batch is refused (the one error shape, `Error`); `field` and `reason` name the "
                           "first problem, `results` (when events were read) each invalid event's.",
            "type": "object", "required": ["error", "field", "reason"],
            "properties": {
                "error": {"type": "string", "enum": _ERROR_CODES},
                "field": explanation | {"description": "e.g. `events[3].timestamp`; `$` for the body as a whole"},
                "reason": explanation,
                "accepted": {"type": "integer", "const": 0},
                "rejected": {"type": "integer", "minimum": 1},
                "invalid": {"type": "integer", "minimum": 1},
                "results": {"type": "array", "items": _event_result(retryable=False)},
            },
        },
        "BatchPartiallyStored": {
            "description": "The stream took only some events: resend those marked retryable.",
            "type": "object", "required": ["accepted", "rejected", "results", "error", "field", "reason"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0}, "rejected": {"type": "integer", "minimum": 1},
                "results": {"type": "array", "items": _event_result(retryable=True)},
                "error": {"type": "string", "enum": ["throttled", "stream_unavailable"]},
                "field": {"type": "string", "const": "$"},
                "reason": explanation,
            },
        },
        "GatewayError": GATEWAY_ERROR_SCHEMA,
    }


def _response(description: str, schema: str | dict, retry_after: bool = False) -> dict[str, Any]:
    body = {"$ref": f"{_REF}{schema}"} if isinstance(schema, str) else schema
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": body}}}
    if retry_after:
        response["headers"] = {"Retry-After": {"description": f"seconds; {RETRY_AFTER_SECONDS} today",
                                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return response


def openapi_document() -> str:
    """The ingest API (`POST /events`) as OpenAPI 3.1, from the event schema registry."""
    document = {
        "openapi": "3.1.0",
        "info": {"title": "feedbackloop ingest API", "version": "1",
                 "description": f"Feedback events in batches of 1 to {MAX_BATCH_EVENTS}, at most {MAX_BODY_BYTES:,} "
                                f"bytes a body. Every route needs the {API_KEY_HEADER} header."},
        "servers": [{"url": "/"}],
        "security": [{SECURITY_SCHEME: []}],
        "paths": {
            "/events": {
                "post": {
                    "summary": "Put a batch of feedback events on the stream: all of them, or none when one is invalid",
                    "operationId": "post_events",
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": {"$ref": f"{_REF}FeedbackEventBatch"}}}},
                    "responses": {
                        "200": _response("Every event is on the stream", "BatchAccepted"),
                        "400": _response("Refused whole: not UTF-8, not JSON, or an event breaks the schema",
                                         "BatchRefused"),
                        "403": _response("No or a wrong API key", "GatewayError"),
                        "413": _response("Refused whole: too many events or bytes",
                                         {"anyOf": [{"$ref": f"{_REF}BatchRefused"}, {"$ref": f"{_REF}GatewayError"}]}),
                        "415": _response("Refused whole: the body is not application/json", "Error"),
                        "429": _response("The stream throttled some events, or API Gateway throttled the request",
                                         {"anyOf": [{"$ref": f"{_REF}BatchPartiallyStored"},
                                                    {"$ref": f"{_REF}GatewayError"}]}, retry_after=True),
                        "500": _response("An unexpected error, logged under the request id the reason names; "
                                         "nothing of the batch is confirmed: resend it whole", "Error"),
                        "503": _response("The stream failed some events", "BatchPartiallyStored", retry_after=True),
                    },
                }
            }
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}},
        },
    }
    return json.dumps(document, indent=2)
