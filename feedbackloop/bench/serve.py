"""Latency of the recommendations route at catalogue scale: 100,000 items, 64 factors.

A synthetic published model of the ranking core with a re-ranker (`model_arrays`) and users with 1 to
200 items of recent feedback in their online profiles, all in the personalized arm of the ranking
experiment (the popularity arm skips the fold-in).

- The route, the headline (`serve_route_p50_ms`, `serve_route_p99_ms`): the serving Lambda's handler
  (`lambdas/serving/handler.py`) invoked in-process on the local stand-in with an API Gateway proxy event
  for `GET /users/{id}/recommendations?k=10`: the profile read from the online store (moto DynamoDB over
  loopback), the UI config and the user's experiment arm (AppConfig stand-in), the ranking, the JSON
  response. Baseline, in the same run on the same requests: the same route with the peer below as its
  ranking core.
- The core (`serve_core_p50_ms`, `serve_core_p99_ms`): `recommend()` on in-memory profiles (every candidate
  source scoring the catalogue from the profile, the union of their top candidates, their features and
  the re-ranker's 100 trees, filters, top 10 with reasons) and the JSON body. Baseline: the
  peer, `implicit`'s ALS `recommend` (its C++ least squares and top-k) on the same item factors, alpha and
  regularization, with the user's feedback as its user row and the same filters (negatively rated and
  blocked items removed), and the same JSON body without reasons. The target, p99 at most 10 ms at this
  scale with the re-ranker on (`target_met`), reads the core's p99: the route's on the stand-in adds
  moto's DynamoDB reads over loopback, which say nothing of the ranking's cost or of AWS's.

One BLAS thread (a Lambda function of 1,769 MB or less has at most one vCPU); ours and the peer
alternate, so a noisy machine slows both alike.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from feedbackloop.bench import write_results
from feedbackloop.models.pipeline import CANDIDATES
from feedbackloop.models.trees import TreeEnsemble
from feedbackloop.online import UserProfile
from feedbackloop.ranking import ARRAY_PREFIX, FEATURES, ITEM_FEATURES, PRICE_BANDS, neighbor_indices
from feedbackloop.serving import Recommendation, Recommendations, ServingModel, recommend
from feedbackloop.serving_api import recommendations_body

ITEMS = 100_000
FACTORS = 64
USERS = 200
REQUESTS = 2_000  # per round of the core
ROUTE_REQUESTS = 1_000  # per round of the route
ROUNDS = 3
K = 10
TARGET_P99_MS = 10.0
PARAMS = {"alpha": 10.0, "regularization": 0.01, "history_weight": 1.0}
TREES = 100  # the re-ranker's most (RankingParams.max_trees)


def model_arrays(items: int = ITEMS, factors: int = FACTORS, seed: int = 0, trees: int = TREES
                 ) -> dict[str, np.ndarray]:
    """A published model of the ranking core at catalogue scale (ADR 0014): seeded Gaussian factors, 100
    item-kNN neighbours per item, popularity, trending, two segments, item features, 20 categories and
    the price bands (the attribute source), and a re-ranker of
    `trees` LambdaRank trees (31 leaves) fitted on random features, so serving runs every source, the
    candidates' features and the trees, as a published re-ranker makes it do."""
    import lightgbm

    rng = np.random.default_rng(seed)
    neighbors = csr_matrix((rng.random(items * 100), (np.repeat(np.arange(items), 100),
                                                      rng.integers(0, items, items * 100))), shape=(items, items))
    x = rng.normal(size=(20_000, len(FEATURES)))
    booster = lightgbm.train({"objective": "lambdarank", "verbosity": -1, "num_leaves": 31, "seed": seed,
                              "min_data_in_leaf": 20, "num_threads": 1},
                             lightgbm.Dataset(x, (rng.random(20_000) < 0.1).astype(float), group=[200] * 100),
                             num_boost_round=trees)
    arrays = {
        "item_ids": np.array([f"item-{i}" for i in range(items)]),
        "item_factors": rng.normal(0, 0.1, (items, factors)).astype(np.float32),
        "regularization": np.array(PARAMS["regularization"]), "alpha": np.array(PARAMS["alpha"]),
        "neighbors_indptr": neighbors.indptr.astype(np.int64),
        "neighbors_indices": neighbor_indices(neighbors.indices, items),
        "neighbors_data": neighbors.data, "item_item_binary": np.array(False),
        "popularity": rng.zipf(1.5, items).astype(np.float64), "trending": rng.zipf(1.5, items).astype(np.float64),
        "segment_names": np.array(["s0", "s1"]), "segment_popularity": rng.random((2, items)),
        "item_features": rng.random((items, len(ITEM_FEATURES))), "candidates": np.array(CANDIDATES),
        "exclude_seen": np.array(False), "strategy": np.array("reranker"),
        "history_weight": np.array(PARAMS["history_weight"]),
        "item_category": rng.integers(1, 21, items), "item_price_band": rng.integers(1, PRICE_BANDS + 1, items),
        "feature_names": np.array(FEATURES),
    } | {f"trees_{k}": v for k, v in TreeEnsemble.from_booster(booster).to_arrays().items()}
    return {ARRAY_PREFIX + k: v for k, v in arrays.items()}


