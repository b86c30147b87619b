"""decode_batch: the fast path never accepts what the exact path (the registry) refuses, and one bad
record never costs the rest of the batch."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedbackloop.cleaning.decode import (
    DECODED_SCHEMA,
    MAX_RECORD_BYTES,
    _matches,
    decode_batch,
    records_from_kinesis_event,
)
from feedbackloop.ingest import envelope
from feedbackloop.names import QuarantineReason
from feedbackloop.schemas import registry

pytestmark = pytest.mark.unit

RULES = registry.event_type_rules()
CONTEXT = registry.event_schema()["properties"]["context"]["properties"]
RECEIVED_AT = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)

# --- strategies -------------------------------------------------------------------------------

ODD_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from([
        "", " ", "\n", "a\nb", "evt-1\n", "\x00", "tab\t", "\u2028", "é", "😀", "a\ud800", "\udfff", "\\", '"',
        "mobile", "rating", "click", "1.0", "2.0", "1.0\n", "null", "{}", "𝟙.0", "x" * 300,
    ]),
)
JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), ODD_TEXT,
)
JSON_VALUE = st.recursive(
    JSON_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=4,
)
IDENTIFIER = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,10}", fullmatch=True)
ODD_TIMESTAMPS = st.sampled_from([
    "2025-06-10T11:59:00.123456789Z", "2025-06-10T11:59:00.1234567+02:00", "2025-06-10T11:59:60Z",
    "2025-02-29T00:00:00Z", "2024-02-29T23:59:59+23:59", "2025-06-10T24:00:00Z", "2025-06-10T11:59:00+24:00",
    "2025-06-10t11:59:00z", "2025-06-10T11:59:00Z\n", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999-23:59",
    "2025-06-10T11:59:00", "2025-06-10 11:59:00Z", "", "1749556740", "2025-06-10T11:59:00.Z",
])


@st.composite
def rfc3339(draw) -> str:
    moment = draw(st.datetimes(min_value=datetime(2025, 5, 1), max_value=datetime(2025, 6, 11)))
    digits = draw(st.sampled_from([0, 1, 3, 6, 9]))
    fraction = "." + draw(st.text("0123456789", min_size=digits, max_size=digits)) if digits else ""
    zone = draw(st.sampled_from(["Z", "+00:00", "+02:00", "-05:30", "+14:00", "-23:59"]))
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone


@st.composite
def value_for(draw, event_type: str):
    rule = RULES[event_type]
    candidates = [st.integers(int(rule.min), int(rule.max))]
    if not rule.integer:
        candidates.append(st.floats(rule.min, rule.max))
    if rule.impute:
        candidates.append(st.none())
    return draw(st.one_of(candidates))


@st.composite
def valid_events(draw) -> dict[str, Any]:
    event_type = draw(st.sampled_from(list(RULES)))
    event: dict[str, Any] = {
        "event_id": draw(IDENTIFIER), "user_id": draw(IDENTIFIER), "item_id": draw(IDENTIFIER),
        "event_type": event_type, "timestamp": draw(rfc3339()),
        "schema_version": draw(st.sampled_from(["1.0", "1.0", "1.3"])),
    }
    value = draw(value_for(event_type))
    if value is not None or draw(st.booleans()):
        event["value"] = value
    if draw(st.integers(0, 4)):  # context present most of the time, as the fast path expects
        context = {}
        for name in draw(st.sets(st.sampled_from(list(CONTEXT)))):
            if name == "device":
                context[name] = draw(st.sampled_from(CONTEXT["device"]["enum"]))
            elif name == "price":
                context[name] = draw(st.one_of(st.none(), st.floats(0, 10_000_000), st.integers(0, 10_000)))
            elif name == "position":
                context[name] = draw(st.one_of(st.none(), st.integers(1, 1000)))
            elif name == "propensity":
                context[name] = draw(st.one_of(st.none(), st.floats(0, 1, exclude_min=True), st.just(1)))
            elif name == "request_id":
                context[name] = draw(st.one_of(st.none(), IDENTIFIER))
            elif name == "ranker":
                context[name] = draw(st.one_of(st.none(), st.from_regex(r"[a-z][a-z_]{0,30}", fullmatch=True)))
            else:
                context[name] = draw(st.one_of(st.none(), st.text(max_size=CONTEXT[name]["maxLength"] // 8)))
        event["context"] = context
    return event


def _some_field(draw, event: dict[str, Any]) -> tuple[dict[str, Any], str]:
    context = event.get("context")
    names = list(registry.event_schema()["properties"])
    target = draw(st.sampled_from(names + [f"context.{c}" for c in CONTEXT] if isinstance(context, dict) else names))
    if target.startswith("context."):
        return context, target.removeprefix("context.")
    return event, target


@st.composite
def mutated_events(draw) -> dict[str, Any]:
    """A valid event with 0 to 3 mutations, each of which may or may not break the contract."""
    event = draw(valid_events())
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(st.sampled_from(
            ["drop", "json", "text", "extra", "above", "below", "fraction", "context", "timestamp", "type", "null"]
        ))
        owner, name = _some_field(draw, event)
        if mutation == "drop":
            owner.pop(name, None)
        elif mutation == "json":
            owner[name] = draw(JSON_VALUE)
        elif mutation == "text":
            owner[name] = draw(ODD_TEXT)
        elif mutation == "null":
            owner[name] = None
        elif mutation == "extra":
            owner[draw(st.sampled_from(["extra", "rating", "Event_ID", "", "value "]))] = draw(JSON_SCALAR)
        elif mutation in ("above", "below", "fraction") and isinstance(event.get("event_type"), str) \
                and event["event_type"] in RULES:
            rule = RULES[event["event_type"]]
            step = draw(st.sampled_from([1e-9, 0.001, 0.5, 1, 1e6, 1e12]))
            event["value"] = {"above": rule.max + step, "below": rule.min - step,
                              "fraction": rule.min + 0.5}[mutation]
        elif mutation in ("above", "below", "fraction") and isinstance(event.get("context"), dict):
            # the exposure fields' edges (1.2): propensity 0 is excluded (exclusiveMinimum), a position
            # is a whole number in 1..1000; both paths must refuse (or admit) them alike
            edge = {"above": {"propensity": 1.5, "position": 1001}, "below": {"propensity": 0.0, "position": 0},
                    "fraction": {"propensity": 0, "position": 2.5}}[mutation]
            name = draw(st.sampled_from(sorted(edge)))
            event["context"][name] = edge[name]
        elif mutation == "context":
            event["context"] = draw(st.sampled_from([None, [], "ctx", {}, {"device": None}]))
            if draw(st.booleans()):
                event.pop("context")
        elif mutation == "timestamp":
            event["timestamp"] = draw(ODD_TIMESTAMPS)
        elif mutation == "type":
            event["event_type"] = draw(st.sampled_from(["like", "Rating", "", "click ", "cancel"]))
    return event


def _dumps(document: object, ascii_only: bool, **options: Any) -> bytes:
    try:
        return json.dumps(document, ensure_ascii=ascii_only, **options).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only its escaped form is valid UTF-8
        return json.dumps(document, ensure_ascii=True, **options).encode("utf-8")


@st.composite
def encoded(draw, event: dict[str, Any]) -> tuple[bytes, datetime | None]:
    """How a producer may have written the event, and the received_at the decoder should keep."""
    style = draw(st.sampled_from(["ingest", "ingest", "ingest", "ascii", "spaced", "bare", "pretty", "no_newline",
                                  "no_received_at", "bad_received_at"]))
    ascii_only = draw(st.booleans())
    stamped = RECEIVED_AT.isoformat()
    if style == "ingest":
        try:
            return envelope(event, RECEIVED_AT), RECEIVED_AT
        except UnicodeEncodeError:
            style = "ascii"
    if style == "ascii":
        return _dumps({"received_at": stamped, "event": event}, True, separators=(",", ":")) + b"\n", RECEIVED_AT
    if style == "spaced":
        return _dumps({"received_at": stamped, "event": event}, ascii_only), RECEIVED_AT
    if style == "bare":
        return _dumps(event, ascii_only, separators=(",", ":")) + b"\n", None
    if style == "pretty":
        return _dumps({"received_at": stamped, "event": event}, ascii_only, indent=2), RECEIVED_AT
    if style == "no_newline":
        return _dumps({"received_at": stamped, "event": event}, ascii_only, separators=(",", ":")), RECEIVED_AT
    if style == "no_received_at":
        return _dumps({"event": event}, ascii_only, separators=(",", ":")) + b"\n", None
    garbage = draw(st.sampled_from(["", "yesterday", "2025-13-01T00:00:00Z"]))
    return _dumps({"received_at": garbage, "event": event}, ascii_only, separators=(",", ":")) + b"\n", None


def _parsed_time(text: str) -> datetime | None:
    """The UTC instant of an RFC 3339 timestamp, to the microsecond, if it is one between years 1 and 9999."""
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if pd.isna(parsed) or not 1 <= parsed.year <= 9999:
        return None
    return parsed.floor("us").to_pydatetime()


def exactly_valid(event: object) -> bool:
    """The exact path's verdict: the registry accepts it and its timestamp is a real instant."""
    return registry.validate_event(event) is None and _parsed_time(event["timestamp"]) is not None


