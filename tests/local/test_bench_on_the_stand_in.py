"""The freshness, serve and load benchmarks at a smoke test's size, each on a local stack of its own:
they run end to end, write their JSON, and what they report holds together."""

from __future__ import annotations

import io
import json

import pytest

from feedbackloop.bench import freshness, load, serve

pytestmark = pytest.mark.local


def test_freshness_reaches_every_ranking_and_the_lake_comes_first(tmp_path):
    out = tmp_path / "freshness.json"
    assert freshness.run(str(out), io.StringIO(), events=4) == 0
    result = json.loads(out.read_text())
    assert result["events"] == {"sent": 4, "ranked": 4, "cleaned": 4} and result["missed"] == 0
    assert result["cleaned_before_ranked"] == 4  # per event: cleaned (lake) <= ranked
    entries = {b["name"]: b for b in result["benchmarks"]}
    assert all(b["baseline"] is None and b["ratio"] is None for b in entries.values())  # no straw baseline
    assert 0 < entries["freshness_post_to_cleaned_p50_ms"]["value"] <= entries[
        "freshness_post_to_recommendations_p95_ms"]["value"]


def test_serve_times_the_route_through_the_handler_and_the_core_against_implicit(tmp_path):
    out = tmp_path / "serve.json"
    assert serve.run(str(out), io.StringIO(), items=3_000, users=6, requests=12, route_requests=12, rounds=1) == 0
    result = json.loads(out.read_text())
    route = result["route"]
    assert route["statuses"]["peer"] == {"200": 12}  # every timed request answered
    assert set(route["statuses"]["ours"]) == {"200"}
    assert route["example"]["strategy"] == "fold_in"  # the profile came from the online store
    assert route["example"]["experiments"] == {"ranking": "personalized"}  # the config and the arm were read
    assert [b["name"] for b in result["benchmarks"]] == [
        "serve_route_p50_ms", "serve_route_p99_ms", "serve_core_p50_ms", "serve_core_p99_ms"]
    assert result["requests"] == {"route": 12, "core": 12}


def test_the_peer_ranks_what_ours_ranks_on_the_same_factors():
    """implicit's recommend, given the same factors and the user's feedback, folds the user in the same way:
    most of its top 10 is our factorization source's (its confidence is alpha * c where ours is
    1 + alpha * c), and it never returns an unwanted item."""
    import time

    now = time.time()
    model = serve.synthetic_model(items=2_000)
    model.ranker.strategy = "mf"  # the factorization alone, as the peer ranks
    peer = serve.Peer(model)
    overlap = []
    for profile in serve.synthetic_profiles(now, users=8, items=2_000):
        ours = {r.item_id for r in serve.recommend(model, profile.user_id, profile, now, 10).items}
        theirs = peer.recommend(model, profile.user_id, profile, now, 10)
        items, confidence, _ = profile.signals(now)
        negative = {i for i, c in zip(items, confidence, strict=True) if c < 0}
        assert len(theirs.items) == 10 and not negative & {r.item_id for r in theirs.items}
        overlap.append(len(ours & {r.item_id for r in theirs.items}))
    assert sum(overlap) / len(overlap) >= 3


def test_load_accounts_for_every_accepted_id(tmp_path):
    out = tmp_path / "load.json"
    console = io.StringIO()
    assert load.run(str(out), console, seconds=3, connections=2) == 0, console.getvalue()
    lake = json.loads(out.read_text())["end_to_end"]
    assert all(lake["checks"].values()), lake["checks"]
    assert lake["clean"] == lake["clean_distinct_ids"] and lake["lost"] == 0 and lake["unaccounted"] == 0
    assert lake["accepted"] == lake["clean"] + lake["quarantined"] + lake["duplicates"]
