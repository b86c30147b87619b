"""From Kinesis records to validated columns, fast for good records and exact for bad ones.

The fast path parses the whole batch with Arrow's JSON reader and checks the schema's constraints
as vectorized predicates derived from the schema file itself. It only ever *accepts* early: a row it
cannot prove valid, and any block Arrow cannot parse, goes to the slow path, which validates one
record at a time with the registry's JSON Schema validator. So the verdict is always the schema's,
and only bad records pay per-record cost.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from feedbackloop.names import QuarantineReason
from feedbackloop.schemas import registry

MAX_RECORD_BYTES = registry.MAX_EVENT_BYTES + 1024  # room for the envelope

_JSON_TO_ARROW = {"string": pa.string(), "number": pa.float64(), "integer": pa.int64(), "boolean": pa.bool_()}


def _arrow_type(prop: dict[str, Any]) -> pa.DataType:
    if prop.get("type") == "object":
        return pa.struct([(k, _arrow_type(v)) for k, v in prop["properties"].items()])
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    (json_type,) = [t for t in types if t != "null"]
    return _JSON_TO_ARROW[json_type]


EVENT_SCHEMA = registry.event_schema(registry.CURRENT_MAJOR)
_EVENT_TYPE = pa.struct([(k, _arrow_type(v)) for k, v in EVENT_SCHEMA["properties"].items()])
_ENVELOPE = pa.schema([("received_at", pa.string()), ("event", _EVENT_TYPE)])
_PARSE = pajson.ParseOptions(explicit_schema=_ENVELOPE, unexpected_field_behavior="error")
CONTEXT_FIELDS = tuple(EVENT_SCHEMA["properties"]["context"]["properties"])
TOP_FIELDS = tuple(k for k in EVENT_SCHEMA["properties"] if k != "context")

#: the flat shape of a decoded, valid event (context fields lifted to the top)
DECODED_SCHEMA = pa.schema(
    [(k, _EVENT_TYPE.field(k).type) for k in TOP_FIELDS]
    + [(k, _EVENT_TYPE.field("context").type.field(k).type) for k in CONTEXT_FIELDS]
    + [("received_at", pa.timestamp("us", tz="UTC")), ("event_time", pa.timestamp("us", tz="UTC")),
       ("record_index", pa.int64())]
)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One stream record as the cleaner sees it."""

    data: bytes
    source: str  # "<shard id>:<sequence number>"
    arrival: datetime


@dataclass
class Rejection:
    record_index: int
    reason: QuarantineReason
    detail: str
    event: dict[str, Any] | None = None


@dataclass
class DecodedBatch:
    valid: pa.Table  # DECODED_SCHEMA
    rejected: list[Rejection] = field(default_factory=list)
    fast_rows: int = 0


def records_from_kinesis_event(event: dict[str, Any]) -> list[SourceRecord]:
    """The records of a Lambda Kinesis event (base64 data, arrival time in epoch seconds)."""
    out = []
    arrivals: dict[float, datetime] = {}  # records of one PutRecords call share their arrival time
    for record in event["Records"]:
        kinesis = record["kinesis"]
        try:
            data = binascii.a2b_base64(kinesis["data"])
        except (binascii.Error, ValueError):  # not base64: keep the bytes for the quarantine
            data = str(kinesis["data"]).encode("utf-8", "surrogateescape")
        epoch = float(kinesis["approximateArrivalTimestamp"])
        arrival = arrivals.get(epoch)
        if arrival is None:
            arrival = arrivals[epoch] = datetime.fromtimestamp(epoch, tz=UTC)
        out.append(SourceRecord(data, f"{record['eventID'].split(':', 1)[0]}:{kinesis['sequenceNumber']}", arrival))
    return out


