"""Fuzz every route of the local API from its published OpenAPI document, with schemathesis.

Both documents (ingest: `docs/openapi-ingest.json`, serving: `docs/openapi.json`) are generated from the
code, so what is fuzzed is what is published. Against a running LocalRuntime, over real HTTP with the API
key: schemathesis' coverage phase (boundary values, every constraint broken one at a time, undeclared
methods, missing and wrong API key) and then its fuzzing phase, valid and invalid inputs alike, until the
request budget is spent. A request fails the run when it gets a 5xx or no answer, when a 4xx does not
say in JSON what was wrong, or when a schemathesis check fails (the response's schema and content type
against the document, invalid input accepted, the key not enforced). The stack must answer a health
request afterwards.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.error import HTTPError

from feedbackloop.local.api import API_KEY_HEADER
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.schemas.registry import CURRENT_VERSION

# 4xx answers that refuse invalid input: 413 for a batch over 500 events or a body over the limit
REJECTION_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]
# every check schemathesis has that applies to a stateless API: status codes, content types, headers and
# bodies held to both documents, which declare every status their routes answer
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "response_headers_conformance", "negative_data_rejection", "positive_data_acceptance", "ignored_auth",
          "missing_required_header", "unsupported_method")
REQUEST_TIMEOUT_S = 30
EXAMPLE_LIMIT = 5  # failures kept per kind, with their request, for the report


@dataclass(frozen=True)
class Problem:
    kind: str  # server_error, no_answer, unclear_rejection, check:<name>, run_error
    route: str
    status: int | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "route": self.route, "status": self.status, "detail": self.detail}


@dataclass
class FuzzReport:
    requests: int = 0
    by_route: dict[str, Counter] = field(default_factory=dict)  # "METHOD /path/{template}" -> status -> count
    by_phase: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)  # kind -> count
    examples: list[Problem] = field(default_factory=list)
    function_errors: int = 0  # handler invocations that raised (API Gateway's 502)
    healthy_after: bool = False
    seconds: float = 0.0
    seed: int = 0
    declared: set[str] = field(default_factory=set)  # the documents' "METHOD /path" pairs

    @property
    def ok(self) -> bool:
        return not self.problems and not self.function_errors and self.healthy_after

    @property
    def by_status(self) -> Counter:
        return sum(self.by_route.values(), Counter())

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": round(self.seconds, 1), "seed": self.seed, "ok": self.ok,
                "by_status": {str(s): n for s, n in sorted(self.by_status.items(), key=str)},
                "by_route": {route: {str(s): n for s, n in sorted(statuses.items(), key=str)}
                             for route, statuses in sorted(self.by_route.items())},
                "by_phase": dict(self.by_phase), "problems": dict(self.problems),
                "function_errors": self.function_errors, "healthy_after": self.healthy_after,
                "examples": [p.as_dict() for p in self.examples]}

    def render(self) -> str:
        """Requests by route and status; the probes of undeclared methods on one row."""
        rows: dict[str, Counter] = {}
        undeclared = [r for r in self.by_route if r not in self.declared]
        for route, counts in self.by_route.items():
            name = route if route in self.declared else f"undeclared methods ({len(undeclared)} method/path pairs)"
            rows[name] = rows.get(name, Counter()) + counts
        statuses = sorted(self.by_status, key=str)
        width = max([len(r) for r in rows] + [5])
        lines = [f"{'route':<{width}}  " + "  ".join(f"{s:>5}" for s in statuses) + "  total"]
        for route, counts in sorted(rows.items(), key=lambda kv: (kv[0] not in self.declared, kv[0])):
            lines.append(f"{route:<{width}}  " + "  ".join(f"{counts.get(s, 0) or '':>5}" for s in statuses)
                         + f"  {sum(counts.values()):>5}")
        lines.append(f"{'all':<{width}}  " + "  ".join(f"{self.by_status[s]:>5}" for s in statuses)
                     + f"  {self.requests:>5}")
        lines.append(f"{self.requests:,} requests in {self.seconds:.0f} s ({dict(self.by_phase)}), seed {self.seed}; "
                     f"healthy after: {'yes' if self.healthy_after else 'NO'}; handler errors: {self.function_errors}")
        if self.problems:
            lines.append("PROBLEMS: " + ", ".join(f"{kind} {n}" for kind, n in sorted(self.problems.items())))
            lines.extend(f"  {p.kind} {p.route} -> {p.status}: {p.detail}" for p in self.examples)
        else:
            lines.append("no 5xx, no request unanswered, every 4xx explained, every check passed")
        return "\n".join(lines)


def explanation(body: object) -> str | None:
    """What a 4xx body says was wrong, or None when it does not say. The shapes: the ingest function's
    {"error", "field", "reason"} of both APIs, the serving validation's {"detail": [{"loc", "msg"/"type"}]}
    and API Gateway's own {"message"}."""
    if not isinstance(body, dict):
        return None
    reason = body.get("reason")
    if isinstance(reason, str) and reason and isinstance(body.get("field") or body.get("error"), str):
        return f"{body.get('field') or body.get('error')}: {reason}"
    detail = body.get("detail")
    if isinstance(detail, list) and detail:
        said = []
        for item in detail:
            loc, why = (item.get("loc"), item.get("msg") or item.get("type")) if isinstance(item, dict) else (0, 0)
            if not (isinstance(loc, list) and loc and isinstance(why, str) and why):
                return None
            said.append(f"{'.'.join(map(str, loc))}: {why}")
        return "; ".join(said)
    message = body.get("message")
    return message if isinstance(message, str) and message.strip() else None


