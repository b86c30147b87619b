"""Table schemas of the lake: one definition that the writer (pyarrow), the Glue catalog (CDK and the
local runtime) and the readers share."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

_ARROW_TO_GLUE = {
    pa.string(): "string",
    pa.float64(): "double",
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.bool_(): "boolean",
    pa.timestamp("us", tz="UTC"): "timestamp",
    pa.list_(pa.string()): "array<string>",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    comment: str
    categorical: bool = False  # few distinct values: dictionary-encode it in Parquet
    filtered: bool = False  # queries select rows by it: keep min/max statistics in the Parquet footer

    @property
    def glue_type(self) -> str:
        return _ARROW_TO_GLUE[self.type]


@dataclass(frozen=True)
class LakeTable:
    """A Parquet table in the Glue catalog, partitioned by one string date column."""

    name: str
    bucket_key: str  # which bucket of resources.BUCKETS holds it
    prefix: str
    columns: tuple[Column, ...]
    partition: Column
    description: str

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])

    def parquet(self, rows: pa.Table) -> bytes:
        """One Parquet object of this table: snappy, dictionary pages where values repeat, min/max
        statistics where queries filter (categorical columns are filtered on too)."""
        sink = io.BytesIO()
        pq.write_table(rows.cast(self.arrow_schema), sink, compression="snappy",
                       use_dictionary=[c.name for c in self.columns if c.categorical],
                       write_statistics=[c.name for c in self.columns if c.filtered or c.categorical])
        return sink.getvalue()

    def partition_prefix(self, value: str) -> str:
        return f"{self.prefix}{self.partition.name}={value}/"

    def object_key(self, partition: str, name: str) -> str:
        """Where a written object lives, as "<bucket key>/<object key>" (what the dedup store keeps)."""
        return f"{self.bucket_key}/{self.partition_prefix(partition)}{name}"


_TS = pa.timestamp("us", tz="UTC")

CURATED_EVENTS = LakeTable(
    name="feedback_events",
    bucket_key="curated",
    prefix="events/",
    description="Clean feedback events: validated, de-duplicated, imputed, outlier-filtered, normalized.",
    partition=Column("event_date", pa.string(), "UTC date of the event, yyyy-mm-dd"),
    columns=(
        Column("event_id", pa.string(), "idempotency key from the client"),
        Column("user_id", pa.string(), "who acted", filtered=True),
        Column("item_id", pa.string(), "what they acted on", filtered=True),
        Column("event_type", pa.string(), "rating, form_score, nps, click, view, dwell, feature_use, purchase, cancel",
               categorical=True),
        Column("feedback_kind", pa.string(), "explicit or implicit", categorical=True),
        Column("value", pa.float64(), "the value after imputation"),
        Column("value_imputed", pa.bool_(), "true when value was missing and imputed"),
        Column("value_minmax", pa.float64(), "value scaled to [0, 1] (schema bounds or streaming quantiles)"),
        Column("value_zscore", pa.float64(), "z-score against the streaming mean and variance of its type"),
        Column("feedback_score", pa.float64(), "common scale in [-1, 1]: sign from polarity, magnitude from min-max"),
        Column("confidence", pa.float64(), "confidence weight of the event type (explicit above implicit)"),
        Column("event_time", _TS, "when the user acted", filtered=True),
        Column("received_at", _TS, "when the API accepted it"),
        Column("processed_at", _TS, "when the cleaner wrote it"),
        Column("schema_version", pa.string(), "MAJOR.MINOR of the event schema", categorical=True),
        Column("session_id", pa.string(), "context.session_id"),
        Column("device", pa.string(), "context.device (mode-imputed when missing)", categorical=True),
        Column("device_imputed", pa.bool_(), "true when device was missing and imputed"),
        Column("page", pa.string(), "context.page", categorical=True),
        Column("experiment", pa.string(), "context.experiment", categorical=True),
        Column("variant", pa.string(), "context.variant", categorical=True),
        Column("segment", pa.string(), "context.segment", categorical=True),
        Column("country", pa.string(), "context.country", categorical=True),
        Column("category", pa.string(), "context.category: the item's category (since schema 1.1)", categorical=True),
        Column("price", pa.float64(), "context.price"),
        Column("device_code", pa.int32(), "ordinal code of device from the schema's enum (0 = unknown)"),
        Column("page_code", pa.int32(), "hashed bucket of page (0 = none)"),
        Column("segment_code", pa.int32(), "hashed bucket of segment (0 = none)"),
        Column("source", pa.string(), "shard id and sequence number of the stream record (lineage)"),
    ),
)

QUARANTINE = LakeTable(
    name="feedback_quarantine",
    bucket_key="quarantine",
    prefix="quarantine/",
    description="Every record the cleaner did not pass, with a typed reason; nothing is dropped silently.",
    partition=Column("quarantine_date", pa.string(), "UTC date the record was quarantined, yyyy-mm-dd"),
    columns=(
        Column("reason", pa.string(), "a QuarantineReason value", categorical=True),
        Column("detail", pa.string(), "the field and the rule it broke, or the error"),
        Column("event_id", pa.string(), "when it could be read"),
        Column("user_id", pa.string(), "when it could be read", filtered=True),
        Column("event_type", pa.string(), "when it could be read", categorical=True),
        Column("schema_version", pa.string(), "when it could be read", categorical=True),
        Column("payload", pa.string(), "the record as received (utf-8, or base64 when it was not utf-8)"),
        Column("received_at", _TS, "when the API accepted it, or the stream's arrival time"),
        Column("quarantined_at", _TS, "when the cleaner quarantined it", filtered=True),
        Column("source", pa.string(), "shard id and sequence number of the stream record (lineage)"),
    ),
)

TABLES = (CURATED_EVENTS, QUARANTINE)
