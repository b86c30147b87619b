"""A/B test statistics: published values and first-principles formulas, agreement with scipy, error
rates and power of simulated experiments with a known effect, CUPED's variance reduction, guardrails
and the order of the verdict's rules."""

from __future__ import annotations

import math
import re
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

from feedbackloop.experiments.stats import (
    CovariateMoments,
    Mean,
    Proportion,
    cuped,
    cuped_adjust,
    cuped_samples,
    cuped_theta,
    guardrail,
    power_proportions,
    proportion_ci,
    sample_ratio_mismatch,
    sample_size_means,
    sample_size_proportions,
    two_proportion_ztest,
    verdict,
    welch_ttest,
    welch_ttest_samples,
)

pytestmark = pytest.mark.unit

EXPERIMENTS = 2000  # simulated experiments per check: the standard error of a 5% rate is 0.5 points
HALF = {"control": 0.5, "treatment": 0.5}
STANDARD_NORMAL = NormalDist()  # the stdlib's, so the expected values do not come from scipy


# --- rates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("successes", "trials", "low", "high"), [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe_1998(successes, trials, low, high):
    # Newcombe (1998), Two-sided confidence intervals for the single proportion, Statistics in Medicine
    # 17:857-872, Table II, method 3 (score interval without continuity correction)
    interval = proportion_ci(successes, trials)
    assert interval.rate == successes / trials
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


@pytest.mark.parametrize(("successes", "trials", "confidence"), [(81, 263, 0.95), (3, 1000, 0.99), (470, 500, 0.8)])
def test_wilson_bounds_are_where_the_score_test_reaches_z(successes, trials, confidence):
    interval = proportion_ci(successes, trials, confidence)
    z = STANDARD_NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    for bound in (interval.low, interval.high):
        score = abs(interval.rate - bound) / math.sqrt(bound * (1 - bound) / trials)
        assert score == pytest.approx(z, rel=1e-9)


