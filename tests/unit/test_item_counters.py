"""Item-side freshness (ADR 0018): forward-decayed counters, the cleaner's additions, serving's re-ordering."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from feedbackloop.adapters.memory import (
    MemoryDedupStore,
    MemoryItemCounterStore,
    MemoryLake,
    MemoryOnlineStore,
    MemoryStateStore,
)
from feedbackloop.cleaning.clean import CleaningRules
from feedbackloop.cleaning.service import CleanerService
from feedbackloop.item_counters import (
    HALF_LIFE_SECONDS,
    KEEP_LANDMARKS,
    LANDMARK_SECONDS,
    NEGLIGIBLE,
    CachedCounts,
    Freshness,
    ItemCounts,
    batch_additions,
    counts_at,
    freshen,
    landmark,
    ranker_key,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 6, 10, 12, 5, tzinfo=UTC)


def _rows(*events: tuple[str, str, datetime, int | None], personalized: bool = True) -> pa.Table:
    return pa.table({
        "item_id": [e[0] for e in events], "event_type": [e[1] for e in events],
        "event_time": pa.array([e[2] for e in events], pa.timestamp("us", tz="UTC")),
        "position": pa.array([e[3] for e in events], pa.int32()),
        "personalized": [personalized] * len(events)})


def test_forward_decay_reads_as_exact_exponential_decay_across_landmarks():
    # two clicks a day apart on either side of a landmark, read two days later
    mark = landmark(NOW.timestamp()) + LANDMARK_SECONDS
    first, second = mark - 3600, mark + 86400 - 3600
    store = MemoryItemCounterStore()
    for at in (first, second):
        moment = datetime.fromtimestamp(at, UTC)
        store.add(batch_additions(_rows(("a", "click", moment, None))), at)
    now = second + 2 * 86400
    (counts,) = store.load(["a"], now).values()
    expected = sum(0.5 ** ((now - at) / HALF_LIFE_SECONDS) for at in (first, second))
    assert counts.clicks == pytest.approx(expected, rel=1e-12)
    assert len(store.items["a"]) == 2  # one field per landmark
    assert store.load(["never"], now) == {}


def test_examinations_follow_the_examination_model_and_opted_out_rows_are_not_counted():
    additions = batch_additions(_rows(("a", "view", NOW, 1), ("a", "view", NOW, 6), ("a", "view", NOW, 30),
                                      ("a", "view", NOW, None), ("a", "purchase", NOW, None)))
    counts = counts_at(additions["a"], NOW.timestamp())
    assert counts.examinations == pytest.approx(1 + 0.5 + 0 + 1)  # position 30: never examined
    assert (counts.clicks, counts.purchases) == (0, pytest.approx(1))
    assert batch_additions(_rows(("a", "click", NOW, 1), personalized=False)) == {}


def test_a_pages_ranker_gets_the_counts_of_its_items_under_its_own_key():
    """ADR 0021: the ranker named on the events (schema 1.3) is counted like an item, under a key no item
    id can take; events without one count for their items only."""
    rows = _rows(("a", "view", NOW, 1), ("a", "click", NOW, 1), ("b", "view", NOW, 2), ("c", "view", NOW, 1))
    rows = rows.append_column("ranker", pa.array(["attribute", "attribute", "attribute", None]))
    additions = batch_additions(rows)
    assert set(additions) == {"a", "b", "c", ranker_key("attribute")}
    counts = counts_at(additions[ranker_key("attribute")], NOW.timestamp())
    assert (counts.examinations, counts.clicks) == (pytest.approx(2.0), pytest.approx(1.0))
    assert not ranker_key("attribute")[0].isalnum()  # item ids begin with a letter or digit


def test_a_landmark_old_enough_is_dropped_on_the_next_write():
    store = MemoryItemCounterStore()
    old = NOW - timedelta(days=7 * KEEP_LANDMARKS)
    store.add(batch_additions(_rows(("a", "click", old, None))), old.timestamp())
    store.add(batch_additions(_rows(("a", "click", NOW, None))), NOW.timestamp())
    assert len(store.items["a"]) == 1
    assert store.load(["a"], NOW.timestamp())["a"].clicks == pytest.approx(1)
    older = NOW - timedelta(days=7 * (KEEP_LANDMARKS + 1))  # older than what a write removes: not added
    store.add(batch_additions(_rows(("a", "click", older, None))), NOW.timestamp())
    assert len(store.items["a"]) == 1


def test_an_addition_decayed_to_nothing_at_write_time_is_not_written():
    store = MemoryItemCounterStore()
    half_lives = 1 / NEGLIGIBLE  # an event this many times fresher than the cutoff...
    recent = NOW - timedelta(seconds=HALF_LIFE_SECONDS * (math.log2(half_lives) - 1))
    stale = NOW - timedelta(seconds=HALF_LIFE_SECONDS * (math.log2(half_lives) + 1))
    store.add(batch_additions(_rows(("a", "click", recent, None), ("b", "click", stale, None))), NOW.timestamp())
    assert set(store.items) == {"a"}  # b's click, eleven half-lives old, would add 2^-11 of a click
    assert store.load(["a"], NOW.timestamp())["a"].clicks == pytest.approx(2 * NEGLIGIBLE)


def test_serving_moves_items_whose_recent_click_rate_is_above_or_below_the_pool():
    ids = np.array(["steady", "falling", "rising", "unseen"])
    scores = np.array([1.0, 0.93, 0.9, 0.85])
    counts = {"steady": ItemCounts(100, 10, 0), "falling": ItemCounts(100, 0, 0), "rising": ItemCounts(100, 40, 0)}
    order = freshen([0, 1, 2, 3], scores, ids, counts, Freshness(weight=0.1, prior=20))
    assert [ids[i] for i in order] == ["rising", "steady", "unseen", "falling"]
    assert freshen([0, 1, 2, 3], scores, ids, {}) == [0, 1, 2, 3]  # no counts: the model's order
    lift = Freshness(weight=0.1, prior=20).adjustments(["steady", "falling", "unseen"], counts)
    pooled = 10 / 200  # the candidates' pooled rate
    assert lift[0] == pytest.approx(0.1 * min(1, (10 + 20 * pooled) / 120 / pooled - 1))
    assert lift[1] == pytest.approx(0.1 * ((0 + 20 * pooled) / 120 / pooled - 1))
    assert lift[2] == 0 and math.isfinite(lift[0])


def test_the_cleaner_adds_a_batchs_committed_rows_to_the_item_counters(make_event, make_record):
    counters = MemoryItemCounterStore()
    service = CleanerService(MemoryDedupStore(), MemoryStateStore(), MemoryLake(), CleaningRules(), lambda: NOW,
                             MemoryOnlineStore(), item_counters=counters)
    click = make_event(event_id="c1", item_id="hot", event_type="click", value=1)
    outcome = service.clean([make_record(click, 0)])
    assert outcome.item_counters_updated == 1
    assert counters.load(["hot"], NOW.timestamp())["hot"].clicks == pytest.approx(
        0.5 ** ((NOW - datetime(2025, 6, 10, 11, 59, tzinfo=UTC)).total_seconds() / HALF_LIFE_SECONDS))
    service.clean([make_record(click, 0)])  # redelivered: a duplicate, not counted again
    assert counters.load(["hot"], NOW.timestamp())["hot"].clicks < 1


class _CountingStore(MemoryItemCounterStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[str]] = []

    def load(self, item_ids, now: float) -> dict:
        self.reads.append(list(item_ids))
        return super().load(item_ids, now)


def test_cached_counts_read_each_item_once_per_ttl_and_decay_exactly_in_between():
    store = _CountingStore()
    t0 = 1_700_000_000.0
    store.add({"a": {f"clicks@{int(t0 // LANDMARK_SECONDS) * LANDMARK_SECONDS}": 4.0}}, t0)
    cached = CachedCounts(store, ttl_seconds=10)
    first = cached.load(["a", "b"], t0)
    assert store.reads == [["a", "b"]] and set(first) == {"a"}  # b never counted: absent, and remembered so
    later = cached.load(["b", "a"], t0 + 9)
    assert store.reads == [["a", "b"]]  # within the TTL: no read
    assert later["a"].clicks == pytest.approx(store.load(["a"], t0 + 9)["a"].clicks, rel=1e-12)
    store.reads.clear()
    store.add({"a": {f"clicks@{int(t0 // LANDMARK_SECONDS) * LANDMARK_SECONDS}": 1.0}}, t0 + 9)
    decayed = later["a"].clicks * 0.5 ** (0.5 / HALF_LIFE_SECONDS)
    assert cached.load(["a"], t0 + 9.5)["a"].clicks == pytest.approx(decayed)
    assert cached.load(["a", "c"], t0 + 10)["a"].clicks > later["a"].clicks  # expired: read again, with the new click
    assert store.reads == [["a", "c"]]


def test_cached_counts_pass_writes_through_and_forget_what_they_changed():
    store = _CountingStore()
    t0 = 1_700_000_000.0
    cached = CachedCounts(store, ttl_seconds=60)
    assert cached.load(["a"], t0) == {}
    cached.add({"a": {f"examinations@{int(t0 // LANDMARK_SECONDS) * LANDMARK_SECONDS}": 2.0}}, t0)
    assert cached.load(["a"], t0 + 1)["a"] == store.load(["a"], t0 + 1)["a"] and len(store.reads) == 3
