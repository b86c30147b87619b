"""The cleaner keeps an erased user's events still on the stream out of the lake and the online store (ADR 0013)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from feedbackloop.adapters.memory import MemoryDedupStore, MemoryLake, MemoryOnlineStore, MemoryStateStore
from feedbackloop.cleaning.clean import CleaningRules
from feedbackloop.cleaning.service import CleanerService
from feedbackloop.ingest import envelope
from feedbackloop.lake import CURATED_EVENTS, QUARANTINE
from feedbackloop.names import QuarantineReason

pytestmark = pytest.mark.unit

RECEIVED_AT = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
NOW = RECEIVED_AT + timedelta(seconds=30)
ERASED_AT = RECEIVED_AT - timedelta(hours=6)


class CountingOnlineStore(MemoryOnlineStore):
    def __init__(self) -> None:
        super().__init__()
        self.loads: list[list[str]] = []

    def load(self, user_ids):
        self.loads.append(list(user_ids))
        return super().load(self.loads[-1])


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def cleaner():
    online = CountingOnlineStore()
    lake = MemoryLake()
    service = CleanerService(MemoryDedupStore(), MemoryStateStore(), lake, CleaningRules(min_samples=10**9),
                             clock=lambda: NOW, online=online)
    return service, lake, online


def _batch(make_event, make_record, offset: int = 0):
    events = [  # (user, event time)
        ("gone", ERASED_AT - timedelta(days=2)),  # before the request: still on the stream, not to be kept
        ("gone", ERASED_AT - timedelta(seconds=1)),
        ("gone", ERASED_AT + timedelta(hours=1)),  # after it: a new relationship's, kept as an opted-out user's
        ("stay", ERASED_AT - timedelta(days=2)),
    ]
    return [make_record(envelope(make_event(event_id=f"e{i}", user_id=user, event_type="click", value=1,
                                            timestamp=_stamp(at)), RECEIVED_AT), offset + i)
            for i, (user, at) in enumerate(events)]


def test_events_from_before_the_erasure_request_are_quarantined_with_their_reason(cleaner, make_event, make_record):
    service, lake, online = cleaner
    online.tombstone("gone", ERASED_AT.timestamp())

    outcome = service.clean(_batch(make_event, make_record))

    assert outcome.records_in == 4 and outcome.clean == 2
    assert outcome.quarantined == {QuarantineReason.ERASED_USER.value: 2}
    assert outcome.conservation_gap == 0
    curated = lake.read(CURATED_EVENTS)
    assert sorted(zip(curated["event_id"].to_pylist(), curated["personalized"].to_pylist(), strict=True)) == [
        ("e2", False), ("e3", True)]
    quarantine = lake.read(QUARANTINE)
    assert sorted(quarantine["event_id"].to_pylist()) == ["e0", "e1"]
    assert set(quarantine["reason"].to_pylist()) == {QuarantineReason.ERASED_USER.value}
    # the row says whose and why (so the eraser finds and removes it), the record's content is not kept
    assert set(quarantine["user_id"].to_pylist()) == {"gone"}
    assert quarantine["payload"].to_pylist() == [None, None]
    assert all(ERASED_AT.isoformat() in d for d in quarantine["detail"].to_pylist())
    # nothing of the erased user reached their profile; the other user's profile has their event
    assert not online.load(["gone"])["gone"].items
    assert list(online.load(["stay"])["stay"].items) == [curated["item_id"].to_pylist()[1]]


def test_the_tombstones_come_with_the_one_profile_lookup_of_the_batch(cleaner, make_event, make_record):
    service, _, online = cleaner
    online.tombstone("gone", ERASED_AT.timestamp())

    service.clean(_batch(make_event, make_record))

    assert len(online.loads) == 1 and sorted(online.loads[0]) == ["gone", "stay"]


def test_a_redelivered_erased_event_is_a_duplicate(cleaner, make_event, make_record):
    service, lake, online = cleaner
    online.tombstone("gone", ERASED_AT.timestamp())
    batch = _batch(make_event, make_record)
    service.clean(batch)

    again = service.clean(batch)

    assert again.clean == 0 and again.quarantined_total == 0 and again.duplicates == 4
    assert lake.read(QUARANTINE)["reason"].to_pylist().count(QuarantineReason.ERASED_USER.value) == 2


def test_without_a_tombstone_nothing_is_held_back(cleaner, make_event, make_record):
    service, lake, online = cleaner
    online.set_personalization("gone", False)  # an opt-out is not an erasure: the rows are kept, unpersonalized

    outcome = service.clean(_batch(make_event, make_record))

    assert outcome.clean == 4 and outcome.quarantined_total == 0 and outcome.not_personalized == 3
