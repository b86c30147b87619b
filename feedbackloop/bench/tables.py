"""Build time of every modelled table (all table jobs, DuckDB over a directory lake) on the shipped
Online Retail data, cleaned in process, and on a 10x enlargement of it (ten copies of every user,
each with their own events), reported with the growth ratio: linear scaling gives 10. In the same
run, one new day built incrementally against a full rebuild of the 1x lake."""

from __future__ import annotations

import io
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedbackloop.adapters.memory import MemoryDedupStore, MemoryLake, MemoryStateStore
from feedbackloop.bench import write_results
from feedbackloop.cleaning.clean import CleaningRules
from feedbackloop.cleaning.decode import SourceRecords
from feedbackloop.cleaning.service import CleanerService
from feedbackloop.datasets import online_retail
from feedbackloop.ingest import envelope
from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.local.lake_reader import LakeLocation
from feedbackloop.local.sql_engine import DuckDBEngine, write_rows
from glue_jobs.build_tables import JOB_NAMES, run_job

COPIES = 10
BATCH = 10_000
ARRIVAL = datetime(2026, 11, 1, tzinfo=UTC)  # when the data "arrived"; the last invoice an hour before


def curated_events(frame: pd.DataFrame, arrival: datetime, shift_to: datetime | None = None,
                   max_event_age: timedelta = timedelta(days=3650)) -> tuple[pa.Table, dict[str, int]]:
    """`frame`'s invoice lines as events (`online_retail.to_events`, their times kept, or shifted so the
    last falls at `shift_to`) through the real cleaner with in-memory stores, in stream-sized batches,
    arriving (and processed) at `arrival`. The curated rows with their event_date, and the cleaner's
    counts. """
    return clean_events(online_retail.to_events(frame, shift_to=shift_to), arrival, max_event_age)


def clean_events(events: list[dict], arrival: datetime, max_event_age: timedelta = timedelta(days=3650)
                 ) -> tuple[pa.Table, dict[str, int]]:
    """Events through the real cleaner with in-memory stores, in stream-sized batches, arriving (and
    processed) at `arrival`: the curated rows with their event_date, and the cleaner's counts."""
    lake = MemoryLake()
    cleaner = CleanerService(MemoryDedupStore(), MemoryStateStore(), lake, CleaningRules(max_event_age=max_event_age),
                             lambda: arrival)
    stamp = np.datetime64(arrival.astimezone(UTC).replace(tzinfo=None), "us")
    counts: Counter = Counter()
    for start in range(0, len(events), BATCH):
        chunk = events[start:start + BATCH]
        sources = [f"bench:{start + i}" for i in range(len(chunk))]
        outcome = cleaner.clean(SourceRecords([envelope(e, arrival) for e in chunk], sources,
                                              np.full(len(chunk), stamp)))
        counts.update(records=outcome.records_in, clean=outcome.clean, duplicates=outcome.duplicates)
        counts.update({f"quarantined_{reason}": n for reason, n in outcome.quarantined.items()})
    prefix = CURATED_EVENTS.object_key("", "").rsplit("=", 1)[0] + "="
    parts = []
    for key, data in lake.objects.items():
        if key.startswith(prefix):
            rows = pq.read_table(io.BytesIO(data))
            date = key[len(prefix):].split("/", 1)[0]
            parts.append(rows.append_column(CURATED_EVENTS.partition.name, pa.array([date] * rows.num_rows)))
    return pa.concat_tables(parts), dict(counts)


def curated_online_retail(now: datetime = ARRIVAL, lines: int | None = None) -> tuple[pa.Table, dict[str, int]]:
    """The curated table the demo builds, in seconds: every invoice line with a customer (or the last
    `lines` of them), shifted to end an hour before `now`. Rows carry their event_date. With the
    cleaner's counts."""
    frame = online_retail.load()
    frame = frame[frame["CustomerID"].notna()]
    if lines is not None:
        frame = frame.tail(lines)
    return curated_events(frame, now, shift_to=now - timedelta(hours=1), max_event_age=timedelta(days=400))


def _copy(rows: pa.Table, k: int) -> pa.Table:
    """Copy k of the data: other users (and their sessions and event ids), the same items."""
    suffix = f"~{k}"
    for name in ("event_id", "user_id", "session_id"):
        column = rows[name]
        rows = rows.set_column(rows.schema.get_field_index(name), name,
                               pc.if_else(pc.is_null(column), column, pc.binary_join_element_wise(column, suffix, "")))
    return rows


def _build(root: Path, now: datetime) -> dict[str, float]:
    engine = DuckDBEngine(LakeLocation.directory(root))
    seconds = {}
    for name in JOB_NAMES:
        started = time.perf_counter()
        run_job(name, engine, now=now, settle=timedelta(0))
        seconds[name] = time.perf_counter() - started
    engine.close()
    return seconds


