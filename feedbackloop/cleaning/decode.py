"""From Kinesis records to validated columns, fast for good records and exact for bad ones.

The fast path parses the whole batch with Arrow's JSON reader and checks the schema's constraints
as vectorized predicates derived from the schema file itself. It only ever *accepts* early: a row it
cannot prove valid, and any block Arrow cannot parse, goes to the slow path, which validates one
record at a time with the registry's JSON Schema validator. So the verdict is always the schema's,
and only bad records pay per-record cost.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pybase64

from feedbackloop.names import QuarantineReason
from feedbackloop.schemas import registry, strict_json

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
# The envelope with the event's own fields typed and its context left to Arrow to infer: Arrow's reader
# spends about a fifth of its time filling in the fields a batch never sends (most of the context's), so
# the context is parsed as it comes and then conformed to the schema's types (`_conformed`); anything
# not exactly of those types is parsed again with the whole schema, as before.
_CORE = pa.schema([("received_at", pa.string()),
                   ("event", pa.struct([f for f in _EVENT_TYPE if f.name != "context"]))])
_PARSE_CORE = pajson.ParseOptions(explicit_schema=_CORE, unexpected_field_behavior="infer")
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


_KINESIS, _DATA = itemgetter("kinesis"), itemgetter("data")
_ARRIVAL, _EVENT_ID = itemgetter("approximateArrivalTimestamp"), itemgetter("eventID")


class SourceRecords(Sequence[SourceRecord]):
    """A batch of stream records held by column, so a 10,000-record batch costs a few list
    comprehensions rather than 10,000 objects. Indexing yields a SourceRecord."""

    __slots__ = ("data", "sources", "_arrivals", "_kinesis")

    def __init__(self, data: list[bytes], sources: list[str], arrivals: np.ndarray | None = None,
                 kinesis: list[dict[str, Any]] | None = None) -> None:
        """`arrivals` (UTC), or the Kinesis payloads to read them from when they are needed: the cleaner
        reads the arrival only of a record the ingest API did not stamp, which is rare."""
        self.data = data
        self.sources = sources  # "<shard id>:<sequence number>", Lambda's eventID
        self._arrivals = None if arrivals is None else arrivals.astype("datetime64[us]")
        self._kinesis = kinesis

    @property
    def arrivals(self) -> np.ndarray:
        """When each record reached the stream (UTC, microseconds)."""
        if self._arrivals is None:
            self._arrivals = _microseconds(np.fromiter(map(_ARRIVAL, self._kinesis), dtype=float,
                                                       count=len(self._kinesis)))
        return self._arrivals

    def arrival(self, i: int) -> datetime:
        """One record's arrival, without reading every record's."""
        if self._arrivals is not None:
            one = self._arrivals[i]
        else:
            one = _microseconds(np.array([_ARRIVAL(self._kinesis[i])], dtype=float))[0]
        return one.astype(datetime).replace(tzinfo=UTC)

    @classmethod
    def of(cls, records: Iterable[SourceRecord]) -> SourceRecords:
        if isinstance(records, SourceRecords):
            return records
        records = list(records)
        arrivals = np.array([r.arrival.astimezone(UTC).replace(tzinfo=None) for r in records],
                            dtype="datetime64[us]")
        return cls([r.data for r in records], [r.source for r in records], arrivals)

    @classmethod
    def from_kinesis_event(cls, event: dict[str, Any]) -> SourceRecords:
        records = event["Records"]
        kinesis = list(map(_KINESIS, records))
        try:  # SIMD base64 (pybase64): 3x binascii's speed, and strict about the alphabet
            # (altchars=None, validate=True) passed by position, through map: parsing the keyword, or a
            # comprehension's loop, costs about as much as decoding a record
            data = list(map(pybase64.b64decode, map(_DATA, kinesis), repeat(None), repeat(True)))
        except (binascii.Error, ValueError, TypeError):
            data = [_base64_or_raw(e) for e in map(_DATA, kinesis)]
        return cls(data, list(map(_EVENT_ID, records)), kinesis=kinesis)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):  # type: ignore[override]
        return SourceRecord(self.data[i], self.sources[i], self.arrival(i))


def _microseconds(epochs: np.ndarray) -> np.ndarray:
    return (epochs * 1e6).astype("datetime64[us]")


def _base64_or_raw(encoded: object) -> bytes:
    try:
        return pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError, TypeError):  # not base64: keep it for the quarantine
        return str(encoded).encode("utf-8", "surrogateescape")


def records_from_kinesis_event(event: dict[str, Any]) -> SourceRecords:
    """The records of a Lambda Kinesis event (base64 data, arrival time in epoch seconds)."""
    return SourceRecords.from_kinesis_event(event)


_PREFIX = '{"received_at":"'
_SUFFIX = "}\n"  # a newline inside a record shows as an extra row


def _fast_candidates(data: list[bytes]) -> tuple[np.ndarray, np.ndarray, pa.LargeBinaryArray]:
    """Which records are the ingest API's one-line envelope and which are oversized, vectorized
    over the records copied once into one Arrow array (returned too: its values are the joined lines)."""
    records = pa.array(data, type=pa.large_binary())
    lengths = pc.binary_length(records).to_numpy()
    oversized = lengths > MAX_RECORD_BYTES
    fast = ((lengths > len(_PREFIX) + len(_SUFFIX)) & ~oversized
            & pc.starts_with(records, pattern=_PREFIX).to_numpy(zero_copy_only=False)
            & pc.ends_with(records, pattern=_SUFFIX).to_numpy(zero_copy_only=False))
    # Arrow's JSON reader does not check UTF-8: one pass over all records (the cast to strings
    # validates), per record only when that finds something
    try:
        records.cast(pa.large_string())
    except pa.ArrowInvalid:
        fast &= np.array([_is_utf8(d) for d in data], dtype=bool)
    return fast, oversized, records


def _joined(records: pa.LargeBinaryArray) -> pa.Buffer:
    """The values of a binary array end to end, without a copy."""
    _, offsets, values = records.buffers()
    start, end = np.frombuffer(offsets, dtype=np.int64)[[records.offset, records.offset + len(records)]]
    return values.slice(start, end - start)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_batch(records: Sequence[SourceRecord]) -> DecodedBatch:
    records = SourceRecords.of(records)
    rejected: list[Rejection] = []
    fast, oversized, candidates = _fast_candidates(records.data)
    for i in np.flatnonzero(oversized).tolist():
        rejected.append(Rejection(i, QuarantineReason.OVERSIZED,
                                  f"record of {len(records.data[i])} bytes > {MAX_RECORD_BYTES}"))
    # the ingest API's envelope on one line takes the fast path; anything else the exact path
    slow: list[int] = np.flatnonzero(~fast & ~oversized).tolist()
    fast_index = np.flatnonzero(fast)
    if not len(fast_index):
        joined = b""
    elif len(fast_index) == len(records):
        joined = _joined(candidates)
    else:
        joined = _joined(candidates.filter(pa.array(fast)))

    tables = []
    fast_rows = 0
    for lines, index in _parse_blocks(joined, records.data, fast_index, slow):
        if not lines.num_rows:
            continue
        envelope = pa.Table.from_batches(lines.to_batches(), schema=_ENVELOPE)
        flat, context_present = _flatten(envelope, index)
        ok = _provably_valid(flat, context_present)
        ok_numpy = ok.to_numpy(zero_copy_only=False)
        fast_rows += int(ok_numpy.sum())
        if ok_numpy.all():
            tables.append(flat)
        else:
            tables.append(_kept(flat, ok_numpy))
            slow.extend(index[~ok_numpy].tolist())

    slow_rows = []
    for i in sorted(slow):
        outcome = _decode_one(records.data[i], i)
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
        else:
            slow_rows.append(outcome)
    if slow_rows:
        tables.append(pa.Table.from_pylist(slow_rows, schema=DECODED_SCHEMA))
    valid = pa.concat_tables(tables) if tables else DECODED_SCHEMA.empty_table()
    missing = pc.is_null(valid["received_at"])
    if pc.any(missing).as_py():  # not stamped by the ingest API: use the stream's arrival time
        arrivals = pa.array(records.arrivals[valid["record_index"].to_numpy()], type=pa.timestamp("us", tz="UTC"))
        valid = valid.set_column(
            valid.schema.get_field_index("received_at"), "received_at",
            pc.if_else(missing, arrivals, valid["received_at"]),
        )
    if slow_rows:  # the fast rows are in order already
        valid = valid.sort_by("record_index")
    return DecodedBatch(valid=valid, rejected=rejected, fast_rows=fast_rows)


_SLICED_DROPS = 32


def _kept(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """The rows to keep. A few rows dropped from a large table leave runs of it that are taken as
    slices, without copying every column as a filter does."""
    dropped = np.flatnonzero(~keep)
    if len(dropped) > _SLICED_DROPS:
        return table.filter(pa.array(keep))
    starts, ends = np.append(0, dropped + 1), np.append(dropped, table.num_rows)
    return pa.concat_tables([table.slice(start, end - start)
                             for start, end in zip(starts.tolist(), ends.tolist(), strict=True)])


def _parse_blocks(joined: pa.Buffer | bytes, data: list[bytes], index: np.ndarray, slow: list[int]):
    """Parse the joined lines with Arrow. A block that fails, or that has more rows than records (a
    record with a newline inside), is bisected: one bad record costs about log2(n) re-parses
    instead of sending the whole block down the exact path."""
    if not len(index):
        return
    # Arrow parses blocks of 512 KiB on its own thread pool, outside the GIL; with one CPU the batch
    # is one block, whose columns then need no copying together
    block_size = 1 << 19 if pa.cpu_count() > 1 else max(1 << 19, len(joined))
    read_options = pajson.ReadOptions(use_threads=True, block_size=block_size)
    try:
        table = _conformed(pajson.read_json(pa.BufferReader(joined), read_options=read_options,
                                            parse_options=_PARSE_CORE))
    except pa.ArrowInvalid:
        table = None
    if table is None:  # a context not of the schema's types, or a block Arrow cannot parse: the whole schema
        try:
            table = pajson.read_json(pa.BufferReader(joined), read_options=read_options, parse_options=_PARSE)
        except pa.ArrowInvalid:
            table = None
    if table is not None and table.num_rows == len(index):
        yield table, index
    elif len(index) == 1:
        slow.append(int(index[0]))
    else:
        mid = len(index) // 2
        for half in (index[:mid], index[mid:]):
            yield from _parse_blocks(b"".join(data[i] for i in half), data, half, slow)


_CONTEXT_TYPE = _EVENT_TYPE.field("context").type


def _conformed(table: pa.Table) -> pa.Table | None:
    """A table parsed with `_CORE` (the context inferred) in the `_ENVELOPE` shape, the one that parsing
    with the whole schema gives; None where that parse could differ: a field outside the schema, a
    context that is not an object, or a context field whose inferred type is not exactly the schema's
    (a null type aside: every value null or absent). Arrow converts each value from its text by the
    column's type either way, so a column of the schema's type holds the same values."""
    typed = _CORE.field("event").type.names  # the event's fields the core schema types, first and in order
    if table.schema.names != _CORE.names:  # a field of the envelope outside the schema
        return None
    batches = []
    for batch in table.to_batches():
        event = batch.column(1)
        names = event.type.names
        if names[: len(typed)] != typed or names[len(typed):] not in ([], ["context"]):
            return None
        children = event.flatten()  # a null event's fields are null
        context = _conformed_context(children[len(typed)] if len(names) > len(typed) else None, len(batch))
        if context is None:
            return None
        fields = children[: len(typed)] + [context]
        event = pa.StructArray.from_arrays(fields, fields=list(_EVENT_TYPE), mask=event.is_null())
        batches.append(pa.RecordBatch.from_arrays([batch.column(0), event], schema=_ENVELOPE))
    return pa.Table.from_batches(batches, schema=_ENVELOPE)


def _conformed_context(context: pa.Array | None, rows: int) -> pa.Array | None:
    if context is None or context.type == pa.null():  # no row has a context
        return pa.nulls(rows, _CONTEXT_TYPE)
    if not pa.types.is_struct(context.type):
        return None
    given = dict(zip([f.name for f in context.type], context.flatten(), strict=True))
    if not given.keys() <= set(CONTEXT_FIELDS):
        return None
    children = []
    for wanted in _CONTEXT_TYPE:
        column = given.get(wanted.name)
        if column is None or column.type == pa.null():
            children.append(pa.nulls(rows, wanted.type))
        elif column.type == wanted.type:
            children.append(column)
        else:
            return None
    return pa.StructArray.from_arrays(children, fields=list(_CONTEXT_TYPE), mask=context.is_null())


def one_array(column: pa.ChunkedArray) -> pa.Array:
    """A column as one array: its only chunk as it is (combine_chunks copies even that)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _flatten(envelope: pa.Table, index: np.ndarray) -> tuple[pa.Table, pa.Array]:
    event = one_array(envelope["event"])
    # StructArray.flatten honours a null parent (its fields are null), StructArray.field does not
    fields = dict(zip(_EVENT_TYPE.names, event.flatten(), strict=True))
    context = fields["context"]
    columns = {k: fields[k] for k in TOP_FIELDS}
    columns |= dict(zip(CONTEXT_FIELDS, context.flatten(), strict=True))
    received = _parse_times(one_array(envelope["received_at"]))
    columns["received_at"] = received
    columns["event_time"] = _parse_times(columns["timestamp"])
    columns["record_index"] = pa.array(index)
    # a null envelope event (e.g. {"received_at": ..} alone) has null fields: caught by the checks
    return pa.table(columns, schema=DECODED_SCHEMA), pc.is_valid(context)


