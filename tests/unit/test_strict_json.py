"""Strict JSON: what Python's parser lets through and the contract does not."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from feedbackloop.adapters.memory import MemoryStream
from feedbackloop.cleaning.decode import SourceRecord, decode_batch
from feedbackloop.ingest import accept_batch
from feedbackloop.schemas import strict_json

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "kind"), [
    ('{"price": NaN}', "non_finite_number"), ('{"price": Infinity}', "non_finite_number"),
    ('{"price": -Infinity}', "non_finite_number"), ('{"price": 1e999}', "non_finite_number"),
    ('{"a": 1, "a": 2}', "duplicate_key"), ('{"a": ' + "9" * 5000 + "}", "number_too_long"),
    ("[" * 100_000 + "]" * 100_000, "nested_too_deeply"), ('{"a": ', "malformed_json"),
])
def test_what_python_accepts_or_crashes_on_is_refused_with_a_reason(text, kind):
    json.loads("[1]")  # the stdlib parser takes the non-finite ones and a repeated key without a word
    with pytest.raises(strict_json.JsonRefusedError) as refused:
        strict_json.loads(text)
    assert refused.value.kind == kind and refused.value.msg
    assert isinstance(refused.value, json.JSONDecodeError)  # what Powertools' body validation catches


def test_strict_json_reads_ordinary_json_as_the_stdlib_does():
    text = '{"a": [1, 2.5, -0.0, 1e300, null, true, "x\\u00e9"], "b": {"c": 12345678901234567890}}'
    assert strict_json.loads(text) == json.loads(text)


@pytest.mark.parametrize(("content_type", "json_"), [
    (None, True), ("", True), ("application/json", True), ("Application/JSON; charset=utf-8", True),
    ("text/plain", False), ("application/x-www-form-urlencoded", False), ("multipart/form-data; boundary=x", False),
])
def test_only_json_media_types_are_json(content_type, json_):
    assert strict_json.is_json_media_type(content_type) is json_


def _event(**context) -> dict:
    return {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "purchase", "value": 1,
            "timestamp": "2026-11-27T10:00:00Z", "schema_version": "1.1", "context": context}


def test_ingest_refuses_a_nan_price_and_stores_nothing():
    """`"context": {"price": NaN}` was a 200 and made every revenue aggregate NaN."""
    stream = MemoryStream()
    body = json.dumps({"events": [_event(price=float("nan"))]}).encode()  # json.dumps writes NaN
    response = accept_batch(body, datetime.now(UTC), stream)
    assert response.status == 400 and response.body["error"] == "malformed_json"
    assert "NaN" in response.body["reason"] and not stream.records


def test_the_cleaner_quarantines_a_non_finite_number_on_either_path():
    """The fast path (Arrow's JSON reader) took NaN and Infinity; the exact path (Python's parser) too."""
    good = json.dumps({"received_at": "2026-11-27T10:00:01+00:00", "event": _event(price=2.0)})
    arrival = datetime.now(UTC)
    records = [SourceRecord(good.replace('"e1"', f'"e{i}"').encode(), f"s:{i}", arrival) for i in range(3)]
    records += [SourceRecord(good.replace("2.0", bad).encode(), f"s:{bad}", arrival) for bad in ("NaN", "Infinity")]
    decoded = decode_batch(records)
    assert decoded.valid.num_rows == 3
    assert sorted(r.record_index for r in decoded.rejected) == [3, 4]
    assert all("non_finite_number" in r.detail for r in decoded.rejected)
