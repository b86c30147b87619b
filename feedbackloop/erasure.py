"""Erasing users: every row and record that names them, in every store, with an audit record.

`DELETE /users/{id}` records the request (a repeat while it is pending changes nothing but a counter: the
first `requested_at` stands, and the queue's de-duplication drops the repeated message), removes the online
profile and leaves a tombstone (personalization off and the request's time: the cleaner quarantines the
user's events from before the request still on the stream, as `erased_user`, and keeps later ones out of
training and the online store, like an opt-out's), then hands the lake to the eraser.

The eraser combines requests: it takes a batch of queued users (up to 10 per invocation), drops the ones
already erased since their request, and erases the rest in ONE pass over the lake:
1. discovery: the cleaner's tables (curated events, quarantine) are read for the users' rows only where
   the objects' user_id statistics allow them (a Parquet footer, not the object), projecting the two
   columns that say when each record arrived; those arrival hours (and the hour after, for Firehose's
   buffering) are the raw archive's hour folders that can hold the users' records (a quarantined record
   without a readable arrival time: every hour of its quarantine day). The hours are saved in the audit
   record before anything is rewritten, so a retried pass still finds them;
2. every Parquet object of every lake table that holds any of the users is rewritten without their rows;
3. the raw archive's objects of those hours, and every object under `raw/errors/` (Firehose's failed
   deliveries: few, and not by arrival day), are rewritten without their records;
4. the raw bucket is versioned (an overwrite must be undoable for audit and replay): the noncurrent versions
   of every object the pass rewrote are deleted, so the user's records are not recoverable from them.
So a pass reads the footers of the lake and the few raw hours of its users, not the whole archive. The pass
is `feedbackloop.lake_erasure` (pyarrow); this module is the requests and the audit record, which the
serving function (no pyarrow) writes too.

What the models hold is stated in the audit record (`MODELS_NOTE`): the published and candidate models
keep no event, but the user's factors and segment membership stay in the versions trained before the
erasure; serving never uses them (the profile is gone and personalization is off, so the user gets the
unpersonalized ranking), and the next training reads the erased lake, so its model has no trace of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the lake's tables are Arrow schemas: the serving function, which records requests, has no pyarrow
    from feedbackloop.lake import LakeTable

PENDING, COMPLETE = "pending", "complete"
# What the audit record promises: the eraser handles up to 10 users a pass and a pass ends within its
# 15-minute timeout (retried at most 5 times), so a day covers any backlog below ~4,800 users.
EXPECTED_WITHIN = timedelta(hours=24)
RAW_HOURS_AFTER_ARRIVAL = 1  # Firehose buffers up to 5 minutes: a record accepted at 12:59 may land in 13/
MODELS_NOTE = ("models: published and candidate versions trained before this erasure keep the user's factors "
               "and segment membership, no event; serving ignores them (profile deleted, personalization off: "
               "the unpersonalized ranking), and the next training reads the erased lake, so its model holds "
               "nothing of the user")
STREAM_NOTE = ("event stream: records stay on the stream up to its retention (7 days); the cleaner quarantines "
               "the user's events from before the request that it reads after it (reason erased_user, without "
               "their payload: kept out of the curated lake, the online store and training); this pass removes "
               "those rows if they were written before it, a repeated request the ones written after; events "
               "after the request are a new relationship's, kept as an opted-out user's")
ONLINE_NOTE = "online store: the profile was deleted when the request was made; a tombstone remains"


class ErasureLog(Protocol):
    def get(self, user_id: str) -> dict[str, Any] | None: ...

    def put(self, record: dict[str, Any]) -> None: ...


class NoncurrentVersions(Protocol):
    """The versioned raw bucket: delete every noncurrent version of an object (not its current one)."""

    def purge(self, path: str) -> int: ...


@dataclass
class LakeErasure:
    """What erasing one user removed (the pass's object counts are shared by the users of its batch)."""

    objects_scanned: int = 0
    objects_rewritten: int = 0
    rows_removed: dict[str, int] = field(default_factory=dict)  # table -> rows
    raw_records_removed: int = 0
    raw_error_records_removed: int = 0
    noncurrent_versions_removed: int = 0
    raw_hours: list[str] = field(default_factory=list)  # the archive's hour folders read, "yyyy-mm-ddTHH"


def request(log: ErasureLog, user_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Record a request. A pending one is kept as it is (its `requested_at` too), counting the repeat."""
    now = now or datetime.now(UTC)
    existing = log.get(user_id)
    if existing is not None and existing.get("status") == PENDING:
        record = existing | {"repeated_requests": int(existing.get("repeated_requests", 0)) + 1}
    else:
        record = {"user_id": user_id, "status": PENDING, "requested_at": now.isoformat(),
                  "expected_by": (now + EXPECTED_WITHIN).isoformat(), "steps": {}}
    log.put(record)
    return record


def needs_erasure(record: dict[str, Any] | None) -> bool:
    """False for a user whose erasure completed after their latest request (a repeat already combined)."""
    return record is None or record.get("status") != COMPLETE


def remember_raw_hours(log: ErasureLog, user_id: str, days: Iterable[str]) -> None:
    record = log.get(user_id) or {"user_id": user_id, "status": PENDING, "steps": {}}
    steps = dict(record.get("steps") or {})
    steps["raw_hours"] = sorted(set(steps.get("raw_hours", [])) | set(days))
    log.put(record | {"steps": steps})


def known_raw_hours(log: ErasureLog, user_id: str) -> set[str]:
    record = log.get(user_id) or {}
    return set((record.get("steps") or {}).get("raw_hours", []))


def complete(log: ErasureLog, user_id: str, steps: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    record = (log.get(user_id) or {"user_id": user_id}) | {
        "status": COMPLETE, "completed_at": (now or datetime.now(UTC)).isoformat(), "steps": steps}
    log.put(record)
    return record


def audit_steps(result: LakeErasure, tables: Iterable[LakeTable], batch: list[str]) -> dict[str, Any]:
    """The audit record's account: every store, what it held of the user, what was done."""
    return {**asdict(result), "batch_size": len(batch), "stores": {
        **{f"lake:{t.name}": f"{result.rows_removed.get(t.name, 0)} rows removed" for t in tables},
        "raw archive (raw/events/)": f"{result.raw_records_removed} records removed from "
                                     f"{len(result.raw_hours)} hour folders",
        "raw archive errors (raw/errors/)": f"{result.raw_error_records_removed} records removed",
        "raw archive versions": f"{result.noncurrent_versions_removed} noncurrent versions deleted",
        "online store": ONLINE_NOTE, "models": MODELS_NOTE, "event stream": STREAM_NOTE}}