# the microseconds within pandas' nanosecond range (1677-09-21 00:12:43.145224193 to 2262-04-11
# 23:47:16.854775807), the instants every path agrees on
_EARLIEST = pa.scalar(datetime(1677, 9, 21, 0, 12, 43, 145225, tzinfo=UTC), pa.timestamp("us", tz="UTC"))
_LATEST = pa.scalar(datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC), pa.timestamp("us", tz="UTC"))


def _within(values: pa.Array, low: pa.Scalar, high: pa.Scalar) -> bool:
    """Every value that is not null lies in [low, high] (one pass, no mask built)."""
    bounds = pc.min_max(values)
    return not bounds["min"].is_valid or (low.value <= bounds["min"].value and bounds["max"].value <= high.value)


def _parse_times(values: pa.Array) -> pa.Array:
    """RFC 3339 strings to UTC microseconds; null where a string is not a real instant. Arrow's
    parser does a clean column at once; a column with a bad string is read one string at a time by the
    exact path's parser (RFC 3339 allows nine fraction digits; the lake keeps microseconds)."""
    try:
        parsed = pc.cast(values, pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = pa.array([None if text is None else registry.parse_instant(text) for text in values.to_pylist()],
                          type=pa.timestamp("us", tz="UTC"))
    # only nanosecond-range instants are taken here (the exact path knows more, year 1 among them): one
    # outside goes to the exact path
    if _within(parsed, _EARLIEST, _LATEST):
        return parsed
    in_range = pc.and_(pc.greater_equal(parsed, _EARLIEST), pc.less_equal(parsed, _LATEST))
    return pc.if_else(in_range, parsed, pa.scalar(None, parsed.type))


def _property_checks(column: pa.Array, prop: dict[str, Any]) -> list[pa.Array]:
    """Boolean arrays whose conjunction is true where the row passes this property's constraints.
    Absent and null look alike in Arrow, so a non-nullable property must be present (a missing
    optional one takes the exact path)."""
    nullable = "null" in (prop["type"] if isinstance(prop["type"], list) else [prop["type"]])
    if column.null_count == len(column):  # absent from the whole batch, as optional fields often are
        return [] if nullable else [pa.array(np.zeros(len(column), dtype=bool))]
    checks = []
    if "enum" in prop:
        allowed = pa.array([v for v in prop["enum"] if v is not None], type=column.type)
        checks.append(pc.is_in(column, value_set=allowed))
    # Byte length (read off the offsets) bounds the character count from above, so it proves
    # maxLength, and minLength 1; a longer minimum needs the characters counted.
    if "minLength" in prop or "maxLength" in prop:
        byte_length = pc.binary_length(column)
    if "minLength" in prop:
        length = byte_length if prop["minLength"] <= 1 else pc.utf8_length(column)
        checks.append(pc.greater_equal(length, prop["minLength"]))
    if "maxLength" in prop:
        checks.append(pc.less_equal(byte_length, prop["maxLength"]))
    if "pattern" in prop:
        checks.append(_matches(column, prop["pattern"]))
    if pa.types.is_floating(column.type):  # Arrow's reader takes NaN and Infinity: the exact path refuses them
        checks.append(pc.is_finite(column))
    if "minimum" in prop:  # draft-04: exclusiveMinimum is a flag on minimum
        above = pc.greater if prop.get("exclusiveMinimum") else pc.greater_equal
        checks.append(above(column, prop["minimum"]))
    if "maximum" in prop:
        checks.append(pc.less_equal(column, prop["maximum"]))
    if column.null_count == 0:  # present in every row: the checks alone decide
        return checks
    is_null = pc.is_null(column)
    if nullable:  # a null passes every check
        return [pc.or_(is_null, pc.fill_null(check, False)) for check in checks]
    return [pc.invert(is_null)] + [pc.fill_null(check, False) for check in checks]


_RUN_OF_CLASS = re.compile(r"\^\[([^\]]+)\]\[([^\]]+)\]\*\$")


@functools.cache
def _byte_classes(pattern: str) -> tuple[np.ndarray, bytes] | None:
    """For a pattern `^[first][rest]*$` (the ids'), the bytes each class admits (as a lookup table of
    256 and as the bytes themselves), read by Python's `re` as the exact path reads the pattern: ASCII
    only, so no byte of a multi-byte character is admitted."""
    shape = _RUN_OF_CLASS.fullmatch(pattern)
    if shape is None:
        return None
    first, rest = ([b for b in range(128) if re.fullmatch(f"[{chars}]", chr(b))] for chars in shape.groups())
    return np.isin(np.arange(256), first), bytes(rest)


def _matches(column: pa.Array | pa.ChunkedArray, pattern: str) -> pa.Array:
    """Where each string matches the pattern (false where it is null). RE2 looks at each string in
    turn; a `^[first][rest]*$` pattern is checked over the column's bytes at once, when every byte is in
    the rest class (else RE2 decides)."""
    classes = _byte_classes(pattern)
    if classes is None or column.type != pa.string():
        return pc.match_substring_regex(column, pattern)
    first, rest = classes
    column = one_array(column) if isinstance(column, pa.ChunkedArray) else column
    _, offsets_buffer, values_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=len(column) + 1, offset=column.offset * 4)
    if offsets[-1] == offsets[0]:  # only empty strings and nulls: none matches
        return pa.array(np.zeros(len(column), dtype=bool))
    # deleting the admitted bytes leaves nothing (one pass in C, 3x a lookup table in numpy)
    if memoryview(values_buffer)[offsets[0]:offsets[-1]].tobytes().translate(None, rest):
        return pc.match_substring_regex(column, pattern)
    starts = offsets[:-1]
    nonempty = offsets[1:] > starts  # a null is empty too
    first_bytes = np.frombuffer(values_buffer, dtype=np.uint8)[np.where(nonempty, starts, offsets[0])]
    return pa.array(nonempty & first[first_bytes])


