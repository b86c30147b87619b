"""The statistics of an A/B test, from the aggregates the engagement table gives per variant (counts for
rates, mean / variance / n for per-user metrics) and, where it helps, from raw per-user arrays.

Arm `a` is the control and arm `b` the treatment: every difference is b - a and every relative lift is
(b - a) / a. Two-sided tests unless said otherwise. Distributions come from scipy.stats.

- rates: Wilson score interval; pooled two-proportion z-test with Newcombe's hybrid score interval of
  the difference (Newcombe 1998, Statistics in Medicine 17:873-890, method 10), built from the two
  Wilson intervals so that it stays inside [-1, 1] and behaves at small counts, unlike the Wald interval.
- means: Welch's t-test with Welch-Satterthwaite degrees of freedom.
- assignment: sample ratio mismatch as a chi-squared goodness-of-fit test of the counts per variant.
- planning: normal-approximation sample sizes and power.
- CUPED (Deng, Xu, Kohavi & Walker 2013): the metric minus theta times the user's pre-period value of it.
- guardrails: a one-sided non-inferiority test of the relative change (delta method).
- `verdict`: SRM, then guardrails, then sample size, then the primary metric.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

# --- validation: every error names the argument ---------------------------------------------------------


def _real(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def _positive(name: str, value: float) -> float:
    if _real(name, value) <= 0:
        raise ValueError(f"{name}: must be positive, got {value!r}")
    return float(value)


def _count(name: str, value: int, minimum: int = 0) -> int:
    """A whole number; aggregates may arrive as floats (SUM in SQL), so 12.0 is accepted, 12.5 is not."""
    if _real(name, value) != int(value):
        raise ValueError(f"{name}: must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}, got {value!r}")
    return int(value)


def _between_0_and_1(name: str, value: float) -> float:
    """A probability strictly inside (0, 1): a rate, a confidence level, alpha or power."""
    if not 0 < _real(name, value) < 1:
        raise ValueError(f"{name}: must be strictly between 0 and 1, got {value!r}")
    return float(value)


def _successes(successes_name: str, successes: int, trials_name: str, trials: int) -> tuple[int, int]:
    n = _count(trials_name, trials, minimum=1)
    k = _count(successes_name, successes)
    if k > n:
        raise ValueError(f"{successes_name}: {k} is more than {trials_name} = {n}")
    return k, n


def _sample(name: str, values: np.ndarray | Sequence[float], minimum: int = 2) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name}: must be one-dimensional, got shape {array.shape}")
    if len(array) < minimum:
        raise ValueError(f"{name}: needs at least {minimum} values, got {len(array)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _two_sided_z(confidence: float) -> float:
    return float(stats.norm.isf((1 - _between_0_and_1("confidence", confidence)) / 2))


def _relative(difference: float, base: float) -> float:
    """difference / base; NaN when the base is 0 (a lift over nothing has no meaning)."""
    return difference / base if base != 0 else math.nan


# --- summaries of one arm -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proportion:
    """One arm of a rate metric: `successes` out of `trials` (e.g. clicks out of impressions)."""

    successes: int
    trials: int

    def __post_init__(self) -> None:
        _successes("successes", self.successes, "trials", self.trials)

    @property
    def estimate(self) -> float:
        return self.successes / self.trials

    @property
    def sampling_variance(self) -> float:
        """Variance of the estimated rate, p (1 - p) / n."""
        return self.estimate * (1 - self.estimate) / self.trials


@dataclass(frozen=True)
class Mean:
    """One arm of a per-user metric: the mean, the sample variance (ddof=1) and the number of users."""

    mean: float
    variance: float
    n: int

    def __post_init__(self) -> None:
        _real("mean", self.mean)
        if _real("variance", self.variance) < 0:
            raise ValueError(f"variance: must not be negative, got {self.variance!r}")
        _count("n", self.n, minimum=2)

    @classmethod
    def of(cls, values: np.ndarray | Sequence[float]) -> Mean:
        array = _sample("values", values)
        return cls(float(array.mean()), float(array.var(ddof=1)), len(array))

    @property
    def estimate(self) -> float:
        return self.mean

    @property
    def sampling_variance(self) -> float:
        """Variance of the estimated mean, s^2 / n."""
        return self.variance / self.n


# --- rates ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProportionInterval:
    rate: float
    low: float
    high: float
    confidence: float


def proportion_ci(successes: int, trials: int, confidence: float = 0.95) -> ProportionInterval:
    """Wilson score interval: the rates p whose score test |p_hat - p| / sqrt(p (1 - p) / n) <= z,
    (p_hat + z^2/2n +- z sqrt(p_hat (1 - p_hat) / n + z^2/4n^2)) / (1 + z^2/n)."""
    k, n = _successes("successes", successes, "trials", trials)
    z = _two_sided_z(confidence)
    rate = k / n
    shrink = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / shrink
    half_width = z / shrink * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return ProportionInterval(rate, max(0.0, centre - half_width), min(1.0, centre + half_width), confidence)


@dataclass(frozen=True)
class ProportionTest:
    """Pooled two-proportion z-test of b against a; the interval of the difference is Newcombe's."""

    rate_a: float
    rate_b: float
    difference: float
    relative_lift: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    confidence: float


