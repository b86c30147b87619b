"""The cleaner over one 10,000-record Kinesis batch of real events (no network), in two entries.

- `ingest_cleaner_records_per_s`, the headline, runs the configuration the cleaner is deployed with:
  warm statistics (learned from the 10,000 records before the batch, so imputation, the outlier fences
  and z-scores are live) and the online store (the batch merged into the profiles its users already
  have, then saved), against a Powertools BatchProcessor with a per-record pydantic model that writes
  the same Parquet and merges each record into the same profiles, record by record, with the same
  normalization, weights and decay (`ingest_cleaner_one_cpu_records_per_s`: the same, pinned to one CPU).
- `ingest_decode_to_parquet_records_per_s`: cold statistics and no online store (decode, validate,
  de-duplicate, clean, encode Parquet), against the same BatchProcessor without the merge.
"""

from __future__ import annotations

import base64
import io
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TextIO

import pyarrow as pa
import pyarrow.parquet as pq
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from pydantic import BaseModel, ConfigDict, Field

from feedbackloop.adapters.memory import MemoryDedupStore, MemoryLake, MemoryOnlineStore, MemoryStateStore
from feedbackloop.bench import write_results
from feedbackloop.cleaning.clean import UPPER_QUANTILE, CleaningRules
from feedbackloop.cleaning.decode import records_from_kinesis_event
from feedbackloop.cleaning.service import CleanerService
from feedbackloop.cleaning.stats import CleanerState
from feedbackloop.datasets import online_retail
from feedbackloop.ingest import envelope
from feedbackloop.online import DECAY_PER_SECOND, MAX_ITEMS, ItemSignal, ProfileItems, UserProfile
from feedbackloop.schemas import registry
from feedbackloop.settings import LAKE_WRITE_THREADS

BATCH = 10_000
REPEATS = 25
RULES = CleaningRules(max_event_age=timedelta(days=400))


class _Context(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str | None = Field(default=None, max_length=128)
    device: Literal["desktop", "mobile", "tablet", "tv", "other"] | None = None
    page: str | None = Field(default=None, max_length=256)
    experiment: str | None = Field(default=None, max_length=128)
    variant: str | None = Field(default=None, max_length=64)
    segment: str | None = Field(default=None, max_length=64)
    country: str | None = Field(default=None, max_length=64)
    category: str | None = Field(default=None, max_length=64)
    price: float | None = Field(default=None, ge=0, le=10_000_000)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
    item_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    event_type: Literal["rating", "form_score", "nps", "click", "view", "dwell", "feature_use", "purchase", "cancel"]
    value: float | None = Field(default=None, ge=0, le=1e9)
    timestamp: datetime
    schema_version: str = Field(pattern=r"^1\.[0-9]+$")
    context: _Context | None = None


class _Envelope(BaseModel):
    received_at: datetime
    event: _Event


def kinesis_batches(size: int = BATCH, count: int = 1) -> list[dict]:
    """`count` consecutive Kinesis batches of `size` real events (the last Online Retail lines with a
    customer, the newest last), enveloped as the ingest API puts them."""
    frame = online_retail.load()
    frame = frame[frame["CustomerID"].notna() & (frame["Quantity"] > 0)].tail(size * count)
    now = datetime.now(UTC)
    events = online_retail.to_events(frame, shift_to=now - timedelta(hours=1))
    records = []
    for i, event in enumerate(events):
        data = envelope(event, now)
        records.append({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": event["user_id"],
                        "sequenceNumber": str(49_000_000 + i), "data": base64.b64encode(data).decode(),
                        "approximateArrivalTimestamp": now.timestamp()},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventName": "aws:kinesis:record",
            "eventID": f"shardId-000000000000:{49_000_000 + i}", "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/bench",
        })
    return [{"Records": records[start:start + size]} for start in range(0, len(records), size)]


def kinesis_batch(size: int = BATCH) -> dict:
    return kinesis_batches(size)[0]


@dataclass(frozen=True)
class Warm:
    """What the stores hold when the batch arrives, as in a running system: the statistics and the online
    profiles the cleaner learned from the batches before it."""

    state: CleanerState
    profiles: dict[str, dict]  # MemoryOnlineStore.items

    @classmethod
    def after(cls, *events: dict) -> Warm:
        state, online = MemoryStateStore(), MemoryOnlineStore()
        cleaner = CleanerService(MemoryDedupStore(), state, MemoryLake(), RULES, lambda: datetime.now(UTC),
                                 online=online)
        for event in events:
            cleaner.clean(records_from_kinesis_event(event))
        return cls(state.state, online.items)

    def stores(self) -> tuple[MemoryStateStore, MemoryOnlineStore]:
        """Stores holding it, fresh for each run (a save replaces a profile's document, never edits it)."""
        state, online = MemoryStateStore(), MemoryOnlineStore()
        state.state = self.state
        online.items = {user: dict(item) for user, item in self.profiles.items()}
        return state, online


