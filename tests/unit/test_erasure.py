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
from feedbackloop.erasure import COMPLETE, PENDING, complete, request
from feedbackloop.lake import QUARANTINE, TABLES
from feedbackloop.lake_erasure import erase_from_lake, raw_record_bytes
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
    raw = tmp_path / "raw" / "raw" / "events" / "2026" / "03" / "30" / "12"
    raw.mkdir(parents=True)
    (raw / "part-1.jsonl.gz").write_bytes(raw_record_bytes(
        [{"received_at": "x", "event": {"user_id": u, "item_id": "i1"}} for u in ("alice", "bob", "alice")]))
    return location


def test_every_row_of_the_user_goes_and_nobody_elses(tmp_path: Path):
    location = _lake(tmp_path)
    before = {t.name: len(table(tmp_path, t.name)) for t in TABLES}
    result = erase_from_lake(location.filesystem, location.folder, str(tmp_path / "raw"), "alice")
    for t in TABLES:
        rows = table(tmp_path, t.name)
        assert all(r.get("user_id") != "alice" for r in rows), t.name
        assert all("alice" not in (r.get("payload") or "") for r in rows), t.name
    assert len(table(tmp_path, "feedback_events")) == before["feedback_events"] - 2
    assert len(table(tmp_path, "feedback_quarantine")) == 1  # the other quarantined row stays
    assert {r["user_id"] for r in table(tmp_path, "user_features")} == {"bob", "zed"}
    assert result.rows_removed["feedback_events"] == 2 and result.raw_records_removed == 2
    lines = gzip.decompress((tmp_path / "raw/raw/events/2026/03/30/12/part-1.jsonl.gz").read_bytes()).splitlines()
    assert len(lines) == 1 and b'"bob"' in lines[0]
    # zed's partition (2026-03-27) could not hold alice: its objects were read for statistics only
    assert result.objects_rewritten < result.objects_scanned


def test_erasing_twice_finds_nothing_more(tmp_path: Path):
    location = _lake(tmp_path)
    erase_from_lake(location.filesystem, location.folder, str(tmp_path / "raw"), "alice")
    again = erase_from_lake(location.filesystem, location.folder, str(tmp_path / "raw"), "alice")
    assert again.objects_rewritten == 0 and not any(again.rows_removed.values())


def test_the_audit_record_goes_from_pending_to_complete():
    log = MemoryErasureLog()
    assert request(log, "alice")["status"] == PENDING
    record = complete(log, "alice", {"objects_rewritten": 3})
    assert record["status"] == COMPLETE and record["requested_at"] <= record["completed_at"]
    assert log.get("alice")["steps"] == {"objects_rewritten": 3}


# -- batched, per-user combined passes (issue 17 items 6-7, issue 18 item 4) ---------------------------------------

from feedbackloop.erasure import (  # noqa: E402
    EXPECTED_WITHIN,
    audit_steps,
    known_raw_hours,
    needs_erasure,
    remember_raw_hours,
)
from feedbackloop.lake_erasure import erase_users  # noqa: E402


class Versions:
    def __init__(self) -> None:
        self.purged: list[str] = []

    def purge(self, path: str) -> int:
        self.purged.append(path)
        return 2


def _raw(tmp_path: Path, day: str, name: str, users: list[str], folder: str = "events", hour: str = "00") -> Path:
    path = tmp_path / "raw" / "raw" / folder / day.replace("-", "/") / hour / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw_record_bytes([{"event": {"user_id": u, "item_id": "i1"}} for u in users]))
    return path


def _lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def test_one_pass_erases_every_user_of_the_batch_and_a_repeated_user_once(tmp_path: Path):
    location = _lake(tmp_path)
    results = erase_users(location.filesystem, location.folder, str(tmp_path / "raw"), ["alice", "bob", "alice"])
    assert set(results) == {"alice", "bob"}
    for t in TABLES:
        assert not {r.get("user_id") for r in table(tmp_path, t.name)} & {"alice", "bob"}, t.name
    assert results["alice"].rows_removed["feedback_events"] == 2 and results["bob"].rows_removed["feedback_events"] == 1
    assert (results["alice"].raw_records_removed, results["bob"].raw_records_removed) == (2, 1)
    # one pass: the object counts are the pass's, shared by its users
    assert results["alice"].objects_scanned == results["bob"].objects_scanned


