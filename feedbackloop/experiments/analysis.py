"""An experiment's report from the modelled tables: per-arm figures with intervals, the tests, and the verdict.

The user is the unit of randomization (assignment hashes the user id), so the tests work on per-user
figures: impressions of one user are not independent draws, and a test that treats them as such
understates the variance. The impression-level z-test of CTR is shown too, labelled as such.

- Primary metric: per-user CTR (clicks / impressions), Welch's t-test on CUPED-adjusted values; the
  covariate is the user's CTR in the pre-period (before `start`), the pooled pre-period mean for users
  without one (no reduction for them, no bias either).
- Conversion: users with a purchase / users exposed, two-proportion z-test.
- Sample ratio mismatch: users per arm against the configured weights (chi-squared, flagged at p < 0.001).
- Planned size: users per arm for the primary metric's minimum detectable effect (relative), from the
  control arm's spread.
- Guardrails: conversion and mean rating must not drop by more than their margin (non-inferiority).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from feedbackloop.experiments.stats import (
    CovariateMoments,
    GuardrailResult,
    Mean,
    Proportion,
    ProportionInterval,
    ProportionTest,
    SampleRatioMismatch,
    Verdict,
    WelchTest,
    cuped,
    guardrail,
    proportion_ci,
    sample_ratio_mismatch,
    sample_size_means,
    two_proportion_ztest,
    verdict,
    welch_ttest,
)

USER_COLUMNS = ("variant", "user_id", "impressions", "clicks", "purchases", "rating_sum", "ratings")


def users_sql(experiment: str, start: datetime, end: datetime, interactions: str = "interactions") -> str:
    """Per user and arm, from the interaction layer: exposures (views) and their outcomes, in [start, end)."""
    name = experiment.replace("'", "''")
    return (f"SELECT variant, user_id, count_if(event_type = 'view') AS impressions,\n"
            f"  count_if(event_type = 'click') AS clicks, count_if(event_type = 'purchase') AS purchases,\n"
            f"  coalesce(sum(CASE WHEN event_type = 'rating' THEN value END), 0) AS rating_sum,\n"
            f"  count_if(event_type = 'rating') AS ratings\n"
            f"FROM {interactions}\n"
            f"WHERE event_date BETWEEN '{start:%Y-%m-%d}' AND '{end:%Y-%m-%d}'\n"
            f"  AND event_time >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'\n"
            f"  AND event_time < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'\n"
            f"  AND experiment = '{name}' AND variant IS NOT NULL AND user_id IS NOT NULL\n"
            f"GROUP BY 1, 2")


@dataclass(frozen=True)
class Arm:
    variant: str
    users: int
    impressions: int
    clicks: int
    ctr: ProportionInterval | None  # impression-level rate, Wilson interval
    user_ctr: float  # mean of the per-user CTRs (the primary metric)
    converted: int
    conversion: ProportionInterval | None
    rating_mean: float | None


@dataclass(frozen=True)
class ExperimentReport:
    name: str
    control: str
    treatment: str
    arms: tuple[Arm, ...]
    srm: SampleRatioMismatch
    primary: WelchTest  # per-user CTR, CUPED-adjusted
    primary_unadjusted: WelchTest
    variance_reduction: float
    impression_ztest: ProportionTest
    conversion: ProportionTest
    required_per_arm: int
    guardrails: tuple[GuardrailResult, ...]
    verdict: Verdict


def analyze(name: str, users: pd.DataFrame, pre: pd.DataFrame | None, weights: Mapping[str, float],
            control: str, treatment: str, minimum_detectable_effect: float = 0.10, alpha: float = 0.05,
            power: float = 0.8, guardrail_margin: float = 0.05) -> ExperimentReport:
    """`users`: USER_COLUMNS for the experiment period; `pre`: the same for the pre-period (or None)."""
    exposed = users[users["impressions"] > 0]
    missing = {control, treatment} - set(exposed["variant"])
    if missing:
        raise ValueError(f"no exposed users in arm(s) {', '.join(sorted(missing))} of {name}")
    arms = tuple(_arm(v, exposed[exposed["variant"] == v]) for v in sorted(weights) if v in set(exposed["variant"]))
    counts = {v: int((exposed["variant"] == v).sum()) for v in weights}
    srm = sample_ratio_mismatch(counts, weights)

    y = (exposed["clicks"] / exposed["impressions"]).to_numpy(dtype=float)
    x = _pre_ctr(exposed, pre)
    a, b = (exposed["variant"] == control).to_numpy(), (exposed["variant"] == treatment).to_numpy()
    unadjusted = welch_ttest(Mean.of(y[a]), Mean.of(y[b]), 1 - alpha)
    if np.var(x[a | b]) > 0:
        adjusted = cuped(CovariateMoments.of(y[a], x[a]), CovariateMoments.of(y[b], x[b]))
        control_mean, treatment_mean, reduction = adjusted.control, adjusted.treatment, adjusted.variance_reduction
    else:  # no pre-period to learn from: the plain per-user means
        control_mean, treatment_mean, reduction = Mean.of(y[a]), Mean.of(y[b]), 0.0
    primary = welch_ttest(control_mean, treatment_mean, 1 - alpha)

    ca, cb = (exposed[exposed["variant"] == v] for v in (control, treatment))
    impressions = two_proportion_ztest(int(ca["clicks"].sum()), int(ca["impressions"].sum()),
                                       int(cb["clicks"].sum()), int(cb["impressions"].sum()), 1 - alpha)
    conversion = two_proportion_ztest(int((ca["purchases"] > 0).sum()), len(ca), int((cb["purchases"] > 0).sum()),
                                      len(cb), 1 - alpha)
    spread = float(np.sqrt(control_mean.variance)) or 1e-9
    required = sample_size_means(spread, max(minimum_detectable_effect * abs(control_mean.mean), 1e-9),
                                 alpha, power)
    guardrails = []
    if (ca["purchases"] > 0).any():  # a relative degradation of nothing is undefined: no guardrail then
        guardrails.append(guardrail("conversion", Proportion(int((ca["purchases"] > 0).sum()), len(ca)),
                                    Proportion(int((cb["purchases"] > 0).sum()), len(cb)), guardrail_margin,
                                    alpha=alpha))
    rated_a, rated_b = ca[ca["ratings"] > 0], cb[cb["ratings"] > 0]
    if len(rated_a) >= 2 and len(rated_b) >= 2 and (rated_a["rating_sum"] > 0).any():
        guardrails.append(guardrail("rating_mean", Mean.of(rated_a["rating_sum"] / rated_a["ratings"]),
                                    Mean.of(rated_b["rating_sum"] / rated_b["ratings"]), guardrail_margin,
                                    alpha=alpha))
    decided = verdict(primary, srm, required, min(len(ca), len(cb)), guardrails, alpha)
    return ExperimentReport(name, control, treatment, arms, srm, primary, unadjusted, reduction,
                            impressions, conversion, required, tuple(guardrails), decided)


def _arm(variant: str, rows: pd.DataFrame) -> Arm:
    impressions, clicks = int(rows["impressions"].sum()), int(rows["clicks"].sum())
    converted = int((rows["purchases"] > 0).sum())
    ratings = int(rows["ratings"].sum())
    return Arm(variant, len(rows), impressions, clicks, proportion_ci(clicks, impressions) if impressions else None,
               float((rows["clicks"] / rows["impressions"]).mean()), converted,
               proportion_ci(converted, len(rows)) if len(rows) else None,
               float(rows["rating_sum"].sum() / ratings) if ratings else None)


def _pre_ctr(exposed: pd.DataFrame, pre: pd.DataFrame | None) -> np.ndarray:
    if pre is None or pre.empty:
        return np.zeros(len(exposed))
    pre = pre[pre["impressions"] > 0].groupby("user_id")[["clicks", "impressions"]].sum()
    ctr = pre["clicks"] / pre["impressions"]
    values = exposed["user_id"].map(ctr)
    return values.fillna(float(ctr.mean()) if len(ctr) else 0.0).to_numpy(dtype=float)


def render(report: ExperimentReport) -> str:
    """The report as text a person reads in a minute: the verdict first, then why."""
    lines = [f"experiment {report.name}: {report.verdict.decision.upper()} "
             f"({report.treatment} against control {report.control})"]
    lines += [f"  - {reason}" for reason in report.verdict.reasons]
    lines.append("")
    lines.append(f"  {'arm':<14}{'users':>8}{'impr.':>9}{'clicks':>8}  {'CTR [95% CI]':<24}{'user CTR':>9}  "
                 f"{'conversion [95% CI]':<24}{'rating':>7}")
    for arm in report.arms:
        ctr = "-" if arm.ctr is None else f"{arm.ctr.rate:.2%} [{arm.ctr.low:.2%}, {arm.ctr.high:.2%}]"
        conv = "-" if arm.conversion is None else \
            f"{arm.conversion.rate:.2%} [{arm.conversion.low:.2%}, {arm.conversion.high:.2%}]"
        rating = "-" if arm.rating_mean is None else f"{arm.rating_mean:.2f}"
        lines.append(f"  {arm.variant:<14}{arm.users:>8,}{arm.impressions:>9,}{arm.clicks:>8,}  {ctr:<24}"
                     f"{arm.user_ctr:>9.2%}  {conv:<24}{rating:>7}")
    p, u = report.primary, report.primary_unadjusted
    lines += [
        "",
        f"  per-user CTR, Welch (CUPED): {p.difference:+.4f} [{p.ci_low:+.4f}, {p.ci_high:+.4f}], t = {p.t:.2f}, "
        f"df = {p.df:.0f}, p = {p.p_value:.2g}; variance -{report.variance_reduction:.0%} "
        f"(unadjusted p = {u.p_value:.2g})",
        f"  CTR per impression, z-test (ignores within-user correlation): {report.impression_ztest.difference:+.4f}, "
        f"z = {report.impression_ztest.z:.2f}, p = {report.impression_ztest.p_value:.2g}",
        f"  conversion per user, z-test: {report.conversion.difference:+.4f}, z = {report.conversion.z:.2f}, "
        f"p = {report.conversion.p_value:.2g}",
        f"  sample ratio: chi2 = {report.srm.chi2:.2f}, p = {report.srm.p_value:.3g}"
        f"{' MISMATCH' if report.srm.mismatch else ' ok'}; planned {report.required_per_arm:,} users per arm",
    ]
    return "\n".join(lines)
