"""The vectorized merge of a batch into its users' profiles (`merge_rows`) against the per-row rule it
replaces, written out here record by record as the reference: decay the stored masses to the batch's
time, then, row by row in time order, add each row's decayed confidence and score, keep the latest
positive and negative signal, and name the item by its latest event (a later row at the same instant
wins); keep the MAX_ITEMS items with most evidence. The ignored mass is the decayed confidence of the
exposures (views) later than the item's latest positive signal, a stored item's dated at its latest
signal."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedbackloop.online import DECAY_PER_SECOND, MAX_ITEMS, ItemSignal, ProfileMerge, UserProfile, merge_rows

pytestmark = pytest.mark.unit

NOW = 1_780_000_000.0
DAY = 86400.0


def _reference(stored: dict[str, ItemSignal], updated_at: float, rows: list[dict], now: float) -> dict:
    items = {i: ItemSignal(**vars(s)) for i, s in stored.items()}
    factor = math.exp(-DECAY_PER_SECOND * max(0.0, now - updated_at))
    exposures = {i: [(s.last_at, s.ignored_mass * factor)] for i, s in items.items()}  # (time, mass)
    for signal in items.values():
        signal.score_mass *= factor
        signal.weight_mass *= factor
    updated_at = max(updated_at, now)
    for row in sorted(rows, key=lambda r: r["time"]):  # stable: equal times keep the batch's order
        t, score, confidence = row["time"], row["feedback_score"], row["confidence"]
        contribution = math.exp(-DECAY_PER_SECOND * max(0.0, updated_at - t))
        signal = items.get(row["item_id"])
        if signal is None:
            signal = items[row["item_id"]] = ItemSignal(0.0, 0.0, None, None, row["event_type"], t)
        signal.score_mass += confidence * score * contribution
        signal.weight_mass += confidence * contribution
        if row["event_type"] == "view":
            exposures.setdefault(row["item_id"], []).append((t, confidence * contribution))
        if score > 0:
            signal.last_positive = max(signal.last_positive or t, t)
        elif score < 0:
            signal.last_negative = max(signal.last_negative or t, t)
        if t >= signal.last_at:
            signal.last_type, signal.last_at = row["event_type"], t
    for item, signal in items.items():
        signal.ignored_mass = sum(m for t, m in exposures.get(item, [])
                                  if signal.last_positive is None or t > signal.last_positive)
    if len(items) > MAX_ITEMS:
        keep = sorted(items, key=lambda i: items[i].weight_mass, reverse=True)[:MAX_ITEMS]
        items = {i: items[i] for i in keep}
    return items


def _table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "user_id": pa.array([r["user_id"] for r in rows], pa.string()),
        "item_id": pa.array([r["item_id"] for r in rows], pa.string()),
        "event_type": pa.array([r["event_type"] for r in rows], pa.string()),
        "feedback_score": pa.array([r["feedback_score"] for r in rows], pa.float64()),
        "confidence": pa.array([r["confidence"] for r in rows], pa.float64()),
        "event_time": pa.array([int(r["time"] * 1e6) for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    })


_row = st.fixed_dictionaries({
    "user_id": st.sampled_from(["u1", "u2", "u3", "stranger"]),
    "item_id": st.sampled_from([f"i{j}" for j in range(8)]),
    "event_type": st.sampled_from(["purchase", "click", "cancel", "rating", "view"]),
    "feedback_score": st.sampled_from([-1.0, -0.5, 0.0, 0.3, 1.0]),
    "confidence": st.sampled_from([0.1, 0.6, 1.0]),
    # few distinct instants, so that ties between rows, and with stored signals, are common
    "time": st.sampled_from([NOW - 40 * DAY, NOW - DAY, NOW - 60.0, NOW, NOW + 5.0]),
}).map(lambda r: r | {"feedback_score": 0.0} if r["event_type"] == "view" else r)  # an exposure scores 0


def _assert_same(profile: UserProfile, expected: dict[str, ItemSignal]) -> None:
    assert set(profile.items) == set(expected)
    for item, want in expected.items():
        got = profile.items[item]
        assert (got.last_positive, got.last_negative, got.last_type, got.last_at) == (
            want.last_positive, want.last_negative, want.last_type, want.last_at), item
        assert got.score_mass == pytest.approx(want.score_mass, rel=1e-12, abs=1e-15)
        assert got.weight_mass == pytest.approx(want.weight_mass, rel=1e-12, abs=1e-15)
        assert got.ignored_mass == pytest.approx(want.ignored_mass, rel=1e-12, abs=1e-15)
        assert got.composite == pytest.approx(want.composite, rel=1e-9, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(earlier=st.lists(_row, max_size=25), batch=st.lists(_row, max_size=40))
def test_a_batch_merges_into_every_profile_as_the_per_row_rule_does(earlier, batch):
    """Two batches in a row (the second onto the profiles the first left, read back from their documents),
    several users at once, and a user of the batch whose profile is not among those merged."""
    users = ["u1", "u2", "u3"]
    profiles = [UserProfile(u) for u in users]
    merge_rows(profiles, _table(earlier), NOW - DAY)
    expected = {u: _reference({}, 0.0, [r for r in earlier if r["user_id"] == u], NOW - DAY) for u in users}
    for profile in profiles:
        _assert_same(profile, expected[profile.user_id])
    stored = [UserProfile.from_document(p.user_id, json.loads(json.dumps(p.to_document()))) for p in profiles]
    merge_rows(stored, _table(batch), NOW)
    for profile in stored:
        u = profile.user_id
        _assert_same(profile, _reference(expected[u], NOW - DAY, [r for r in batch if r["user_id"] == u], NOW))
        assert profile.updated_at == NOW


def test_a_crowded_profile_keeps_the_items_with_most_evidence_across_users():
    rows = [{"user_id": u, "item_id": f"i{j}", "event_type": "view", "feedback_score": 0.1,
             "confidence": 0.1 + j / 1e4, "time": NOW} for u in ("a", "b") for j in range(MAX_ITEMS + 7)]
    rows += [{"user_id": "c", "item_id": "i1", "event_type": "view", "feedback_score": 0.1, "confidence": 1.0,
              "time": NOW}]
    profiles = [UserProfile("a"), UserProfile("b"), UserProfile("c")]
    merge_rows(profiles, _table(rows), NOW)
    assert [len(p.items) for p in profiles] == [MAX_ITEMS, MAX_ITEMS, 1]
    for profile in profiles[:2]:
        assert not {f"i{j}" for j in range(7)} & set(profile.items)
        _assert_same(profile, _reference({}, 0.0, [r for r in rows if r["user_id"] == profile.user_id], NOW))


def test_the_first_document_layout_still_reads():
    """Profiles written before the columnar layout: {item: [score, weight, +, -, type, at]}."""
    document = {"items": {"a": [0.3, 0.6, NOW - DAY, None, "purchase", NOW - DAY],
                          "b": [-0.35, 0.7, None, NOW, "cancel", NOW]}, "updated_at": NOW}
    profile = UserProfile.from_document("u", document)
    assert profile.items["a"] == ItemSignal(0.3, 0.6, NOW - DAY, None, "purchase", NOW - DAY)
    assert profile.items["b"].composite == pytest.approx(-0.5)
    items, signed, composite = profile.signals(NOW)
    assert items == ["a", "b"] and signed.tolist() == pytest.approx([0.6, -0.7])
    assert json.loads(json.dumps(profile.to_document()))["last_negative"] == [None, NOW]


def test_an_empty_batch_only_moves_the_profiles_clock():
    profile = UserProfile("u")
    merge_rows([profile], _table([]), NOW)
    assert profile.updated_at == NOW and len(profile.items) == 0
    assert np.array_equal(profile.signals(NOW)[1], np.array([]))


def test_what_the_user_passes_over_after_engaging_is_counted_until_they_engage_again():
    """A click, then the item shown and ignored twice: its ignored mass is the two views'; a new click
    clears it; views before the click never count. Serving keeps it off the page meanwhile."""
    def view(t):
        return {"user_id": "u", "item_id": "a", "event_type": "view", "feedback_score": 0.0, "confidence": 0.1,
                "time": t}

    click = {"user_id": "u", "item_id": "a", "event_type": "click", "feedback_score": 1.0, "confidence": 0.2}
    profile = UserProfile("u")
    merge_rows([profile], _table([view(NOW - 300), click | {"time": NOW - 299}]), NOW - 200)
    assert profile.items["a"].ignored_mass == 0.0
    merge_rows([profile], _table([view(NOW - 100), view(NOW - 50)]), NOW)
    decayed = sum(0.1 * math.exp(-DECAY_PER_SECOND * age) for age in (100, 50))
    assert profile.items["a"].ignored_mass == pytest.approx(decayed)
    assert profile.items["a"].last_type == "view" and profile.items["a"].last_positive == NOW - 299
    merge_rows([profile], _table([click | {"time": NOW + 10}]), NOW + 10)
    assert profile.items["a"].ignored_mass == 0.0


def test_documents_written_before_the_ignored_column_read_as_nothing_ignored():
    document = {"items": ["a"], "score_mass": [0.2], "weight_mass": [0.2], "last_positive": [NOW],
                "last_negative": [None], "last_type": ["click"], "last_at": [NOW], "updated_at": NOW}
    profile = UserProfile.from_document("u", document)
    assert profile.items["a"].ignored_mass == 0.0
    assert UserProfile.from_document("u", profile.to_document()).to_document() == profile.to_document()


def test_a_profile_copy_carries_every_field_and_a_merge_leaves_the_original_alone():
    profile = UserProfile.from_document("u1", {"items": ["i1"], "score_mass": [1.0], "weight_mass": [1.0],
                                               "last_positive": [10.0], "last_negative": [None],
                                               "last_type": ["click"], "last_at": [10.0], "updated_at": 10.0},
                                        personalization=True, version=3, erased_at=5.0)
    twin = profile.copy()
    assert twin == profile and twin is not profile
    rows = pa.table({"user_id": ["u1"], "item_id": ["i2"], "event_type": ["click"], "feedback_score": [1.0],
                     "confidence": [0.2], "event_time": pa.array([20_000_000], pa.timestamp("us", tz="UTC"))})
    merged = ProfileMerge.of({"u1": profile}, rows, 20.0).pending["u1"]
    assert list(merged.items) == ["i1", "i2"]
    assert list(profile.items) == ["i1"] and profile.updated_at == 10.0 and profile.version == 3