def test_only_the_raw_days_the_users_records_arrived_on_are_read(tmp_path: Path):
    location = _lake(tmp_path)
    # a record of alice's on a day none of her events arrived (no curated or quarantined row says so):
    # never read, which is how a pass skips the rest of the archive
    far = _raw(tmp_path, "2025-01-01", "old.jsonl.gz", ["alice", "zed"])
    same_day = _raw(tmp_path, "2026-03-30", "early.jsonl.gz", ["alice", "zed"], hour="03")
    untouched = far.stat().st_mtime_ns
    result = erase_users(location.filesystem, location.folder, str(tmp_path / "raw"), ["alice"])["alice"]
    # alice's events arrived 2026-03-30 12:00 and 03-31 12:00 (+1 hour for Firehose's buffering)
    assert result.raw_hours == ["2026-03-30T12", "2026-03-30T13", "2026-03-31T12", "2026-03-31T13"]
    assert far.stat().st_mtime_ns == untouched and len(_lines(far)) == 2 and len(_lines(same_day)) == 2


def test_failed_deliveries_under_raw_errors_are_covered(tmp_path: Path):
    location = _lake(tmp_path)
    errors = _raw(tmp_path, "2024-06-01", "failed.jsonl.gz", ["alice", "bob"], folder="errors/processing-failed")
    result = erase_users(location.filesystem, location.folder, str(tmp_path / "raw"), ["alice"])["alice"]
    assert result.raw_error_records_removed == 1
    assert len(_lines(errors)) == 1 and b'"bob"' in _lines(errors)[0]


def test_the_noncurrent_versions_of_every_rewritten_raw_object_are_purged(tmp_path: Path):
    location = _lake(tmp_path)
    versions = Versions()
    result = erase_users(location.filesystem, location.folder, str(tmp_path / "raw"), ["alice"],
                         versions=versions)["alice"]
    assert [Path(p).name for p in versions.purged] == ["part-1.jsonl.gz"]  # the one raw object rewritten
    assert result.noncurrent_versions_removed == 2


def test_a_retried_pass_still_finds_the_raw_days_its_first_attempt_saved(tmp_path: Path):
    location = _lake(tmp_path)
    log = MemoryErasureLog()
    request(log, "alice")
    # a first attempt erased the lake tables and died before the raw archive
    erase_users(location.filesystem, location.folder, str(tmp_path / "nowhere"), ["alice"],
                remember_days=lambda u, d: remember_raw_hours(log, u, d))
    assert known_raw_hours(log, "alice") == {"2026-03-30T12", "2026-03-30T13", "2026-03-31T12", "2026-03-31T13"}
    retry = erase_users(location.filesystem, location.folder, str(tmp_path / "raw"), ["alice"],
                        known_days=lambda u: known_raw_hours(log, u))["alice"]
    assert not any(retry.rows_removed.values()) and retry.raw_records_removed == 2


def test_a_repeated_request_keeps_the_first_requested_at_and_is_combined():
    log = MemoryErasureLog()
    t0 = datetime(2026, 12, 7, 12, tzinfo=UTC)
    first = request(log, "alice", t0)
    again = request(log, "alice", t0 + timedelta(minutes=30))
    assert again["requested_at"] == first["requested_at"] == t0.isoformat()
    assert again["expected_by"] == (t0 + EXPECTED_WITHIN).isoformat() and again["repeated_requests"] == 1
    assert needs_erasure(log.get("alice"))
    complete(log, "alice", {}, t0 + timedelta(hours=1))
    assert not needs_erasure(log.get("alice"))  # a queued repeat finds the work done
    later = request(log, "alice", t0 + timedelta(days=2))  # after completion: a new request
    assert later["status"] == PENDING and later["requested_at"] == (t0 + timedelta(days=2)).isoformat()


def test_the_audit_record_names_every_store(tmp_path: Path):
    location = _lake(tmp_path)
    result = erase_users(location.filesystem, location.folder, str(tmp_path / "raw"), ["alice"])["alice"]
    stores = audit_steps(result, TABLES, ["alice"])["stores"]
    assert {f"lake:{t.name}" for t in TABLES} <= set(stores)
    assert {"raw archive (raw/events/)", "raw archive errors (raw/errors/)", "raw archive versions", "online store",
            "models", "event stream"} <= set(stores)
    assert "serving ignores" in stores["models"] and stores["lake:feedback_events"] == "2 rows removed"