@dataclass(frozen=True)
class Run:
    rows: int  # written to Parquet
    online: MemoryOnlineStore | None  # the profiles after the batch
    detail: dict


def run_cleaner(event: dict, warm: Warm | None = None) -> Run:
    """The cleaner as deployed (`warm`: statistics and online store) or decode-to-Parquet only (None)."""
    state, online = warm.stores() if warm is not None else (MemoryStateStore(), None)
    service = CleanerService(MemoryDedupStore(), state, MemoryLake(), RULES, lambda: datetime.now(UTC),
                             online=online, write_threads=LAKE_WRITE_THREADS)
    outcome = service.clean(records_from_kinesis_event(event))
    return Run(outcome.clean, online, {"clean": outcome.clean, "duplicates": outcome.duplicates,
                                       "quarantined": dict(outcome.quarantined), "imputed": outcome.imputed,
                                       "profiles_updated": outcome.profiles_updated})


def run_baseline(event: dict, warm: Warm | None = None) -> Run:
    """Powertools' BatchProcessor, a pydantic model per record, one Parquet file; with `warm`, each
    record then merged into its user's profile, record by record."""
    rows: list[dict] = []
    processor = BatchProcessor(event_type=EventType.KinesisDataStreams)

    def record_handler(record) -> None:
        rows.append(_Envelope.model_validate_json(base64.b64decode(record.kinesis.data)).event.model_dump())

    process_partial_response(event=event, record_handler=record_handler, processor=processor, context=None)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, compression="snappy")
    if warm is None:
        return Run(len(rows), None, {"written": len(rows)})
    state, online = warm.stores()
    merged = merge_per_record(online, state.load(), rows, datetime.now(UTC).timestamp())
    return Run(len(rows), online, {"written": len(rows), "profiles_updated": merged})


def merge_per_record(online: MemoryOnlineStore, state: CleanerState, rows: list[dict], now: float) -> int:
    """The online merge a record handler would do: load the batch's users' profiles, then per record (in
    time order) its feedback score and confidence by the event type's rule and the stream's statistics
    (as the cleaner normalizes), decayed and added to the user's item; save the profiles. Returns the
    profiles written."""
    rules = registry.event_type_rules()
    warm = {name: stats for name, stats in state.values.items() if stats.n >= RULES.min_samples}
    tops = {name: stats.quantile(UPPER_QUANTILE) for name, stats in warm.items()}
    profiles = online.load(row["user_id"] for row in rows)
    signals: dict[str, dict[str, ItemSignal]] = {}
    for user, profile in profiles.items():
        if profile.personalization:
            factor, c = profile.decayed_to(now), profile.columns
            signals[user] = {item: ItemSignal(score * factor, weight * factor, positive, negative, kind, at,
                                              ignored * factor)
                             for item, score, weight, positive, negative, kind, at, ignored in zip(
                                 c.item_id, c.score_mass, c.weight_mass, c.last_positive, c.last_negative,
                                 c.last_type, c.last_at, c.ignored_mass, strict=True)}
    for row in sorted(rows, key=lambda r: r["timestamp"]):
        items = signals.get(row["user_id"])
        if items is None:
            continue
        rule, t = rules[row["event_type"]], row["timestamp"].timestamp()
        value = row["value"]
        if value is None:
            value = warm[row["event_type"]].quantile(0.5) if row["event_type"] in warm else rule.fallback
        if rule.kind == "explicit":
            score = rule.polarity * (2 * (value - rule.min) / (rule.max - rule.min) - 1)
        else:
            top = math.log1p(tops.get(row["event_type"], rule.max))
            score = rule.polarity * min(max(math.log1p(value) / max(top, 1e-9), 0.0), 1.0)
        contribution = rule.weight * math.exp(-DECAY_PER_SECOND * max(0.0, now - t))
        signal = items.get(row["item_id"])
        if signal is None:
            signal = items[row["item_id"]] = ItemSignal(0.0, 0.0, None, None, row["event_type"], t)
        signal.score_mass += score * contribution
        signal.weight_mass += contribution
        if rule.polarity == 0:  # an exposure: passed over since the latest positive
            signal.ignored_mass += contribution
        if score > 0:
            signal.last_positive = max(signal.last_positive or t, t)
            signal.ignored_mass = 0.0
        elif score < 0:
            signal.last_negative = max(signal.last_negative or t, t)
        if t >= signal.last_at:
            signal.last_type, signal.last_at = row["event_type"], t
    saved = []
    for user, items in signals.items():
        if len(items) > MAX_ITEMS:
            items = dict(sorted(items.items(), key=lambda pair: pair[1].weight_mass, reverse=True)[:MAX_ITEMS])
        values = list(items.values())
        columns = ProfileItems(list(items), [s.score_mass for s in values], [s.weight_mass for s in values],
                               [s.last_positive for s in values], [s.last_negative for s in values],
                               [s.last_type for s in values], [s.last_at for s in values],
                               [s.ignored_mass for s in values])
        saved.append(UserProfile(user, columns, now, version=profiles[user].version))
    return len(saved) - len(online.save(saved))


