"""Load on the local API for a bounded time: client threads, each on a kept-alive connection of its own,
post batches of 100 valid events (a realistic client batch) and, for a share of their requests, read a
user's recommendations; then nothing may be lost end to end.

Measured: CONNECTIONS threads at once for `seconds`. Baseline, in the same run and on the same stack: the
same mix sent one request at a time over one connection, for a third of the time. Figures: sustained
accepted events/s and requests/s, p50 and p99 latency per route, answers other than 2xx by status.

End to end, after both runs and once the stream has drained, by event id and not only by count: the
curated table holds each id at most once (rows = distinct ids); the curated ids are the accepted ids
that were not sent late; the quarantined ids (verdicts other than duplicate) are exactly the late ones
(older than the cleaner's age limit, sent on purpose); the duplicate verdicts number the re-sent events
(a client retry after a lost answer reuses the event id); lost = accepted ids in neither table = 0.

The stand-in runs one warm container per function, as a Lambda function with a reserved concurrency of 1
would, and its two API functions take turns (see LocalRuntime): concurrency helps as far as the clients',
the stream's and the cleaner's work overlap the functions', and a recommendations read waits behind a
batch being validated. In AWS both scale out; these figures are the stand-in's, not the service's.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import numpy as np

from feedbackloop.bench import write_results
from feedbackloop.bench.freshness import publish_synthetic_model
from feedbackloop.cleaning.clean import CleaningRules
from feedbackloop.local.api import API_KEY_HEADER
from feedbackloop.local.lake_reader import connect
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.schemas.registry import CURRENT_VERSION

CONNECTIONS = 8
EVENTS_PER_REQUEST = 100
RECOMMENDATION_SHARE = 0.2  # of requests: GET /users/{id}/recommendations?k=10
RESENT_SHARE = 0.01  # of events: sent again with the same id (a client retry) -> duplicates
LATE_SHARE = 0.005  # of events: older than the cleaner's age limit -> quarantined
USERS = 5_000
DRAIN_TIMEOUT_S = 600
ROUTES = ("POST /events", "GET /users/{user_id}/recommendations")
_TYPES = (("click", 1), ("view", None), ("purchase", 2), ("rating", 4), ("dwell", 42.5), ("cancel", 1))


@dataclass
class LoadRun:
    """What one run sent and got."""

    seconds: float = 0.0
    requests: int = 0
    accepted: int = 0  # events the API accepted (a re-sent event counts again: it is a record on the stream)
    late: int = 0  # accepted events sent late on purpose
    resent: int = 0  # accepted events that repeat an accepted id
    late_ids: set[str] = field(default_factory=set)  # the ids of the late ones
    statuses: Counter = field(default_factory=Counter)  # (route, status) -> count
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {route: [] for route in ROUTES})
    accepted_ids: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)  # a client that stopped on an error: why

    def merge(self, other: LoadRun) -> None:
        self.requests += other.requests
        self.accepted += other.accepted
        self.late += other.late
        self.resent += other.resent
        self.statuses += other.statuses
        for route, values in other.latencies_ms.items():
            self.latencies_ms[route].extend(values)
        self.accepted_ids |= other.accepted_ids
        self.late_ids |= other.late_ids

    def percentile(self, route: str, q: float) -> float:
        values = self.latencies_ms[route]
        return float(np.percentile(values, q)) if values else float("nan")

    @property
    def errors(self) -> dict[str, int]:
        return {f"{route} {status}": n for (route, status), n in sorted(self.statuses.items()) if status >= 300}


class _Client(threading.Thread):
    """One connection: a seeded mix of event batches and recommendation reads until the deadline."""

    def __init__(self, runtime: LocalRuntime, items: list[str], prefix: str, seed: int, deadline: float) -> None:
        super().__init__(name=f"load-{prefix}", daemon=True)
        url = urlsplit(runtime.api.url)
        self._connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        self._headers = {API_KEY_HEADER: runtime.api_key, "Content-Type": "application/json"}
        self._items, self._prefix, self._deadline = items, prefix, deadline
        self._rng = np.random.default_rng(seed)
        self._late_by = CleaningRules.max_event_age + timedelta(days=1)
        self._sent: list[dict] = []  # accepted events, for re-sending
        self._retry: list[tuple[dict, bool]] = []  # events the API marked retryable
        self._late_ids: set[str] = set()
        self._next_id = 0
        self.result = LoadRun()
        self.failure: str | None = None

    def _request(self, method: str, path: str, route: str, body: bytes | None = None) -> tuple[int, dict]:
        started = time.perf_counter()
        self._connection.request(method, path, body=body, headers=self._headers)
        response = self._connection.getresponse()
        payload = response.read()
        self.result.latencies_ms[route].append((time.perf_counter() - started) * 1000)
        self.result.requests += 1
        self.result.statuses[(route, response.status)] += 1
        return response.status, json.loads(payload or b"{}")

    def _event(self, now: datetime) -> tuple[dict, bool]:
        rng = self._rng
        if self._sent and rng.random() < RESENT_SHARE:
            return self._sent[int(rng.integers(len(self._sent)))], True
        event_type, value = _TYPES[int(rng.integers(len(_TYPES)))]
        late = rng.random() < LATE_SHARE
        when = now - (self._late_by if late else timedelta(seconds=float(rng.uniform(0, 300))))
        self._next_id += 1
        if late:
            self._late_ids.add(f"{self._prefix}-{self._next_id}")
        event = {"event_id": f"{self._prefix}-{self._next_id}", "user_id": f"load-u{int(rng.integers(USERS))}",
                 "item_id": self._items[int(rng.integers(len(self._items)))], "event_type": event_type,
                 "value": value, "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 "schema_version": CURRENT_VERSION,
                 "context": {"session_id": f"s{int(rng.integers(USERS * 3))}", "device": "mobile", "page": "/home"}}
        return event, False

    def _post_batch(self, fresh: bool = True) -> None:
        """The events the API asked to have again, then (unless `fresh` is False) new ones up to a batch."""
        now = datetime.now(UTC)
        batch, self._retry = self._retry, []  # (event, whether it re-sends an accepted one)
        if fresh:
            batch += [self._event(now) for _ in range(EVENTS_PER_REQUEST - len(batch))]
        body = json.dumps({"events": [event for event, _ in batch]}).encode()
        status, answer = self._request("POST", "/events", "POST /events", body)
        if status not in (200, 429, 503):
            raise RuntimeError(f"POST /events answered {status}: {str(answer)[:300]}")
        for result, (event, again) in zip(answer["results"], batch, strict=True):
            if result["accepted"]:
                self.result.accepted += 1
                self.result.resent += again
                late = not again and event["event_id"] in self._late_ids
                self.result.late += late
                if late:
                    self.result.late_ids.add(event["event_id"])
                self.result.accepted_ids.add(event["event_id"])
                if not again:
                    self._sent.append(event)
            elif result.get("retryable"):
                self._retry.append((event, again))
        if status != 200:
            time.sleep(0.25)  # the stream pushed back: a short pause before the retry, as a client would

    def run(self) -> None:
        started = time.perf_counter()
        try:
            while time.perf_counter() < self._deadline:
                if self._rng.random() < RECOMMENDATION_SHARE:
                    user = f"load-u{int(self._rng.integers(USERS))}"
                    self._request("GET", f"/users/{user}/recommendations?k=10", ROUTES[1])
                else:
                    self._post_batch()
            while self._retry:  # what the stream refused is sent again before the client stops
                self._post_batch(fresh=False)
        except Exception as error:  # reported with the figures: the run fails
            self.failure = repr(error)
        finally:
            self.result.seconds = time.perf_counter() - started
            self._connection.close()


def send(runtime: LocalRuntime, items: list[str], connections: int, seconds: float, name: str,
         seed: int = 0) -> LoadRun:
    deadline = time.perf_counter() + seconds
    clients = [_Client(runtime, items, f"load-{name}-{c}", seed * 1000 + c, deadline) for c in range(connections)]
    started = time.perf_counter()
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    total = LoadRun(seconds=time.perf_counter() - started)
    for client in clients:
        total.merge(client.result)
        if client.failure:
            total.failures.append(client.failure)
    return total


def reconcile(runtime: LocalRuntime, runs: list[LoadRun], prefix: str = "load-") -> dict:
    """Wait for the stream to drain, then account for every accepted event in the lake, by id."""
    accepted = sum(r.accepted for r in runs)
    started = time.perf_counter()
    drained = runtime.wait_until_processed(accepted, timeout=DRAIN_TIMEOUT_S)  # a fresh stack: only these
    drain_s = time.perf_counter() - started
    con = connect(runtime.moto.endpoint)
    clean, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM feedback_events "
                                  "WHERE starts_with(event_id, $1)", [prefix]).fetchone()
    curated_ids = {row[0] for row in con.execute(
        "SELECT DISTINCT event_id FROM feedback_events WHERE starts_with(event_id, $1)", [prefix]).fetchall()}
    verdicts = con.execute("SELECT event_id, reason FROM feedback_quarantine WHERE starts_with(event_id, $1)",
                           [prefix]).fetchall()
    reasons = Counter(reason for _, reason in verdicts)
    duplicates = reasons.pop("duplicate", 0)
    quarantined_ids = {event_id for event_id, reason in verdicts if reason != "duplicate"}
    ids = set().union(*(r.accepted_ids for r in runs))
    late_ids = set().union(*(r.late_ids for r in runs))
    expected = {"late": sum(r.late for r in runs), "resent": sum(r.resent for r in runs)}
    checks = {
        "curated_rows_are_distinct_ids": clean == distinct,
        "duplicates_equal_resent": duplicates == expected["resent"],
        "quarantined_equal_late": sum(reasons.values()) == expected["late"] == len(late_ids),
        "quarantined_ids_are_the_late_ids": quarantined_ids == late_ids,
        "curated_ids_are_the_accepted_ids_not_late": curated_ids == ids - late_ids,
        "no_id_both_curated_and_quarantined": not curated_ids & quarantined_ids,
    }
    return {"accepted": accepted, "clean": clean, "clean_distinct_ids": distinct,
            "quarantined": sum(reasons.values()), "quarantine_reasons": dict(reasons), "duplicates": duplicates,
            "lost": len(ids - curated_ids - quarantined_ids),
            "unaccounted": accepted - clean - sum(reasons.values()) - duplicates,
            "expected": expected, "checks": checks, "drained": drained, "drain_seconds": round(drain_s, 1)}


def _entry(name: str, unit: str, value: float, baseline_name: str, baseline: float, better: str) -> dict:
    return {"name": name, "unit": unit, "value": round(value, 1 if unit != "ms" else 2),
            "baseline": {"name": baseline_name, "value": round(baseline, 1 if unit != "ms" else 2)},
            "ratio": round(value / baseline, 3) if baseline else float("nan"), "better": better}


def run(json_path: str, console: TextIO, seconds: float = 30, connections: int = CONNECTIONS) -> int:
    with tempfile.TemporaryDirectory(prefix="feedbackloop-load-") as state, \
            LocalRuntime(state_dir=Path(state)) as runtime:
        items = publish_synthetic_model(runtime, version="bench-load")
        warmup = send(runtime, items, 1, 2, "warmup", seed=99)  # first invocations: imports, clients, model
        console.write(f"baseline: 1 connection, {seconds / 3:.0f} s\n")
        console.flush()
        baseline = send(runtime, items, 1, seconds / 3, "base", seed=1)
        console.write(f"measured: {connections} connections, {seconds:.0f} s\n")
        console.flush()
        measured = send(runtime, items, connections, seconds, "meas", seed=2)
        console.write("waiting for the stream to drain...\n")
        console.flush()
        lake = reconcile(runtime, [warmup, baseline, measured])
    benchmarks = [
        _entry("load_events_per_s", "events/s", measured.accepted / measured.seconds,
               "single_connection_events_per_s", baseline.accepted / baseline.seconds, "higher"),
        _entry("load_requests_per_s", "requests/s", measured.requests / measured.seconds,
               "single_connection_requests_per_s", baseline.requests / baseline.seconds, "higher"),
    ]
    for route, short in zip(ROUTES, ("post_events", "get_recommendations"), strict=True):
        for q in (50, 99):
            benchmarks.append(_entry(f"load_{short}_p{q}_ms", "ms", measured.percentile(route, q),
                                     f"single_connection_{short}_p{q}_ms", baseline.percentile(route, q), "lower"))
    runs = {name: {"connections": n, "seconds": round(r.seconds, 1), "requests": r.requests,
                   "accepted_events": r.accepted, "errors": r.errors, "failures": r.failures,
                   "requests_by_route": {route: len(r.latencies_ms[route]) for route in ROUTES}}
            for name, n, r in (("measured", connections, measured), ("baseline", 1, baseline))}
    write_results(json_path, benchmarks, console, runs=runs, end_to_end=lake, events_per_request=EVENTS_PER_REQUEST,
                  protocol=f"{connections} client threads for {seconds:g} s against 1 connection for {seconds / 3:g} s "
                           f"on the same local stack; batches of {EVENTS_PER_REQUEST} events, "
                           f"{RECOMMENDATION_SHARE:.0%} of requests read recommendations; then every accepted id "
                           "accounted for in the lake",
                  recommendation_share=RECOMMENDATION_SHARE, resent_share=RESENT_SHARE, late_share=LATE_SHARE)
    errors = measured.errors | {f"baseline {k}": v for k, v in baseline.errors.items()}
    failures = warmup.failures + baseline.failures + measured.failures
    console.write(f"errors by status: {errors or 'none'}; clients stopped by an error: {failures or 'none'}\n")
    console.write(f"end to end: accepted {lake['accepted']:,} = clean {lake['clean']:,} + quarantined "
                  f"{lake['quarantined']:,} + duplicates {lake['duplicates']:,}; lost {lake['lost']}, unaccounted "
                  f"{lake['unaccounted']} (drained in {lake['drain_seconds']} s)\n")
    failed_checks = [name for name, ok in lake["checks"].items() if not ok]
    console.write(f"checks by id: {'all hold' if not failed_checks else 'FAILED ' + ', '.join(failed_checks)}\n")
    return 0 if (lake["drained"] and lake["lost"] == 0 and lake["unaccounted"] == 0 and not failures
                 and not failed_checks) else 1