def decode_batch(records: list[SourceRecord]) -> DecodedBatch:
    rejected: list[Rejection] = []
    fast_lines: list[bytes] = []
    fast_index: list[int] = []
    slow: list[int] = []
    for i, record in enumerate(records):
        data = record.data
        if len(data) > MAX_RECORD_BYTES:
            rejected.append(Rejection(i, QuarantineReason.OVERSIZED, f"record of {len(data)} bytes > {MAX_RECORD_BYTES}"))
        # the ingest API's envelope on one line; anything else takes the exact path
        elif data.startswith(b'{"received_at":"') and data.endswith(b"}\n") and data.count(b"\n") == 1:
            fast_lines.append(data)
            fast_index.append(i)
        else:
            slow.append(i)

    tables = []
    fast_rows = 0
    for lines, index in _parse_blocks(fast_lines, fast_index, slow):
        envelope = pa.Table.from_batches(lines.to_batches(), schema=_ENVELOPE) if lines.num_rows else None
        if envelope is None:
            continue
        flat, context_present = _flatten(envelope, np.asarray(index, dtype=np.int64))
        ok = _provably_valid(flat, context_present)
        fast_rows += int(pc.sum(ok).as_py() or 0)
        tables.append(flat.filter(ok))
        slow.extend(np.asarray(index)[~np.asarray(ok.to_numpy(zero_copy_only=False))].tolist())

    slow_rows = []
    for i in sorted(slow):
        outcome = _decode_one(records[i].data, i)
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
        else:
            slow_rows.append(outcome)
    if slow_rows:
        tables.append(pa.Table.from_pylist(slow_rows, schema=DECODED_SCHEMA))
    valid = pa.concat_tables(tables) if tables else DECODED_SCHEMA.empty_table()
    missing = pc.is_null(valid["received_at"])
    if pc.any(missing).as_py():  # not stamped by the ingest API: use the stream's arrival time
        arrivals = pa.array([records[i].arrival for i in valid["record_index"].to_pylist()],
                            type=pa.timestamp("us", tz="UTC"))
        valid = valid.set_column(
            valid.schema.get_field_index("received_at"), "received_at",
            pc.if_else(missing, arrivals, valid["received_at"]),
        )
    return DecodedBatch(valid=valid.sort_by("record_index"), rejected=rejected, fast_rows=fast_rows)


def _parse_blocks(lines: list[bytes], index: list[int], slow: list[int]):
    """Parse lines with Arrow; bisect a block that fails so one bad line costs log2(n) re-parses."""
    if not lines:
        return
    try:
        table = pajson.read_json(
            io.BytesIO(b"".join(lines)),
            read_options=pajson.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=_PARSE,
        )
    except pa.ArrowInvalid:
        if len(lines) == 1:
            slow.append(index[0])
            return
        mid = len(lines) // 2
        yield from _parse_blocks(lines[:mid], index[:mid], slow)
        yield from _parse_blocks(lines[mid:], index[mid:], slow)
        return
    if table.num_rows != len(lines):  # blank or split lines: let the exact path sort them out
        slow.extend(index)
        return
    yield table, index


def _flatten(envelope: pa.Table, index: np.ndarray) -> tuple[pa.Table, pa.Array]:
    event = envelope["event"].combine_chunks()
    context = pc.struct_field(event, "context")
    # pc.struct_field honours a null parent, StructArray.field does not
    columns = {k: pc.struct_field(event, k) for k in TOP_FIELDS}
    columns |= {k: pc.struct_field(context, k) for k in CONTEXT_FIELDS}
    received = _parse_times(envelope["received_at"].to_pandas())
    columns["received_at"] = received
    columns["event_time"] = _parse_times(columns["timestamp"].to_pandas())
    columns["record_index"] = pa.array(index)
    # a null envelope event (e.g. {"received_at": ..} alone) has null fields: caught by the checks
    return pa.table(columns, schema=DECODED_SCHEMA), pc.is_valid(context)


def _parse_times(values: pd.Series) -> pa.Array:
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    # RFC 3339 allows nine fraction digits; the lake keeps microseconds (a lossy cast would raise)
    # (naive UTC values typed as UTC: pandas deprecates converting a tz-aware Series to numpy)
    naive = parsed.dt.floor("us").dt.tz_convert(None).to_numpy()
    return pa.array(naive, type=pa.timestamp("us", tz="UTC"), from_pandas=True)