def _same(decoded: object, sent: object) -> bool:
    if isinstance(sent, float) and math.isnan(sent):
        return isinstance(decoded, float) and math.isnan(decoded)
    return decoded == sent


def exact_verdict(data: bytes) -> dict[str, Any] | None:
    """The event the exact path reads from a record when it accepts it (else None): Python's json, the
    ingest envelope unwrapped, the registry's verdict and a timestamp that is a real instant."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    event = document
    if isinstance(document, dict) and "event" in document and set(document) <= {"event", "received_at"}:
        event = document["event"]
    return event if exactly_valid(event) else None


@st.composite
def corrupted(draw, data: bytes) -> bytes:
    """The record with a byte replaced or inserted (often at the start of a string value): broken UTF-8,
    a stray quote, brace or newline."""
    values = [i + 2 for i in range(len(data)) if data.startswith(b':"', i)]  # where string values start
    position = draw(st.sampled_from(values) if values and draw(st.booleans()) else st.integers(0, len(data)))
    byte = draw(st.sampled_from(
        [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b'"', b"}", b"{", b"\n", b"\\", b",", b" "]))
    keep = draw(st.booleans())
    return data[:position] + byte + data[position + (0 if keep else 1):]


# --- the equivalence --------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decode_accepts_exactly_what_the_registry_accepts(make_record, data):
    events = data.draw(st.lists(st.one_of(valid_events(), mutated_events()), min_size=1, max_size=12))
    encodings = [data.draw(encoded(event)) for event in events]
    raws = [data.draw(corrupted(raw)) if data.draw(st.integers(0, 4)) == 0 else raw for raw, _ in encodings]
    arrival = RECEIVED_AT + timedelta(seconds=3)
    records = [make_record(raw, i, arrival=arrival) for i, raw in enumerate(raws)]

    decoded = decode_batch(records)

    verdicts = [exact_verdict(raw) for raw in raws]
    for verdict, raw, (sent, _), event in zip(verdicts, raws, encodings, events, strict=True):
        if raw == sent:  # an uncorrupted record: the oracle reads back what was generated
            assert (verdict is not None) == exactly_valid(event)
    accepted = decoded.valid["record_index"].to_pylist()
    assert set(accepted) == {i for i, verdict in enumerate(verdicts) if verdict is not None}
    assert len(accepted) == len(set(accepted))
    rejected = [r.record_index for r in decoded.rejected]
    assert sorted(accepted + rejected) == list(range(len(records)))  # each record exactly once
    assert decoded.valid.schema == DECODED_SCHEMA
    assert decoded.fast_rows <= len(accepted)
    for row in decoded.valid.to_pylist():
        event = verdicts[row["record_index"]]
        for name in ("event_id", "user_id", "item_id", "event_type", "schema_version", "timestamp"):
            assert row[name] == event[name]
        assert _same(row["value"], event.get("value"))
        for name in CONTEXT:
            assert _same(row[name], (event.get("context") or {}).get(name)), name
        assert row["event_time"] == _parsed_time(event["timestamp"])
        if raws[row["record_index"]] == encodings[row["record_index"]][0]:
            assert row["received_at"] == (encodings[row["record_index"]][1] or arrival)


@settings(max_examples=30, deadline=None)
@given(events=st.lists(valid_events(), min_size=1, max_size=40))
def test_records_from_the_ingest_api_with_context_take_the_fast_path(make_record, events):
    for event in events:
        event.setdefault("context", {})
    decoded = decode_batch([make_record(event, i) for i, event in enumerate(events)])
    expected = [i for i, e in enumerate(events) if _parsed_time(e["timestamp"]) is not None]
    assert decoded.valid["record_index"].to_pylist() == expected
    assert decoded.fast_rows == len(expected)


# --- bad records ------------------------------------------------------------------------------

def _single_rejection(records) -> tuple[QuarantineReason, str]:
    decoded = decode_batch(records)
    assert decoded.valid.num_rows == 0
    (rejection,) = decoded.rejected
    return rejection.reason, rejection.detail


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"{", b'{"received_at":"2025-06-10T12:00:00+00:00","event":{', b"not json", b"[1, 2",
     b'{"received_at":"x","event":{"event_id":"a"}}}', b"{'single': 'quotes'}", b"[" * 100_000],
)
def test_malformed_json_is_quarantined(make_record, data):
    if len(data) > MAX_RECORD_BYTES:
        data = b"[" * (MAX_RECORD_BYTES - 1)  # deep nesting, not size, is the point here
    reason, _ = _single_rejection([make_record(data)])
    assert reason == QuarantineReason.MALFORMED_JSON


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe{}", b'{"received_at":"2025-06-10T12:00:00+00:00","event":{"event_id":"\xc3"}}\n',
     "caf\u00e9".encode("latin-1")],
)
def test_bytes_that_are_not_utf8_are_quarantined(make_record, data):
    reason, detail = _single_rejection([make_record(data)])
    assert reason == QuarantineReason.NOT_UTF8
    assert detail.startswith("byte ")


def test_invalid_utf8_inside_an_otherwise_valid_envelope_is_not_accepted(make_record, make_event):
    good = envelope(make_event(), RECEIVED_AT)
    data = good.replace(b'"page":"/home"', b'"page":"/h\xffme"')
    assert data != good
    reason, _ = _single_rejection([make_record(data)])
    assert reason == QuarantineReason.NOT_UTF8


def test_an_oversized_record_is_quarantined_and_one_at_the_limit_is_not(make_record, make_event):
    line = envelope(make_event(), RECEIVED_AT)
    padding = MAX_RECORD_BYTES - len(line)
    at_limit = line[:-2] + b" " * padding + b"}\n"  # JSON whitespace: still the same event
    assert len(at_limit) == MAX_RECORD_BYTES
    decoded = decode_batch([make_record(at_limit, 0), make_record(at_limit[:-2] + b" }\n", 1)])
    assert decoded.valid["record_index"].to_pylist() == [0]
    (rejection,) = decoded.rejected
    assert (rejection.record_index, rejection.reason) == (1, QuarantineReason.OVERSIZED)


def test_a_huge_record_is_refused_before_it_is_parsed(make_record):
    reason, detail = _single_rejection([make_record(b"{" + b" " * (10 * MAX_RECORD_BYTES))])
    assert reason == QuarantineReason.OVERSIZED
    assert str(MAX_RECORD_BYTES) in detail


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"schema_version": "2.0"}, QuarantineReason.UNKNOWN_VERSION),
        ({"event_type": "rating", "value": None}, QuarantineReason.MISSING_VALUE),
        ({"event_type": "like"}, QuarantineReason.SCHEMA_VIOLATION),
        ({"value": 6}, QuarantineReason.SCHEMA_VIOLATION),
        ({"timestamp": "2025-06-10T11:59:60Z"}, QuarantineReason.SCHEMA_VIOLATION),  # leap second: no instant
    ],
)
def test_schema_failures_carry_their_typed_reason(make_record, make_event, event, reason):
    got, _ = _single_rejection([make_record(make_event(**event))])
    assert got == reason


def test_a_rejection_keeps_the_event_it_could_read(make_record, make_event):
    decoded = decode_batch([make_record(make_event(event_type="like"))])
    (rejection,) = decoded.rejected
    assert rejection.event["event_type"] == "like"
    assert rejection.detail.startswith("event_type: ")


def test_an_envelope_without_an_event_is_a_schema_violation(make_record):
    reason, _ = _single_rejection([make_record(b'{"received_at":"2025-06-10T12:00:00+00:00"}\n')])
    assert reason == QuarantineReason.SCHEMA_VIOLATION


@pytest.mark.parametrize("data", [b'{"received_at":"2025-06-10T12:00:00+00:00","event":null}\n', b"null", b"42"])
def test_json_that_is_not_an_event_is_a_schema_violation(make_record, data):
    reason, _ = _single_rejection([make_record(data)])
    assert reason == QuarantineReason.SCHEMA_VIOLATION


def test_a_lone_surrogate_escape_is_quarantined_without_losing_the_batch(make_record, make_event):
    poison = envelope(make_event(), RECEIVED_AT).replace(b'"page":"/home"', b'"page":"/h\\ud800me"')
    decoded = decode_batch([make_record(make_event(event_id="a"), 0), make_record(poison, 1),
                            make_record(make_event(event_id="b"), 2)])
    assert decoded.valid["event_id"].to_pylist() == ["a", "b"]
    (rejection,) = decoded.rejected
    assert (rejection.record_index, rejection.reason) == (1, QuarantineReason.SCHEMA_VIOLATION)


@pytest.mark.parametrize("fraction", ["123456789", "1234567", "0000001"])
def test_sub_microsecond_timestamps_are_truncated_not_fatal(make_record, make_event, fraction):
    events = [make_event(event_id="a", timestamp=f"2025-06-10T11:59:00.{fraction}Z"), make_event(event_id="b")]
    decoded = decode_batch([make_record(e, i) for i, e in enumerate(events)])
    assert decoded.valid["event_id"].to_pylist() == ["a", "b"]
    assert decoded.valid["event_time"][0].as_py() == datetime(2025, 6, 10, 11, 59, 0, int(fraction[:6]), tzinfo=UTC)


@pytest.mark.parametrize("timestamp", ["0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
                                       "9999-12-31T23:59:59-00:01"])
@pytest.mark.parametrize("context", [True, False])
def test_a_timestamp_outside_years_1_to_9999_utc_is_quarantined_not_fatal(make_record, make_event, timestamp,
                                                                           context):
    """The registry's date-time format allows these; no datetime can hold them, so they cannot be cleaned."""
    bad = make_event(event_id="bad", timestamp=timestamp)
    if not context:
        bad.pop("context")
    decoded = decode_batch([make_record(make_event(event_id="a"), 0), make_record(bad, 1)])
    assert decoded.valid["event_id"].to_pylist() == ["a"]
    (rejection,) = decoded.rejected
    assert (rejection.record_index, rejection.reason) == (1, QuarantineReason.SCHEMA_VIOLATION)
    assert rejection.detail.startswith("timestamp: ")


