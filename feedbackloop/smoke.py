"""`feedbackloop smoke`: the deployment checked end to end, as a client sees it, with a fresh test user.

Steps, each timed; the first failure stops the run with what to check:
1. find the deployment (AWS: the stacks' outputs and the API keys' values; local: a running stand-in);
2. read the config route, choosing a user in the personalized arm of the ranking experiment (an arm that
   ranks by popularity would never show the user's feedback);
3. read the user's cold recommendations (a model must be published: `feedbackloop retrain`);
4. post purchases of two of those items for the user;
5. wait for the user's events in the curated lake (Athena in AWS, DuckDB locally);
6. wait for the recommendations to fold the user's feedback in (`strategy: fold_in`);
7. erase the user and wait for the audit record to complete.

The core takes its I/O as small ports, so the same steps run against AWS and the local stand-in.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO
from urllib import error, request

# API Gateway reads the key from this header (the stand-in too: `feedbackloop.local.api` checks the same one)
API_KEY_HEADER = "x-api-key"

RANKING_EXPERIMENT = "ranking"
PERSONALIZED = "personalized"
FOLD_IN = "fold_in"


class SmokeFailure(Exception):
    """A step failed; the message says what to check."""


@dataclass(frozen=True)
class Api:
    """One REST API: its base URL (with the stage, no trailing slash) and its key."""

    url: str
    key: str

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = request.Request(self.url.rstrip("/") + path, data=data, method=method,
                              headers={API_KEY_HEADER: self.key, "Content-Type": "application/json"})
        try:
            with request.urlopen(req, timeout=timeout) as response:  # noqa: S310 - http(s) URLs we were given
                status, payload = response.status, response.read()
        except error.HTTPError as failure:
            status, payload = failure.code, failure.read()
        try:
            return status, json.loads(payload or b"{}")
        except ValueError:
            return status, {"raw": payload[:200].decode("utf-8", "replace")}


class LakeProbe(Protocol):
    def curated_rows(self, user_id: str) -> int:
        """How many of the user's events the curated lake holds."""


@dataclass(frozen=True)
class Target:
    ingest: Api
    serving: Api
    lake: LakeProbe
    where: str  # for the report: "AWS stage dev", "local stand-in at ..."


@dataclass
class Step:
    name: str
    seconds: float
    detail: str


@dataclass
class SmokeReport:
    user_id: str
    steps: list[Step] = field(default_factory=list)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class Smoke:
    target: Target
    timeout: float = 600  # seconds per waiting step
    poll: float = 2.0
    out: TextIO | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def run(self) -> SmokeReport:
        report = SmokeReport(user_id="")
        steps: list[tuple[str, Callable[[SmokeReport], str]]] = [
            ("config route", self._choose_user), ("cold recommendations", self._cold),
            ("post events", self._post), ("curated lake", self._lake), ("recommendations", self._warm),
            ("erasure", self._erase)]
        self._say(f"smoke test of {self.target.where}")
        for name, step in steps:
            started = self.clock()
            try:
                detail = step(report)
            except SmokeFailure as failure:
                report.failure = f"{name}: {failure}"
                self._say(f"FAIL  {name:<22} {self.clock() - started:7.1f} s  {failure}")
                return report
            report.steps.append(Step(name, self.clock() - started, detail))
            self._say(f"ok    {name:<22} {report.steps[-1].seconds:7.1f} s  {detail}")
        self._say(f"passed in {sum(s.seconds for s in report.steps):.1f} s")
        return report

    # -- the steps --------------------------------------------------------------------------------------

    def _choose_user(self, report: SmokeReport) -> str:
        for _ in range(40):
            user = f"smoke-{uuid.uuid4().hex[:12]}"
            status, body = self.target.serving.call("GET", f"/users/{user}/config")
            if status != 200:
                raise SmokeFailure(f"GET /users/{{id}}/config answered {status} {body}: check the serving API key "
                                   "and the AppConfig deployment of the UI config (FeedbackLoopServing)")
            arm = (body.get("experiments") or {}).get(RANKING_EXPERIMENT, PERSONALIZED)
            if arm == PERSONALIZED:
                report.user_id = user
                self._version = body.get("config_version")
                return f"{user}, config version {self._version}"
        raise SmokeFailure("no user of 40 landed in the personalized arm: check the ranking experiment's split")

    def _cold(self, report: SmokeReport) -> str:
        status, body = self.target.serving.call("GET", f"/users/{report.user_id}/recommendations?k=10")
        if status == 503:
            raise SmokeFailure(f"{body}: no model is published yet: run `feedbackloop retrain` and try again")
        if status != 200 or not body.get("items"):
            raise SmokeFailure(f"answered {status} {body}: check the serving function's log")
        self._items = [i["item_id"] for i in body["items"]][-2:]
        return f"{len(body['items'])} items, strategy {body.get('strategy')}, model {body.get('model_version')}"

    def _post(self, report: SmokeReport) -> str:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        events = [{"event_id": f"{report.user_id}-{i}", "user_id": report.user_id, "item_id": item,
                   "event_type": "purchase", "value": 1, "timestamp": now, "schema_version": "1.0"}
                  for i, item in enumerate(self._items)]
        status, body = self.target.ingest.call("POST", "/events", {"events": events})
        if status != 200 or body.get("accepted") != len(events):
            raise SmokeFailure(f"POST /events answered {status} {body}: check the ingestion API key and the "
                               "ingest function's log")
        return f"{len(events)} purchases accepted"

    def _lake(self, report: SmokeReport) -> str:
        rows = self._wait(lambda: self.target.lake.curated_rows(report.user_id) >= len(self._items),
                          "the events never reached the curated lake: check the cleaner's log, its iterator age "
                          "and the on-failure queue")
        return f"{len(self._items)} rows after {rows} polls"

    def _warm(self, report: SmokeReport) -> str:
        def folded() -> bool:
            status, body = self.target.serving.call("GET", f"/users/{report.user_id}/recommendations?k=10")
            return status == 200 and body.get("strategy") == FOLD_IN

        polls = self._wait(folded, "the recommendations never folded the user's feedback in: check the cleaner's "
                                   "writes to the online store")
        return f"strategy {FOLD_IN} after {polls} polls"

    def _erase(self, report: SmokeReport) -> str:
        status, body = self.target.serving.call("DELETE", f"/users/{report.user_id}")
        if status != 202:
            raise SmokeFailure(f"DELETE answered {status} {body}: check the erasure table and queue")

        def completed() -> bool:
            code, record = self.target.serving.call("GET", f"/users/{report.user_id}/erasure")
            return code == 200 and record.get("status") == "complete"

        polls = self._wait(completed, "the erasure never completed: check the eraser's log and the erasure "
                                      "dead-letter queue")
        return f"complete after {polls} polls"

    def _wait(self, condition: Callable[[], bool], hint: str) -> int:
        deadline, polls = self.clock() + self.timeout, 0
        while True:
            polls += 1
            if condition():
                return polls
            if self.clock() >= deadline:
                raise SmokeFailure(f"not within {self.timeout:.0f} s: {hint}")
            self.sleep(self.poll)

    def _say(self, line: str) -> None:
        if self.out is not None:
            self.out.write(line + "\n")
            self.out.flush()


def run_smoke(target: Target, *, timeout: float = 600, poll: float = 2.0, out: TextIO | None = None) -> SmokeReport:
    return Smoke(target, timeout=timeout, poll=poll, out=out).run()
