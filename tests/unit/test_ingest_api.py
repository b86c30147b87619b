"""The ingest route's OpenAPI document: published as generated, built from the schema registry, and
describing every answer the route gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import fastjsonschema
import pytest

from feedbackloop.adapters.memory import MemoryStream
from feedbackloop.ingest import THROTTLED, accept_batch
from feedbackloop.ingest_api import OPENAPI_FILE, openapi_document
from feedbackloop.local.api import API_KEY_HEADER
from feedbackloop.schemas import registry

pytestmark = pytest.mark.unit

RECEIVED_AT = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(openapi_document())


def test_the_published_ingest_document_is_the_generated_one(request):
    published = (request.config.rootpath / OPENAPI_FILE).read_text().strip()
    assert published == openapi_document().strip(), f"run: feedbackloop openapi --api ingest --output {OPENAPI_FILE}"


def test_every_route_needs_the_api_key_header(document):
    (requirement,) = document["security"]
    (name,) = requirement
    assert document["components"]["securitySchemes"][name] == {"type": "apiKey", "in": "header",
                                                               "name": API_KEY_HEADER}
    assert all("security" not in operation for methods in document["paths"].values() for operation in methods.values())


def test_the_request_body_is_the_registrys_batch_schema(document):
    schemas = document["components"]["schemas"]
    body = document["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/FeedbackEventBatch"}
    batch = json.loads(json.dumps(schemas["FeedbackEventBatch"]))
    event = {k: v for k, v in schemas["FeedbackEvent"].items() if k not in ("title", "allOf")}
    # and the per event type rules the route applies: a rating without a value is refused, and documented so
    rating = next(c["then"] for c in schemas["FeedbackEvent"]["allOf"]
                  if c["if"]["properties"]["event_type"]["const"] == "rating")
    assert rating["required"] == ["value"] and rating["properties"]["value"]["type"] == "number"
    batch["properties"]["events"]["items"] = event
    expected = registry.batch_schema()
    expected.pop("$schema")
    assert batch == expected


def _validator(document: dict, status: int):
    schema = document["paths"]["/events"]["post"]["responses"][str(status)]["content"]["application/json"]["schema"]
    return fastjsonschema.compile(schema | {"components": document["components"]})


@pytest.mark.parametrize(("case", "status"), [
    ("valid", 200), ("invalid_event", 400), ("malformed_json", 400), ("not_utf8", 400), ("extra_member", 400),
    ("empty_member", 400),
    ("too_many_events", 413), ("too_many_bytes", 413), ("throttled", 429), ("stream_failed", 503),
])
def test_every_answer_of_the_route_is_the_documents(document, make_event, case, status):
    events = [make_event(event_id=f"e{i}") for i in range(3)]
    bodies = {
        "valid": {"events": events}, "invalid_event": {"events": [events[0], make_event(value="high")]},
        "extra_member": {"events": events, "more": 1}, "too_many_events": {"events": [events[0]] * 501},
        "empty_member": {"events": events, "": 1},  # found by `feedbackloop fuzz`: it made an empty field
    }
    raw = {"malformed_json": b'{"events": [', "not_utf8": b"\xff\xfe",
           "too_many_bytes": b" " * (registry.MAX_BODY_BYTES + 1)}
    body = raw.get(case) or json.dumps(bodies.get(case, {"events": events})).encode()
    codes = {"throttled": [None, THROTTLED, None], "stream_failed": ["InternalFailure", None, None]}.get(case)
    response = accept_batch(body, RECEIVED_AT, MemoryStream(codes))
    assert response.status == status
    _validator(document, status)(response.body)