def _lake(root: Path, curated: pa.Table, copies: int) -> int:
    location = LakeLocation.directory(root)
    for k in range(copies):
        write_rows(location, CURATED_EVENTS, _copy(curated, k) if k else curated, f"copy-{k}.parquet")
    return curated.num_rows * copies


def _rows(root: Path) -> int:
    """Curated rows in the directory lake, read back."""
    folder = Path(LakeLocation.directory(root).folder(CURATED_EVENTS))
    return sum(pq.ParquetFile(path).metadata.num_rows for path in folder.rglob("*.parquet"))


def _next_day(curated: pa.Table) -> pa.Table:
    """The last day's events again, a day later, arriving a day later: one new partition."""
    last = pc.max(curated["event_date"]).as_py()
    day = curated.filter(pc.equal(curated["event_date"], last))
    shift = pa.scalar(timedelta(days=1), pa.duration("us"))
    for name in ("event_time", "received_at", "processed_at"):
        day = day.set_column(day.schema.get_field_index(name), name, pc.add(day[name], shift))
    next_date = (datetime.fromisoformat(last) + timedelta(days=1)).strftime("%Y-%m-%d")
    day = day.set_column(day.schema.get_field_index("event_date"), "event_date", pa.array([next_date] * day.num_rows))
    return _copy(day, 99)


def _entry(name: str, unit: str, value: float, baseline_name: str, baseline: float, better: str) -> dict:
    return {"name": name, "unit": unit, "value": round(value, 3),
            "baseline": {"name": baseline_name, "value": round(baseline, 3)},
            "ratio": round(value / baseline, 2), "better": better}


def run(json_path: str, console: TextIO, lines: int | None = None, copies: int = COPIES) -> int:
    """`lines`: only the last lines of the data (a smoke test's size); `copies`: the enlargement."""
    console.write("cleaning Online Retail in process for the curated table...\n")
    curated, cleaned = curated_online_retail(lines=lines)
    now = ARRIVAL + timedelta(hours=1)
    with tempfile.TemporaryDirectory(prefix="feedbackloop-bench-") as folder:
        root = Path(folder)
        rows_1x = _lake(root / "1x", curated, 1)
        _lake(root / "warm-up", curated.slice(0, min(50_000, curated.num_rows // 2)), 1)  # first-query costs
        _build(root / "warm-up", now)
        console.write(f"building all tables on 1x ({rows_1x:,} events)...\n")
        one = _build(root / "1x", now)
        rows_10x = _lake(root / "10x", curated, copies)
        rows_read = {name: _rows(root / name) for name in ("1x", "10x")}  # what the table jobs read back
        console.write(f"building all tables on {copies}x ({rows_10x:,} events)...\n")
        ten = _build(root / "10x", now)

        console.write("one new day, incremental, against a full rebuild...\n")
        write_rows(LakeLocation.directory(root / "1x"), CURATED_EVENTS, _next_day(curated), "next-day.parquet")
        later = now + timedelta(days=1)
        incremental = sum(_build(root / "1x", later).values())
        full_root = root / "1x-full"
        _lake(full_root, curated, 1)
        write_rows(LakeLocation.directory(full_root), CURATED_EVENTS, _next_day(curated), "next-day.parquet")
        full = sum(_build(full_root, later).values())

    t1, t10 = sum(one.values()), sum(ten.values())
    benchmarks = [
        _entry("tables_build_seconds_10x_data", "s", t10, "tables_build_seconds_1x_data", t1, "lower"),
        _entry("tables_build_events_per_s_10x_data", "events/s", rows_10x / t10, "tables_build_events_per_s_1x_data",
               rows_1x / t1, "higher"),
        _entry("tables_incremental_new_day_seconds", "s", incremental, "tables_full_rebuild_seconds", full, "lower"),
    ]
    write_results(json_path, benchmarks, console, events={"1x": rows_1x, "10x": rows_10x}, copies=copies,
                  curated_rows_read=rows_read, cleaned=cleaned,
                  protocol=f"every table job (DuckDB over a directory lake) on the shipped data cleaned in process "
                           f"({rows_1x:,} curated events), then on {copies} copies of every user; one new day "
                           "built incrementally against a full rebuild of the 1x lake with that day",
                  growth_ratio=round(t10 / t1, 2), job_seconds={"1x": {k: round(v, 2) for k, v in one.items()},
                                                               "10x": {k: round(v, 2) for k, v in ten.items()}},
                  engine="duckdb over a directory lake (the local engine without the S3 stand-in's overhead)")
    return 0