class _Tally:
    """What every request got, from schemathesis' hooks (they run on its worker threads)."""

    def __init__(self, report: FuzzReport, every_thousand: Callable[[], None] = lambda: None) -> None:
        self.report = report
        self._lock = threading.Lock()
        self._every_thousand = every_thousand

    def problem(self, kind: str, route: str, status: int | None, detail: str) -> None:
        with self._lock:
            self.report.problems[kind] += 1
            if sum(p.kind == kind for p in self.report.examples) < EXAMPLE_LIMIT:
                self.report.examples.append(Problem(kind, route, status, detail[:600]))

    def answered(self, case, response) -> None:
        route = f"{case.method.upper()} {case.path}"
        status = response.status_code
        with self._lock:
            self.report.requests += 1
            self.report.by_route.setdefault(route, Counter())[status] += 1
            self.report.by_phase[case.meta.phase.name.value if case.meta else "other"] += 1
            thousand = self.report.requests % 1000 == 0
        if thousand:
            self._every_thousand()
        if status >= 500:
            self.problem("server_error", route, status, _request_text(case, response.request))
        elif status >= 400:
            try:
                body = json.loads(response.content or b"null")
            except ValueError:
                body = None
            if explanation(body) is None:
                self.problem("unclear_rejection", route, status,
                             f"{_request_text(case, response.request)} answered {response.content[:200]!r}")

    def unanswered(self, case, request) -> None:
        route = f"{case.method.upper()} {case.path}"
        with self._lock:
            self.report.requests += 1
            self.report.by_route.setdefault(route, Counter())["none"] += 1
        self.problem("no_answer", route, None, _request_text(case, request))


def _request_text(case, request) -> str:
    body = getattr(request, "body", None) or b""
    body = body if isinstance(body, bytes) else str(body).encode()
    return f"{request.method} {request.url} body {body[:300]!r}" if request is not None else case.path


def documents() -> dict[str, dict]:
    """The published documents, by API, generated from the code as the tests keep them."""
    from feedbackloop import ingest_api, serving_api

    return {"ingest": json.loads(ingest_api.openapi_document()), "serving": json.loads(serving_api.openapi_document())}


def _config(runtime: LocalRuntime, api: str, *, coverage: bool, max_examples: int, seed: int, workers: int):
    import schemathesis

    checks: dict[str, Any] = {"enabled": False} | {name: {"enabled": True} for name in CHECKS}
    checks["negative_data_rejection"]["expected-statuses"] = REJECTION_STATUSES
    return schemathesis.Config.from_dict({
        "base-url": runtime.api.url,
        "headers": {API_KEY_HEADER: runtime.api_key},
        "seed": seed,
        "workers": workers,
        "request-timeout": REQUEST_TIMEOUT_S,
        "continue-on-failure": True,  # every request is sent and judged; no stop at the first failure
        "suppress-health-check": ["all"],  # a slow or large example is a request like any other here
        "generation": {"mode": "all", "max-examples": max_examples, "database": "none", "no-shrink": True},
        "phases": {"examples": {"enabled": coverage}, "coverage": {"enabled": coverage},
                   "fuzzing": {"enabled": not coverage}, "stateful": {"enabled": False}},
        "checks": checks,
    })