def _provably_valid(flat: pa.Table, context_present: pa.Array) -> pa.Array:
    """True where the row satisfies every constraint of the schema and the event type rules."""
    props = EVENT_SCHEMA["properties"]
    checks = [pc.is_valid(flat["event_time"]), context_present]
    for name in TOP_FIELDS:
        checks += _property_checks(flat[name], props[name])
    for name in CONTEXT_FIELDS:
        checks += _property_checks(flat[name], props["context"]["properties"][name])
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
    checks.append(pa.array(known & np.where(missing, impute, in_range)))
    return functools.reduce(pc.and_, checks)


def _decode_one(data: bytes, index: int) -> dict[str, Any] | Rejection:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejection(index, QuarantineReason.NOT_UTF8, f"byte {error.start} is not utf-8")
    try:
        document = strict_json.loads(text)  # NaN, Infinity and repeated keys are refused, as at the API
    except strict_json.JsonRefusedError as error:
        return Rejection(index, QuarantineReason.MALFORMED_JSON, f"{error.kind}: {error.msg}"[:300])
    received_at = None
    event = document
    if isinstance(document, dict) and "event" in document and set(document) <= {"event", "received_at"}:
        event, received_at = document["event"], document.get("received_at")
    error = registry.validate_event(event)  # includes: the timestamp is a real instant
    if error is not None:
        reason = (
            QuarantineReason.UNKNOWN_VERSION if registry.is_unknown_version(error)
            else QuarantineReason.MISSING_VALUE if error.field == "value" and "required" in error.reason
            else QuarantineReason.SCHEMA_VIOLATION
        )
        return Rejection(index, reason, f"{error.field}: {error.reason}", event if isinstance(event, dict) else None)
    context = event.get("context") or {}
    row = {k: event.get(k) for k in TOP_FIELDS} | {k: context.get(k) for k in CONTEXT_FIELDS}
    row["received_at"] = registry.parse_instant(received_at) if isinstance(received_at, str) else None
    row["event_time"] = registry.parse_instant(event["timestamp"])
    row["record_index"] = index
    return row
