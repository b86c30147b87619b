"""Freshness on the local stand-in: from `POST /events` returning to the first recommendations response
that reflects the event (the user's ranking is folded in from it), over real HTTP, through the ingest
Lambda, Kinesis, the event source mapping's poller, the cleaner and the online store.

Baseline, in the same run: the same path to the curated lake, from `POST /events` returning to the
event's row being readable there (what the table jobs and retraining see first).
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import time
import urllib.request
from datetime import UTC, datetime
from typing import TextIO

import numpy as np

from feedbackloop.adapters.aws import DynamoModelRegistry
from feedbackloop.bench import write_results
from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.local.environment import physical_name
from feedbackloop.local.lake_reader import connect, dataset
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
from feedbackloop.resources import MODELS_BUCKET, PUBLISHED_PREFIX, REGISTRY_TABLE
from feedbackloop.schemas.registry import CURRENT_VERSION
from feedbackloop.uiconfig import RANKING_EXPERIMENT, assign, default_document

EVENTS = 120  # per path
ITEMS, FACTORS = 5_000, 32
TIMEOUT_S = 10.0
TARGET_P95_MS = 1000.0


def publish_synthetic_model(runtime: LocalRuntime, version: str = "bench-freshness") -> list[str]:
    rng = np.random.default_rng(0)
    items = [f"item-{i}" for i in range(ITEMS)]
    arrays = {"item_ids": np.array(items), "item_factors": rng.normal(0, 0.1, (ITEMS, FACTORS)).astype(np.float32),
              "popularity": rng.zipf(1.5, ITEMS).astype(float), "user_ids": np.array(["nobody"]),
              "user_factors": np.zeros((1, FACTORS), dtype=np.float32)}
    npz, archive = io.BytesIO(), io.BytesIO()
    np.savez(npz, **arrays)
    document = json.dumps({"version": version, "params": {"alpha": 10.0, "regularization": 0.01,
                                                          "history_weight": 1.0}}).encode()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in ((MODEL_FILE, npz.getvalue()), (METRICS_FILE, document)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bucket, key = physical_name(MODELS_BUCKET.key), f"{PUBLISHED_PREFIX}{version}/model.tar.gz"
    runtime.session.client("s3").put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
    registry = DynamoModelRegistry(runtime.session, physical_name(REGISTRY_TABLE.key))
    current = registry.current()
    registry.publish({"version": version, "artifact": f"s3://{bucket}/{key}"},
                     replaces=None if current is None else current["version"])
    return items


class _Client:
    def __init__(self, runtime: LocalRuntime) -> None:
        self._url, self._key = runtime.api.url, runtime.api_key

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self._url}{path}", data=data, method=method,
                                         headers={"x-api-key": self._key, "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())


def _event(user: str, item: str, index: int) -> dict:
    return {"event_id": f"fresh-{user}-{index}", "user_id": user, "item_id": item, "event_type": "purchase",
            "value": 2, "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "schema_version": CURRENT_VERSION, "context": {"session_id": f"s-{user}"}}


def _wait(check, deadline: float) -> bool:
    while time.perf_counter() < deadline:
        if check():
            return True
        time.sleep(0.002)
    return False


def run(json_path: str, console: TextIO) -> int:
    with LocalRuntime() as runtime:
        items = publish_synthetic_model(runtime)
        client = _Client(runtime)
        rng = np.random.default_rng(1)
        online, lake, missed = [], [], 0
        con = connect(runtime.moto.endpoint)
        users = _personalized_users(2 * EVENTS)
        for i in range(2 * EVENTS):
            user, item = users[i], items[int(rng.integers(ITEMS))]
            assert client.request("POST", "/events", {"events": [_event(user, item, i)]})[0] == 200
            posted = time.perf_counter()
            if i % 2 == 0:  # the online path: the next ranking folds the event in
                def reflected(user=user, item=item) -> bool:
                    body = client.request("GET", f"/users/{user}/recommendations?k=10")[1]
                    return body["strategy"] == "fold_in" and any(r["item_id"] == item for r in body["items"])
                times = online
            else:  # the lake path: the row is readable in the curated table
                def reflected(user=user) -> bool:
                    con.register("feedback_events", _curated(runtime))
                    return con.execute("SELECT count(*) FROM feedback_events WHERE user_id = ?",
                                       [user]).fetchall()[0][0] > 0
                times = lake
            if _wait(reflected, posted + TIMEOUT_S):
                times.append((time.perf_counter() - posted) * 1000)
            else:
                missed += 1
            if (i + 1) % 40 == 0:
                console.write(f"  {i + 1}/{2 * EVENTS} events\n")
    benchmarks = []
    for percentile in (50, 95):
        value, baseline = float(np.percentile(online, percentile)), float(np.percentile(lake, percentile))
        benchmarks.append({"name": f"freshness_post_to_recommendations_p{percentile}_ms", "unit": "ms",
                           "value": round(value, 1),
                           "baseline": {"name": f"freshness_post_to_curated_lake_p{percentile}_ms",
                                        "value": round(baseline, 1)},
                           "ratio": round(value / baseline, 3), "better": "lower"})
    p95 = benchmarks[1]["value"]
    write_results(json_path, benchmarks, console, events={"online": len(online), "lake": len(lake)},
                  missed=missed, timeout_s=TIMEOUT_S, target_p95_ms=TARGET_P95_MS, target_met=p95 <= TARGET_P95_MS,
                  measured="POST /events -> ingest Lambda -> Kinesis (moto) -> poller (50 ms) -> cleaner -> "
                       "online store (moto DynamoDB) -> GET recommendations")
    console.write(f"target p95 <= {TARGET_P95_MS:.0f} ms: {p95:.0f} ms -> "
                  f"{'met' if p95 <= TARGET_P95_MS and not missed else 'NOT met'}\n")
    return 0


def _personalized_users(count: int) -> list[str]:
    """New users in the personalized arm of the ranking experiment: the control arm ranks by popularity,
    so no event of theirs is ever folded into their ranking."""
    ranking = default_document()["experiments"][RANKING_EXPERIMENT]
    names = (f"fresh-{i}" for i in itertools.count())
    personalized = (u for u in names if assign(u, ranking["salt"], ranking["variants"]) == "personalized")
    return list(itertools.islice(personalized, count))


def _curated(runtime: LocalRuntime):
    return dataset(runtime.moto.endpoint, CURATED_EVENTS)
