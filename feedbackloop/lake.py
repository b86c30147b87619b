"""Table schemas of the lake: one definition that the writer (pyarrow), the Glue catalog (CDK and the
local runtime) and the readers share."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

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
    # snappy (LZ77, no entropy coding) finds little in random identifiers: 10% off the column for a
    # quarter of a write's time, so such a column is stored uncompressed
    compressed: bool = True

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

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])

    @cached_property
    def _dictionary_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.categorical]

    @cached_property
    def _compression(self) -> dict[str, str]:
        return {c.name: "snappy" if c.compressed else "none" for c in self.columns}

    @cached_property
    def _statistics_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.filtered or c.categorical]

    def parquet(self, rows: pa.Table) -> bytes:
        """One Parquet object of this table: snappy (but for random identifiers), dictionary pages where
        values repeat, min/max statistics where queries filter (categorical columns are filtered on too)."""
        sink = pa.BufferOutputStream()  # Arrow's own: no Python file object to call back, no GIL held
        if not rows.schema.equals(self.arrow_schema):
            rows = rows.cast(self.arrow_schema)
        pq.write_table(rows, sink, compression=self._compression, use_dictionary=self._dictionary_columns,
                       write_statistics=self._statistics_columns)
        return sink.getvalue().to_pybytes()

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
        Column("event_id", pa.string(), "idempotency key from the client", compressed=False),
        Column("user_id", pa.string(), "who acted", filtered=True),
        Column("item_id", pa.string(), "what they acted on", filtered=True),
        Column("event_type", pa.string(), "rating, form_score, nps, click, view, dwell, feature_use, purchase, cancel",
               categorical=True),
        Column("feedback_kind", pa.string(), "explicit or implicit", categorical=True),
        Column("value", pa.float64(), "the value after imputation"),
        Column("value_imputed", pa.bool_(), "true when value was missing and imputed"),
        Column("value_minmax", pa.float64(), "value scaled to [0, 1] (schema bounds or streaming quantiles)"),
        Column("value_zscore", pa.float64(), "z-score against the streaming mean and variance of its type"),
        Column("feedback_score", pa.float64(), "[-1, 1]: sign from polarity; explicit types 0 at their neutral point"),
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
        Column("request_id", pa.string(), "context.request_id: the recommendations response the item was shown in "
                                          "(since schema 1.2)"),
        Column("position", pa.int32(), "context.position: the 1-based rank the item was shown at (since 1.2)"),
        Column("propensity", pa.float64(), "context.propensity: the probability the serving policy showed the "
                                           "item at that position (since 1.2)"),
        Column("ranker", pa.string(), "context.ranker: the ranker that made the page the item was shown in "
                                      "(since 1.3)", categorical=True),
        Column("device_code", pa.int32(), "ordinal code of device from the schema's enum (0 = unknown)"),
        Column("page_code", pa.int32(), "hashed bucket of page (0 = none)"),
        Column("segment_code", pa.int32(), "hashed bucket of segment (0 = none)"),
        Column("source", pa.string(), "shard id and sequence number of the stream record (lineage)"),
        Column("personalized", pa.bool_(), "false when the user had turned personalization off: the event "
                                           "counts in engagement, never in training or the online store"),
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

CLEANER_TABLES = (CURATED_EVENTS, QUARANTINE)  # what the cleaner writes


# The modelled layers (ADR 0006): built by the SQL of glue_jobs/sql/, one file per table, in Athena and
# locally in DuckDB. A unit test checks each SQL file's output against these columns, in order.
_I64, _F64, _STR, _I32, _BOOL = pa.int64(), pa.float64(), pa.string(), pa.int32(), pa.bool_()
_EVENT_DATE = Column("event_date", _STR, "UTC date of the events, yyyy-mm-dd")
_AS_OF_DATE = Column("as_of_date", _STR, "the snapshot: state as of the end of this UTC date, yyyy-mm-dd")


def _modelled(name: str, description: str, partition: Column, *columns: Column) -> LakeTable:
    return LakeTable(name=name, bucket_key="curated", prefix=f"tables/{name}/", columns=columns,
                     partition=partition, description=description)


def _counts(*names: str) -> tuple[Column, ...]:
    return tuple(Column(n, _I64, f"number of {n.replace('_', ' ')}") for n in names)


def _curated(*names: str) -> tuple[Column, ...]:
    by_name = {c.name: c for c in CURATED_EVENTS.columns}
    return tuple(by_name[n] for n in names)


INTERACTIONS = _modelled(
    "interactions", "Interaction layer: one row per clean event with its metadata.", _EVENT_DATE,
    *_curated("event_id", "user_id", "item_id", "event_type", "feedback_kind", "value", "feedback_score",
              "confidence", "event_time"),
    Column("event_hour", _TS, "event_time truncated to the hour"),
    Column("hour_of_day", _I32, "0-23, UTC"),
    Column("day_of_week", _I32, "ISO day of week, 1 = Monday"),
    *_curated("received_at", "processed_at"),
    Column("arrival_delay_seconds", _F64, "from the event to the API accepting it"),
    *_curated("session_id", "device", "device_code", "page", "page_code", "experiment", "variant", "segment",
              "segment_code", "country", "category", "price"),
    Column("revenue", _F64, "value x price for purchases"),
    *_curated("personalized", "request_id", "position", "propensity"),
)

FEEDBACK_DAILY = _modelled(
    "feedback_daily", "Feedback layer, daily part: the signals of one user and item on one day.", _EVENT_DATE,
    Column("user_id", _STR, "who", filtered=True),
    Column("item_id", _STR, "what", filtered=True),
    Column("category", _STR, "the item's category", categorical=True),
    Column("price", _F64, "the item's highest price in the day's events (null: none sent)"),
    *_counts("events", "explicit_events", "implicit_events", "views", "clicks", "purchases", "cancels", "ratings"),
    Column("rating_sum", _F64, "sum of rating values"),
    Column("decayed_score_sum", _F64, "sum of confidence x feedback_score, decayed to the end of the day"),
    Column("decayed_weight_sum", _F64, "sum of confidence, decayed to the end of the day"),
    Column("last_positive_at", _TS, "latest signal with feedback_score > 0"),
    Column("last_negative_at", _TS, "latest signal with feedback_score < 0"),
    Column("first_seen_at", _TS, "first event"),
    Column("last_seen_at", _TS, "last event"),
)

USER_FEEDBACK = _modelled(
    "user_feedback", "Feedback layer: per user and item, the composite feedback score (time-decayed, "
    "confidence-weighted, conflicts reconciled by recency).", _AS_OF_DATE,
    Column("user_id", _STR, "who", filtered=True),
    Column("item_id", _STR, "what", filtered=True),
    Column("category", _STR, "the item's category", categorical=True),
    Column("feedback_type", _STR, "explicit when any explicit signal exists, else implicit", categorical=True),
    Column("composite_score", _F64, "in [-1, 1]: decayed confidence-weighted mean, capped at 0 when the latest "
                                    "signal is negative"),
    Column("confidence_mass", _F64, "decayed sum of confidence weights: how much evidence the score rests on"),
    Column("conflicting", _BOOL, "both positive and negative signals exist"),
    *_counts("events", "explicit_events", "implicit_events", "views", "clicks", "purchases", "cancels", "ratings"),
    Column("rating_mean", _F64, "mean rating, when rated"),
    Column("first_seen_at", _TS, "first event"),
    Column("last_seen_at", _TS, "last event"),
)

USER_DAILY = _modelled(
    "user_daily", "Feature layer, daily part: one user's additive activity counts on one day.", _EVENT_DATE,
    Column("user_id", _STR, "who", filtered=True),
    *_counts("events", "sessions", "items", "explicit_events", "views", "clicks", "purchases", "cancels"),
    Column("revenue", _F64, "sum of value x price of purchases"),
    *_counts("ratings"),
    Column("rating_sum", _F64, "sum of rating values"),
    *_counts("nps_responses", "nps_promoters", "nps_detractors"),
    Column("explicit_score_sum", _F64, "sum of feedback_score of explicit events"),
    *_counts("desktop_events", "mobile_events", "tablet_events", "other_device_events", "unknown_device_events"),
    Column("first_event_at", _TS, "first event of the day"),
    Column("last_event_at", _TS, "last event of the day"),
    Column("country", _STR, "country of the day's last event", categorical=True),
    Column("segment", _STR, "segment of the day's last event", categorical=True),
    Column("segment_code", _I32, "its hashed code"),
)

USER_FEATURES = _modelled(
    "user_features", "Feature layer: one row per user, what segmentation and models read.", _AS_OF_DATE,
    Column("user_id", _STR, "who", filtered=True),
    *_counts("events", "active_days", "sessions", "items"),
    Column("first_seen_at", _TS, "first event"),
    Column("last_seen_at", _TS, "last event"),
    Column("recency_days", _I64, "days from the last event to the snapshot date"),
    Column("tenure_days", _I64, "days from the first event to the snapshot date, inclusive"),
    Column("events_per_active_day", _F64, "frequency"),
    *_counts("purchases", "cancels"),
    Column("cancel_rate", _F64, "cancels / purchases"),
    Column("revenue", _F64, "monetary value"),
    Column("ctr", _F64, "clicks / views"),
    Column("explicit_share", _F64, "share of explicit events"),
    Column("rating_mean", _F64, "mean rating given"),
    Column("nps", _F64, "Net Promoter Score of the user's answers, -100..100"),
    Column("satisfaction", _F64, "mean feedback_score of explicit events, -1..1"),
    Column("mean_item_score", _F64, "mean composite score over the user's items"),
    *(Column(f"{d}_share", _F64, f"share of events from {d.replace('_', ' ')} (device one-hot mean)")
      for d in ("desktop", "mobile", "tablet", "other_device", "unknown_device")),
    Column("country", _STR, "country of the latest event", categorical=True),
    Column("segment", _STR, "segment of the latest event", categorical=True),
    Column("segment_code", _I32, "its hashed code"),
    Column("top_category", _STR, "the most preferred category", categorical=True),
    Column("top_categories", pa.list_(_STR), "up to three categories by positive decayed feedback"),
)

ITEM_FEATURES = _modelled(
    "item_features", "Feature layer: one row per item.", _AS_OF_DATE,
    Column("item_id", _STR, "what", filtered=True),
    Column("category", _STR, "the item's category", categorical=True),
    *_counts("users", "users_30d"),
    Column("popularity_rank", _I64, "1 = most distinct users"),
    *_counts("events", "views", "clicks"),
    Column("ctr", _F64, "clicks / views"),
    *_counts("purchases", "cancels"),
    Column("cancel_rate", _F64, "cancels / purchases (the return rate)"),
    *_counts("ratings"),
    Column("rating_mean", _F64, "mean rating"),
    Column("mean_score", _F64, "mean composite score over its users"),
    Column("positive_share", _F64, "share of its users with a positive composite score"),
    Column("confidence_mass", _F64, "sum of its users' confidence mass"),
    Column("first_seen_at", _TS, "first event"),
    Column("last_seen_at", _TS, "last event"),
)

ENGAGEMENT = _modelled(
    "engagement", "Engagement layer: per hour and day, globally, by segment, by experiment variant and both.",
    _EVENT_DATE,
    Column("grain", _STR, "hour or day", categorical=True),
    Column("period_start", _TS, "start of the hour or day", filtered=True),
    Column("scope", _STR, "global, segment, variant or segment_variant", categorical=True),
    Column("segment", _STR, "'*' when rolled up, 'none' when missing", categorical=True),
    Column("experiment", _STR, "'*' when rolled up, 'none' when missing", categorical=True),
    Column("variant", _STR, "'*' when rolled up, 'none' when missing", categorical=True),
    *_counts("events", "users", "impressions", "clicks"),
    Column("ctr", _F64, "clicks / impressions (views)"),
    *_counts("purchases", "cancels"),
    Column("revenue", _F64, "sum of value x price of purchases"),
    *_counts("sessions"),
    Column("avg_session_seconds", _F64, "mean session duration of sessions that started in the period"),
    Column("bounce_rate", _F64, "share of those sessions with a single event"),
    Column("conversion_rate", _F64, "share of those sessions with a purchase"),
    *_counts("ratings"),
    Column("rating_mean", _F64, "mean rating"),
    *_counts("nps_responses"),
    Column("nps", _F64, "Net Promoter Score, -100..100"),
    Column("mean_feedback_score", _F64, "mean feedback_score"),
)

MODELLED_TABLES = (INTERACTIONS, FEEDBACK_DAILY, USER_FEEDBACK, USER_DAILY, USER_FEATURES, ITEM_FEATURES, ENGAGEMENT)

TABLES = CLEANER_TABLES + MODELLED_TABLES
# The training job's input channels (sagemaker/train.py reads SM_CHANNEL_<NAME>), each a lake table.
TRAINING_CHANNELS: dict[str, LakeTable] = {"feedback": FEEDBACK_DAILY, "users": USER_FEATURES}