def _property_checks(column: pa.Array, prop: dict[str, Any]) -> pa.Array:
    """The row passes this property's constraints. Absent and null look alike in Arrow, so a
    non-nullable property must be present (a missing optional one takes the exact path)."""
    nullable = "null" in (prop["type"] if isinstance(prop["type"], list) else [prop["type"]])
    checks = []
    if "enum" in prop:
        allowed = pa.array([v for v in prop["enum"] if v is not None], type=column.type)
        checks.append(pc.is_in(column, value_set=allowed))
    if "minLength" in prop:
        checks.append(pc.greater_equal(pc.utf8_length(column), prop["minLength"]))
    if "maxLength" in prop:
        checks.append(pc.less_equal(pc.utf8_length(column), prop["maxLength"]))
    if "pattern" in prop:
        checks.append(pc.match_substring_regex(column, prop["pattern"]))
    if "minimum" in prop:
        checks.append(pc.greater_equal(column, prop["minimum"]))
    if "maximum" in prop:
        checks.append(pc.less_equal(column, prop["maximum"]))
    is_null = pc.is_null(column)
    ok = pc.invert(is_null) if not nullable else pa.array(np.ones(len(column), dtype=bool))
    for check in checks:
        ok = pc.and_(ok, pc.or_(is_null, pc.fill_null(check, False)) if nullable else pc.fill_null(check, False))
    return ok


def _provably_valid(flat: pa.Table, context_present: pa.Array) -> pa.Array:
    """True where the row satisfies every constraint of the schema and the event type rules."""
    props = EVENT_SCHEMA["properties"]
    ok = pc.and_(pc.is_valid(flat["event_time"]), context_present)
    for name in TOP_FIELDS:
        ok = pc.and_(ok, _property_checks(flat[name], props[name]))
    for name in CONTEXT_FIELDS:
        ok = pc.and_(ok, _property_checks(flat[name], props["context"]["properties"][name]))
    # event type rules (event_types.json), vectorized through per-type lookup arrays
    rules = registry.event_type_rules()
    names = list(rules)
    type_index = pc.index_in(flat["event_type"], value_set=pa.array(names))
    known = pc.is_valid(type_index).to_numpy(zero_copy_only=False)
    idx = pc.fill_null(type_index, 0).to_numpy(zero_copy_only=False)
    lo = np.array([r.min for r in rules.values()])[idx]
    hi = np.array([r.max for r in rules.values()])[idx]
    impute = np.array([r.impute for r in rules.values()])[idx]
    integer = np.array([r.integer for r in rules.values()])[idx]
    value = flat["value"].to_numpy(zero_copy_only=False).astype(float)
    missing = np.isnan(value)
    with np.errstate(invalid="ignore"):
        in_range = (value >= lo) & (value <= hi) & (~integer | (value == np.floor(value)))
    type_ok = known & np.where(missing, impute, in_range)
    return pc.and_(ok, pa.array(type_ok))


def _decode_one(data: bytes, index: int) -> dict[str, Any] | Rejection:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejection(index, QuarantineReason.NOT_UTF8, f"byte {error.start} is not utf-8")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        return Rejection(index, QuarantineReason.MALFORMED_JSON, str(error)[:300])
    received_at = None
    event = document
    if isinstance(document, dict) and "event" in document and set(document) <= {"event", "received_at"}:
        event, received_at = document["event"], document.get("received_at")
    error = registry.validate_event(event)
    if error is None:
        event_time = _parse_time(event["timestamp"])
        if event_time is None:
            error = registry.SchemaError("timestamp", "is not a valid RFC 3339 date-time")
    if error is not None:
        reason = (
            QuarantineReason.UNKNOWN_VERSION if registry.is_unknown_version(error)
            else QuarantineReason.MISSING_VALUE if error.field == "value" and "required" in error.reason
            else QuarantineReason.SCHEMA_VIOLATION
        )
        return Rejection(index, reason, f"{error.field}: {error.reason}", event if isinstance(event, dict) else None)
    context = event.get("context") or {}
    row = {k: event.get(k) for k in TOP_FIELDS} | {k: context.get(k) for k in CONTEXT_FIELDS}
    row["received_at"] = _parse_time(received_at) if isinstance(received_at, str) else None
    row["event_time"] = event_time
    row["record_index"] = index
    return row


def _parse_time(text: str) -> datetime | None:
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    return None if pd.isna(parsed) else parsed.floor("us").to_pydatetime()