def two_proportion_ztest(successes_a: int, trials_a: int, successes_b: int, trials_b: int,
                         confidence: float = 0.95) -> ProportionTest:
    """z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b)) with the pooled rate p under H0: p_a = p_b;
    z^2 equals the uncorrected chi-squared statistic of the 2x2 table. The confidence interval of
    p_b - p_a is Newcombe's hybrid score interval (method 10), from the Wilson interval of each arm:
    d - sqrt((p_b - l_b)^2 + (u_a - p_a)^2) to d + sqrt((u_b - p_b)^2 + (p_a - l_a)^2)."""
    k_a, n_a = _successes("successes_a", successes_a, "trials_a", trials_a)
    k_b, n_b = _successes("successes_b", successes_b, "trials_b", trials_b)
    a = proportion_ci(k_a, n_a, confidence)
    b = proportion_ci(k_b, n_b, confidence)
    difference = b.rate - a.rate
    pooled = (k_a + k_b) / (n_a + n_b)
    standard_error = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    # all successes or none in both arms: the rates are equal and there is nothing to test
    z = difference / standard_error if standard_error > 0 else 0.0
    low = difference - math.hypot(b.rate - b.low, a.high - a.rate)
    high = difference + math.hypot(b.high - b.rate, a.rate - a.low)
    return ProportionTest(a.rate, b.rate, difference, _relative(difference, a.rate), z,
                          float(2 * stats.norm.sf(abs(z))), low, high, confidence)


# --- means ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WelchTest:
    mean_a: float
    mean_b: float
    difference: float
    relative_lift: float
    t: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float
    confidence: float


def welch_ttest(a: Mean, b: Mean, confidence: float = 0.95) -> WelchTest:
    """Welch's t-test of mean_b - mean_a from summary statistics: t = d / sqrt(s_a^2/n_a + s_b^2/n_b),
    df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a - 1) + (s_b^2/n_b)^2/(n_b - 1)) (Welch-Satterthwaite),
    two-sided p and the interval d +- t_{df, 1 - (1 - confidence)/2} se. The same numbers as
    scipy.stats.ttest_ind(b, a, equal_var=False)."""
    for name, arm in (("a", a), ("b", b)):
        if not isinstance(arm, Mean):
            raise ValueError(f"{name}: must be a Mean, got {type(arm).__name__}")
    _between_0_and_1("confidence", confidence)
    var_a, var_b = a.sampling_variance, b.sampling_variance
    standard_error = math.sqrt(var_a + var_b)
    if standard_error == 0:
        raise ValueError("a, b: both arms have zero variance, the t statistic is undefined")
    df = (var_a + var_b) ** 2 / (var_a**2 / (a.n - 1) + var_b**2 / (b.n - 1))
    difference = b.mean - a.mean
    t = difference / standard_error
    half_width = float(stats.t.isf((1 - confidence) / 2, df)) * standard_error
    return WelchTest(a.mean, b.mean, difference, _relative(difference, a.mean), t, df,
                     float(2 * stats.t.sf(abs(t), df)), difference - half_width, difference + half_width, confidence)


def welch_ttest_samples(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float],
                        confidence: float = 0.95) -> WelchTest:
    """`welch_ttest` on per-user values (arm a, arm b)."""
    return welch_ttest(Mean.of(_sample("a", a)), Mean.of(_sample("b", b)), confidence)


# --- assignment -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRatioMismatch:
    chi2: float
    df: int
    p_value: float
    alpha: float
    mismatch: bool