def test_two_proportion_ztest_matches_the_pooled_formula_and_the_chi_squared_test():
    result = two_proportion_ztest(200, 2000, 250, 2000)
    pooled = 450 / 4000
    z = (250 / 2000 - 200 / 2000) / math.sqrt(pooled * (1 - pooled) * (1 / 2000 + 1 / 2000))
    assert result.z == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert result.difference == pytest.approx(0.025)
    assert result.relative_lift == pytest.approx(0.25)
    chi2, p_value, _, _ = stats.chi2_contingency([[200, 1800], [250, 1750]], correction=False)
    assert result.z**2 == pytest.approx(chi2, rel=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


@pytest.mark.parametrize(("b", "a", "low", "high"), [
    ((56, 70), (48, 80), 0.0524, 0.3339),
    ((9, 10), (3, 10), 0.1705, 0.8090),
    ((5, 56), (0, 29), -0.0381, 0.1926),
])
def test_difference_interval_matches_newcombe_1998_method_10(b, a, low, high):
    # Newcombe (1998), Interval estimation for the difference between independent proportions,
    # Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score interval)
    result = two_proportion_ztest(*a, *b)
    assert result.difference == pytest.approx(b[0] / b[1] - a[0] / a[1])
    assert result.ci_low == pytest.approx(low, abs=5e-5)
    assert result.ci_high == pytest.approx(high, abs=5e-5)


def test_degenerate_rates_give_no_evidence_and_an_undefined_lift():
    nothing = two_proportion_ztest(0, 100, 0, 300)
    assert (nothing.z, nothing.p_value, nothing.difference) == (0.0, 1.0, 0.0)
    from_zero = two_proportion_ztest(0, 100, 5, 100)
    assert math.isnan(from_zero.relative_lift)
    assert from_zero.p_value < 0.05


# --- means ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "confidence"), [(1, 0.95), (2, 0.9), (3, 0.99)])
def test_welch_agrees_with_scipy(seed, confidence):
    rng = np.random.default_rng(seed)
    a = rng.normal(10, 2, size=40)
    b = rng.normal(11, 5, size=17)
    ours = welch_ttest_samples(a, b, confidence)
    theirs = stats.ttest_ind(b, a, equal_var=False)
    interval = theirs.confidence_interval(confidence_level=confidence)
    assert ours.t == pytest.approx(theirs.statistic, rel=1e-10)
    assert ours.df == pytest.approx(theirs.df, rel=1e-10)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert ours.difference == pytest.approx(b.mean() - a.mean())
    summary = welch_ttest(Mean(a.mean(), a.var(ddof=1), len(a)), Mean(b.mean(), b.var(ddof=1), len(b)), confidence)
    assert summary.p_value == pytest.approx(ours.p_value, rel=1e-12)


# --- sample ratio mismatch ------------------------------------------------------------------------------


def test_srm_agrees_with_scipy_chisquare():
    observed = {"control": 5010, "ranking": 2420, "popularity": 2570}
    weights = {"control": 0.5, "ranking": 0.25, "popularity": 0.25}
    result = sample_ratio_mismatch(observed, weights)
    names = sorted(observed)
    expected = stats.chisquare([observed[n] for n in names], [10_000 * weights[n] for n in names])
    assert result.chi2 == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert result.df == 2


def test_srm_flags_50000_against_51500_on_a_50_50_split():
    result = sample_ratio_mismatch({"control": 50_000, "treatment": 51_500}, HALF)
    assert result.chi2 == pytest.approx(2 * 750**2 / 50_750)
    assert result.p_value < 1e-5
    assert result.mismatch
    assert not sample_ratio_mismatch({"control": 50_000, "treatment": 50_200}, HALF).mismatch


def test_srm_rarely_flags_a_fair_split():
    rng = np.random.default_rng(7)
    treatment = rng.binomial(100_000, 0.5, size=EXPERIMENTS)
    flagged = [sample_ratio_mismatch({"control": 100_000 - int(t), "treatment": int(t)}, HALF).mismatch
               for t in treatment]
    assert np.mean(flagged) <= 0.004  # alpha = 0.001: 2 of 2000 expected; at alpha = 0.01 it would be 20


# --- planning -------------------------------------------------------------------------------------------


def test_classic_sample_size_for_two_proportions():
    # baseline 10%, +2 points absolute, two-sided alpha 0.05, power 0.8; Fleiss, Levin & Paik (2003),
    # Statistical Methods for Rates and Proportions, chapter 4, without continuity correction
    p1, p2 = 0.10, 0.12
    pooled = (p1 + p2) / 2
    z_alpha, z_power = STANDARD_NORMAL.inv_cdf(0.975), STANDARD_NORMAL.inv_cdf(0.8)
    n = (z_alpha * math.sqrt(2 * pooled * (1 - pooled)) + z_power * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 \
        / (p2 - p1) ** 2
    assert math.ceil(n) == 3841  # the unpooled variant (p1 q1 + p2 q2 in both terms) gives 3,839
    assert sample_size_proportions(0.10, 0.02) == 3841
    assert sample_size_proportions(0.10, 0.20, relative=True) == 3841
    assert sample_size_proportions(0.10, -0.02) == math.ceil(
        (z_alpha * math.sqrt(2 * 0.09 * 0.91) + z_power * math.sqrt(0.09 + 0.08 * 0.92)) ** 2 / 0.02**2)


def test_power_is_the_inverse_of_the_sample_size():
    n = sample_size_proportions(0.05, 0.1, alpha=0.01, power=0.9, relative=True)
    assert power_proportions(0.05, 0.1, n, alpha=0.01, relative=True) >= 0.9
    assert power_proportions(0.05, 0.1, n - 1, alpha=0.01, relative=True) < 0.9
    assert power_proportions(0.10, 0.02, 3841) == pytest.approx(0.8, abs=1e-3)


def test_sample_size_for_means():
    z = STANDARD_NORMAL.inv_cdf(0.975) + STANDARD_NORMAL.inv_cdf(0.8)
    assert sample_size_means(1.0, 0.2) == math.ceil(2 * z**2 / 0.2**2) == 393
    assert sample_size_means(3.0, 0.6) == 393


# --- simulated experiments ------------------------------------------------------------------------------


def _rejections_proportions(rng, rate_a, rate_b, n):
    clicks = rng.binomial(n, [[rate_a], [rate_b]], size=(2, EXPERIMENTS))
    return np.mean([two_proportion_ztest(int(a), n, int(b), n).p_value < 0.05 for a, b in clicks.T])


def test_two_proportion_ztest_false_positive_rate_is_alpha():
    assert _rejections_proportions(np.random.default_rng(11), 0.10, 0.10, 3841) == pytest.approx(0.05, abs=0.015)


def test_two_proportion_ztest_has_the_planned_power():
    n = sample_size_proportions(0.10, 0.02)
    assert _rejections_proportions(np.random.default_rng(12), 0.10, 0.12, n) == pytest.approx(0.8, abs=0.04)


def _rejections_welch(a, b):
    """Per-experiment summaries from (experiments, users) arrays, then one Welch test per experiment."""
    summaries = zip(a.mean(axis=1), a.var(axis=1, ddof=1), b.mean(axis=1), b.var(axis=1, ddof=1), strict=True)
    return np.mean([welch_ttest(Mean(ma, va, a.shape[1]), Mean(mb, vb, b.shape[1])).p_value < 0.05
                    for ma, va, mb, vb in summaries])


def test_welch_false_positive_rate_is_alpha_with_unequal_variances_and_sizes():
    rng = np.random.default_rng(21)
    a = rng.normal(5.0, 1.0, size=(EXPERIMENTS, 60))
    b = rng.normal(5.0, 3.0, size=(EXPERIMENTS, 15))
    assert _rejections_welch(a, b) == pytest.approx(0.05, abs=0.015)


def test_welch_has_the_planned_power():
    rng = np.random.default_rng(22)
    n = sample_size_means(2.0, 0.4)
    a = rng.normal(10.0, 2.0, size=(EXPERIMENTS, n))
    b = rng.normal(10.4, 2.0, size=(EXPERIMENTS, n))
    assert _rejections_welch(a, b) == pytest.approx(0.8, abs=0.04)


# --- CUPED ----------------------------------------------------------------------------------------------

RHO = 0.7


def _users(rng, shape, effect):
    """Pre-period x and in-experiment y of the same metric, correlated rho; the treatment adds `effect`
    to y only (it cannot change the past)."""
    x = rng.normal(3.0, 1.0, size=shape)
    y = 3.0 + effect + RHO * (x - 3.0) + math.sqrt(1 - RHO**2) * rng.normal(size=shape)
    return y, x


def test_cuped_removes_rho_squared_of_the_variance():
    rng = np.random.default_rng(31)
    y_a, x_a = _users(rng, 20_000, 0.0)
    y_b, x_b = _users(rng, 20_000, 0.1)
    result = cuped_samples(y_a, x_a, y_b, x_b)
    assert result.variance_reduction == pytest.approx(RHO**2, abs=0.02)
    assert result.theta == pytest.approx(RHO, abs=0.02)
    assert result.treatment.mean - result.control.mean == pytest.approx(0.1, abs=0.015)


def test_cuped_from_moments_equals_adjusting_each_user():
    rng = np.random.default_rng(32)
    y_a, x_a = _users(rng, 300, 0.0)
    y_b, x_b = _users(rng, 200, 0.2)
    result = cuped(CovariateMoments.of(y_a, x_a), CovariateMoments.of(y_b, x_b))
    y, x = np.concatenate([y_a, y_b]), np.concatenate([x_a, x_b])
    theta = cuped_theta(y, x)
    assert result.theta == pytest.approx(theta, rel=1e-10)
    assert result.x_mean == pytest.approx(x.mean(), rel=1e-12)
    per_user = welch_ttest_samples(cuped_adjust(y_a, x_a, theta, x.mean()), cuped_adjust(y_b, x_b, theta, x.mean()))
    from_moments = welch_ttest(result.control, result.treatment)
    assert from_moments.difference == pytest.approx(per_user.difference, rel=1e-9)
    assert from_moments.t == pytest.approx(per_user.t, rel=1e-9)
    assert from_moments.df == pytest.approx(per_user.df, rel=1e-9)


@pytest.mark.parametrize(("seed", "effect"), [(33, 0.0), (34, 0.15)])
def test_cuped_is_unbiased_narrower_and_keeps_alpha(seed, effect):
    rng = np.random.default_rng(seed)
    experiments, n = 1000, 400
    y_a, x_a = _users(rng, (experiments, n), 0.0)
    y_b, x_b = _users(rng, (experiments, n), effect)
    adjusted = [cuped_samples(*arms) for arms in zip(y_a, x_a, y_b, x_b, strict=True)]
    raw_estimates = y_b.mean(axis=1) - y_a.mean(axis=1)
    cuped_estimates = np.array([c.treatment.mean - c.control.mean for c in adjusted])
    # each estimate has a standard deviation of about sqrt(2 (1 - rho^2) / n) = 0.05
    assert cuped_estimates.mean() == pytest.approx(effect, abs=0.006)
    assert raw_estimates.mean() == pytest.approx(effect, abs=0.008)
    assert cuped_estimates.std() / raw_estimates.std() == pytest.approx(math.sqrt(1 - RHO**2), abs=0.05)
    if effect == 0:
        rejections = np.mean([welch_ttest(c.control, c.treatment).p_value < 0.05 for c in adjusted])
        assert rejections == pytest.approx(0.05, abs=0.02)


# --- guardrails -----------------------------------------------------------------------------------------


def test_guardrail_degraded_beyond_the_margin():
    result = guardrail("bounce_rate", Proportion(30_000, 100_000), Proportion(31_260, 100_000), 0.02,
                       higher_is_better=False)
    assert result.status == "degraded"
    assert not result.passed
    assert result.relative_change == pytest.approx(0.042)
    assert result.degradation == pytest.approx(0.042)


def test_guardrail_shown_non_inferior_and_inconclusive():
    same = guardrail("ctr", Proportion(5_000, 100_000), Proportion(5_010, 100_000), 0.05)
    assert same.status == "non_inferior"
    assert same.worst_degradation < 0.05
    few_users = guardrail("ctr", Proportion(50, 1000), Proportion(49, 1000), 0.05)
    assert few_users.status == "inconclusive"
    assert few_users.worst_degradation > 0.05


def test_guardrail_on_means_follows_the_direction():
    control, treatment = Mean(120.0, 900.0, 20_000), Mean(117.0, 900.0, 20_000)  # session seconds, 2.5% lower
    assert guardrail("session_seconds", control, treatment, 0.01).status == "degraded"
    assert guardrail("session_seconds", control, treatment, 0.05).status == "non_inferior"
    assert guardrail("latency", control, treatment, 0.01, higher_is_better=False).status == "non_inferior"


def test_guardrail_at_the_margin_passes_at_rate_alpha():
    # true degradation exactly the 2% allowed: declaring it non-inferior is the test's type I error
    rng = np.random.default_rng(41)
    n = 200_000
    control = rng.binomial(n, 0.20, size=EXPERIMENTS)
    treatment = rng.binomial(n, 0.20 * 0.98, size=EXPERIMENTS)
    passed = [guardrail("conversion", Proportion(int(c), n), Proportion(int(t), n), 0.02).passed
              for c, t in zip(control, treatment, strict=True)]
    assert np.mean(passed) == pytest.approx(0.05, abs=0.015)


# --- invalid inputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "argument"), [
    (lambda: proportion_ci(0, 0), "trials"),
    (lambda: proportion_ci(5, 3), "successes"),
    (lambda: proportion_ci(-1, 3), "successes"),
    (lambda: proportion_ci(1.5, 3), "successes"),
    (lambda: proportion_ci(1, 3, confidence=1.0), "confidence"),
    (lambda: two_proportion_ztest(1, 0, 1, 10), "trials_a"),
    (lambda: two_proportion_ztest(1, 10, 11, 10), "successes_b"),
    (lambda: Mean(1.0, -1.0, 10), "variance"),
    (lambda: Mean(1.0, 1.0, 1), "n"),
    (lambda: Mean(math.nan, 1.0, 10), "mean"),
    (lambda: welch_ttest(Mean(1.0, 0.0, 5), Mean(2.0, 0.0, 5)), "a, b"),
    (lambda: welch_ttest_samples([1.0], [1.0, 2.0]), "a"),
    (lambda: welch_ttest_samples([1.0, 2.0], [1.0, math.inf]), "b"),
    (lambda: sample_ratio_mismatch({"control": 1, "treatment": 2}, {"control": 0.5, "other": 0.5}),
     "expected_weights"),
    (lambda: sample_ratio_mismatch({"control": 1, "treatment": 2}, {"control": 0.5, "treatment": 0.4}),
     "expected_weights"),
    (lambda: sample_ratio_mismatch({"control": -1, "treatment": 2}, HALF), "observed"),
    (lambda: sample_ratio_mismatch({"control": 1, "treatment": 2}, HALF, alpha=0), "alpha"),
    (lambda: sample_size_proportions(0.0, 0.02), "baseline_rate"),
    (lambda: sample_size_proportions(0.1, 0.0), "minimum_detectable_effect"),
    (lambda: sample_size_proportions(0.99, 0.02), "minimum_detectable_effect"),
    (lambda: sample_size_proportions(0.1, 0.02, power=1.0), "power"),
    (lambda: sample_size_proportions(0.1, 0.02, alpha=1.2), "alpha"),
    (lambda: sample_size_means(0.0, 0.1), "std"),
    (lambda: sample_size_means(1.0, 0.0), "minimum_detectable_effect"),
    (lambda: power_proportions(0.1, 0.02, 0), "n_per_arm"),
    (lambda: cuped_theta([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]), "x"),
    (lambda: cuped_theta([1.0, 2.0, 3.0], [1.0, 2.0]), "x"),
    (lambda: guardrail("ctr", Proportion(1, 10), Proportion(1, 10), -0.1), "max_relative_degradation"),
    (lambda: guardrail("ctr", Proportion(1, 10), Mean(0.1, 0.09, 10), 0.1), "treatment"),
    (lambda: guardrail("ctr", Proportion(0, 10), Proportion(1, 10), 0.1), "control"),
    (lambda: verdict(WINS, SRM_FINE, 0, 10), "required_per_arm"),
])
def test_invalid_inputs_are_refused_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"^{re.escape(argument)}(\[.+\])?:"):
        call()


