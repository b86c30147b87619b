"""The online profile, the cleaner's consent and profile updates, and the ranking served from them."""

from __future__ import annotations

import io
import json
import math
import tarfile
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from feedbackloop.adapters.memory import (
    MemoryArtifacts,
    MemoryDedupStore,
    MemoryLake,
    MemoryModelRegistry,
    MemoryOnlineStore,
    MemoryStateStore,
)
from feedbackloop.cleaning.clean import CleaningRules
from feedbackloop.cleaning.service import CleanerService
from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.online import MAX_ITEMS, UserProfile, merge_into_profiles
from feedbackloop.serving import ModelCache, ServingModel, recommend

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
DAY = 86400.0


def rows(*events: tuple[str, str, float, float, float], user: str = "u1", kind: str = "purchase") -> pa.Table:
    """(item, event_type, feedback_score, confidence, seconds before NOW) per row."""
    return pa.table({
        "user_id": [user] * len(events),
        "item_id": [e[0] for e in events], "event_type": [e[1] for e in events],
        "feedback_score": [e[2] for e in events], "confidence": [e[3] for e in events],
        "event_time": pa.array([int((NOW - e[4]) * 1e6) for e in events]).cast(pa.timestamp("us", tz="UTC")),
    })


# --- the online profile ----------------------------------------------------------------------------------

def test_profile_decays_like_the_feedback_layer_and_reconciles_by_recency():
    profile = UserProfile("u1")
    profile.merge(rows(("a", "purchase", 0.8, 0.6, 30 * DAY), ("a", "click", 0.5, 0.2, 0.0),
                       ("b", "purchase", 0.8, 0.6, 2 * DAY), ("b", "cancel", -0.5, 0.7, DAY)), NOW)
    a, b = profile.items["a"], profile.items["b"]
    assert a.weight_mass == pytest.approx(0.6 * 0.5 + 0.2)  # 30 days = one half-life
    assert a.composite == pytest.approx((0.6 * 0.8 * 0.5 + 0.2 * 0.5) / (0.6 * 0.5 + 0.2))
    assert b.composite == 0.0 and a.last_type == "click"  # the cancel came last: capped at 0
    items, signed, _ = profile.signals(NOW + 30 * DAY)
    assert dict(zip(items, signed, strict=True)) == pytest.approx({"a": a.weight_mass / 2, "b": -b.weight_mass / 2})


def test_profile_round_trips_and_keeps_the_items_with_most_evidence():
    profile = UserProfile("u1")
    many = [(f"i{j}", "view", 0.1, 0.1 + j / 1e4, 0.0) for j in range(MAX_ITEMS + 20)]
    profile.merge(rows(*many), NOW)
    assert len(profile.items) == MAX_ITEMS and "i0" not in profile.items
    again = UserProfile.from_document("u1", json.loads(json.dumps(profile.to_document())))
    assert again.items["i42"] == profile.items["i42"] and again.updated_at == NOW


def test_merging_skips_opted_out_users_and_retries_lost_races():
    store = MemoryOnlineStore()
    store.set_personalization("off", False)
    profiles = store.load(["u1", "off"])
    store.items["u1"] = {"version": 5, "doc": None}  # another writer moved u1 meanwhile
    batch = pa.concat_tables([rows(("a", "purchase", 0.5, 0.6, 0.0)),
                              rows(("a", "purchase", 0.5, 0.6, 0.0), user="off")])
    assert merge_into_profiles(store, profiles, batch, NOW) == 1
    assert store.items["u1"]["version"] == 6 and "a" in store.items["u1"]["doc"]["items"]
    assert "doc" not in store.items["off"]


def test_the_cleaner_marks_opted_out_rows_and_updates_the_others_profiles(make_event, make_record, received_at):
    online, lake = MemoryOnlineStore(), MemoryLake()
    online.set_personalization("quiet", False)
    service = CleanerService(MemoryDedupStore(), MemoryStateStore(), lake, CleaningRules(),
                             lambda: received_at, online=online)
    events = [make_event(event_id="e1", user_id="loud", item_id="x", event_type="purchase", value=2),
              make_event(event_id="e2", user_id="quiet", item_id="y", event_type="purchase", value=2)]
    outcome = service.clean([make_record(e, i) for i, e in enumerate(events)])
    assert (outcome.clean, outcome.not_personalized, outcome.profiles_updated) == (2, 1, 1)
    written = lake.read(CURATED_EVENTS)
    assert dict(zip(written["user_id"].to_pylist(), written["personalized"].to_pylist(), strict=True)) == {
        "loud": True, "quiet": False}
    assert "x" in online.items["loud"]["doc"]["items"] and "doc" not in online.items["quiet"]