def sample_ratio_mismatch(observed: Mapping[str, int], expected_weights: Mapping[str, float],
                          alpha: float = 0.001) -> SampleRatioMismatch:
    """Chi-squared goodness of fit of the users per variant against the configured weights (the same
    mapping as an experiment's `variants` in the UI configuration). A mismatch (p < alpha) means the
    assignment or the logging is broken and no other result of the experiment can be trusted; alpha is
    small because the test runs on every experiment, every day."""
    _between_0_and_1("alpha", alpha)
    if set(observed) != set(expected_weights):
        raise ValueError(f"expected_weights: variants {sorted(expected_weights)} do not match the observed "
                         f"variants {sorted(observed)}")
    if len(observed) < 2:
        raise ValueError(f"observed: needs at least 2 variants, got {len(observed)}")
    names = sorted(observed)
    counts = np.array([_count(f"observed[{name!r}]", observed[name]) for name in names], dtype=float)
    weights = np.array([_positive(f"expected_weights[{name!r}]", expected_weights[name]) for name in names])
    if abs(weights.sum() - 1) > 1e-9:
        raise ValueError(f"expected_weights: must sum to 1, got {weights.sum()!r}")
    if counts.sum() == 0:
        raise ValueError("observed: no users in any variant")
    result = stats.chisquare(counts, counts.sum() * weights)
    p_value = float(result.pvalue)
    return SampleRatioMismatch(float(result.statistic), len(names) - 1, p_value, alpha, p_value < alpha)


# --- planning -------------------------------------------------------------------------------------------


def _rates(baseline_rate: float, effect: float, relative: bool, effect_name: str) -> tuple[float, float]:
    p1 = _between_0_and_1("baseline_rate", baseline_rate)
    delta = _real(effect_name, effect) * (p1 if relative else 1)
    if delta == 0:
        raise ValueError(f"{effect_name}: must not be 0")
    if not 0 < p1 + delta < 1:
        raise ValueError(f"{effect_name}: the treatment rate {p1 + delta!r} must be strictly between 0 and 1")
    return p1, p1 + delta


def _proportion_terms(p1: float, p2: float) -> tuple[float, float]:
    """The standard deviations (times sqrt(n)) of p2 - p1 under H0 (pooled) and under H1."""
    pooled = (p1 + p2) / 2
    return math.sqrt(2 * pooled * (1 - pooled)), math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))


def sample_size_proportions(baseline_rate: float, minimum_detectable_effect: float, alpha: float = 0.05,
                            power: float = 0.8, relative: bool = False) -> int:
    """Users per arm for the two-sided pooled z-test of two rates to detect p2 - p1 = delta (absolute, or
    delta = baseline_rate * minimum_detectable_effect when `relative`) with the given power:

        n = ceil( (z_{1-alpha/2} sqrt(2 pbar (1 - pbar)) + z_{power} sqrt(p1 (1 - p1) + p2 (1 - p2)))^2 / delta^2 )

    with pbar = (p1 + p2) / 2: the normal approximation without continuity correction of Fleiss, Levin &
    Paik, Statistical Methods for Rates and Proportions (3rd ed., 2003), chapter 4. The first term is the
    spread of the difference under H0 (pooled rate), the second under H1. Baseline 10%, +2 points,
    alpha 0.05, power 0.8: 3,841 per arm."""
    p1, p2 = _rates(baseline_rate, minimum_detectable_effect, relative, "minimum_detectable_effect")
    z_alpha = float(stats.norm.isf(_between_0_and_1("alpha", alpha) / 2))
    z_power = float(stats.norm.ppf(_between_0_and_1("power", power)))
    null_sd, alternative_sd = _proportion_terms(p1, p2)
    return math.ceil((z_alpha * null_sd + z_power * alternative_sd) ** 2 / (p2 - p1) ** 2)


def power_proportions(baseline_rate: float, effect: float, n_per_arm: int, alpha: float = 0.05,
                      relative: bool = False) -> float:
    """The power of the two-sided pooled z-test with n users per arm, the inverse of
    `sample_size_proportions`: Phi((|delta| sqrt(n) - z_{1-alpha/2} sqrt(2 pbar (1 - pbar)))
    / sqrt(p1 (1 - p1) + p2 (1 - p2))). Like the sample size, it ignores the far tail (a significant
    result of the wrong sign), which is negligible wherever power matters."""
    p1, p2 = _rates(baseline_rate, effect, relative, "effect")
    n = _count("n_per_arm", n_per_arm, minimum=1)
    z_alpha = float(stats.norm.isf(_between_0_and_1("alpha", alpha) / 2))
    null_sd, alternative_sd = _proportion_terms(p1, p2)
    return float(stats.norm.cdf((abs(p2 - p1) * math.sqrt(n) - z_alpha * null_sd) / alternative_sd))


