"""`feedbackloop bench loop` on a small slice of the data with tiny parameters: every arm runs on its own copy
of the same world, the oracle is the best of them, and the results have the benchmarks' JSON shape."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from feedbackloop.bench import loop
from feedbackloop.datasets import online_retail
from feedbackloop.simulation import Catalog, World

pytestmark = pytest.mark.unit

TINY = loop.LoopBenchPlan(users=30, days=2, visits_per_day=96, shift_day=1, arrival_day=1, dip_hours=3,
                          recovered_hours=6, seed=5)


@pytest.fixture(scope="module")
def recent() -> pd.DataFrame:
    frame = online_retail.load()
    return frame[frame["InvoiceDate"] >= frame["InvoiceDate"].max() - pd.Timedelta(days=60)]


@pytest.fixture(scope="module")
def run(recent) -> loop.LoopRun:
    return loop.simulate(TINY, frame=recent)


def test_every_arm_sees_the_same_visits_and_the_oracle_is_the_best(run):
    assert len(run.hours) == TINY.days * 24
    everything = {arm: run.window(arm, 0, TINY.days * 24) for arm in loop.ARMS}
    assert len({w.sessions for w in everything.values()}) == 1 and everything["oracle"].sessions > 100
    for arm in ("personalized", "popularity", "bandit"):
        assert 0 < everything[arm].expected_ctr < everything["oracle"].expected_ctr
        assert 0 < run.share(arm, 0, 24) < 1
    assert run.share("oracle", 0, 24) == pytest.approx(1.0)
    # the informed reference: the oracle's page from a first click on, the cold page before
    assert 0 < run.share("informed", 0, 24) < 1 and 0 < run.cold_share(24) < 1
    assert 0 < run.share("bayes", 0, 24) < 1
    assert run.cleaned > 0  # the personalized arm's events went through the cleaner
    # every personalized page is counted once, under the ranking that made it (ADR 0021) or the cold page's
    assert sum(run.rankers.values()) == everything["personalized"].sessions


def test_the_entries_have_the_benchmarks_shape(run, tmp_path):
    entries = loop.entries(run)
    assert [e["name"] for e in entries] == ["loop_oracle_share_before_shift", "loop_drop_regained_share",
                                            "loop_ctr_vs_bandit"]
    for entry in entries:
        assert set(entry) == {"name", "unit", "value", "baseline", "ratio", "better"}
        assert set(entry["baseline"]) == {"name", "value"}
    regained = run.regained("personalized")
    assert entries[1]["value"] == pytest.approx(regained["regained"], abs=1e-4)



@pytest.mark.parametrize("seed", [0, 1])
def test_the_bayes_reference_learns_a_users_taste_from_their_responses(recent, seed):
    """A user who visits hourly: the first pages (the prior's: the most appealing items) earn little of the
    oracle's, the pages after a few dozen visits most of it, fatigue and recent purchases included."""
    world = World(Catalog.from_online_retail(recent), 2, seed=seed)
    arm, rng, at, shares = loop.BayesArm(world, seed=2), np.random.default_rng(seed), loop.START, []
    for _ in range(60):
        shown = arm.rank("sim00001", at)
        visit = world.respond(1, shown, at, {}, rng)
        arm.observe(visit, shown)
        shares.append(visit.expected_ctr / visit.oracle_ctr)
        at += timedelta(hours=1)
    assert np.mean(shares[:5]) < 0.2 < 0.5 < np.mean(shares[20:])
    arm.shift()  # tastes shifted: back to the prior's page
    assert arm.rank("sim00001", at) == loop.BayesArm(world, seed=2).rank("sim00001", at)
