"""A soak of the stand-in: many clients for many minutes, then every event accounted for.

`feedbackloop bench soak --minutes 10 --clients 16`: each client holds a kept-alive connection and sends, until
the time is up, batches of unique valid events (and, for a share of its requests, a recommendations read).
A request that gets no answer (a reset, a refused or dropped connection) is counted, the connection is
opened again and the batch is sent again with the same event ids, as a client retries. Afterwards, once the
stream has drained:

- lost: event ids the API accepted that are not in the curated lake;
- doubled: curated rows beyond one per event id;
- resets: requests that got no HTTP answer;
- memory: the resident memory of the stand-in (this process and the moto server's), sampled every few
  seconds: at the start, its peak, and after the accounting (`before_reset`). The start is read after a
  warm-up that takes each path once (events until the stream's consumers have handled them, then
  recommendations reads), so the clients and writers the stack builds on first use are in it, as they are
  in `end`; `before_warm_up` (the stack started, nothing sent) is kept too. The accounting reads the lake in
  a child process: its reader (DuckDB, Arrow's S3 filesystem) is this benchmark's, not the stand-in's. The stand-in
  keeps all it is sent in memory (the lake, the raw archive, the dedup ids, the stream's records: moto's
  stores), so it grows with what it holds; `feedbackloop local reset` empties it. The soak then resets the
  stack as that command does, warms it up as at the start, and reads `end`: back within MEMORY_LIMIT of the
  start, or the run fails (memory that a reset does not give back is a leak).

The baseline, in the same run: one client for the first minute's share of the time (`--baseline-seconds`),
sent before the concurrent run, so the table shows what concurrency adds over a single client.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from feedbackloop.local.api import API_KEY_HEADER
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.schemas.registry import CURRENT_VERSION

EVENTS_PER_REQUEST = 50
RECOMMENDATION_SHARE = 0.2
USERS, ITEMS = 2_000, 500
SAMPLE_SECONDS = 5
DRAIN_TIMEOUT_S = 900
RETRIES = 5  # per batch, after a request that got no answer
MEMORY_LIMIT = 1.2  # the end (after a reset) over the start
WARM_UP_ROUNDS = 3
NO_ANSWER = (ConnectionError, http.client.HTTPException, TimeoutError, OSError)


@dataclass
class ClientTally:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    resets: int = 0  # requests with no HTTP answer
    accepted_ids: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)


class _Client(threading.Thread):
    def __init__(self, runtime: LocalRuntime, name: str, deadline: float) -> None:
        super().__init__(name=f"soak-{name}", daemon=True)
        self._url = urlsplit(runtime.api.url)
        self._headers = {API_KEY_HEADER: runtime.api_key, "Content-Type": "application/json"}
        self._name, self._deadline = name, deadline
        self._connection = self._connect()
        self._next = 0
        self.tally = ClientTally()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._url.hostname, self._url.port, timeout=120)

    def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        for _ in range(RETRIES + 1):
            self.tally.requests += 1
            try:
                self._connection.request(method, path, body=body, headers=self._headers)
                response = self._connection.getresponse()
                payload = response.read()
                self.tally.statuses[response.status] += 1
                return response.status, payload
            except NO_ANSWER:
                self.tally.resets += 1
                self._connection.close()
                self._connection = self._connect()
        raise RuntimeError(f"{method} {path}: no answer in {RETRIES + 1} tries")

    def _batch(self) -> list[dict[str, Any]]:
        when = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        events = []
        for _ in range(EVENTS_PER_REQUEST):
            self._next += 1
            n = hash((self._name, self._next))
            events.append({"event_id": f"soak-{self._name}-{self._next}", "user_id": f"soak-u{n % USERS}",
                           "item_id": f"item-{(n // USERS) % ITEMS}", "event_type": "click", "value": 1,
                           "timestamp": when, "schema_version": CURRENT_VERSION,
                           "context": {"session_id": f"s{n % 997}", "device": "mobile", "page": "/home"}})
        return events

    def send_round(self, read: bool) -> None:
        """One round: a recommendations read when `read`, then a batch of new events until each is accepted."""
        if read:
            self._send("GET", f"/users/soak-u{self._next % USERS}/recommendations?k=10", None)
        pending = self._batch()
        while pending:  # what the stream refused is sent again, with the same ids
            status, payload = self._send("POST", "/events", json.dumps({"events": pending}).encode())
            if status not in (200, 429, 503):
                raise RuntimeError(f"POST /events answered {status}: {payload[:300]!r}")
            results = json.loads(payload)["results"]
            self.tally.accepted_ids.update(e["event_id"] for e, r in zip(pending, results, strict=True)
                                           if r["accepted"])
            pending = [e for e, r in zip(pending, results, strict=True) if r.get("retryable")]
            if pending:
                time.sleep(0.25)

    def run(self) -> None:
        try:
            while time.monotonic() < self._deadline:
                self.send_round(hash((self._name, self._next, "read")) % 100 < RECOMMENDATION_SHARE * 100)
        except Exception as error:  # reported with the figures: the run fails
            self.tally.failures.append(repr(error))
        finally:
            self._connection.close()


class MemorySampler(threading.Thread):
    """Resident memory of the stand-in's processes (this one and the moto server), every SAMPLE_SECONDS,
    read from /proc (Linux)."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(name="soak-memory", daemon=True)
        self.pids = pids
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def resident_mb(self) -> float:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return total / 2**20

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic() - self._t0, self.resident_mb()))
            self._halt.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class SoakRun:
    clients: int
    seconds: float
    tally: ClientTally

    def row(self) -> dict[str, Any]:
        accepted = len(self.tally.accepted_ids)
        return {"clients": self.clients, "seconds": round(self.seconds, 1), "requests": self.tally.requests,
                "statuses": {str(s): n for s, n in sorted(self.tally.statuses.items())},
                "resets": self.tally.resets, "accepted": accepted,
                "events_per_second": round(accepted / self.seconds, 1) if self.seconds else 0.0,
                "failures": self.tally.failures[:5]}


