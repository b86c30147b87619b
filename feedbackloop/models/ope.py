"""Off-policy evaluation of a ranking from logged exposures: what click rate would a candidate ranking
have earned, estimated from what the serving policy showed and the propensities it logged.

The estimators are the Open Bandit Pipeline's (`obp.ope`: InverseProbabilityWeighting,
SelfNormalizedInverseProbabilityWeighting, DoublyRobust) in their position-wise form (OBP's `position`
argument: a round is one shown slot, its action the item shown there). For round i with logged item
a_i at position k_i, logging propensity p_i = pi_b(a_i | x_i, k_i) and click r_i:

    w_i  = pi_e(a_i | x_i, k_i) / p_i
    IPS  = 1/n sum_i w_i r_i
    SNIPS = sum_i w_i r_i / sum_i w_i
    DR   = 1/n sum_i [ sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i) + w_i (r_i - q(x_i, a_i, k_i)) ]

The estimand is the expected click rate per shown slot (mean over the logged slots) had the candidate
filled them. A ranking function is deterministic: pi_e(a | x, k) is 1 for the item it puts at position
k, else 0. Confidence intervals are OBP's: the percentile bootstrap over rounds (100 resamples, 95%).
The reward model q of DR is position CTR x the item's shrunken CTR ratio, fitted on the same log (OBP
fits a regression model on the log; ours needs no features). obp itself pins old numpy and
scikit-learn, so it is not a dependency; tests/unit/test_ope.py checks these formulas on a synthetic
log with a known answer.

Input: a DataFrame of logged exposures with columns user_id, item_id, position (0 = top), propensity
(in (0, 1]) and clicked (0/1). Rows without a propensity are not usable and are dropped (counted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from feedbackloop.models.contract import GATE_ESTIMATOR

EXPOSURE_COLUMNS = ("user_id", "item_id", "position", "propensity", "clicked")
ESTIMATORS = ("ips", "snips", "dr")
BOOTSTRAP_SAMPLES = 100  # OBP's default
ALPHA = 0.05  # 95% intervals
SHRINKAGE = 20.0  # pseudo-impressions at the mean CTR in q's per-item CTR

Ranking = Callable[[str], Sequence[str]]  # user id -> item ids, best first


class ExposureLogError(ValueError):
    """The exposure log cannot be evaluated (missing columns, propensities out of range)."""


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PolicyEstimate:
    """A ranking's estimated click rate per shown slot, by each estimator, with the share of the logged
    slots where it agrees with what was shown (how much of the log speaks about it)."""

    estimates: dict[str, Estimate]
    matched: float
    rounds: int

    def as_dict(self) -> dict:
        return {"rounds": self.rounds, "matched": self.matched,
                **{name: e.as_dict() for name, e in self.estimates.items()}}


def usable_exposures(log: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows that carry a propensity, checked; and how many did not."""
    missing = [c for c in EXPOSURE_COLUMNS if c not in log.columns]
    if missing:
        raise ExposureLogError(f"the exposure log lacks the columns {missing} (needs {list(EXPOSURE_COLUMNS)})")
    has = log["propensity"].notna()
    rows = log[has]
    propensity = rows["propensity"].to_numpy(dtype=np.float64)
    if ((propensity <= 0) | (propensity > 1)).any():
        raise ExposureLogError("propensities must be in (0, 1]")
    if (rows["position"].to_numpy() < 0).any():
        raise ExposureLogError("positions start at 0")
    return rows.reset_index(drop=True), int((~has).sum())


def exposures_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """The exposure log from curated event rows (user_id, item_id, event_type, session_id, event_time,
    propensity): each view is a shown slot, its position the view's rank in time within its session (the
    client posts a page's views in order), clicked when the session has a click on the same item. Views
    without a propensity stay, with none (`usable_exposures` counts and drops them)."""
    views = events[events["event_type"] == "view"].sort_values(["session_id", "event_time"], kind="stable")
    clicks = events.loc[events["event_type"] == "click", ["session_id", "item_id"]].drop_duplicates()
    clicked = views.merge(clicks.assign(clicked=1), on=["session_id", "item_id"], how="left")["clicked"]
    return views.assign(position=views.groupby("session_id").cumcount().to_numpy(),
                        clicked=clicked.fillna(0).astype(int).to_numpy())[list(EXPOSURE_COLUMNS)].reset_index(drop=True)


@dataclass(frozen=True)
class RewardModel:
    """q(x, a, k) = CTR at position k x the item's CTR relative to the log's, shrunk toward 1."""

    position_ctr: np.ndarray
    item_ratio: dict[str, float]
    mean_ctr: float

    @classmethod
    def fit(cls, log: pd.DataFrame) -> RewardModel:
        clicked = log["clicked"].to_numpy(dtype=np.float64)
        mean = float(clicked.mean()) if len(clicked) else 0.0
        positions = log["position"].to_numpy(dtype=np.int64)
        shows = np.bincount(positions)
        clicks = np.bincount(positions, weights=clicked, minlength=len(shows))
        position_ctr = np.where(shows > 0, clicks / np.maximum(shows, 1), mean)
        by_item = log.groupby("item_id")["clicked"].agg(["sum", "count"])
        ratio = ((by_item["sum"] + SHRINKAGE * mean) / (by_item["count"] + SHRINKAGE) / max(mean, 1e-12))
        return cls(position_ctr, ratio.to_dict(), mean)

    def predict(self, items: Sequence[str], positions: np.ndarray) -> np.ndarray:
        base = np.where(positions < len(self.position_ctr),
                        self.position_ctr[np.minimum(positions, len(self.position_ctr) - 1)], self.mean_ctr)
        ratio = np.array([self.item_ratio.get(i, 1.0) for i in items])
        return np.clip(base * ratio, 0.0, 1.0)