@pytest.mark.parametrize("timestamp", ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59-00:01"])
def test_a_timestamp_outside_years_1_to_9999_is_refused_beside_one_arrow_cannot_read(make_record, make_event,
                                                                                     timestamp):
    """A string Arrow cannot parse sends the block's timestamps through pandas, which reads year 0 too."""
    events = [make_event(event_id="a"), make_event(event_id="odd", timestamp="}025-05-01T00:00:00Z"),
              make_event(event_id="bad", timestamp=timestamp)]
    decoded = decode_batch([make_record(e, i) for i, e in enumerate(events)])
    assert decoded.valid["event_id"].to_pylist() == ["a"]
    assert sorted(r.record_index for r in decoded.rejected) == [1, 2]


@pytest.mark.parametrize("received_at", ["0000-01-01T00:00:00+00:00", "9999-12-31T23:59:59-23:59"])
def test_an_unusable_received_at_falls_back_to_the_arrival_time(make_record, make_event, received_at):
    arrival = datetime(2025, 6, 10, 12, 0, 9, tzinfo=UTC)
    events = [make_event(event_id="fast"), make_event(event_id="slow", drop=("context",))]
    data = [json.dumps({"received_at": received_at, "event": e}, separators=(",", ":")).encode() + b"\n"
            for e in events]
    decoded = decode_batch([make_record(d, i, arrival=arrival) for i, d in enumerate(data)])
    assert decoded.valid["event_id"].to_pylist() == ["fast", "slow"]
    assert decoded.valid["received_at"].to_pylist() == [arrival, arrival]


def test_a_received_at_with_nanoseconds_is_truncated(make_record, make_event):
    data = json.dumps({"received_at": "2025-06-10T12:00:00.123456789+00:00", "event": make_event()},
                      separators=(",", ":")).encode() + b"\n"
    decoded = decode_batch([make_record(data)])
    assert decoded.valid["received_at"][0].as_py() == datetime(2025, 6, 10, 12, 0, 0, 123456, tzinfo=UTC)


# --- shapes the decoder must still accept ---------------------------------------------------

def test_a_bare_event_without_the_envelope_takes_the_stream_arrival_time(make_record, make_event):
    arrival = datetime(2025, 6, 10, 12, 0, 7, tzinfo=UTC)
    decoded = decode_batch([make_record(json.dumps(make_event()).encode(), arrival=arrival)])
    assert decoded.valid["received_at"].to_pylist() == [arrival]
    assert decoded.rejected == []


def test_multi_line_json_is_accepted(make_record, make_event):
    data = json.dumps({"received_at": RECEIVED_AT.isoformat(), "event": make_event()}, indent=2).encode()
    assert data.count(b"\n") > 5
    decoded = decode_batch([make_record(data)])
    assert decoded.valid["event_id"].to_pylist() == ["evt-0001"]
    assert decoded.valid["received_at"].to_pylist() == [RECEIVED_AT]


def test_an_envelope_without_its_trailing_newline_is_accepted(make_record, make_event):
    decoded = decode_batch([make_record(envelope(make_event(), RECEIVED_AT).rstrip(b"\n"))])
    assert decoded.valid.num_rows == 1


def test_absent_context_and_null_context_fields_decode_to_nulls(make_record, make_event):
    decoded = decode_batch([make_record(make_event(event_id="a", drop=("context",)), 0),
                            make_record(make_event(event_id="b", context={"device": None}), 1)])
    rows = decoded.valid.to_pylist()
    assert [r["event_id"] for r in rows] == ["a", "b"]
    for row in rows:
        assert all(row[name] is None for name in CONTEXT)


def test_context_fields_are_lifted_to_columns(make_record, make_event):
    (row,) = decode_batch([make_record(make_event())]).valid.to_pylist()
    assert {name: row[name] for name in CONTEXT} == {name: None for name in CONTEXT} | make_event()["context"]
    assert row["event_time"] == datetime(2025, 6, 10, 11, 59, tzinfo=UTC)
    assert row["record_index"] == 0


def test_a_1_2_exposure_carries_its_slate_fields_and_a_1_1_exposure_stays_valid(make_record, make_event):
    exposure = make_event(event_type="view", value=1, schema_version="1.2")
    exposure["context"] |= {"request_id": "req-1", "position": 3, "propensity": 0.045}
    old = make_event(event_type="view", value=1, schema_version="1.1", event_id="evt-0002")
    decoded = decode_batch([make_record(exposure, 0), make_record(old, 1)])
    assert decoded.rejected == []
    new_row, old_row = decoded.valid.to_pylist()
    assert (new_row["request_id"], new_row["position"], new_row["propensity"]) == ("req-1", 3, 0.045)
    assert (old_row["request_id"], old_row["position"], old_row["propensity"]) == (None, None, None)
    for bad in ({"propensity": 0}, {"position": 0}, {"propensity": 1.01}):
        event = make_event(event_type="view", value=1, schema_version="1.2", event_id="evt-0003")
        event["context"] |= bad
        (rejection,) = decode_batch([make_record(event, 2)]).rejected
        assert rejection.reason is QuarantineReason.SCHEMA_VIOLATION, bad


def test_an_offset_is_converted_to_utc(make_record, make_event):
    (row,) = decode_batch([make_record(make_event(timestamp="2025-06-11T01:30:00+02:00"))]).valid.to_pylist()
    assert row["event_time"] == datetime(2025, 6, 10, 23, 30, tzinfo=UTC)


def test_a_poison_record_does_not_cost_the_rest_of_the_batch(make_record, make_event):
    records = [make_record(make_event(event_id=f"e{i}"), i) for i in range(64)]
    records[37] = make_record(b'{"received_at":"2025-06-10T12:00:00+00:00","event":{"event_id":', 37)
    records[12] = make_record(make_event(event_id="e12", extra="x"), 12)
    decoded = decode_batch(records)
    assert decoded.valid["record_index"].to_pylist() == [i for i in range(64) if i not in (12, 37)]
    assert {(r.record_index, r.reason) for r in decoded.rejected} == {
        (12, QuarantineReason.SCHEMA_VIOLATION), (37, QuarantineReason.MALFORMED_JSON)}
    assert decoded.fast_rows == 62  # the good neighbours of a bad line still take the fast path


def test_rows_dropped_from_a_block_leave_the_rest_in_order_however_many(make_record, make_event):
    """A few bad rows are cut out as slices of the parsed block, many by a filter: the same rows."""
    for bad in ({0}, {63}, {5, 6, 7}, set(range(0, 64, 2))):
        records = [make_record(make_event(event_id=f"e{i}", extra="x") if i in bad else make_event(event_id=f"e{i}"),
                               i) for i in range(64)]
        decoded = decode_batch(records)
        assert decoded.valid["record_index"].to_pylist() == [i for i in range(64) if i not in bad]
        assert decoded.valid["event_id"].to_pylist() == [f"e{i}" for i in range(64) if i not in bad]
        assert sorted(r.record_index for r in decoded.rejected) == sorted(bad)


def _is_utf8(text: str) -> bool:
    return not any("\ud800" <= c <= "\udfff" for c in text)  # a lone surrogate is no Arrow string


ID_PATTERNS = sorted({p["pattern"] for p in registry.event_schema()["properties"].values() if "pattern" in p})


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), IDENTIFIER, ODD_TEXT.filter(_is_utf8)), max_size=20),
       start=st.integers(0, 3),
       pattern=st.sampled_from(ID_PATTERNS))
