"""The experiment report over per-user figures: a real effect with enough users ships, no effect keeps
the control, a broken split is invalid whatever else it shows, and CUPED's pre-period covariate
reduces the variance without moving the estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedbackloop.experiments.analysis import USER_COLUMNS, analyze, render, users_sql

pytestmark = pytest.mark.unit

WEIGHTS = {"personalized": 0.5, "popularity": 0.5}


def _users(rng: np.random.Generator, n: dict[str, int], ctr: dict[str, float], skill: np.ndarray | None = None):
    rows, offset = [], 0
    for variant, count in n.items():
        own = skill[offset:offset + count] if skill is not None else np.zeros(count)
        offset += count
        impressions = rng.integers(10, 40, count)
        p = np.clip(ctr[variant] + own, 0.001, 0.999)
        clicks = rng.binomial(impressions, p)
        purchases = rng.binomial(clicks, 0.3)
        ratings = rng.binomial(clicks, 0.2)
        rows.append(pd.DataFrame({"variant": variant, "user_id": [f"{variant[:3]}{i}" for i in range(count)],
                                  "impressions": impressions, "clicks": clicks, "purchases": purchases,
                                  "rating_sum": ratings * 4, "ratings": ratings}))
    return pd.concat(rows, ignore_index=True)[list(USER_COLUMNS)]


def test_a_real_lift_with_enough_users_ships_and_the_report_says_why():
    rng = np.random.default_rng(1)
    users = _users(rng, {"personalized": 3000, "popularity": 3000}, {"personalized": 0.12, "popularity": 0.08})
    report = analyze("ranking", users, None, WEIGHTS, control="popularity", treatment="personalized")
    assert report.verdict.decision == "ship", report.verdict.reasons
    assert report.primary.difference == pytest.approx(0.04, abs=0.01)
    assert not report.srm.mismatch
    text = render(report)
    assert text.startswith("experiment ranking: SHIP") and "personalized" in text and "sample ratio" in text


def test_no_effect_keeps_the_control():
    rng = np.random.default_rng(2)
    users = _users(rng, {"personalized": 4000, "popularity": 4000}, {"personalized": 0.1, "popularity": 0.1})
    report = analyze("ranking", users, None, WEIGHTS, control="popularity", treatment="personalized")
    assert report.verdict.decision in ("keep_control", "keep_running")
    assert report.primary.p_value > 0.01


def test_a_broken_split_is_invalid_whatever_the_effect():
    rng = np.random.default_rng(3)
    users = _users(rng, {"personalized": 3000, "popularity": 2500}, {"personalized": 0.2, "popularity": 0.08})
    report = analyze("ranking", users, None, WEIGHTS, control="popularity", treatment="personalized")
    assert report.srm.mismatch and report.verdict.decision == "invalid"


def test_cuped_reduces_variance_with_a_pre_period_and_keeps_the_estimate():
    rng = np.random.default_rng(4)
    skill = rng.normal(0, 0.08, 6000)  # users differ, and keep their difference across periods
    n, ctr = {"personalized": 3000, "popularity": 3000}, {"personalized": 0.13, "popularity": 0.1}
    users = _users(rng, n, ctr, skill)
    pre = _users(rng, n, {"personalized": 0.1, "popularity": 0.1}, skill)
    report = analyze("ranking", users, pre, WEIGHTS, control="popularity", treatment="personalized")
    assert report.variance_reduction > 0.2
    assert report.primary.difference == pytest.approx(report.primary_unadjusted.difference, abs=0.005)
    assert (report.primary.ci_high - report.primary.ci_low) < (report.primary_unadjusted.ci_high
                                                              - report.primary_unadjusted.ci_low)


def test_an_arm_without_exposed_users_is_a_clear_error():
    rng = np.random.default_rng(5)
    users = _users(rng, {"personalized": 100}, {"personalized": 0.1})
    with pytest.raises(ValueError, match="no exposed users in arm"):
        analyze("ranking", users, None, WEIGHTS, control="popularity", treatment="personalized")


def test_the_users_query_is_trino_that_duckdb_runs():
    from datetime import UTC, datetime

    from feedbackloop.local.sql_engine import to_duckdb

    sql, tables = to_duckdb(users_sql("ranking", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC)))
    assert tables == {"interactions"} and "COUNT_IF" in sql.upper()