def sample_size_means(std: float, minimum_detectable_effect: float, alpha: float = 0.05,
                      power: float = 0.8) -> int:
    """Users per arm for a two-sided test of two means with a common standard deviation:
    n = ceil(2 (z_{1-alpha/2} + z_{power})^2 std^2 / delta^2), the normal approximation (the t-test
    needs a user or two more at small n). With CUPED, pass the adjusted standard deviation,
    std * sqrt(1 - variance_reduction)."""
    sigma = _positive("std", std)
    delta = _real("minimum_detectable_effect", minimum_detectable_effect)
    if delta == 0:
        raise ValueError("minimum_detectable_effect: must not be 0")
    z_alpha = float(stats.norm.isf(_between_0_and_1("alpha", alpha) / 2))
    z_power = float(stats.norm.ppf(_between_0_and_1("power", power)))
    return math.ceil(2 * (z_alpha + z_power) ** 2 * sigma**2 / delta**2)


# --- CUPED ----------------------------------------------------------------------------------------------
# x is each user's value of the same metric in a period before the experiment started (0 for users
# without one), so the treatment cannot have changed it: subtracting theta (x - mean(x)) keeps every
# arm's mean effect unbiased and removes the part of the variance that x predicts, rho^2 of it.


def cuped_theta(y: np.ndarray | Sequence[float], x: np.ndarray | Sequence[float]) -> float:
    """theta = cov(x, y) / var(x) over all users of all arms together (one theta for every arm)."""
    y_values, x_values = _sample("y", y), _sample("x", x)
    if len(y_values) != len(x_values):
        raise ValueError(f"x: has {len(x_values)} values, y has {len(y_values)}")
    variance = float(x_values.var(ddof=1))
    if variance == 0:
        raise ValueError("x: has zero variance, it cannot explain any of y")
    return float(np.cov(x_values, y_values, ddof=1)[0, 1]) / variance


def cuped_adjust(y: np.ndarray | Sequence[float], x: np.ndarray | Sequence[float], theta: float,
                 x_mean: float) -> np.ndarray:
    """y - theta (x - x_mean), with theta and x_mean of all arms together."""
    y_values, x_values = _sample("y", y, minimum=1), _sample("x", x, minimum=1)
    if len(y_values) != len(x_values):
        raise ValueError(f"x: has {len(x_values)} values, y has {len(y_values)}")
    return y_values - _real("theta", theta) * (x_values - _real("x_mean", x_mean))


@dataclass(frozen=True)
class CovariateMoments:
    """One arm's metric y and pre-period covariate x per user, as sums from an aggregate query become:
    means, sample variances (ddof=1) and the sample covariance."""

    n: int
    mean_y: float
    variance_y: float
    mean_x: float
    variance_x: float
    covariance: float

    def __post_init__(self) -> None:
        _count("n", self.n, minimum=2)
        for name in ("mean_y", "mean_x", "covariance"):
            _real(name, getattr(self, name))
        for name in ("variance_y", "variance_x"):
            if _real(name, getattr(self, name)) < 0:
                raise ValueError(f"{name}: must not be negative, got {getattr(self, name)!r}")

    @classmethod
    def of(cls, y: np.ndarray | Sequence[float], x: np.ndarray | Sequence[float]) -> CovariateMoments:
        y_values, x_values = _sample("y", y), _sample("x", x)
        if len(y_values) != len(x_values):
            raise ValueError(f"x: has {len(x_values)} values, y has {len(y_values)}")
        covariance = np.cov(x_values, y_values, ddof=1)
        return cls(len(y_values), float(y_values.mean()), float(covariance[1, 1]), float(x_values.mean()),
                   float(covariance[0, 0]), float(covariance[0, 1]))


@dataclass(frozen=True)
class Cuped:
    """The CUPED-adjusted arms, ready for `welch_ttest`, and how much of the variance of the estimated
    difference they remove: 1 - (s'_a^2/n_a + s'_b^2/n_b) / (s_a^2/n_a + s_b^2/n_b)."""

    theta: float
    x_mean: float
    control: Mean
    treatment: Mean
    variance_reduction: float