# --- ranking ---------------------------------------------------------------------------------------------

def _model(items: int = 40, factors: int = 4, seed: int = 0, version: str = "v1") -> ServingModel:
    """Two item groups with opposite factor directions, so a taste for one ranks the other last."""
    rng = np.random.default_rng(seed)
    factors_ = rng.normal(0, 0.05, (items, factors)).astype(np.float32)
    factors_[: items // 2, 0] += 1.0
    factors_[items // 2:, 1] += 1.0
    arrays = {"item_ids": np.array([f"i{j}" for j in range(items)]), "item_factors": factors_,
              "popularity": np.arange(items, 0, -1, dtype=float),
              "user_ids": np.array(["trained"]), "user_factors": np.array([[0, 1, 0, 0]], dtype=np.float32),
              "segment_names": np.array(["s0"]), "segment_top_items": np.array([[39, 38, 37]]),
              "segment_user_ids": np.array(["segmented"]), "segment_labels": np.array(["s0"])}
    return ServingModel(arrays, {"version": version,
                                 "params": {"alpha": 10.0, "regularization": 0.01, "history_weight": 1.0}})


def _profile(*events, user: str = "u1") -> UserProfile:
    profile = UserProfile(user)
    profile.merge(rows(*events, user=user), NOW)
    return profile


def test_fold_in_ranks_the_users_taste_and_explains_it():
    model = _model()
    ranked = recommend(model, "u1", _profile(("i3", "purchase", 0.8, 0.6, DAY)), NOW, k=5)
    assert ranked.strategy == "fold_in" and ranked.personalized
    assert ranked.ranker == "blend"  # a model published before the re-ranker ranks as it did
    assert all(int(r.item_id[1:]) < 20 for r in ranked.items)  # the first group
    assert ranked.items[0].item_id == "i3" and ranked.items[0].reason == "you bought it before"
    assert ranked.items[1].reason == "because you bought i3"


def test_each_reason_names_the_liked_item_closest_to_the_recommended_one():
    """A page's reasons are gathered once per page; each is still the user's own item's, or the liked item
    whose factors are most similar (cosine) to the recommended one's."""
    model = _model(items=200, factors=8, seed=5)
    liked = [3, 17, 40, 101, 150]
    profile = _profile(*[(f"i{j}", kind, 0.8, 0.6, DAY + j) for j, kind in zip(liked, ["purchase", "click",
                                                                                       "view", "click", "purchase"],
                                                                            strict=True)],
                       ("i60", "purchase", -0.5, 1.0, DAY))
    ranked = recommend(model, "u1", profile, NOW, k=20)
    signals, own = model.signals("u1", profile, NOW)
    wanted = signals.rows[signals.wanted]
    y = model.item_factors.astype(np.float64)
    verbs = {"purchase": "bought", "click": "clicked", "view": "viewed"}
    assert any(r.reason.startswith("because") for r in ranked.items)
    for r in ranked.items:
        if r.item_id in own:
            assert r.reason == f"you {verbs[profile.items[r.item_id].last_type]} it before"
            continue
        item = model.item_index[r.item_id]
        cosine = y[wanted] @ y[item] / (np.linalg.norm(y[wanted], axis=1) * np.linalg.norm(y[item]))
        anchor = str(model.item_ids[wanted[int(np.argmax(cosine))]])
        assert r.reason == f"because you {verbs[profile.items[anchor].last_type]} {anchor}"


def test_a_new_event_changes_the_next_ranking_without_retraining():
    model = _model()
    profile = _profile(("i3", "purchase", 0.8, 0.6, 10 * DAY))
    before = [r.item_id for r in recommend(model, "u1", profile, NOW, k=5).items]
    profile.merge(rows(*[(f"i{j}", "purchase", 0.9, 0.6, 0.0) for j in (25, 26, 27)]), NOW)
    after = [r.item_id for r in recommend(model, "u1", profile, NOW, k=5).items]
    assert all(int(i[1:]) < 20 for i in before) and sum(int(i[1:]) >= 20 for i in after) >= 3


def test_negative_and_blocked_items_are_filtered_and_consumed_ones_on_request():
    model = _model()
    profile = _profile(("i3", "purchase", 0.8, 0.6, DAY), ("i4", "purchase", 0.8, 0.6, DAY),
                       ("i4", "cancel", -0.5, 0.7, 0.0))
    ids = [r.item_id for r in recommend(model, "u1", profile, NOW, k=20, blocked={"i5"}).items]
    assert "i4" not in ids and "i5" not in ids and "i3" in ids
    ids = [r.item_id for r in recommend(model, "u1", profile, NOW, k=20, exclude_consumed=True).items]
    assert "i3" not in ids


def test_an_item_passed_over_since_the_users_last_engagement_waits_for_a_new_one():
    """Bought, then shown and ignored (an examined view): off the page, while the purchase still ranks its
    group first; a new click brings it back (ADR 0016)."""
    model = _model()
    profile = _profile(("i3", "purchase", 0.8, 0.6, DAY))
    assert recommend(model, "u1", profile, NOW, k=5).items[0].item_id == "i3"
    profile.merge(rows(("i3", "view", 0.0, 0.1, 60.0)), NOW)
    ids = [r.item_id for r in recommend(model, "u1", profile, NOW, k=5).items]
    assert "i3" not in ids and all(int(i[1:]) < 20 for i in ids)
    profile.merge(rows(("i3", "click", 1.0, 0.2, 0.0)), NOW)
    assert recommend(model, "u1", profile, NOW, k=5).items[0].item_id == "i3"


def test_a_first_page_moves_up_the_items_people_click_now():
    """No feedback yet: the popular items, the one with the best recent click rate moved up from eighth
    into the page (item counters; freshness moves an item at most a tenth of the pool); without counters,
    popularity alone."""
    from feedbackloop.item_counters import ItemCounts

    model = _model()
    counts = {f"i{j}": ItemCounts(50.0, 20.0 if j == 7 else 1.0, 0.0) for j in range(40)}
    plain = [r.item_id for r in recommend(model, "new", None, NOW, k=5).items]
    fresh = recommend(model, "new", None, NOW, k=5, item_counts=lambda ids: {i: counts[i] for i in ids})
    assert plain == ["i0", "i1", "i2", "i3", "i4"]
    assert "i7" in [r.item_id for r in fresh.items] and fresh.strategy == "popularity"


def test_fallbacks_for_unknown_segmented_and_opted_out_users():
    model = _model()
    assert recommend(model, "nobody", None, NOW, k=2).items[0].reason == "popular overall"
    segmented = recommend(model, "segmented", None, NOW, k=2)
    assert ([r.item_id for r in segmented.items], segmented.strategy) == (["i39", "i38"], "segment_popularity")
    # user factors are not published (nothing of a user outlives their online profile): popularity
    assert recommend(model, "trained", None, NOW, k=3).strategy == "popularity"
    quiet = _profile(("i3", "purchase", 0.8, 0.6, DAY))
    quiet.personalization = False
    ranked = recommend(model, "u1", quiet, NOW, k=3)
    assert (ranked.personalized, ranked.strategy, ranked.items[0].item_id) == (False, "opted_out", "i0")


def test_the_fast_ranking_equals_a_full_sort():
    model = _model(items=2000, factors=8, seed=3)
    profile = _profile(*[(f"i{j}", "click", 0.5, 0.2, j * 3600.0) for j in range(0, 2000, 97)])
    fast = recommend(model, "u1", profile, NOW, k=25)
    signals, _ = model.signals("u1", profile, NOW)
    scores = model.ranker.single("blend", model.ranker.source_scores(signals))
    scores[~model.ranker.allowed(signals)] = -np.inf
    assert [r.item_id for r in fast.items] == [f"i{j}" for j in np.argsort(-scores, kind="stable")[:25]]


def _archive(model_version: str) -> bytes:
    arrays = {"item_ids": np.array(["a", "b"]), "item_factors": np.eye(2, dtype=np.float32),
              "popularity": np.array([2.0, 1.0]), "user_ids": np.array(["u"]),
              "user_factors": np.ones((1, 2), dtype=np.float32)}
    npz, buffer = io.BytesIO(), io.BytesIO()
    np.savez(npz, **arrays)
    document = json.dumps({"version": model_version,
                           "params": {"alpha": 1.0, "regularization": 0.1, "history_weight": 1.0}}).encode()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("model.npz", npz.getvalue()), ("metrics.json", document)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_model_cache_loads_once_and_follows_the_registry():
    registry, artifacts = MemoryModelRegistry(), MemoryArtifacts()
    clock = [0.0]
    cache = ModelCache(registry, artifacts, refresh_seconds=60, clock=lambda: clock[0])
    assert cache.get() is None
    for version in ("v1", "v2"):
        artifacts.objects[f"s3://m/{version}"] = _archive(version)
    registry.publish({"version": "v1", "artifact": "s3://m/v1"}, replaces=None)
    clock[0] = 60
    first = cache.get()
    registry.publish({"version": "v2", "artifact": "s3://m/v2"}, replaces="v1")
    assert cache.get() is first  # not before the refresh interval
    clock[0] = 120
    assert cache.get().version == "v2"
    assert math.isclose(float(cache.get().popularity[0]), 2.0)


def test_the_published_openapi_document_is_the_handlers():
    from pathlib import Path

    from feedbackloop.serving_api import OPENAPI_FILE, openapi_document

    published = (Path(__file__).parents[2] / OPENAPI_FILE).read_text().strip()
    assert published == openapi_document().strip(), "run: feedbackloop openapi --output docs/openapi.json"
    paths = json.loads(published)["paths"]
    assert {"/users/{user_id}/recommendations", "/users/{user_id}/preferences", "/users/{user_id}",
            "/users/{user_id}/erasure"} <= set(paths)


def test_exploration_draws_from_the_request_id_and_reports_each_items_propensity():
    from feedbackloop.exploration import ExplorationPolicy, explored_item_probability

    model = _model()
    profile = _profile(("i3", "purchase", 0.8, 0.6, DAY))
    greedy = recommend(model, "u1", profile, NOW, k=5)
    assert [r.propensity for r in greedy.items] == [1.0] * 5
    policy = ExplorationPolicy(0.5, 10)
    slates = [recommend(model, "u1", profile, NOW, k=5, exploration=policy, request_id=f"r{n}") for n in range(20)]
    again = recommend(model, "u1", profile, NOW, k=5, exploration=policy, request_id="r0")
    assert [(r.item_id, r.propensity) for r in again.items] == [(r.item_id, r.propensity) for r in slates[0].items]
    greedy_ids = [r.item_id for r in greedy.items]
    p_pool = explored_item_probability(5, 10, 0.5)
    explored = [(r, slot) for ranked in slates for slot, r in enumerate(ranked.items) if r.item_id != greedy_ids[slot]]
    assert explored and all(r.propensity == pytest.approx(p_pool) for r, _ in explored)
    assert all(r.reason for ranked in slates for r in ranked.items)


def test_the_page_is_made_by_the_ranker_that_earns_clicks_here():
    """ADR 0021: without counters the model's choice ranks; with counters, the ranker whose pages get
    clicked serves most pages, names itself, and its probability scales the items' propensities."""
    from feedbackloop.item_counters import ItemCounts, ranker_key

    model = _model()
    profile = _profile(("i3", "purchase", 0.8, 0.6, DAY))
    assert model.ranker.rankers == ("blend", "mf", "history")
    assert recommend(model, "u1", profile, NOW, k=5).ranker == "blend"
    counts = {ranker_key("blend"): ItemCounts(500.0, 5.0), ranker_key("mf"): ItemCounts(500.0, 5.0),
              ranker_key("history"): ItemCounts(500.0, 60.0)}

    def read(ids):
        return {i: counts[i] for i in ids if i in counts}

    pages = [recommend(model, "u1", profile, NOW, k=5, request_id=f"r{n}", item_counts=read) for n in range(30)]
    assert sum(p.ranker == "history" for p in pages) >= 28
    page = pages[0]
    assert recommend(model, "u1", profile, NOW, k=5, request_id="r0", item_counts=read).ranker == page.ranker
    mine = [r.item_id for r in model_ranking(model, profile, page.ranker)]
    assert [r.item_id for r in page.items] == mine and all(0 < r.propensity <= 1 for r in page.items)


def model_ranking(model: ServingModel, profile: UserProfile, ranker: str) -> list:
    signals, _ = model.signals("u1", profile, NOW)
    top, _ = model.ranker.rank(signals, 5, strategy=ranker)
    return [type("R", (), {"item_id": str(model.item_ids[i])}) for i in top]
