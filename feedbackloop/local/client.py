"""A well-behaved client of `POST /events`: batches of up to 500, drops what the API refuses (and
counts why), resends what it was told to retry. The demo and the tests send data through it."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from feedbackloop.local.api import API_KEY_HEADER
from feedbackloop.schemas.registry import MAX_BATCH_EVENTS


@dataclass
class SendReport:
    sent: int = 0
    accepted: int = 0
    refused: Counter = field(default_factory=Counter)  # field -> count
    retries: int = 0
    requests: int = 0
    seconds: float = 0.0
    accepted_ids: set[str] = field(default_factory=set)  # what the API said it accepted, by event id

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


class EventsClient:
    def __init__(self, api_url: str, api_key: str, timeout: float = 60) -> None:
        url = urlsplit(api_url)
        self._connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        self._key = api_key

    def post(self, body: bytes) -> tuple[int, dict, dict[str, str]]:
        return self.request("POST", "/events", body)

    def request(self, method: str, path: str, body: bytes | dict | None = None) -> tuple[int, dict, dict[str, str]]:
        """Any route of the API: (status, decoded body, headers)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self._connection.request(method, path, body=data,
                                 headers={API_KEY_HEADER: self._key, "Content-Type": "application/json"})
        response = self._connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload or b"{}"), dict(response.getheaders())

    def send(self, events: Sequence[dict], batch_size: int = MAX_BATCH_EVENTS,
             progress: Callable[[SendReport], None] | None = None, max_retries: int = 8) -> SendReport:
        report = SendReport()
        started = time.perf_counter()
        for start in range(0, len(events), batch_size):
            pending = list(events[start:start + batch_size])
            report.sent += len(pending)
            for attempt in range(max_retries + 1):
                status, body, headers = self.post(json.dumps({"events": pending}).encode("utf-8"))
                report.requests += 1
                if status == 200:
                    report.accepted += body["accepted"]
                    report.accepted_ids.update(_accepted(body))
                    break
                if status == 400 and "results" in body:  # drop the invalid, resend the rest
                    invalid = {r["index"] for r in body["results"] if r["error"]["field"] != "$"
                               or not r["error"]["reason"].startswith("not sent")}
                    for r in body["results"]:
                        if r["index"] in invalid:
                            report.refused[r["error"]["field"]] += 1
                    pending = [e for i, e in enumerate(pending) if i not in invalid]
                    if not pending:
                        break
                    continue
                if status in (429, 503):
                    report.accepted += body["accepted"]
                    report.accepted_ids.update(_accepted(body))
                    retry = {r["index"] for r in body["results"] if r.get("retryable")}
                    pending = [e for i, e in enumerate(pending) if i in retry]
                    report.retries += 1
                    time.sleep(min(float(headers.get("Retry-After", 1)), 1.0) * (attempt + 1) / 4)
                    continue
                raise RuntimeError(f"POST /events answered {status}: {body}")
            else:
                raise RuntimeError(f"gave up after {max_retries} retries")
            if progress:
                report.seconds = time.perf_counter() - started
                progress(report)
        report.seconds = time.perf_counter() - started
        return report

    def close(self) -> None:
        self._connection.close()


def _accepted(body: dict) -> list[str]:
    return [r["event_id"] for r in body.get("results", []) if r.get("accepted")]