def test_pattern_checks_agree_with_re2(values, start, pattern):
    """The byte-class check of the id patterns says what RE2 says, on any strings (a slice too)."""
    column = pa.array(values, type=pa.string()).slice(min(start, len(values)))
    expected = pc.fill_null(pc.match_substring_regex(column, pattern), False)
    assert pc.fill_null(_matches(column, pattern), False).to_pylist() == expected.to_pylist()


def test_rows_come_back_in_record_order_whatever_path_they_took(make_record, make_event):
    records = [
        make_record(make_event(event_id="fast-0"), 0),
        make_record(json.dumps(make_event(event_id="slow-1")).encode(), 1),
        make_record(make_event(event_id="fast-2"), 2),
        make_record(make_event(event_id="slow-3", drop=("context",)), 3),
    ]
    assert decode_batch(records).valid["event_id"].to_pylist() == ["fast-0", "slow-1", "fast-2", "slow-3"]


def test_an_empty_batch_decodes_to_an_empty_table():
    decoded = decode_batch([])
    assert decoded.valid.num_rows == 0
    assert decoded.valid.schema == DECODED_SCHEMA
    assert decoded.rejected == []


def test_duplicate_keys_are_quarantined_on_either_path(make_record):
    """Python's json kept the last of repeated keys, silently; a repeated key is now refused, as at the API."""
    event = ('"user_id":"u1","item_id":"i1","event_type":"rating","value":4,'
             '"timestamp":"2025-06-10T11:59:00Z","schema_version":"1.0","context":{}')
    first_good = b'{"received_at":"2025-06-10T12:00:00+00:00","event":{"event_id":"ok","event_id":"-bad",' + \
        event.encode() + b"}}\n"
    last_good = b'{"received_at":"2025-06-10T12:00:00+00:00","event":{"event_id":"-bad","event_id":"ok",' + \
        event.encode() + b"}}\n"
    decoded = decode_batch([make_record(first_good, 0), make_record(last_good, 1)])
    assert decoded.valid.num_rows == 0
    assert [(r.reason, r.detail.split(":")[0]) for r in decoded.rejected] == [
        (QuarantineReason.MALFORMED_JSON, "duplicate_key")] * 2


