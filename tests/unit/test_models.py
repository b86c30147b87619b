"""The models and the retraining decisions: the pandas feedback aggregation against the SQL, fold-in
against implicit's own solve, metrics against hand values, rating biases, segments, the gate, publishing,
and the training script end to end on a small lake."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from lake_fixtures import event, lake
from threadpoolctl import threadpool_limits

from feedbackloop.adapters.memory import MemoryArtifacts, MemoryModelRegistry
from feedbackloop.examination import EXAMINATION
from feedbackloop.local.lake_reader import LakeLocation, connect
from feedbackloop.models.data import Interactions, feedback_as_of
from feedbackloop.models.evaluation import ranking_metrics, rmse
from feedbackloop.models.rating import BiasedRatingModel
from feedbackloop.models.segments import UserSegmentation
from feedbackloop.models.sources import ConfidenceMF
from feedbackloop.models.training import TrainingParams, hold_out, save, train
from feedbackloop.ranking import ARRAY_PREFIX, ITEM_FEATURES, Ranker, UserSignals
from feedbackloop.registry import StaleRegistryError
from feedbackloop.retraining import decide, evaluate, metrics_from_archive, publish

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]


def _lake_with_history(tmp_path: Path, users: int = 40, items: int = 30, days: int = 60, seed: int = 0):
    """A lake where each user has a taste (a block of items), buys from it over `days` days, and
    sometimes cancels; the table jobs build it."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for u in range(users):
        taste = (u % 3) * (items // 3)
        for d in rng.choice(days, size=12, replace=False):
            item = taste + int(rng.integers(items // 3))
            at = start + timedelta(days=int(d), hours=int(rng.integers(24)))
            rows.append(event(f"u{u}", f"i{item}", "purchase", at, 0.5, 0.6, category=f"c{taste}",
                              session_id=f"s{u}-{d}"))
            if rng.random() < 0.1:
                rows.append(event(f"u{u}", f"i{item}", "cancel", at + timedelta(hours=1), -0.4, 0.7,
                                  category=f"c{taste}", session_id=f"s{u}-{d}"))
        if u % 4 == 0:
            rows.append(event(f"u{u}", f"i{taste}", "rating", start + timedelta(days=days - 1), 1.0, 1.0, value=5,
                              category=f"c{taste}"))
        # exposures (ADR 0016): examined ones weigh as the examination model says, the one at position 12
        # was never examined (confidence 0) and is no pair of its own
        for position in (1, 5, 12):
            item = (taste + items // 3 + position) % items
            confidence = 0.1 * EXAMINATION.weight(np.array([position], dtype=float))[0]
            rows.append(event(f"u{u}", f"i{item}", "view", start + timedelta(days=days - 2), 0.0, confidence,
                              category="c-other", position=position, request_id=f"r{u}"))
    engine = lake(tmp_path, rows)
    now = start + timedelta(days=days + 1)
    from glue_jobs.build_tables import JOB_NAMES, run_job

    for name in JOB_NAMES:
        run_job(name, engine, now=now, settle=timedelta(0))
    con = connect(LakeLocation.directory(tmp_path))
    daily, snapshot, users_frame = (con.sql(f"SELECT * FROM {name}").to_arrow_table().to_pandas()
                                    for name in ("feedback_daily", "user_feedback", "user_features"))
    return daily, snapshot, users_frame


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    return _lake_with_history(tmp_path_factory.mktemp("lake"))


def test_pandas_aggregation_equals_the_user_feedback_table(history):
    daily, snapshot, _ = history
    as_of = snapshot["as_of_date"].iloc[0]
    ours = feedback_as_of(daily, as_of).set_index(["user_id", "item_id"]).sort_index()
    sql = snapshot.set_index(["user_id", "item_id"]).sort_index()
    assert ours.index.equals(sql.index)
    for column in ("composite_score", "confidence_mass", "events", "purchases", "cancels"):
        np.testing.assert_allclose(ours[column].to_numpy(float), sql[column].to_numpy(float), rtol=1e-9, atol=1e-12)
    assert (ours["feedback_type"] == sql["feedback_type"]).all()
    assert (ours["composite_score"] == 0).sum() > 0  # the cancels capped some pairs
    viewed = ours[ours["views"] > 0]
    # examined exposures are weak negatives (composite 0, confidence > 0); an unexamined one is no pair
    assert len(viewed) == 2 * 40 and (viewed["composite_score"] == 0).all() and (viewed["confidence_mass"] > 0).all()


def test_interactions_sign_follows_the_composite_score():
    pairs = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"],
                          "composite_score": [0.5, 0.0, -0.2], "confidence_mass": [2.0, 1.0, 3.0]})
    matrix = Interactions.from_pairs(pairs)
    assert matrix.confidence.toarray().tolist() == [[2.0, 1.0], [-3.0, 0.0]]  # 0: a neutral rating, engagement
    assert matrix.liked.toarray().tolist() == [[2.0, 1.0], [0.0, 0.0]]


def test_a_zero_score_is_negative_when_capped_by_a_later_negative_or_only_exposures():
    pairs = pd.DataFrame({"user_id": ["a", "a", "a"], "item_id": ["neutral", "cancelled", "shown"],
                          "composite_score": [0.0, 0.0, 0.0], "confidence_mass": [1.0, 1.3, 0.1],
                          "negative_last": [False, True, False], "events": [2, 2, 3], "views": [1, 0, 3]})
    assert Interactions.from_pairs(pairs).confidence.toarray().tolist() == [[-1.3, 1.0, -0.1]]


def test_no_half_life_means_no_decay_and_a_bad_one_is_refused():
    daily = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["x", "x"], "event_date": ["2025-01-01", "2026-01-01"],
                          "category": [None, None], "decayed_score_sum": [1.0, -1.5], "decayed_weight_sum": [1.0, 1.0],
                          "last_positive_at": [pd.Timestamp("2025-01-01", tz="UTC"), pd.NaT],
                          "last_negative_at": [pd.NaT, pd.Timestamp("2025-12-01", tz="UTC")],
                          "last_seen_at": [pd.Timestamp("2025-01-01", tz="UTC")] * 2}
                         | {name: [1, 1] for name in ("events", "explicit_events", "implicit_events", "views", "clicks",
                                                    "purchases", "cancels", "ratings", "rating_sum")})
    (pair,) = feedback_as_of(daily, "2026-01-01", half_life_days=None).to_dict("records")
    assert pair["confidence_mass"] == 2.0 and pair["composite_score"] == -0.25
    (decayed,) = feedback_as_of(daily, "2026-01-01", half_life_days=365.0).to_dict("records")
    assert decayed["confidence_mass"] == pytest.approx(1.5)
    for bad in (0, -7.0):
        with pytest.raises(ValueError, match="half_life_days must be a positive number of days or None"):
            feedback_as_of(daily, "2026-01-01", half_life_days=bad)


