"""The cleaner over one 10,000-record Kinesis batch (decode, validate, clean, encode Parquet; no
network), against a Powertools BatchProcessor with a per-record pydantic model that only
validates and writes Parquet."""

from __future__ import annotations

import base64
import io
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TextIO

import pyarrow as pa
import pyarrow.parquet as pq
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from pydantic import BaseModel, ConfigDict, Field

from feedbackloop.adapters.memory import MemoryDedupStore, MemoryLake, MemoryStateStore
from feedbackloop.bench import write_results
from feedbackloop.cleaning.clean import CleaningRules
from feedbackloop.cleaning.decode import records_from_kinesis_event
from feedbackloop.cleaning.service import CleanerService
from feedbackloop.datasets import online_retail
from feedbackloop.ingest import envelope
from feedbackloop.settings import LAKE_WRITE_THREADS

BATCH = 10_000
REPEATS = 25


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


def kinesis_batch(size: int = BATCH) -> dict:
    """Real events (Online Retail lines with a customer), enveloped as the ingest API puts them."""
    frame = online_retail.load()
    frame = frame[frame["CustomerID"].notna() & (frame["Quantity"] > 0)].tail(size)
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
    return {"Records": records}


def run_cleaner(event: dict) -> int:
    service = CleanerService(MemoryDedupStore(), MemoryStateStore(), MemoryLake(),
                             CleaningRules(max_event_age=timedelta(days=400)), lambda: datetime.now(UTC),
                             write_threads=LAKE_WRITE_THREADS)
    outcome = service.clean(records_from_kinesis_event(event))
    return outcome.clean


def run_baseline(event: dict) -> int:
    rows: list[dict] = []
    processor = BatchProcessor(event_type=EventType.KinesisDataStreams)

    def record_handler(record) -> None:
        rows.append(_Envelope.model_validate_json(base64.b64decode(record.kinesis.data)).event.model_dump())

    process_partial_response(event=event, record_handler=record_handler, processor=processor, context=None)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, compression="snappy")
    return len(rows)


@dataclass(frozen=True)
class _Comparison:
    """The cleaner and the baseline over the same batch, run in pairs back to back."""

    records: int
    cleaner_seconds: list[float]
    baseline_seconds: list[float]
    cleaner_rows: int
    baseline_rows: int

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

    def entry(self, name: str) -> dict:
        """The ratio is that of the two medians; the pairs' own ratios, their median and quartiles, show
        how much a noisy machine moved it."""
        ratios = self.pair_ratios
        quartiles = statistics.quantiles(ratios, n=4)
        return {
            "name": name,
            "unit": "records/s",
            "value": round(self.cleaner_rate, 1),
            "baseline": {"name": "powertools_batchprocessor_pydantic_records_per_s",
                         "value": round(self.baseline_rate, 1)},
            "ratio": round(self.cleaner_rate / self.baseline_rate, 2),
            "pair_ratio_median": round(statistics.median(ratios), 2),
            "pair_ratio_quartiles": [round(quartiles[0], 2), round(quartiles[2], 2)],
            "better": "higher",
        }


def _compare(event: dict) -> _Comparison:
    """The cleaner and the baseline, run alternately so that a noisy, shared machine slows both alike."""
    cleaner_rows, baseline_rows = run_cleaner(event), run_baseline(event)  # warm-up
    cleaner_times, baseline_times = [], []
    for _ in range(REPEATS):
        for function, times in ((run_cleaner, cleaner_times), (run_baseline, baseline_times)):
            started = time.perf_counter()
            function(event)
            times.append(time.perf_counter() - started)
    return _Comparison(len(event["Records"]), cleaner_times, baseline_times, cleaner_rows, baseline_rows)


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
    event = kinesis_batch()
    on_all = _compare(event)
    # Arrow parses JSON blocks, and the cleaner encodes a batch's Parquet objects, on threads; a Lambda
    # function below 1,769 MB (the cleaner has 1,024) has less than one vCPU, so the same comparison is
    # run on one CPU too
    with _one_cpu() as pinned:
        on_one = _compare(event)
    benchmarks = [on_all.entry("ingest_cleaner_records_per_s"), on_one.entry("ingest_cleaner_one_cpu_records_per_s")]
    write_results(json_path, benchmarks, console, batch_records=len(event["Records"]), repeats=REPEATS,
                  rows_written={"cleaner": on_all.cleaner_rows, "baseline": on_all.baseline_rows}, target_ratio=3.0,
                  cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                  one_cpu_pinned=pinned)
    return 0