# --- the Kinesis event ------------------------------------------------------------------------

def _kinesis_event(datas: list[bytes], arrivals: list[float]) -> dict:
    return {"Records": [
        {"kinesis": {"data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": arrival,
                     "sequenceNumber": str(i), "partitionKey": "u"},
         "eventID": f"shardId-000000000000:{i}"}
        for i, (data, arrival) in enumerate(zip(datas, arrivals, strict=True))]}


def test_a_record_the_api_did_not_stamp_takes_its_kinesis_arrival(make_event):
    """Arrivals stay in the event until a record needs one: a bare event, and a refused record."""
    arrivals = [1749556800.25, 1749556801.5, 1749556802.75]
    event = _kinesis_event([envelope(make_event(event_id="stamped"), RECEIVED_AT),
                            json.dumps(make_event(event_id="bare")).encode(), b"not json"], arrivals)
    records = records_from_kinesis_event(event)
    decoded = decode_batch(records)
    bare_arrival = datetime(2025, 6, 10, 12, 0, 1, 500000, tzinfo=UTC)
    assert decoded.valid["received_at"].to_pylist() == [RECEIVED_AT, bare_arrival]
    assert [records.arrival(i) for i in range(3)] == [
        datetime.fromtimestamp(a, UTC) for a in arrivals] == [r.arrival for r in records]