# --- verdict --------------------------------------------------------------------------------------------

SRM_BROKEN = sample_ratio_mismatch({"control": 50_000, "treatment": 51_500}, HALF)
SRM_FINE = sample_ratio_mismatch({"control": 50_000, "treatment": 50_100}, HALF)
WINS = two_proportion_ztest(1_000, 10_000, 1_150, 10_000)
FLAT = two_proportion_ztest(1_000, 10_000, 1_010, 10_000)
LOSES = two_proportion_ztest(1_150, 10_000, 1_000, 10_000)
BOUNCE_DEGRADED = guardrail("bounce_rate", Proportion(30_000, 100_000), Proportion(31_260, 100_000), 0.02,
                            higher_is_better=False)
CTR_HELD = guardrail("ctr", Proportion(5_000, 100_000), Proportion(5_010, 100_000), 0.05)
CTR_UNKNOWN = guardrail("ctr", Proportion(50, 1000), Proportion(49, 1000), 0.05)


def test_a_sample_ratio_mismatch_invalidates_everything_else():
    result = verdict(WINS, SRM_BROKEN, 3841, 1200, [BOUNCE_DEGRADED])
    assert result.decision == "invalid"
    assert result.reasons == (f"SRM: p = {SRM_BROKEN.p_value:.2g} < 0.001, assignment is broken, "
                              "results are not trustworthy",)


