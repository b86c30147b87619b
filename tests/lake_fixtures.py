"""Fixtures over a directory lake: curated events as the cleaner writes them, and the table jobs run
on DuckDB over them (importable from every test: pytest puts tests/ on the path)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.local.lake_reader import LakeLocation, connect, schema
from feedbackloop.local.sql_engine import DuckDBEngine, write_rows
from glue_jobs.build_tables import HALF_LIFE_DAYS, JOB_NAMES, run_job

AS_OF = "2026-03-31"
AS_OF_END = datetime(2026, 4, 1, tzinfo=UTC)  # decay reference: the end of the snapshot date
NOW = AS_OF_END - timedelta(minutes=1)  # settle 0: rows processed up to now are built
_ids = itertools.count()


def event(user: str, item: str, event_type: str, at: datetime, score: float, confidence: float, *,
          value: float = 1.0, processed_at: datetime | None = None, **context) -> dict:
    kind = "explicit" if event_type in {"rating", "form_score", "nps"} else "implicit"
    row = {c.name: None for c in CURATED_EVENTS.columns} | {
        "event_id": f"e{next(_ids)}", "user_id": user, "item_id": item, "event_type": event_type,
        "feedback_kind": kind, "value": value, "value_imputed": False, "feedback_score": score,
        "confidence": confidence, "event_time": at, "received_at": at + timedelta(seconds=2),
        "processed_at": processed_at or at + timedelta(seconds=5), "schema_version": "1.1",
        "device_imputed": False, "device_code": 0, "page_code": 0, "segment_code": 0, "source": "s:1",
        "event_date": at.strftime("%Y-%m-%d"),
    }
    return row | context


def lake(tmp_path: Path, rows: list[dict], name: str = "wave-1.parquet") -> DuckDBEngine:
    location = LakeLocation.directory(tmp_path)
    write_rows(location, CURATED_EVENTS, pa.Table.from_pylist(rows, schema=schema(CURATED_EVENTS)), name)
    return DuckDBEngine(location)


def build_all(engine: DuckDBEngine, now: datetime = NOW, full: bool = False) -> None:
    for name in JOB_NAMES:
        run_job(name, engine, now=now, full=full, settle=timedelta(0))


def table(tmp_path: Path, name: str, where: str = "TRUE") -> list[dict]:
    con = connect(LakeLocation.directory(tmp_path))
    return con.sql(f"SELECT * FROM {name} WHERE {where}").to_arrow_table().to_pylist()


def decay(at: datetime) -> float:
    return 0.5 ** ((AS_OF_END - at).total_seconds() / (HALF_LIFE_DAYS * 86400))