def test_records_from_a_kinesis_event(make_event):
    data = envelope(make_event(), RECEIVED_AT)
    event = {"Records": [
        {
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "user-1",
                        "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                        "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": 1749556800.25},
            "eventSource": "aws:kinesis", "eventVersion": "1.0",
            "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
            "eventName": "aws:kinesis:record", "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/events",
        },
    ]}
    (record,) = records_from_kinesis_event(event)
    assert record.data == data
    assert record.source == "shardId-000000000006:49590338271490256608559692538361571095921575989136588898"
    assert record.arrival == datetime(2025, 6, 10, 12, 0, 0, 250000, tzinfo=UTC)


# --- the context Arrow infers (decode._CORE) -------------------------------------------------------

_CONTEXT_SHAPES = [
    {"price": 4},  # an integer where the schema says number: inferred int64, parsed again as float64
    {"price": 4.5},
    {"price": "4.5"},
    {"price": 1e308},
    {"position": 1.0},  # a float where the schema says integer
    {"position": 3},
    {"position": 12345678901234567890},  # beyond int64
    {"session_id": 7},
    {"session_id": "2025-06-10T11:59:00Z"},  # a string Arrow would infer as a timestamp
    {"session_id": None, "device": None},
    {"device": "tv"},
    {"device": "phone"},
    {"unknown": 1},
    {"ranker": {"nested": {"deeper": [1, 2, {"x": None}]}}},
    {"propensity": 0.5, "request_id": "r-1", "position": 2, "ranker": "popular"},
    {},
    None,
    "a string",
    [1, 2],
    7,
]