def test_a_degraded_guardrail_keeps_control_before_the_sample_size():
    result = verdict(WINS, SRM_FINE, 3841, 1200, [CTR_HELD, BOUNCE_DEGRADED])
    assert result.decision == "keep_control"
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith("guardrail bounce_rate degraded by 4.2% > 2% allowed")


def test_too_few_users_keep_it_running_even_when_significant():
    result = verdict(WINS, SRM_FINE, 3841, 1200, [CTR_HELD])
    assert result == verdict(WINS, SRM_FINE, 3841, 1200, [CTR_UNKNOWN])
    assert (result.decision, result.reasons) == ("keep_running", ("needs 3,841 users per arm, has 1,200",))


@pytest.mark.parametrize(("primary", "higher_is_better", "guardrails", "decision", "first_reason"), [
    (WINS, True, [CTR_HELD], "ship", "primary metric significantly better"),
    (WINS, True, [CTR_UNKNOWN], "keep_running", "primary metric significantly better"),
    (FLAT, True, [CTR_HELD], "keep_control", "primary metric: no significant difference"),
    (LOSES, True, [CTR_HELD], "keep_control", "primary metric significantly worse"),
    (WINS, False, [CTR_HELD], "keep_control", "primary metric significantly worse"),
])
def test_with_enough_users_the_primary_metric_decides(primary, higher_is_better, guardrails, decision, first_reason):
    result = verdict(primary, SRM_FINE, 3841, 10_000, guardrails, higher_is_better=higher_is_better)
    assert result.decision == decision
    assert result.reasons[0].startswith(first_reason)
    if decision != "keep_control":
        assert result.reasons[1].startswith("guardrail ctr held" if decision == "ship" else "guardrail ctr not yet")


def test_reasons_quote_the_effect():
    reason = verdict(WINS, SRM_FINE, 3841, 10_000).reasons[0]
    assert "+15% relative, difference +0.015" in reason
    assert f"p = {WINS.p_value:.2g} < 0.05" in reason