def synthetic_model(items: int = ITEMS, factors: int = FACTORS, seed: int = 0) -> ServingModel:
    return ServingModel(model_arrays(items, factors, seed), {"version": "bench", "params": PARAMS})


def synthetic_profiles(now: float, users: int = USERS, items: int = ITEMS, seed: int = 1,
                       names: list[str] | None = None) -> list[UserProfile]:
    rng = np.random.default_rng(seed)
    profiles = []
    for u in range(users):
        n = int(rng.integers(1, 201))
        chosen = rng.choice(items, size=min(n, items), replace=False)
        n = len(chosen)
        rows = pa.table({
            "user_id": [names[u] if names else f"user-{u}"] * n,
            "item_id": [f"item-{i}" for i in chosen],
            "event_type": rng.choice(["purchase", "click", "view", "cancel"], n, p=[.4, .3, .2, .1]).tolist(),
            "feedback_score": rng.uniform(-0.5, 1.0, n),
            "confidence": rng.choice([0.1, 0.2, 0.6, 1.0], n),
            "event_time": pa.array(((now - rng.uniform(0, 60 * 86400, n)) * 1e6).astype(np.int64)).cast(
                pa.timestamp("us", tz="UTC")),
        })
        profile = UserProfile(names[u] if names else f"user-{u}")
        profile.merge(rows, now)
        profiles.append(profile)
    return profiles


class Peer:
    """implicit's ALS `recommend` over the published item factors: its own fold-in of the user's row
    (recalculate_user), its own top-k with filters."""

    def __init__(self, model: ServingModel) -> None:
        factors = model.item_factors.shape[1]
        self._model = model
        self._als = AlternatingLeastSquares(factors=factors, regularization=PARAMS["regularization"],
                                            alpha=PARAMS["alpha"], num_threads=1)
        self._als.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._als.user_factors = np.zeros((1, factors), dtype=np.float32)

    def recommend(self, model: ServingModel, user_id: str, profile: UserProfile | None, now: float, k: int = 10,
                  blocked: Collection[str] = (), exclude_consumed: bool = False,
                  ordering: str = "personalized", **_: Any) -> Recommendations:
        """The signature of `feedbackloop.serving.recommend`, so that it can stand in for it in the route
        (the exploration and item counters the route passes are not the peer's: it ignores them)."""
        items, confidence, composite = profile.signals(now)
        rows = np.array([model.item_index.get(i, -1) for i in items], dtype=np.int64)
        known = rows >= 0
        rows, confidence, composite = rows[known], confidence[known], composite[known]
        user_row = csr_matrix((confidence.astype(np.float32), (np.zeros(len(rows), dtype=np.int64), rows)),
                              shape=(1, len(model.item_ids)))
        # the same filters as ours: unwanted items, blocked items, consumed ones on request
        filtered = rows[confidence < 0].tolist() + [model.item_index[i] for i in blocked if i in model.item_index]
        ids, scores = self._als.recommend(0, user_row, N=k, filter_already_liked_items=exclude_consumed,
                                          filter_items=np.array(filtered, dtype=np.int32) if filtered else None,
                                          recalculate_user=True)
        return Recommendations(user_id, [Recommendation(str(model.item_ids[i]), float(s), "recommended for you")
                                         for i, s in zip(ids.tolist(), scores.tolist(), strict=True)],
                               model.version, None, True, "fold_in")


def _core_latencies(rank: Callable[..., Recommendations], model: ServingModel, profiles: list[UserProfile],
                    now: float, requests: int) -> np.ndarray:
    times = np.empty(requests)
    for r in range(requests):
        profile = profiles[r % len(profiles)]
        started = time.perf_counter()
        ranked = rank(model, profile.user_id, profile, now, K)
        json.dumps(recommendations_body(ranked))
        times[r] = (time.perf_counter() - started) * 1000
    return times


def _entries(prefix: str, ours: np.ndarray, baseline_prefix: str, theirs: np.ndarray) -> list[dict]:
    entries = []
    for percentile in (50, 99):
        value, baseline = float(np.percentile(ours, percentile)), float(np.percentile(theirs, percentile))
        entries.append({"name": f"{prefix}_p{percentile}_ms", "unit": "ms", "value": round(value, 3),
                        "baseline": {"name": f"{baseline_prefix}_p{percentile}_ms", "value": round(baseline, 3)},
                        "ratio": round(value / baseline, 3), "better": "lower"})
    return entries