@dataclass(frozen=True)
class _Comparison:
    """The cleaner and the baseline over the same batch, run in pairs back to back."""

    records: int
    cleaner_seconds: list[float]
    baseline_seconds: list[float]
    cleaner: dict  # what one run did
    baseline: dict

    @property
    def cleaner_rate(self) -> float:
        return self.records / statistics.median(self.cleaner_seconds)

    @property
    def baseline_rate(self) -> float:
        return self.records / statistics.median(self.baseline_seconds)

    @property
    def pair_ratios(self) -> list[float]:
        """Per pair, how many times faster the cleaner was: a shared machine that slows down for a
        while slows both runs of a pair alike."""
        return sorted(b / c for c, b in zip(self.cleaner_seconds, self.baseline_seconds, strict=True))

    def entry(self, name: str, baseline: str) -> dict:
        """The ratio is that of the two medians; the pairs' own ratios, their median and quartiles, show
        how much a noisy machine moved it."""
        ratios = self.pair_ratios
        quartiles = statistics.quantiles(ratios, n=4)
        return {
            "name": name,
            "unit": "records/s",
            "value": round(self.cleaner_rate, 1),
            "baseline": {"name": baseline, "value": round(self.baseline_rate, 1)},
            "ratio": round(self.cleaner_rate / self.baseline_rate, 2),
            "pair_ratio_median": round(statistics.median(ratios), 2),
            "pair_ratio_quartiles": [round(quartiles[0], 2), round(quartiles[2], 2)],
            "better": "higher",
        }


def _compare(event: dict, cleaner: Callable[[dict], Run], baseline: Callable[[dict], Run]) -> _Comparison:
    """The cleaner and the baseline, run alternately so that a noisy, shared machine slows both alike."""
    cleaner_run, baseline_run = cleaner(event), baseline(event)  # warm-up
    cleaner_times, baseline_times = [], []
    for _ in range(REPEATS):
        for function, times in ((cleaner, cleaner_times), (baseline, baseline_times)):
            started = time.perf_counter()
            function(event)
            times.append(time.perf_counter() - started)
    return _Comparison(len(event["Records"]), cleaner_times, baseline_times, cleaner_run.detail, baseline_run.detail)


@contextmanager
def _one_cpu() -> Iterator[bool]:
    """The process held to one CPU: Arrow's pool to one thread and, where the OS lets a process pin its
    threads (Linux), every thread to one core. Yields whether the threads were pinned."""
    threads = pa.cpu_count()
    pa.set_cpu_count(1)
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpus is not None:
        _pin({min(cpus)})  # threads started later inherit it
    try:
        yield cpus is not None
    finally:
        pa.set_cpu_count(threads)
        if cpus is not None:
            _pin(cpus)


def _pin(cpus: set[int]) -> None:
    for task in os.listdir("/proc/self/task"):
        with suppress(ProcessLookupError):  # a thread that has ended since
            os.sched_setaffinity(int(task), cpus)


def run(json_path: str, console: TextIO) -> int:
    warm_event, event = kinesis_batches(BATCH, 2)
    warm = Warm.after(warm_event)
    deployed = (lambda e: run_cleaner(e, warm), lambda e: run_baseline(e, warm))
    on_all = _compare(event, *deployed)
    # Arrow parses JSON blocks, and the cleaner encodes a batch's Parquet objects, on threads; a Lambda
    # function below 1,769 MB (the cleaner has 1,024) has less than one vCPU, so the same comparison is
    # run on one CPU too
    with _one_cpu() as pinned:
        on_one = _compare(event, *deployed)
    decode = _compare(event, run_cleaner, run_baseline)
    merging, plain = ("powertools_batchprocessor_pydantic_merge_records_per_s",
                      "powertools_batchprocessor_pydantic_records_per_s")
    benchmarks = [on_all.entry("ingest_cleaner_records_per_s", merging),
                  on_one.entry("ingest_cleaner_one_cpu_records_per_s", merging),
                  decode.entry("ingest_decode_to_parquet_records_per_s", plain)]
    write_results(json_path, benchmarks, console, batch_records=len(event["Records"]), repeats=REPEATS,
                  deployed={"cleaner": on_all.cleaner, "baseline": on_all.baseline,
                            "warm_profiles": len(warm.profiles),
                            "warm_statistics": {name: stats.n for name, stats in warm.state.values.items()}},
                  decode_to_parquet={"cleaner": decode.cleaner, "baseline": decode.baseline}, target_ratio=3.0,
                  cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                  one_cpu_pinned=pinned,
                  protocol=f"{len(event['Records']):,} records, {REPEATS} pairs run back to back after a warm-up "
                           "pair; the ratio is that of the two medians")
    return 0