def cuped(control: CovariateMoments, treatment: CovariateMoments) -> Cuped:
    """CUPED from per-arm moments. theta and mean(x) are those of the users of both arms together, so
    the result equals `cuped_adjust` on the concatenated per-user arrays followed by `Mean.of`."""
    for name, arm in (("control", control), ("treatment", treatment)):
        if not isinstance(arm, CovariateMoments):
            raise ValueError(f"{name}: must be CovariateMoments, got {type(arm).__name__}")
    arms = (control, treatment)
    n = sum(arm.n for arm in arms)
    mean_x = sum(arm.n * arm.mean_x for arm in arms) / n
    mean_y = sum(arm.n * arm.mean_y for arm in arms) / n
    # co-moments of the pooled users: within each arm plus between the arms' means
    sxx = sum((arm.n - 1) * arm.variance_x + arm.n * (arm.mean_x - mean_x) ** 2 for arm in arms)
    sxy = sum((arm.n - 1) * arm.covariance + arm.n * (arm.mean_x - mean_x) * (arm.mean_y - mean_y) for arm in arms)
    if sxx == 0:
        raise ValueError("control, treatment: x has zero variance, it cannot explain any of y")
    theta = sxy / sxx

    def adjusted(arm: CovariateMoments) -> Mean:
        variance = arm.variance_y - 2 * theta * arm.covariance + theta**2 * arm.variance_x
        return Mean(arm.mean_y - theta * (arm.mean_x - mean_x), max(variance, 0.0), arm.n)

    raw = sum(arm.variance_y / arm.n for arm in arms)
    adjusted_control, adjusted_treatment = adjusted(control), adjusted(treatment)
    reduced = adjusted_control.sampling_variance + adjusted_treatment.sampling_variance
    return Cuped(theta, mean_x, adjusted_control, adjusted_treatment, 1 - reduced / raw if raw > 0 else 0.0)


def cuped_samples(y_control: np.ndarray | Sequence[float], x_control: np.ndarray | Sequence[float],
                  y_treatment: np.ndarray | Sequence[float], x_treatment: np.ndarray | Sequence[float]) -> Cuped:
    """`cuped` on per-user arrays."""
    return cuped(CovariateMoments.of(y_control, x_control), CovariateMoments.of(y_treatment, x_treatment))


# --- guardrails -----------------------------------------------------------------------------------------

GuardrailStatus = Literal["non_inferior", "degraded", "inconclusive"]


@dataclass(frozen=True)
class GuardrailResult:
    """`degradation` is the relative change in the bad direction ((c - t) / c when higher is better);
    `worst_degradation` its one-sided (1 - alpha) upper confidence bound; `p_value` that of the
    non-inferiority test (H0: degradation >= the margin) and `p_worse` that of the deterioration test
    (H0: degradation <= 0).

    - non_inferior: the bound is within the margin, the treatment is shown to be no worse than allowed;
    - degraded: the treatment is significantly worse than control, by more than the margin;
    - inconclusive: neither yet (typically too few users)."""

    name: str
    control: float
    treatment: float
    relative_change: float
    degradation: float
    worst_degradation: float
    max_relative_degradation: float
    p_value: float
    p_worse: float
    alpha: float
    status: GuardrailStatus

    @property
    def passed(self) -> bool:
        return self.status == "non_inferior"


def guardrail(name: str, control: Proportion | Mean, treatment: Proportion | Mean, max_relative_degradation: float,
              higher_is_better: bool = True, alpha: float = 0.05) -> GuardrailResult:
    """Non-inferiority of a metric the treatment must not hurt by more than `max_relative_degradation`
    (0.02: 2% of the control's value). The relative change r = t / c - 1 has, by the delta method,
    var(r) = var(t)/c^2 + t^2 var(c)/c^4 (independent arms, normal approximation); the test is one-sided."""
    if not isinstance(control, Proportion | Mean):
        raise ValueError(f"control: must be a Proportion or a Mean, got {type(control).__name__}")
    if type(treatment) is not type(control):
        raise ValueError(f"treatment: must be a {type(control).__name__} like control, got {type(treatment).__name__}")
    margin = _real("max_relative_degradation", max_relative_degradation)
    if margin < 0:
        raise ValueError(f"max_relative_degradation: must not be negative, got {max_relative_degradation!r}")
    _between_0_and_1("alpha", alpha)
    c, t = control.estimate, treatment.estimate
    if c == 0:
        raise ValueError("control: its value is 0, a relative degradation is undefined")
    relative_change = t / c - 1
    degradation = -relative_change if higher_is_better else relative_change
    standard_error = math.sqrt(treatment.sampling_variance / c**2 + t**2 * control.sampling_variance / c**4)
    if standard_error > 0:
        worst = degradation + float(stats.norm.isf(alpha)) * standard_error
        p_value = float(stats.norm.sf((margin - degradation) / standard_error))
        p_worse = float(stats.norm.sf(degradation / standard_error))
    else:  # no variance in either arm (e.g. 0 successes of n in both): the estimates are exact
        worst = degradation
        p_value = 0.0 if degradation < margin else 1.0
        p_worse = 0.0 if degradation > 0 else 1.0
    if p_value < alpha:
        status: GuardrailStatus = "non_inferior"
    elif p_worse < alpha and degradation > margin:
        status = "degraded"
    else:
        status = "inconclusive"
    return GuardrailResult(name, c, t, relative_change, degradation, worst, margin, p_value, p_worse, alpha, status)