def _run_engine(runtime: LocalRuntime, api: str, document: dict, tally: _Tally, **config) -> None:
    """One schemathesis run over one document, every request and check failure into `tally`."""
    import schemathesis
    from schemathesis.engine import Status, events, from_schema

    schema = schemathesis.openapi.from_dict(document, config=_config(runtime, api, **config))

    @schema.hook
    def after_call(context, case, response) -> None:
        tally.answered(case, response)

    @schema.hook
    def after_network_error(context, case, request) -> None:
        tally.unanswered(case, request)

    interrupted = False
    for event in from_schema(schema).execute():
        interrupted |= isinstance(event, events.Interrupted)
        if isinstance(event, events.ScenarioFinished):
            for case_id, checks in event.recorder.checks.items():
                interaction = event.recorder.interactions.get(case_id)
                status = interaction.response.status_code if interaction and interaction.response else None
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        message = f"{failure.title}: {failure.message}".strip()
                        tally.problem(f"check:{check.name}", event.recorder.label, status,
                                      message + "\n" + check.failure_info.code_sample)
        elif isinstance(event, events.NonFatalError):
            tally.problem("run_error", event.label, None, str(event.value))
        elif isinstance(event, events.FatalError):
            tally.problem("run_error", api, None, repr(event.exception))
    if interrupted:  # schemathesis stops its run on Ctrl-C and returns; the whole fuzz run stops too
        raise KeyboardInterrupt


def healthy(runtime: LocalRuntime) -> bool:
    """The local API still answers both functions' routes with a 200: one valid event, one config read."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {"event_id": f"fuzz-health-{time.time_ns()}", "user_id": "fuzz-health", "item_id": "item-0",
             "event_type": "click", "value": 1, "timestamp": now, "schema_version": CURRENT_VERSION}
    requests = [("POST", "/events", json.dumps({"events": [event]}).encode()),
                ("GET", "/users/fuzz-health/config", None)]
    for method, path, body in requests:
        request = urllib.request.Request(f"{runtime.api.url}{path}", data=body, method=method,
                                         headers={API_KEY_HEADER: runtime.api_key,
                                                  "content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                if response.status != 200:
                    return False
        except (HTTPError, OSError):
            return False
    return True


def run_fuzz(runtime: LocalRuntime, requests: int = 10_000, *, seed: int = 0, workers: int = 1,
             console: TextIO | None = None) -> FuzzReport:
    """Fuzz both documents against `runtime` until at least `requests` requests were sent.

    A synthetic model is published first (unless one is), so recommendations rank instead of answering
    503. The coverage phase runs once per document; fuzzing rounds then share what is left of the budget
    evenly between operations, until it is spent or a round adds nothing (every strategy exhausted).
    """
    from feedbackloop.adapters.aws import DynamoModelRegistry
    from feedbackloop.bench.freshness import publish_synthetic_model
    from feedbackloop.local.environment import physical_name
    from feedbackloop.resources import REGISTRY_TABLE

    if DynamoModelRegistry(runtime.session, physical_name(REGISTRY_TABLE.key)).current() is None:
        publish_synthetic_model(runtime, version="fuzz")
    report = FuzzReport(seed=seed)
    started = time.perf_counter()

    def progress(what: str = "") -> None:
        if console is not None:
            console.write(f"  {report.requests:,} requests, {time.perf_counter() - started:.0f} s{what}\n")
            console.flush()

    tally = _Tally(report, progress)
    errors_before = runtime.ingest.errors + runtime.serving.errors
    apis = documents()
    report.declared = {f"{method.upper()} {path}" for document in apis.values()
                       for path, methods in document["paths"].items() for method in methods}
    operations = {api: sum(len(methods) for methods in document["paths"].values()) for api, document in apis.items()}

    for api, document in apis.items():
        _run_engine(runtime, api, document, tally, coverage=True, max_examples=1, seed=seed, workers=workers)
    progress(": coverage phase done")
    round_ = 0
    while report.requests < requests:
        round_ += 1
        before = report.requests
        per_operation = math.ceil((requests - report.requests) / sum(operations.values()))
        for api, document in apis.items():
            _run_engine(runtime, api, document, tally, coverage=False, max_examples=per_operation,
                        seed=seed + round_, workers=workers)
        progress(f": fuzzing round {round_} done")
        if report.requests == before:
            break
    report.healthy_after = healthy(runtime)
    report.function_errors = runtime.ingest.errors + runtime.serving.errors - errors_before
    report.seconds = time.perf_counter() - started
    return report
