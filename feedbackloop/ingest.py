"""`POST /events`: validate a batch against the schema and put it on the stream.

Client faults are refused whole with a 4xx that names the field and the reason, so nothing is half
accepted by accident; back-pressure from the stream returns 429 with per event status, and only the
events not stored are marked retryable.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from feedbackloop.api_errors import error_body
from feedbackloop.ports import EventStream
from feedbackloop.schemas import registry, strict_json

THROTTLED = "ProvisionedThroughputExceededException"
RETRY_AFTER_SECONDS = 1
_NOT_SENT = {"field": "$", "reason": "not sent: another event in the batch is invalid"}


@dataclass
class IngestResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    throttled: int = 0


def _refuse(status: int, error: str, field_name: str, reason: str) -> IngestResponse:
    return IngestResponse(status, error_body(error, reason, field_name))


def envelope(event: dict[str, Any], received_at: datetime) -> bytes:
    """The stream record for an accepted event: the event unchanged plus when it arrived."""
    document = {"received_at": received_at.isoformat(), "event": event}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def accept_batch(body: bytes, received_at: datetime, stream: EventStream,
                 content_type: str | None = None) -> IngestResponse:
    if not strict_json.is_json_media_type(content_type):
        return _refuse(415, "unsupported_media_type", "$",
                       f"the body must be application/json, not {content_type.split(';')[0].strip()[:80]}")
    if len(body) > registry.MAX_BODY_BYTES:
        return _refuse(413, "payload_too_large", "$", f"body of {len(body)} bytes > {registry.MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return _refuse(400, "invalid_encoding", "$", f"body is not utf-8 (byte {error.start})")
    try:
        document = strict_json.loads(text)
    except strict_json.JsonRefusedError as error:  # not JSON, or JSON the contract refuses (NaN, a repeated key)
        kind = "" if error.kind == "malformed_json" else f"{error.kind.replace('_', ' ')}: "
        return _refuse(400, "malformed_json", "$", f"{kind}{error.msg}")
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        return _refuse(400, "schema_violation", "events", 'body must be an object with an "events" array')
    extra = sorted(set(document) - {"events"})
    if extra:
        # a member named "" would make an empty field: the body then, with the name quoted in the reason
        return _refuse(400, "schema_violation", extra[0] or "$", f"member {json.dumps(extra[0])} is not allowed "
                                                                   "in the body")
    events = document["events"]
    if not 1 <= len(events) <= registry.MAX_BATCH_EVENTS:
        status = 413 if len(events) > registry.MAX_BATCH_EVENTS else 400
        reason = f"must hold 1 to {registry.MAX_BATCH_EVENTS} events, got {len(events)}"
        return _refuse(status, "batch_size", "events", reason)

    records: list[tuple[str, bytes]] = []
    errors: dict[int, dict[str, str]] = {}
    for index, event in enumerate(events):
        event = registry.integers_as_written(event)
        error = registry.validate_event(event)
        if error is None:
            data = envelope(event, received_at)
            if len(data) > registry.MAX_EVENT_BYTES:
                error = registry.SchemaError("$", f"event of {len(data)} bytes > {registry.MAX_EVENT_BYTES}")
            else:
                records.append((event["user_id"], data))
        if error is not None:
            errors[index] = error.as_dict()
    if errors:
        results = [
            {"index": i, "event_id": _event_id(e), "accepted": False,
             "error": errors.get(i, _NOT_SENT)}
            for i, e in enumerate(events)
        ]
        first = errors[min(errors)]
        return IngestResponse(
            400,
            {"error": "schema_violation", "field": f"events[{min(errors)}].{first['field']}", "reason": first["reason"],
             "accepted": 0, "rejected": len(events), "invalid": len(errors), "results": results},
            rejected=len(events),
        )

    codes = stream.put_records(records)
    results = []
    for index, (event, code) in enumerate(zip(events, codes, strict=True)):
        result: dict[str, Any] = {"index": index, "event_id": event["event_id"], "accepted": code is None}
        if code is not None:
            result |= {"retryable": True, "error": {"field": "$", "reason": code}}
        results.append(result)
    failures = Counter(c for c in codes if c is not None)
    accepted = len(events) - sum(failures.values())
    body = {"accepted": accepted, "rejected": len(events) - accepted, "results": results}
    if not failures:
        return IngestResponse(200, body, accepted=accepted)
    throttled = failures.get(THROTTLED, 0)
    status = 429 if throttled else 503
    body["error"] = "throttled" if throttled else "stream_unavailable"
    body["field"] = "$"
    body["reason"] = "retry the events marked retryable, with the same event_id"
    return IngestResponse(status, body, {"Retry-After": str(RETRY_AFTER_SECONDS)},
                          accepted=accepted, rejected=len(events) - accepted, throttled=throttled)


def _event_id(event: object) -> str | None:
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None