@pytest.mark.parametrize("shape", range(len(_CONTEXT_SHAPES)))
def test_a_context_of_any_shape_gets_the_exact_paths_verdict_and_values(make_record, make_event, shape):
    """Each shape once alone in a batch and once among every other (a block that infers a type for a
    field from several records): what is accepted, and the values read, are the exact path's."""

    def event(i: int, context) -> dict[str, Any]:
        made = make_event(event_id=f"evt-{i}", drop=("context",))
        return made if context == "absent" else made | {"context": context}

    for contexts in ([_CONTEXT_SHAPES[shape]], [*_CONTEXT_SHAPES, "absent"]):
        events = [event(i, context) for i, context in enumerate(contexts)]
        raws = [envelope(e, RECEIVED_AT) for e in events]
        decoded = decode_batch([make_record(raw, i) for i, raw in enumerate(raws)])
        verdicts = [exact_verdict(raw) for raw in raws]
        assert decoded.valid["record_index"].to_pylist() == [i for i, v in enumerate(verdicts) if v is not None]
        for row in decoded.valid.to_pylist():
            sent = verdicts[row["record_index"]].get("context") or {}
            for name in CONTEXT:
                assert _same(row[name], sent.get(name)), name
            assert all(type(row[name]) is not int for name in ("price", "propensity", "value") if row[name] is not None)