def target_items(log: pd.DataFrame, ranking: Ranking) -> np.ndarray:
    """The item the ranking puts at each logged row's position for its user (None past its length)."""
    chosen = np.empty(len(log), dtype=object)
    positions = log["position"].to_numpy(dtype=np.int64)
    for user, rows in log.groupby("user_id", sort=False).indices.items():
        ranked = list(ranking(str(user)))
        chosen[rows] = [ranked[k] if k < len(ranked) else None for k in positions[rows]]
    return chosen


def round_rewards(log: pd.DataFrame, chosen: np.ndarray, q: RewardModel) -> dict[str, np.ndarray]:
    """Per round: w r (IPS), w (for SNIPS), and DR's term."""
    reward = log["clicked"].to_numpy(dtype=np.float64)
    propensity = log["propensity"].to_numpy(dtype=np.float64)
    positions = log["position"].to_numpy(dtype=np.int64)
    logged = log["item_id"].astype(str).to_numpy()
    match = np.array([c is not None and c == a for c, a in zip(chosen, logged, strict=True)], dtype=np.float64)
    w = match / propensity
    q_logged = q.predict(logged, positions)
    q_target = np.where([c is not None for c in chosen],
                        q.predict([c if c is not None else "" for c in chosen], positions), 0.0)
    return {"ips": w * reward, "w": w, "dr": q_target + w * (reward - q_logged), "match": match}


def _point(name: str, terms: dict[str, np.ndarray], rows: np.ndarray | slice = slice(None)) -> float:
    if name == "snips":
        total = terms["w"][rows].sum()
        return float(terms["ips"][rows].sum() / total) if total > 0 else 0.0
    return float(terms[name][rows].mean())


def estimate(log: pd.DataFrame, ranking: Ranking, q: RewardModel | None = None, seed: int = 0,
             bootstrap: int = BOOTSTRAP_SAMPLES, alpha: float = ALPHA) -> PolicyEstimate:
    """IPS, SNIPS and DR of `ranking`'s click rate per slot on the usable rows of `log`, with percentile
    bootstrap intervals (rounds resampled with replacement, as OBP does)."""
    log, _ = usable_exposures(log)
    if log.empty:
        raise ExposureLogError("no logged exposure carries a propensity")
    q = q or RewardModel.fit(log)
    terms = round_rewards(log, target_items(log, ranking), q)
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, len(log), len(log)) for _ in range(bootstrap)]
    estimates = {}
    for name in ESTIMATORS:
        spread = np.array([_point(name, terms, s) for s in samples])
        low, high = np.quantile(spread, [alpha / 2, 1 - alpha / 2])
        estimates[name] = Estimate(_point(name, terms), float(low), float(high))
    return PolicyEstimate(estimates, float(terms["match"].mean()), len(log))


def compare(log: pd.DataFrame, candidate: Ranking, current: Ranking, seed: int = 0) -> dict:
    """Both rankings on the same log with the same reward model: what the training job stores for the
    gate (`off_policy` in the candidate's metrics)."""
    usable, without = usable_exposures(log)
    if usable.empty:
        return {"rounds": 0, "without_propensity": without, "reason": "no logged exposure carries a propensity"}
    q = RewardModel.fit(usable)
    return {"rounds": len(usable), "without_propensity": without, "estimator": GATE_ESTIMATOR,
            "logged_ctr": float(usable["clicked"].mean()),
            "candidate": estimate(usable, candidate, q, seed).as_dict(),
            "current": estimate(usable, current, q, seed).as_dict()}


def from_registry_record(record: dict | None) -> dict | None:
    """The off-policy estimates a published model's gate saw, from its registry record."""
    if not record or not record.get("metrics"):
        return None
    import json

    metrics = record["metrics"]
    metrics = json.loads(metrics) if isinstance(metrics, str) else metrics
    return metrics.get("off_policy")


def render(off_policy: dict) -> str:
    """A few lines for the gate's log and `feedbackloop experiment report`."""
    if not off_policy.get("rounds"):
        return f"off-policy estimates: none ({off_policy.get('reason', 'no exposures')})"
    lines = [f"off-policy click rate per slot, {off_policy['rounds']:,} logged slots with propensities "
             f"(logged CTR {off_policy['logged_ctr']:.4f}; {off_policy['without_propensity']:,} without)",
             f"  {'ranking':<10}{'matched':>9}" + "".join(f"{n.upper():>26}" for n in ESTIMATORS)]
    for who in ("candidate", "current"):
        if who in off_policy:
            e = off_policy[who]
            lines.append(f"  {who:<10}{e['matched']:>9.1%}" + "".join(
                f"{e[n]['value']:>10.4f} [{e[n]['low']:.4f}, {e[n]['high']:.4f}]" for n in ESTIMATORS))
    return "\n".join(lines)
