"""Erasing a user from a directory lake: every table's rows and the raw archive's records that name
them go, nobody else's do, and objects that cannot hold them are not rewritten."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from lake_fixtures import build_all, event, lake, table

from feedbackloop.adapters.memory import MemoryErasureLog
from feedbackloop.erasure import COMPLETE, PENDING, complete, erase_from_lake, raw_record_bytes, request
from feedbackloop.lake import QUARANTINE, TABLES
from feedbackloop.local.lake_reader import LakeLocation, schema
from feedbackloop.local.sql_engine import write_rows

pytestmark = pytest.mark.unit


def _lake(tmp_path: Path):
    t = datetime(2026, 3, 30, 12, tzinfo=UTC)
    engine = lake(tmp_path, [event("alice", "i1", "purchase", t, 0.5, 0.6),
                             event("alice", "i2", "click", t + timedelta(days=1), 0.3, 0.2),
                             event("bob", "i1", "purchase", t, 0.5, 0.6),
                             event("zed", "i9", "view", t - timedelta(days=3), 0.1, 0.1)])
    build_all(engine)
    location = LakeLocation.directory(tmp_path)
    quarantined = {c.name: None for c in QUARANTINE.columns} | {
        "reason": "schema_violation", "detail": "user_id missing", "payload": '{"user_id": "alice", "x": 1}',
        "quarantined_at": t, "received_at": t, "quarantine_date": "2026-03-30"}
    write_rows(location, QUARANTINE, pa.Table.from_pylist([quarantined, quarantined | {"payload": "{}"}],
                                                          schema=schema(QUARANTINE)), "q.parquet")
    raw = tmp_path / "raw" / "raw" / "events" / "2026" / "03" / "30"
    raw.mkdir(parents=True)
    (raw / "part-1.jsonl.gz").write_bytes(raw_record_bytes(
        [{"received_at": "x", "event": {"user_id": u, "item_id": "i1"}} for u in ("alice", "bob", "alice")]))
    return location


def test_every_row_of_the_user_goes_and_nobody_elses(tmp_path: Path):
    location = _lake(tmp_path)
    before = {t.name: len(table(tmp_path, t.name)) for t in TABLES}
    result = erase_from_lake(location.filesystem, location.folder, str(tmp_path / "raw/raw/events"), "alice")
    for t in TABLES:
        rows = table(tmp_path, t.name)
        assert all(r.get("user_id") != "alice" for r in rows), t.name
        assert all("alice" not in (r.get("payload") or "") for r in rows), t.name
    assert len(table(tmp_path, "feedback_events")) == before["feedback_events"] - 2
    assert len(table(tmp_path, "feedback_quarantine")) == 1  # the other quarantined row stays
    assert {r["user_id"] for r in table(tmp_path, "user_features")} == {"bob", "zed"}
    assert result.rows_removed["feedback_events"] == 2 and result.raw_records_removed == 2
    lines = gzip.decompress((tmp_path / "raw/raw/events/2026/03/30/part-1.jsonl.gz").read_bytes()).splitlines()
    assert len(lines) == 1 and b'"bob"' in lines[0]
    # zed's partition (2026-03-27) could not hold alice: its objects were read for statistics only
    assert result.objects_rewritten < result.objects_scanned


def test_erasing_twice_finds_nothing_more(tmp_path: Path):
    location = _lake(tmp_path)
    erase_from_lake(location.filesystem, location.folder, str(tmp_path / "raw/raw/events"), "alice")
    again = erase_from_lake(location.filesystem, location.folder, str(tmp_path / "raw/raw/events"), "alice")
    assert again.objects_rewritten == 0 and not any(again.rows_removed.values())


def test_the_audit_record_goes_from_pending_to_complete():
    log = MemoryErasureLog()
    assert request(log, "alice")["status"] == PENDING
    record = complete(log, "alice", {"objects_rewritten": 3})
    assert record["status"] == COMPLETE and record["requested_at"] <= record["completed_at"]
    assert log.get("alice")["steps"] == {"objects_rewritten": 3}
