"""The smoke steps over fake ports: they run in order, time each step, stop at the first failure with what
to check, and give up on a wait at the timeout."""

from __future__ import annotations

import io

import pytest

from feedbackloop.smoke import Smoke, Target

pytestmark = pytest.mark.unit


class FakeApi:
    """Both APIs of a deployment, answering as a healthy one would; `broken` names a route to fail."""

    def __init__(self, broken: str = "", model: bool = True, folds_after: int = 2) -> None:
        self.broken, self.model, self.folds_after = broken, model, folds_after
        self.calls: list[tuple[str, str]] = []
        self.posted = 0
        self.erased = False

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30):
        self.calls.append((method, path))
        if self.broken and self.broken in path:
            return 500, {"message": "Internal server error"}
        if path.endswith("/config"):
            return 200, {"experiments": {"ranking": "personalized"}, "config_version": "3"}
        if "/recommendations" in path:
            if not self.model:
                return 503, {"error": "no_model"}
            warm = self.posted and sum(1 for c in self.calls if "/recommendations" in c[1]) > self.folds_after
            return 200, {"items": [{"item_id": f"i{n}"} for n in range(10)],
                         "strategy": "fold_in" if warm else "popularity", "model_version": "v1"}
        if path == "/events":
            self.posted = len(body["events"])
            return 200, {"accepted": self.posted}
        if method == "DELETE":
            self.erased = True
            return 202, {"status": "pending"}
        if path.endswith("/erasure"):
            return 200, {"status": "complete" if self.erased else "pending"}
        return 404, {}


class Lake:
    def __init__(self, rows: int = 2) -> None:
        self.rows = rows

    def curated_rows(self, user_id: str) -> int:
        return self.rows


def _smoke(api: FakeApi, lake: Lake | None = None, timeout: float = 10) -> tuple[Smoke, io.StringIO]:
    out = io.StringIO()
    ticks = iter(range(10_000))
    smoke = Smoke(Target(api, api, lake or Lake(), "a fake deployment"), timeout=timeout, poll=1, out=out,
                  clock=lambda: float(next(ticks)), sleep=lambda _: None)
    return smoke, out


def test_a_healthy_deployment_passes_every_step_in_order():
    api = FakeApi()
    smoke, out = _smoke(api)
    report = smoke.run()
    assert report.ok and [s.name for s in report.steps] == [
        "config route", "cold recommendations", "post events", "curated lake", "recommendations", "erasure"]
    assert report.user_id.startswith("smoke-") and api.posted == 2 and api.erased
    assert "passed in" in out.getvalue()


@pytest.mark.parametrize("broken, step, hint", [
    ("/config", "config route", "API key"),
    ("/events", "post events", "ingest function"),
    ("/erasure", "erasure", "eraser"),
])
def test_the_first_failure_stops_the_run_and_says_what_to_check(broken, step, hint):
    smoke, out = _smoke(FakeApi(broken=broken))
    report = smoke.run()
    assert not report.ok and report.failure.startswith(step) and hint in report.failure
    assert f"FAIL  {step}" in out.getvalue()


def test_no_published_model_says_to_retrain():
    report = _smoke(FakeApi(model=False))[0].run()
    assert report.failure.startswith("cold recommendations") and "feedbackloop retrain" in report.failure


def test_events_that_never_reach_the_lake_time_out_naming_the_cleaner():
    report = _smoke(FakeApi(), Lake(rows=0), timeout=5)[0].run()
    assert report.failure.startswith("curated lake") and "not within 5 s" in report.failure
    assert "cleaner" in report.failure