# --- verdict --------------------------------------------------------------------------------------------

Decision = Literal["ship", "keep_control", "keep_running", "invalid"]


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reasons: tuple[str, ...]


def _percent(fraction: float, sign: bool = False) -> str:
    text = f"{100 * fraction:{'+' if sign else ''}.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _effect(primary: ProportionTest | WelchTest) -> str:
    lift = "" if math.isnan(primary.relative_lift) else f"{_percent(primary.relative_lift, sign=True)} relative, "
    return (f"{lift}difference {primary.difference:+.4g}, {primary.confidence:.0%} CI "
            f"[{primary.ci_low:+.4g}, {primary.ci_high:+.4g}], p = {primary.p_value:.2g}")


def _guardrail_reason(result: GuardrailResult) -> str:
    allowed = _percent(result.max_relative_degradation)
    if result.status == "degraded":
        return (f"guardrail {result.name} degraded by {_percent(result.degradation)} > {allowed} allowed "
                f"(significantly worse than control, p = {result.p_worse:.2g})")
    change = _percent(result.relative_change, sign=True)
    worst = _percent(result.worst_degradation)
    if result.status == "non_inferior":
        return f"guardrail {result.name} held: changed {change}, at worst {worst} worse, within the {allowed} allowed"
    return (f"guardrail {result.name} not yet shown within the {allowed} allowed: changed {change}, "
            f"could be up to {worst} worse (p = {result.p_value:.2g} >= {result.alpha:g})")


def verdict(primary: ProportionTest | WelchTest, srm: SampleRatioMismatch, required_per_arm: int,
            observed_per_arm: int, guardrails: Sequence[GuardrailResult] = (), alpha: float = 0.05,
            higher_is_better: bool = True) -> Verdict:
    """What to do with the experiment, checked in this order:

    1. a sample ratio mismatch: `invalid`, nothing else can be trusted;
    2. a degraded guardrail: `keep_control`;
    3. fewer users in the smallest arm (`observed_per_arm`) than planned: `keep_running` (deciding
       early on a significant result is peeking and inflates false positives);
    4. the primary metric: not significant, or significant in the wrong direction: `keep_control`;
       significant in the right direction: `ship` if every guardrail is shown non-inferior, otherwise
       `keep_running` until they are."""
    required = _count("required_per_arm", required_per_arm, minimum=1)
    observed = _count("observed_per_arm", observed_per_arm)
    _between_0_and_1("alpha", alpha)
    if srm.mismatch:
        return Verdict("invalid", (f"SRM: p = {srm.p_value:.2g} < {srm.alpha:g}, assignment is broken, "
                                   f"results are not trustworthy",))
    degraded = [_guardrail_reason(g) for g in guardrails if g.status == "degraded"]
    if degraded:
        return Verdict("keep_control", tuple(degraded))
    if observed < required:
        return Verdict("keep_running", (f"needs {required:,} users per arm, has {observed:,}",))
    if primary.p_value >= alpha:
        return Verdict("keep_control", (f"primary metric: no significant difference at the planned sample size "
                                        f"({_effect(primary)} >= {alpha:g})",))
    if (primary.difference > 0) != higher_is_better:
        return Verdict("keep_control", (f"primary metric significantly worse ({_effect(primary)} < {alpha:g})",))
    improved = f"primary metric significantly better ({_effect(primary)} < {alpha:g})"
    unproven = [_guardrail_reason(g) for g in guardrails if not g.passed]
    if unproven:
        return Verdict("keep_running", (improved, *unproven))
    return Verdict("ship", (improved, *(_guardrail_reason(g) for g in guardrails)))
