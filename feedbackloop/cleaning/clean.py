"""Cleaning rules over a batch of valid events, vectorized, with no I/O.

Input: the decoded batch (only events that passed the schema; duplicates marked as settled), the
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
import pyarrow as pa
import pyarrow.compute as pc

from feedbackloop.cleaning.decode import one_array
from feedbackloop.cleaning.stats import CleanerState, StreamStats
from feedbackloop.examination import EXAMINATION, ExaminationModel
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
    examination: ExaminationModel = EXAMINATION  # how much an exposure at a position counts (ADR 0016)


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


def explicit_score(value: np.ndarray, rule: registry.EventTypeRule) -> np.ndarray:
    """An explicit value on the common scale: 0 at the type's neutral point, negative only below it, and
    linear in the distance on each side, reaching +-1 at the scale's ends (times the polarity). A 3 of 5
    is 0, not a dislike; a 1 of 5 is -1 and a 2 of 5 -0.5."""
    neutral = float(rule.neutral)  # the registry requires it of explicit types
    distance = np.asarray(value, dtype=float) - neutral
    # an end that is the neutral point itself has no values beyond it: divide by 1 (the distance is 0)
    span = np.where(distance >= 0, (rule.max - neutral) or 1.0, (neutral - rule.min) or 1.0)
    return rule.polarity * distance / span


def clean_events(batch: pa.Table, state: CleanerState, now: datetime, rules: CleaningRules,
                 settled: np.ndarray | None = None) -> CleanResult:
    """`settled` marks rows decided before cleaning (duplicates): the result is that of the batch
    without them, without copying the batch to drop them."""
    n = batch.num_rows
    settled = np.zeros(n, dtype=bool) if settled is None else settled
    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    flagged = settled.copy()  # settled, or reason != "" (known without comparing strings)

    # 1. timestamp sanity, against when the API received the event
    received = batch["received_at"].to_numpy(zero_copy_only=False)
    event_time = batch["event_time"].to_numpy(zero_copy_only=False)
    future = event_time > received + np.timedelta64(rules.max_clock_skew)
    too_old = event_time < received - np.timedelta64(rules.max_event_age)
    reason[future] = QuarantineReason.FUTURE.value
    detail[future] = "timestamp is later than its arrival plus the allowed clock skew"
    reason[too_old] = QuarantineReason.TOO_OLD.value
    detail[too_old] = f"timestamp is older than {rules.max_event_age.days} days before its arrival"
    flagged |= future | too_old

    value = batch["value"].to_numpy(zero_copy_only=False).astype(float)  # a copy; null -> NaN
    value_imputed = np.isnan(value)
    # devices as indexes into the names of the batch's devices (-1: none), so that imputing and
    # counting them is integer work
    device_names, device = _indexes(batch["device"])
    device_imputed = device < 0
    minmax = np.full(n, np.nan)
    zscore = np.full(n, np.nan)
    score = np.zeros(n)
    confidence = np.zeros(n)
    learned = CleanerState()
    type_names, type_codes = _indexes(batch["event_type"])
    present = {name: code for code, name in enumerate(type_names)}
    kinds = [""] * len(type_names)  # feedback kind by type code

    for name, rule in registry.event_type_rules().items():
        if name not in present:
            continue
        rows = (type_codes == present[name]) & ~settled
        if not rows.any():  # all of its rows are settled: as if absent
            continue
        stats = state.values.get(name, StreamStats())
        warm = stats.n >= rules.min_samples

        # 2. missing values: the stream's median, or the documented fallback while it is cold
        missing = rows & value_imputed
        if missing.any():
            value[missing] = stats.quantile(0.5) if warm else rule.fallback
        mode = state.device_mode(name)
        no_device = rows & device_imputed
        if mode is not None:
            if mode not in device_names:
                device_names.append(mode)
            device[no_device] = device_names.index(mode)
        device_imputed[no_device] = mode is not None

        # 3. outliers, on the transformed value, only once the statistics are warm
        t = _transform(value, rule.kind)
        candidates = rows & ~flagged
        if warm and rule.outlier == "zscore" and _has_spread(stats.std, stats.mean):
            z = np.abs(t - stats.mean) / stats.std
            out = candidates & (z > rules.zscore_threshold)
            flagged |= out
            reason[out] = QuarantineReason.OUTLIER.value
            detail[out] = [f"{name} value {v:g}: |z| {zz:.1f} > {rules.zscore_threshold:g}"
                           for v, zz in zip(value[out], z[out], strict=True)]
        elif warm and rule.outlier == "iqr" and _has_spread(stats.quantile(0.75) - stats.quantile(0.25),
                                                            stats.quantile(0.5)):
            q1, q3 = (_transform(np.array(stats.quantile(q)), rule.kind) for q in (0.25, 0.75))
            low, high = q1 - rules.iqr_k * (q3 - q1), q3 + rules.iqr_k * (q3 - q1)
            out = candidates & ((t < low) | (t > high))
            flagged |= out
            reason[out] = QuarantineReason.OUTLIER.value
            detail[out] = [f"{name} value {v:g} outside the IQR fences (k={rules.iqr_k:g})" for v in value[out]]

        # 4. normalization onto a common scale
        if rule.kind == "explicit":
            minmax[rows] = (value[rows] - rule.min) / (rule.max - rule.min)
            score[rows] = explicit_score(value[rows], rule)
        else:
            top = _transform(np.array(stats.quantile(UPPER_QUANTILE) if warm else rule.max), rule.kind)
            minmax[rows] = np.clip(t[rows] / max(float(top), 1e-9), 0, 1)
            score[rows] = rule.polarity * minmax[rows]
        if warm and _has_spread(stats.std, stats.mean):
            zscore[rows] = (t[rows] - stats.mean) / stats.std
        confidence[rows] = rule.weight
        if rule.polarity == 0:  # an exposure: evidence only as far as the user plausibly examined it
            confidence[rows] *= rules.examination.weight(
                batch["position"].to_numpy(zero_copy_only=False).astype(float)[rows])
        kinds[present[name]] = rule.kind

        # 5. what this batch teaches the state: only values that passed
        passed = rows & ~flagged
        observed = passed & ~value_imputed
        learned.values[name] = StreamStats.of(value[observed], t[observed])
        seen_devices = device[passed & (device >= 0) & ~device_imputed]
        if len(seen_devices):
            learned.devices[name] = _value_counts(seen_devices, device_names)

    keep = ~flagged
    has_device = device >= 0
    device_column = pa.array(device_names, type=pa.string()).take(pa.array(device, mask=~has_device))
    # a device's ordinal in the schema's enum (0: unknown); the last entry, 0, is for no device (-1)
    device_code = np.array([DEVICES.index(d) + 1 if d in DEVICES else 0 for d in device_names] + [0], dtype=np.int32)
    # per row the kind of its type: "" for a type without rules, or no type
    type_of_row = pa.array(type_codes, mask=type_codes < 0)
    feedback_kind = pc.fill_null(pa.array(kinds, type=pa.string()).take(type_of_row), "")
    column = {name: batch[name] for name in (
        "event_id", "user_id", "item_id", "event_type", "event_time", "received_at", "schema_version",
        "session_id", "page", "experiment", "variant", "segment", "country", "category", "price",
        "request_id", "position", "propensity", "ranker", "record_index")}
    curated = {
        **column,
        "feedback_kind": feedback_kind,
        "value": value,
        "value_imputed": value_imputed,
        "value_minmax": pa.array(minmax, from_pandas=True),
        "value_zscore": pa.array(zscore, from_pandas=True),
        "feedback_score": score,
        "confidence": confidence,
        "processed_at": pa.array(np.full(n, np.datetime64(now.astimezone(UTC).replace(tzinfo=None), "us")),
                                 type=pa.timestamp("us", tz="UTC")),
        "device": device_column,
        "device_imputed": device_imputed & has_device,
        "device_code": device_code[device],
        "page_code": _codes(batch["page"], _hash_code),
        "segment_code": _codes(batch["segment"], _hash_code),
        "source": pa.repeat(pa.scalar("", pa.string()), n),  # the service knows the sources
        "personalized": pa.repeat(pa.scalar(True), n),  # the service knows the users' preferences
        CURATED_EVENTS.partition.name: _utc_dates(event_time),
    }
    table = pa.table({f.name: curated[f.name] for f in _CURATED_WITH_INDEX}, schema=_CURATED_WITH_INDEX)
    if not keep.all():
        table = table.filter(pa.array(keep))
    judged = flagged & ~settled
    quarantined = Quarantined(
        record_index=batch["record_index"].to_numpy()[judged],
        reason=reason[judged].tolist(),
        detail=detail[judged].tolist(),
    )
    return CleanResult(table, quarantined, learned, imputed=int((value_imputed & keep).sum()))


def _has_spread(spread: float, center: float) -> bool:
    """A sample whose values are (all but) equal has no scale to judge outliers or z-scores by: a
    click stream that is always 1 must not make a 2 an outlier. Rounding leaves constant samples a
    tiny spread, hence the relative tolerance."""
    return spread > 1e-9 * (1 + abs(center))


def _indexes(values: pa.ChunkedArray) -> tuple[list, np.ndarray]:
    """A column's distinct values in order of appearance, and per row the index of its value (-1
    for null), writable."""
    encoded = one_array(pc.dictionary_encode(values))
    return encoded.dictionary.to_pylist(), pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)


def _value_counts(indexes: np.ndarray, names: list) -> dict[str, int]:
    """How often each value occurs, the most frequent first and ties in order of first occurrence
    (the order of pandas' value_counts)."""
    distinct, first, counts = np.unique(indexes, return_index=True, return_counts=True)
    return {str(names[distinct[i]]): int(counts[i]) for i in np.lexsort((first, -counts))}


def _codes(values: pa.ChunkedArray, code_of) -> np.ndarray:
    """Encode a categorical column by its distinct values only (null -> 0)."""
    names, indexes = _indexes(values)
    codes = np.array([code_of(v) for v in names] + [0], dtype=np.int32)  # the last: null (-1)
    return codes[indexes]


def _utc_dates(times: np.ndarray) -> pa.DictionaryArray:
    """yyyy-mm-dd of each UTC instant, formatting each distinct day once (strftime is per row); kept
    dictionary-encoded, as the rows are grouped by it next."""
    days, index = np.unique(times.astype("datetime64[D]"), return_inverse=True)
    labels = pa.array(np.datetime_as_string(days).tolist(), type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), labels)


def _hash_code(value: str) -> int:
    """Stable feature hashing of a free-text category: the same code in every process."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HASH_BUCKETS + 1


_CURATED_WITH_INDEX = pa.schema(
    list(CURATED_EVENTS.arrow_schema)
    + [pa.field("record_index", pa.int64()),
       pa.field(CURATED_EVENTS.partition.name, pa.dictionary(pa.int32(), pa.string()))]
)
