"""Freshness on the local stand-in: from sending `POST /events` to the first recommendations response
that reflects the event (the user's ranking is folded in from it and ranks the bought item), over real
HTTP, through the ingest Lambda, Kinesis, the event source mapping's poller, the cleaner and the online
store. The POST's own time is included.

Beside it, from the cleaner's own timestamps (each curated row's `processed_at`, read once at the end):
from sending the POST to the cleaner taking the event up. The cleaner writes the curated rows before it
merges the batch into the profiles, so an event is in the lake before it can change a ranking (checked
per event: cleaned <= ranked). That is the order of the steps, not a baseline: no entry has one.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow.compute as pc

from feedbackloop.adapters.aws import DynamoModelRegistry
from feedbackloop.bench import write_results
from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.local.environment import physical_name
from feedbackloop.local.lake_reader import dataset
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
from feedbackloop.resources import MODELS_BUCKET, PUBLISHED_PREFIX, REGISTRY_TABLE
from feedbackloop.schemas.registry import CURRENT_VERSION
from feedbackloop.uiconfig import RANKING_EXPERIMENT, assign, default_document

EVENTS = 120
ITEMS, FACTORS = 5_000, 32
TIMEOUT_S = 10.0
TARGET_P95_MS = 1000.0


def publish_model(runtime: LocalRuntime, arrays: dict[str, np.ndarray], document: dict, version: str) -> None:
    """A model archive as training writes it, in the models bucket, made current in the registry."""
    npz, archive = io.BytesIO(), io.BytesIO()
    np.savez(npz, **arrays)
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in ((MODEL_FILE, npz.getvalue()), (METRICS_FILE, json.dumps(document).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bucket, key = physical_name(MODELS_BUCKET.key), f"{PUBLISHED_PREFIX}{version}/model.tar.gz"
    runtime.session.client("s3").put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
    registry = DynamoModelRegistry(runtime.session, physical_name(REGISTRY_TABLE.key))
    current = registry.current()
    registry.publish({"version": version, "artifact": f"s3://{bucket}/{key}"},
                     replaces=None if current is None else current["version"])


def publish_synthetic_model(runtime: LocalRuntime, version: str = "bench-freshness") -> list[str]:
    rng = np.random.default_rng(0)
    items = [f"item-{i}" for i in range(ITEMS)]
    arrays = {"item_ids": np.array(items), "item_factors": rng.normal(0, 0.1, (ITEMS, FACTORS)).astype(np.float32),
              "popularity": rng.zipf(1.5, ITEMS).astype(float), "user_ids": np.array(["nobody"]),
              "user_factors": np.zeros((1, FACTORS), dtype=np.float32)}
    publish_model(runtime, arrays, {"version": version, "params": {"alpha": 10.0, "regularization": 0.01,
                                                                   "history_weight": 1.0}}, version)
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


def run(json_path: str, console: TextIO, events: int = EVENTS) -> int:
    with tempfile.TemporaryDirectory(prefix="feedbackloop-freshness-") as state, \
            LocalRuntime(state_dir=Path(state)) as runtime:
        items = publish_synthetic_model(runtime)
        client = _Client(runtime)
        rng = np.random.default_rng(1)
        sent: dict[str, float] = {}  # event id -> epoch seconds the POST was sent
        ranked: dict[str, float] = {}  # event id -> milliseconds from sending to a ranking that reflects it
        missed = 0
        for i, user in enumerate(personalized_users(events)):
            item = items[int(rng.integers(ITEMS))]
            event = _event(user, item, i)
            sent[event["event_id"]] = time.time()
            started = time.perf_counter()
            assert client.request("POST", "/events", {"events": [event]})[0] == 200

            def reflected(user=user, item=item) -> bool:
                body = client.request("GET", f"/users/{user}/recommendations?k=10")[1]
                return body["strategy"] == "fold_in" and any(r["item_id"] == item for r in body["items"])
            if _wait(reflected, started + TIMEOUT_S):
                ranked[event["event_id"]] = (time.perf_counter() - started) * 1000
            else:
                missed += 1
            if (i + 1) % 40 == 0:
                console.write(f"  {i + 1}/{events} events\n")
        cleaned = _cleaned(runtime, sent)
    online = np.array(list(ranked.values()))
    lake = np.array(list(cleaned.values()))
    # an event is curated before its ranking changes (the cleaner writes the lake, then the profiles);
    # the two clocks differ by the cleaner's rounding to microseconds at most
    order_kept = sum(cleaned[e] <= ranked[e] + 0.01 for e in ranked if e in cleaned)
    benchmarks = [_entry(f"freshness_post_to_recommendations_p{q}_ms", float(np.percentile(online, q)))
                  for q in (50, 95)]
    benchmarks += [_entry(f"freshness_post_to_cleaned_p{q}_ms", float(np.percentile(lake, q))) for q in (50, 95)]
    p95 = benchmarks[1]["value"]
    write_results(json_path, benchmarks, console, events={"sent": len(sent), "ranked": len(ranked),
                                                          "cleaned": len(cleaned)},
                  missed=missed, cleaned_before_ranked=order_kept, timeout_s=TIMEOUT_S, target_p95_ms=TARGET_P95_MS,
                  target_met=p95 <= TARGET_P95_MS and not missed,
                  protocol=f"{events} events, one at a time, each from a new user in the personalized arm of the "
                           "ranking experiment: POST /events -> ingest Lambda -> Kinesis (moto) -> poller (50 ms) -> "
                           "cleaner -> online store (moto DynamoDB) -> GET recommendations, polled until the "
                           "ranking is folded in from the event and ranks its item; timed from sending the POST. "
                           "Cleaned: the curated row's processed_at (the cleaner's clock) minus the POST's "
                           "sending time, read once after the run. No baseline: the lake is a step on the way")
    console.write(f"target p95 <= {TARGET_P95_MS:.0f} ms: {p95:.0f} ms -> "
                  f"{'met' if p95 <= TARGET_P95_MS and not missed else 'NOT met'}\n")
    return 0


def _entry(name: str, value: float) -> dict:
    return {"name": name, "unit": "ms", "value": round(value, 1), "baseline": None, "ratio": None, "better": "lower"}


def _cleaned(runtime: LocalRuntime, sent: dict[str, float]) -> dict[str, float]:
    """Per event id, milliseconds from sending its POST to the cleaner processing it (its curated row's
    processed_at), for the events found in the curated lake."""
    rows = dataset(runtime.moto.endpoint, CURATED_EVENTS).to_table(
        columns=["event_id", "processed_at"], filter=pc.field("event_id").isin(list(sent)))
    processed = {e: t.timestamp() for e, t in zip(rows["event_id"].to_pylist(), rows["processed_at"].to_pylist(),
                                                  strict=True)}
    return {e: (processed[e] - sent[e]) * 1000 for e in sent if e in processed}


def personalized_users(count: int, prefix: str = "fresh") -> list[str]:
    """New users in the personalized arm of the ranking experiment: the control arm ranks by popularity,
    so no event of theirs is ever folded into their ranking."""
    ranking = default_document()["experiments"][RANKING_EXPERIMENT]
    names = (f"{prefix}-{i}" for i in itertools.count())
    personalized = (u for u in names if assign(u, ranking["salt"], ranking["variants"]) == "personalized")
    return list(itertools.islice(personalized, count))