def _send(runtime: LocalRuntime, clients: int, seconds: float, name: str) -> SoakRun:
    deadline = time.monotonic() + seconds
    threads = [_Client(runtime, f"{name}{c}", deadline) for c in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = ClientTally()
    for thread in threads:
        total.requests += thread.tally.requests
        total.statuses += thread.tally.statuses
        total.resets += thread.tally.resets
        total.accepted_ids |= thread.tally.accepted_ids
        total.failures += thread.tally.failures
    return SoakRun(clients, time.monotonic() - started, total)


def _warm_up(runtime: LocalRuntime, name: str) -> None:
    """Each path the soak takes: WARM_UP_ROUNDS batches of events, until the stream's consumers have cleaned
    and archived them, then as many recommendations reads (served from the item counters the cleaner keeps):
    the handlers' clients, the cleaner's writers and the archiver exist before memory is read, at the start
    and after the reset alike."""
    client = _Client(runtime, name, deadline=0)
    try:
        for _ in range(WARM_UP_ROUNDS):
            client.send_round(read=False)
        if not runtime.wait_until_processed(len(client.tally.accepted_ids), timeout=DRAIN_TIMEOUT_S):
            raise RuntimeError(f"the warm-up's {len(client.tally.accepted_ids)} events were not processed "
                               f"in {DRAIN_TIMEOUT_S} s")
        for _ in range(WARM_UP_ROUNDS):
            client.send_round(read=True)
    finally:
        client._connection.close()
    if set(client.tally.statuses) != {200} or client.tally.resets:
        raise RuntimeError(f"the warm-up's requests failed: {dict(client.tally.statuses)}, "
                           f"{client.tally.resets} without an answer")


def _account(runtime: LocalRuntime, accepted_ids: set[str]) -> dict[str, Any]:
    """Every accepted id looked up in the curated lake, by a child process (`curated_counts`): the reader's
    libraries (DuckDB, Arrow's S3 filesystem and the AWS SDK for C++ under it) and its buffers are this
    benchmark's, not the stand-in's, and in this process they would stay in the memory read as the stand-in's
    after the reset (measured: about 30 MB of the libraries' code and 8 threads)."""
    started = time.monotonic()
    drained = runtime.wait_until_processed(runtime.records_cleaned, timeout=5)
    with tempfile.TemporaryDirectory() as folder:
        ids_file = Path(folder) / "accepted.json"
        ids_file.write_text(json.dumps(sorted(accepted_ids)))
        child = subprocess.run([sys.executable, "-m", __name__, runtime.moto.endpoint, str(ids_file),
                                str(DRAIN_TIMEOUT_S)], capture_output=True, text=True,
                               timeout=DRAIN_TIMEOUT_S + 300)
    if child.returncode != 0:
        raise RuntimeError(f"the accounting's reader failed ({child.returncode}): {child.stderr[-2000:]}")
    counts = json.loads(child.stdout.strip().splitlines()[-1])
    return {"accepted": len(accepted_ids), **counts, "drained": drained and not counts["lost"],
            "drain_seconds": round(time.monotonic() - started, 1)}


def curated_counts(endpoint: str, accepted_ids: set[str], timeout: float) -> dict[str, int]:
    """The soak's rows in the curated lake: how many, how many accepted ids are not there (lost) and how many
    rows are beyond one per id (doubled); read again every 5 s until none is lost or `timeout` passes."""
    from feedbackloop.local.lake_reader import connect

    deadline = time.monotonic() + timeout
    while True:  # until every accepted id is curated, or the drain times out
        con = connect(endpoint)  # anew: a connection sees the objects there were when it opened
        try:
            ids = [r[0] for r in con.execute(
                "SELECT event_id FROM feedback_events WHERE event_id LIKE 'soak-%'").fetchall()]
        finally:
            con.close()
        lost = accepted_ids - set(ids)
        if not lost or time.monotonic() > deadline:
            return {"curated_rows": len(ids), "lost": len(lost), "doubled": len(ids) - len(set(ids))}
        time.sleep(5)


def run_soak(minutes: float, clients: int, *, baseline_seconds: float = 60, console: TextIO | None = None,
             state_dir: Path | None = None) -> dict[str, Any]:
    """The soak on a local stack of its own; the figures as a dict (see the module docstring)."""

    def say(line: str) -> None:
        if console is not None:
            console.write(line + "\n")
            console.flush()

    options = {"state_dir": state_dir} if state_dir is not None else {}
    with LocalRuntime(**options) as runtime:
        sampler = MemorySampler([os.getpid(), runtime.moto.pid])
        before_warm_up_mb = sampler.resident_mb()  # the stack started, nothing sent yet
        say("warming up: each path once, until the stream's consumers have handled it...")
        _warm_up(runtime, "warmup")
        moto_start_mb = MemorySampler([runtime.moto.pid]).resident_mb()
        sampler.start()
        say(f"baseline: 1 client for {baseline_seconds:.0f} s...")
        baseline = _send(runtime, 1, baseline_seconds, "b")
        say(f"soak: {clients} clients for {minutes:g} min...")
        soak = _send(runtime, clients, minutes * 60, "s")
        say("draining the stream and accounting for every event...")
        accounting = _account(runtime, baseline.tally.accepted_ids | soak.tally.accepted_ids)
        sampler.stop()
        memory = [mb for _, mb in sampler.samples]
        start_mb, before_reset_mb = memory[0], sampler.resident_mb()
        moto_before_reset_mb = MemorySampler([runtime.moto.pid]).resident_mb()
        say("resetting the stack (`feedbackloop local reset`) and warming it up as at the start...")
        runtime.reset()
        _warm_up(runtime, "warmup-after-reset")
        end_mb = MemorySampler([os.getpid(), runtime.moto.pid]).resident_mb()
        moto_end_mb = MemorySampler([runtime.moto.pid]).resident_mb()
    figures = {
        "minutes": minutes, "clients": clients, "baseline": baseline.row(), "soak": soak.row(), **accounting,
        "resets": baseline.tally.resets + soak.tally.resets,
        "memory_mb": {"before_warm_up": round(before_warm_up_mb, 1), "start": round(start_mb, 1),
                      "peak": round(max(memory), 1),
                      "before_reset": round(before_reset_mb, 1),
                      "before_reset_over_start": round(before_reset_mb / start_mb, 3),
                      "end": round(end_mb, 1), "end_over_start": round(end_mb / start_mb, 3),
                      "limit": MEMORY_LIMIT, "moto_start": round(moto_start_mb, 1),
                      "moto_before_reset": round(moto_before_reset_mb, 1), "moto_end": round(moto_end_mb, 1)},
        "memory_samples_mb": [(round(t, 1), round(mb, 1)) for t, mb in sampler.samples],
        "ratio_events_per_second": round(soak.row()["events_per_second"] / baseline.row()["events_per_second"], 2)
        if baseline.row()["events_per_second"] else None,
    }
    figures["memory_ok"] = end_mb <= MEMORY_LIMIT * start_mb
    figures["ok"] = (figures["lost"] == 0 and figures["doubled"] == 0 and figures["resets"] == 0
                     and not soak.tally.failures and not baseline.tally.failures and accounting["drained"]
                     and figures["memory_ok"])
    return figures


def render(figures: dict[str, Any]) -> str:
    lines = [f"{'run':<10}{'clients':>8}{'seconds':>9}{'requests':>10}{'resets':>8}{'accepted':>10}{'events/s':>10}"]
    for name in ("baseline", "soak"):
        row = figures[name]
        lines.append(f"{name:<10}{row['clients']:>8}{row['seconds']:>9}{row['requests']:>10}{row['resets']:>8}"
                     f"{row['accepted']:>10}{row['events_per_second']:>10}")
    memory = figures["memory_mb"]
    lines += [f"events/s, soak over baseline: {figures['ratio_events_per_second']}",
              f"lost {figures['lost']}, doubled {figures['doubled']}, resets {figures['resets']}, "
              f"drained in {figures['drain_seconds']} s",
              f"memory (MB, this process and moto): start {memory['start']}, peak {memory['peak']}, "
              f"before the reset {memory['before_reset']} ({memory['before_reset_over_start']:.0%} of the start), "
              f"after it {memory['end']} ({memory['end_over_start']:.0%} of the start; limit "
              f"{memory['limit']:.0%}); of which moto: start {memory['moto_start']}, before the reset "
              f"{memory['moto_before_reset']}, after it {memory['moto_end']}",
              "OK" if figures["ok"] else "NOT OK"]
    return "\n".join(lines)


if __name__ == "__main__":  # the accounting's reader (_account): ENDPOINT IDS_FILE TIMEOUT_SECONDS
    endpoint, ids_file, timeout = sys.argv[1:4]
    print(json.dumps(curated_counts(endpoint, set(json.loads(Path(ids_file).read_text())), float(timeout))))