def test_fold_in_is_the_als_user_step(history):
    """Serving's fold-in (the Ranker's) is the least-squares step implicit's ALS takes for a user, with
    confidence 1 + alpha * c on the same item factors."""
    daily, _, _ = history
    interactions = Interactions.from_pairs(feedback_as_of(daily, daily["event_date"].max()))
    source = ConfidenceMF(factors=8, iterations=5, alpha=3.0, regularization=0.1).fit(interactions.confidence)
    row = interactions.confidence[3]
    with threadpool_limits(1, "blas"):
        reference = AlternatingLeastSquares(factors=8, iterations=1, alpha=1.0, regularization=0.1, random_state=0)
        reference.fit(source.confidence(interactions.confidence), show_progress=False)
        reference.item_factors = source.item_factors_
        expected = reference.recalculate_user(3, source.confidence(row))
    n = source.item_factors_.shape[0]
    arrays = {"item_ids": np.arange(n).astype(str), "item_factors": source.item_factors_, "regularization":
              np.array(0.1), "alpha": np.array(3.0), "neighbors_indptr": np.zeros(n + 1, dtype=np.int64),
              "neighbors_indices": np.array([], dtype=np.int64), "neighbors_data": np.array([]),
              "item_item_binary": np.array(True), "popularity": np.ones(n), "trending": np.ones(n),
              "segment_names": np.array([], dtype=str), "segment_popularity": np.zeros((0, n)),
              "item_features": np.zeros((n, len(ITEM_FEATURES))), "candidates": np.array(10),
              "exclude_seen": np.array(False), "strategy": np.array("mf"), "history_weight": np.array(1.0)}
    ranker = Ranker({ARRAY_PREFIX + k: v for k, v in arrays.items()})
    signals = UserSignals(row.indices, row.data, np.sign(row.data), np.zeros(len(row.data)),
                          np.zeros(len(row.data), dtype=bool))
    np.testing.assert_allclose(ranker.fold_in(signals), np.asarray(expected).ravel(), rtol=1e-3, atol=1e-4)