def measure_core(now: float, items: int = ITEMS, users: int = USERS, requests: int = REQUESTS,
                 rounds: int = ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    model = synthetic_model(items)
    profiles = synthetic_profiles(now, users, items)
    peer = Peer(model)
    _core_latencies(recommend, model, profiles[:20], now, 20)  # warm-up: page in the factors
    _core_latencies(peer.recommend, model, profiles[:20], now, 20)
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(_core_latencies(recommend, model, profiles, now, requests))
        theirs.append(_core_latencies(peer.recommend, model, profiles, now, requests))
    return np.concatenate(ours), np.concatenate(theirs)


class _Discard(io.TextIOBase):
    """The function's log lines, written and dropped (Lambda writes them to CloudWatch Logs)."""

    def write(self, text: str) -> int:
        return len(text)


def measure_route(now: float, items: int = ITEMS, users: int = USERS, requests: int = ROUTE_REQUESTS,
                  rounds: int = ROUNDS) -> tuple[np.ndarray, np.ndarray, dict]:
    """The serving handler on the local stand-in, with its ranking core and with the peer's."""
    from feedbackloop.adapters.aws import DynamoOnlineStore
    from feedbackloop.bench.freshness import personalized_users, publish_model
    from feedbackloop.local.api import API_KEY_HEADER, proxy_event
    from feedbackloop.local.runtime import LocalRuntime
    from feedbackloop.settings import ServingSettings
    from lambdas.serving import handler

    with tempfile.TemporaryDirectory(prefix="feedbackloop-serve-") as state, \
            LocalRuntime(state_dir=Path(state), capture_logs=False) as runtime:
        arrays = model_arrays(items)
        publish_model(runtime, arrays, {"version": "bench-serve", "params": PARAMS}, "bench-serve")
        names = personalized_users(users, prefix="serve")
        profiles = synthetic_profiles(now, users, items, names=names)
        DynamoOnlineStore(runtime.session, ServingSettings.from_env(os.environ).online_table).save(profiles)
        headers = {API_KEY_HEADER: runtime.api_key, "accept": "application/json"}
        events = [proxy_event("GET", f"/users/{p.user_id}/recommendations?k={K}", headers, b"") for p in profiles]
        peer: Peer | None = None
        answers: dict = {"ours": {}, "peer": {}}

        def latencies(core: str) -> np.ndarray:
            times = np.empty(requests)
            with contextlib.redirect_stdout(_Discard()):
                for r in range(requests):
                    started = time.perf_counter()
                    response = runtime.serving.invoke(events[r % len(events)])
                    times[r] = (time.perf_counter() - started) * 1000
                    answers[core][response["statusCode"]] = answers[core].get(response["statusCode"], 0) + 1
            return times

        latencies("ours")  # warm-up: the model's first load, clients, the config
        peer = Peer(handler._models().get())
        ours, theirs = [], []
        original = handler.recommend
        for _ in range(rounds):
            ours.append(latencies("ours"))
            handler.recommend = peer.recommend
            try:
                theirs.append(latencies("peer"))
            finally:
                handler.recommend = original
        with contextlib.redirect_stdout(_Discard()):
            body = json.loads(runtime.serving.invoke(events[0])["body"])
    return np.concatenate(ours), np.concatenate(theirs), {"statuses": answers, "example": {
        k: body.get(k) for k in ("strategy", "ordering", "experiments", "personalized")}}


def run(json_path: str, console: TextIO, items: int = ITEMS, users: int = USERS, requests: int = REQUESTS,
        route_requests: int = ROUTE_REQUESTS, rounds: int = ROUNDS) -> int:
    # one BLAS thread: a Lambda function of 1,769 MB or less has at most one vCPU, and a second
    # thread on a shared machine only adds wake-up latency to the tail
    with threadpool_limits(1, "blas"):
        now = time.time()
        console.write("the route, through the serving handler on the local stand-in...\n")
        console.flush()
        route, route_peer, checked = measure_route(now, items, users, route_requests, rounds)
        console.write("the ranking core...\n")
        console.flush()
        core, core_peer = measure_core(now, items, users, requests, rounds)
    benchmarks = (_entries("serve_route", route, "route_with_implicit_als_recommend", route_peer)
                  + _entries("serve_core", core, "implicit_als_recommend", core_peer))
    # the target (issue 14) is the ranking's at catalogue scale: the core's p99; the route's on the stand-in
    # adds moto's DynamoDB reads over loopback, which say nothing about AWS's
    p99 = benchmarks[3]["value"]
    write_results(json_path, benchmarks, console, items=items, factors=FACTORS, users=users,
                  requests={"route": len(route), "core": len(core)}, k=K, route=checked,
                  target_p99_ms=TARGET_P99_MS, target_met=p99 <= TARGET_P99_MS, target_reads="serve_core_p99_ms",
                  protocol=f"{items:,} items x {FACTORS} factors (seeded Gaussian), {users} users in the "
                           "personalized arm with 1 to 200 items of feedback each; the route: the serving "
                           f"handler on the local stand-in, {rounds} rounds of {route_requests:,} requests, ours "
                           f"and the peer's core alternating; the core: {rounds} rounds of {requests:,}; one BLAS "
                           "thread; the peer: implicit's ALS recommend (recalculate_user, the same filters)")
    console.write(f"target core p99 <= {TARGET_P99_MS} ms: {p99:.2f} ms -> "
                  f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'}\n")
    return 0
