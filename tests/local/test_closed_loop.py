"""Smoke tests of the demo's closed loop with tiny parameters on the local stand-in: simulated users
visit through the local API, the checkpoints rebuild tables and run the adjust function, tastes shift,
new items arrive, and the summary reads the A/B verdict from the interaction layer and writes the report;
then `make demo`'s whole story on a small slice of the real data."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from model_fixtures import publish_model

from feedbackloop.closed_loop import LoopPlan, run_loop, summarize
from feedbackloop.datasets import online_retail
from feedbackloop.demo import run_demo
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.simulation import Catalog

pytestmark = pytest.mark.local

TINY = LoopPlan(days=2, users=40, visits_per_day=96, shift_day=1, arrival_day=1, nightly_retrain_days=(), seed=3)


def test_the_closed_loop_runs_its_days_and_the_summary_reads_the_verdict_from_the_lake(tmp_path):
    catalog = Catalog.from_online_retail(online_retail.load())
    items = [str(i) for i in catalog.item_ids]
    factors = np.random.default_rng(0).normal(size=(len(items), 4)).astype(np.float32)
    start = (datetime.now(UTC) - timedelta(days=TINY.days, hours=1)).replace(minute=0, second=0, microsecond=0)
    lines: list[str] = []
    with LocalRuntime(state_dir=tmp_path / "local",
                      serving_overrides={"model_refresh_seconds": 0, "appconfig_ttl_seconds": 0}) as runtime:
        publish_model(runtime.session, items, item_factors=factors)
        result = run_loop(runtime, start, TINY, 0, lines.append)
        assert len(result.days) == TINY.days and len(result.checkpoints) == TINY.days * 2
        assert result.events_accepted > TINY.days * TINY.visits_per_day * 10 * 0.9  # a view per shown item
        for variant in ("personalized", "popularity"):
            arm = result.arm(variant, range(TINY.days))
            assert arm.sessions > 10 and 0 < arm.expected_ctr < arm.oracle_ctr
        assert any("new items arrive" in line for line in lines) and any("shift" in line for line in lines)
        report = tmp_path / "report.html"
        assert summarize(runtime, result, 1.0, lines.append, report) == 0
    text = "\n".join(lines)
    assert "A/B test, from the interaction layer" in text and "personalized" in text
    assert "Ground truth of the simulation" in text and report.stat().st_size > 1000


@pytest.mark.timeout(1800)  # about two minutes on an idle 2-core machine; far longer on a busy one
def test_the_demo_tells_its_whole_story_on_a_small_slice(tmp_path):
    console = io.StringIO()
    status = run_demo(limit=12_000, console=console, plan=TINY, state_dir=tmp_path / "demo")
    text = console.getvalue()
    assert status == 0, text[-3000:]
    for chapter in ("Conservation (read back from the stores)", "Modelled tables", "Retraining",
                    "registry: current", "Serving:", "erasure complete", "The closed loop", "Summary",
                    "A/B test, from the interaction layer", "Report:", "Where the time went"):
        assert chapter in text, chapter
    assert (tmp_path / "demo" / "report.html").exists()
    timings = text.split("Where the time went")[1]  # wall and CPU seconds of each phase, and the total
    for phase in ("real data: ingest, clean, archive", "modelled tables", "retraining and the gate (twice)",
                  "closed loop: visits (GET, batched posts)", "closed loop: tables", "summary and report", "total"):
        assert phase in timings, phase