def test_ranking_metrics_against_hand_values():
    recommended = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    relevant = [{1, 3, 9}, {8}]
    m = ranking_metrics(recommended, relevant, n_items=10, k=4)
    discount = 1 / np.log2(np.arange(2, 6))
    ndcg_1 = (discount[0] + discount[2]) / discount[:3].sum()
    ndcg_2 = discount[3] / discount[0]
    assert m["ndcg_at_4"] == pytest.approx((ndcg_1 + ndcg_2) / 2)
    assert m["precision_at_4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["recall_at_4"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["map_at_4"] == pytest.approx(((1 + 2 / 3) / 3 + (1 / 4) / 1) / 2)
    assert m["coverage"] == 0.8
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 3.0])) == pytest.approx(np.sqrt(0.5))


def test_rating_model_recovers_user_and_item_biases():
    rng = np.random.default_rng(1)
    user_bias, item_bias = rng.normal(0, 0.5, 50), rng.normal(0, 0.8, 40)
    u, i = rng.integers(50, size=4000), rng.integers(40, size=4000)
    ratings = pd.DataFrame({"user_id": [f"u{x}" for x in u], "item_id": [f"i{x}" for x in i],
                            "rating": 3.5 + user_bias[u] + item_bias[i] + rng.normal(0, 0.1, 4000)})
    model = BiasedRatingModel(user_regularization=1, item_regularization=1).fit(ratings)
    predicted = model.predict(ratings["user_id"].to_numpy(), ratings["item_id"].to_numpy())
    assert rmse(predicted, ratings["rating"].to_numpy()) < 0.15
    assert model.predict(np.array(["new"]), np.array(["new"]))[0] == pytest.approx(model.global_mean_)


def test_segments_find_separated_groups_and_name_them_by_size():
    rng = np.random.default_rng(2)
    sizes = {0: 120, 1: 60, 2: 30}
    frames = []
    for group, n in sizes.items():
        frames.append(pd.DataFrame({
            "user_id": [f"g{group}-{j}" for j in range(n)], "events": np.exp(1 + 2 * group + rng.normal(0, .05, n)),
            "active_days": 1 + group * 5 + rng.integers(0, 1, n), "sessions": 2 + group * 4,
            "revenue": np.exp(3 + 2 * group + rng.normal(0, .05, n)), "events_per_active_day": 5.0 + group,
            "recency_days": 100 - 40 * group + rng.normal(0, 1, n), "cancel_rate": 0.0, "explicit_share": 0.0,
            "ctr": np.nan, "satisfaction": np.nan, "mean_item_score": 0.3, "desktop_share": 0.0,
            "mobile_share": 0.0, "tablet_share": 0.0, "other_device_share": 0.0,
            "top_category": f"cat{group}"}))
    users = pd.concat(frames, ignore_index=True)
    for method in ("kmeans", "hierarchical"):
        model = UserSegmentation(2, 5, method=method).fit(users)
        assert model.k_ == 3, method
        assert [p["users"] for p in model.profiles_] == [120, 60, 30]
        assert [p["top_categories"] for p in model.profiles_] == [["cat0"], ["cat1"], ["cat2"]]
        assert (model.predict(users) == model.segments_).all()


# --- the gate and publishing ----------------------------------------------------------------------------

def _metrics(ndcg: float | None) -> dict:
    return {} if ndcg is None else {"ranking": {"model": {"ndcg_at_10": ndcg}}}


