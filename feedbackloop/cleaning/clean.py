"""Cleaning rules over a batch of valid events, vectorized, with no I/O.

Input: the decoded batch (only events that passed the schema and were not duplicates), the
statistics learned from the stream so far, and the time. Output: curated rows, quarantined rows
with a typed reason, and the statistics of what passed, to merge into the state.

Statistics are a snapshot taken before the batch: every record of a batch is judged by the same
numbers, and a burst of outliers cannot drag the fences along with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedbackloop.cleaning.stats import CleanerState, StreamStats
from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.names import QuarantineReason
from feedbackloop.schemas import registry

HASH_BUCKETS = 1023  # page and segment codes: 1..1023, 0 for none
DEVICES = tuple(v for v in registry.event_schema()["properties"]["context"]["properties"]["device"]["enum"] if v)
#: quantile of the stream used as the top of an implicit event's min-max range
UPPER_QUANTILE = 0.99


@dataclass(frozen=True)
class CleaningRules:
    """The knobs of CleanerSettings that the pure core needs."""

    max_event_age: timedelta = timedelta(days=30)
    max_clock_skew: timedelta = timedelta(minutes=5)
    min_samples: int = 50
    zscore_threshold: float = 4.0
    iqr_k: float = 3.0


@dataclass
class Quarantined:
    record_index: np.ndarray
    reason: list[str]
    detail: list[str]


@dataclass
class CleanResult:
    curated: pa.Table  # CURATED_EVENTS.arrow_schema plus record_index and the partition column
    quarantined: Quarantined
    learned: CleanerState = field(default_factory=CleanerState)
    imputed: int = 0


def _transform(values: np.ndarray, kind: str) -> np.ndarray:
    """Implicit signals are heavy-tailed counts and durations: judge them on a log scale."""
    return np.log1p(values) if kind == "implicit" else values


def clean_events(batch: pa.Table, state: CleanerState, now: datetime, rules: CleaningRules) -> CleanResult:
    n = batch.num_rows
    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)

    # 1. timestamp sanity, against when the API received the event
    received = batch["received_at"].to_numpy(zero_copy_only=False)
    event_time = batch["event_time"].to_numpy(zero_copy_only=False)
    future = event_time > received + np.timedelta64(rules.max_clock_skew)
    too_old = event_time < received - np.timedelta64(rules.max_event_age)
    reason[future] = QuarantineReason.FUTURE.value
    detail[future] = "timestamp is later than its arrival plus the allowed clock skew"
    reason[too_old] = QuarantineReason.TOO_OLD.value
    detail[too_old] = f"timestamp is older than {rules.max_event_age.days} days before its arrival"

    value = batch["value"].to_numpy(zero_copy_only=False).astype(float)  # a copy; null -> NaN
    value_imputed = np.isnan(value)
    device = batch["device"].to_numpy(zero_copy_only=False).astype(object)
    device_imputed = pd.isna(device)
    minmax = np.full(n, np.nan)
    zscore = np.full(n, np.nan)
    score = np.zeros(n)
    confidence = np.zeros(n)
    kind = np.full(n, "", dtype=object)
    learned = CleanerState()
    encoded = pc.dictionary_encode(batch["event_type"]).combine_chunks()
    type_codes = encoded.indices.to_numpy(zero_copy_only=False)
    present = {name: code for code, name in enumerate(encoded.dictionary.to_pylist())}

    for name, rule in registry.event_type_rules().items():
        if name not in present:
            continue
        rows = type_codes == present[name]
        stats = state.values.get(name, StreamStats())
        warm = stats.n >= rules.min_samples

        # 2. missing values: the stream's median, or the documented fallback while it is cold
        missing = rows & value_imputed
        if missing.any():
            value[missing] = stats.quantile(0.5) if warm else rule.fallback
        mode = state.device_mode(name)
        no_device = rows & device_imputed
        if mode is not None:
            device[no_device] = mode
        device_imputed[no_device] = mode is not None

        # 3. outliers, on the transformed value, only once the statistics are warm
        t = _transform(value, rule.kind)
        candidates = rows & (reason == "")
        if warm and rule.outlier == "zscore" and _has_spread(stats.std, stats.mean):
            z = np.abs(t - stats.mean) / stats.std
            out = candidates & (z > rules.zscore_threshold)
            reason[out] = QuarantineReason.OUTLIER.value
            detail[out] = [f"{name} value {v:g}: |z| {zz:.1f} > {rules.zscore_threshold:g}"
                           for v, zz in zip(value[out], z[out], strict=True)]
        elif warm and rule.outlier == "iqr" and _has_spread(stats.quantile(0.75) - stats.quantile(0.25),
                                                            stats.quantile(0.5)):
            q1, q3 = (_transform(np.array(stats.quantile(q)), rule.kind) for q in (0.25, 0.75))
            low, high = q1 - rules.iqr_k * (q3 - q1), q3 + rules.iqr_k * (q3 - q1)
            out = candidates & ((t < low) | (t > high))
            reason[out] = QuarantineReason.OUTLIER.value
            detail[out] = [f"{name} value {v:g} outside the IQR fences (k={rules.iqr_k:g})" for v in value[out]]

        # 4. normalization onto a common scale
        if rule.kind == "explicit":
            minmax[rows] = (value[rows] - rule.min) / (rule.max - rule.min)
            score[rows] = rule.polarity * (2 * minmax[rows] - 1)
        else:
            top = _transform(np.array(stats.quantile(UPPER_QUANTILE) if warm else rule.max), rule.kind)
            minmax[rows] = np.clip(t[rows] / max(float(top), 1e-9), 0, 1)
            score[rows] = rule.polarity * minmax[rows]
        if warm and _has_spread(stats.std, stats.mean):
            zscore[rows] = (t[rows] - stats.mean) / stats.std
        confidence[rows] = rule.weight
        kind[rows] = rule.kind

        # 5. what this batch teaches the state: only values that passed
        passed = rows & (reason == "")
        observed = passed & ~value_imputed
        learned.values[name] = StreamStats.of(value[observed], t[observed])
        seen_devices = pd.Series(device[passed & ~device_imputed]).dropna().value_counts()
        if len(seen_devices):
            learned.devices[name] = {str(k): int(v) for k, v in seen_devices.items()}

    keep = reason == ""
    device_code = _codes(pa.array(device, type=pa.string(), from_pandas=True),
                         lambda d: DEVICES.index(d) + 1 if d in DEVICES else 0)
    column = {name: batch[name] for name in (
        "event_id", "user_id", "item_id", "event_type", "event_time", "received_at", "schema_version",
        "session_id", "page", "experiment", "variant", "segment", "country", "category", "price",
        "record_index")}
    curated = {
        **column,
        "feedback_kind": pa.array(kind, type=pa.string()),
        "value": value,
        "value_imputed": value_imputed,
        "value_minmax": pa.array(minmax, from_pandas=True),
        "value_zscore": pa.array(zscore, from_pandas=True),
        "feedback_score": score,
        "confidence": confidence,
        "processed_at": pa.array(np.full(n, np.datetime64(now.astimezone(UTC).replace(tzinfo=None), "us")),
                                 type=pa.timestamp("us", tz="UTC")),
        "device": pa.array(device, type=pa.string(), from_pandas=True),
        "device_imputed": device_imputed & ~pd.isna(device),
        "device_code": device_code,
        "page_code": _codes(batch["page"], _hash_code),
        "segment_code": _codes(batch["segment"], _hash_code),
        "source": pa.array(np.full(n, ""), type=pa.string()),
        CURATED_EVENTS.partition.name: _utc_dates(event_time),
    }
    table = pa.table({f.name: curated[f.name] for f in _CURATED_WITH_INDEX}, schema=_CURATED_WITH_INDEX)
    table = table.filter(pa.array(keep))
    quarantined = Quarantined(
        record_index=batch["record_index"].to_numpy()[~keep],
        reason=reason[~keep].tolist(),
        detail=detail[~keep].tolist(),
    )
    return CleanResult(table, quarantined, learned, imputed=int((value_imputed & keep).sum()))


def _has_spread(spread: float, center: float) -> bool:
    """A sample whose values are (all but) equal has no scale to judge outliers or z-scores by: a
    click stream that is always 1 must not make a 2 an outlier. Rounding leaves constant samples a
    tiny spread, hence the relative tolerance."""
    return spread > 1e-9 * (1 + abs(center))


def _codes(values: pa.Array | pa.ChunkedArray, code_of) -> np.ndarray:
    """Encode a categorical column by its distinct values only (null -> 0)."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    table = np.array([code_of(v) for v in encoded.dictionary.to_pylist()] + [0], dtype=np.int32)
    indices = pc.fill_null(encoded.indices, len(table) - 1).to_numpy(zero_copy_only=False)
    return table[indices]


def _utc_dates(times: np.ndarray) -> pa.Array:
    """yyyy-mm-dd of each UTC instant, formatting each distinct day once (strftime is per row)."""
    days, index = np.unique(times.astype("datetime64[D]"), return_inverse=True)
    labels = pa.array(np.datetime_as_string(days).tolist(), type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), labels).cast(pa.string())


def _hash_code(value: str) -> int:
    """Stable feature hashing of a free-text category: the same code in every process."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HASH_BUCKETS + 1


_CURATED_WITH_INDEX = pa.schema(
    list(CURATED_EVENTS.arrow_schema)
    + [pa.field("record_index", pa.int64()), pa.field(CURATED_EVENTS.partition.name, pa.string())]
)