@pytest.mark.parametrize(("candidate", "current", "margin", "publish"), [
    (0.30, None, 0.01, True),  # nothing published yet
    (0.303, 0.30, 0.01, True),  # exactly the margin
    (0.302, 0.30, 0.01, False),  # better, but not by the margin
    (0.25, 0.30, 0.0, False),
    (None, None, 0.0, False),  # no hold-out score: never published
])
def test_gate(candidate, current, margin, publish):
    decision = decide(_metrics(candidate), None if current is None else {"gate_value": current}, margin)
    assert decision.publish is publish, decision.reason


def _archive(version: str, ndcg: float) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = json.dumps({"version": version, "metrics": _metrics(ndcg)}).encode()
        info = tarfile.TarInfo("metrics.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_evaluate_then_publish_moves_the_pointer_only_from_what_was_compared():
    artifacts, registry = MemoryArtifacts(), MemoryModelRegistry()
    artifacts.objects["s3://m/candidates/v1/model.tar.gz"] = _archive("v1", 0.30)
    artifacts.objects["s3://m/candidates/v2/model.tar.gz"] = _archive("v2", 0.25)
    artifacts.objects["s3://m/candidates/v3/model.tar.gz"] = _archive("v3", 0.35)

    first = evaluate("s3://m/candidates/v1/model.tar.gz", artifacts, registry, margin=0.01)
    assert first["decision"]["publish"] and first["current"] is None
    record = publish(first, artifacts, registry, "s3://m/published/")
    assert record["artifact"] == "s3://m/published/v1/model.tar.gz"
    assert artifacts.read(record["artifact"]) == artifacts.read("s3://m/candidates/v1/model.tar.gz")
    assert registry.current()["version"] == "v1"

    worse = evaluate("s3://m/candidates/v2/model.tar.gz", artifacts, registry, margin=0.01)
    assert not worse["decision"]["publish"] and "keeping the current model" in worse["decision"]["reason"]

    better = evaluate("s3://m/candidates/v3/model.tar.gz", artifacts, registry, margin=0.01)
    registry.pointer = {"version": "v9"}  # another run published meanwhile
    with pytest.raises(StaleRegistryError):
        publish(better, artifacts, registry, "s3://m/published/")


def test_metrics_are_read_from_a_sagemaker_model_archive():
    assert metrics_from_archive(_archive("v7", 0.4))["version"] == "v7"


# --- training -------------------------------------------------------------------------------------------

def test_training_evaluates_on_a_temporal_hold_out_and_saves(history, tmp_path: Path):
    daily, _, users = history
    split = hold_out(daily, days=14)
    assert split.train["last_seen_at"].max() < pd.Timestamp(split.cutoff, tz="UTC") + pd.Timedelta(days=1)
    assert split.relevant and all(items for items in split.relevant.values())
    model = train(daily, users, TrainingParams(tuning_minutes=0.0, max_trees=20, holdout_days=14, segments_max=4), "v1")
    ranking = model.metrics["ranking"]
    assert ranking["model"]["ndcg_at_10"] > ranking["popularity"]["ndcg_at_10"]
    assert model.segmentation is not None and 2 <= model.metrics["segments"]["k"] <= 4
    save(model, tmp_path)
    arrays = np.load(tmp_path / "model.npz")
    assert len(arrays["ranker_item_factors"]) == len(arrays["ranker_item_ids"])
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["version"] == "v1" and document["ranker"]["strategy"] == model.metrics["strategy"]
    assert document["ranker"]["why"] and document["ranker"]["sources"]["mf"]["factors"] >= 16


def test_the_training_script_runs_as_a_process_with_the_sagemaker_contract(tmp_path: Path, history):
    lake = tmp_path / "lake"
    daily, _, users = _lake_with_history(lake, users=20, days=40)
    model_dir = tmp_path / "model"
    environ = os.environ | {"SM_MODEL_DIR": str(model_dir),
                            "SM_CHANNEL_FEEDBACK": str(lake / "curated/tables/feedback_daily"),
                            "SM_CHANNEL_USERS": str(lake / "curated/tables/user_features"),
                            "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "sagemaker/train.py"), "--tuning_minutes", "0",
                             "--max_trees", "10", "--holdout_days", "10", "--version", "v-script"],
                            env=environ, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "model_ndcg_at_10=" in result.stdout
    document = json.loads((model_dir / "metrics.json").read_text())
    assert document["version"] == "v-script" and document["params"]["max_trees"] == 10


def test_the_published_model_is_scored_on_the_candidates_hold_out_and_the_gate_compares_those(history, tmp_path):
    daily, _, users = history
    params = TrainingParams(tuning_minutes=0.0, max_trees=20, holdout_days=14, segments_max=4)
    last = pd.Timestamp(daily["event_date"].max())
    seen = (last - pd.Timedelta(days=10)).strftime("%Y-%m-%d")
    champion = train(daily[daily["event_date"] <= seen], users, params, "v1")  # ten days ago
    save(champion, tmp_path)
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for name in ("model.npz", "metrics.json"):
            tar.add(tmp_path / name, arcname=name)
    challenger = train(daily, users, params, "v2", current=(tmp_path / "model.tar.gz").read_bytes())
    ranking = challenger.metrics["ranking"]
    current = ranking["current"]
    assert current["version"] == "v1" and current["as_of"] == seen and 0 < current["ndcg_at_10"] <= 1
    # the hold-out starts after the last day the published model saw: unseen by both
    assert challenger.metrics["holdout"]["cutoff"] >= seen
    assert current["ndcg_at_10"] > ranking["popularity"]["ndcg_at_10"]  # a real model, ranked as serving does
    # the gate takes the current model's score on this hold-out over the one it was published with
    decision = decide(challenger.metrics, {"gate_value": 0.0001, "version": "v1"}, margin=0.01)
    assert decision.current == current["ndcg_at_10"] and "on the same hold-out" in decision.reason
    assert decision.publish == (ranking["model"]["ndcg_at_10"] >= current["ndcg_at_10"] * 0.99)  # fresher data


def test_with_no_day_the_published_model_has_not_seen_the_gate_keeps_it(history, tmp_path):
    daily, _, users = history
    params = TrainingParams(tuning_minutes=0.0, max_trees=20, holdout_days=14, segments_max=4)
    save(train(daily, users, params, "v1"), tmp_path)
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for name in ("model.npz", "metrics.json"):
            tar.add(tmp_path / name, arcname=name)
    again = train(daily, users, params, "v2", current=(tmp_path / "model.tar.gz").read_bytes())
    assert "current" not in again.metrics["ranking"]
    decision = decide(again.metrics, {"gate_value": 0.0001, "version": "v1"}, margin=0.01)
    assert not decision.publish and "no day newer than the current model's" in decision.reason
    del again.metrics["current_as_of"]  # a model published without its data's last day: its published score
    assert "as published" in decide(again.metrics, {"gate_value": 0.5, "version": "v1"}, margin=0.01).reason


@pytest.mark.parametrize(("new", "old", "new_as_of", "old_as_of", "publish", "why"), [
    (0.30, 0.25, "2026-11-02", "2026-11-02", True, ">= 0.2525"),  # better on the same hold-out
    (0.25, 0.25, "2026-11-02", "2026-11-02", False, "keeping"),  # a tie on the same data: nothing gained
    (0.25, 0.25, "2026-11-03", "2026-11-02", True, "fresher data"),  # fresher and no worse: freshness wins
    (0.2476, 0.25, "2026-11-03", "2026-11-02", True, "fresher data"),  # within the 1% margin below
    (0.2470, 0.25, "2026-11-03", "2026-11-02", False, "despite fresher data"),  # worse than the margin allows
])
def test_the_gate_on_the_same_hold_out_weighs_freshness(new, old, new_as_of, old_as_of, publish, why):
    metrics = {"as_of": new_as_of, "ranking": {"model": {"ndcg_at_10": new},
                                               "current": {"ndcg_at_10": old, "as_of": old_as_of}}}
    decision = decide(metrics, {"gate_value": 0.9, "version": "v1"}, margin=0.01)
    assert decision.publish is publish and why in decision.reason
