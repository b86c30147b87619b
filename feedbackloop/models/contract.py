"""What a training run hands to the rest of the system: file names and the number the gate compares.
Light on purpose: the workflow's Lambdas import it without the training libraries."""

from __future__ import annotations

from typing import Any

K = 10
# The feedback decay's half-life, the one setting: the table jobs receive it as `--half-life-days` (CDK and
# the local runners pass it; the script cannot import the core), training's parameters and the online store
# read it here.
HALF_LIFE_DAYS = 30.0
# The nightly training job's tuning budget (the `tuning_minutes` hyperparameter the workflow passes; the
# defaults of everything tuned are `feedbackloop.models.pipeline.RankingParams`)
TUNING_MINUTES = 5.0
MODEL_FILE = "model.npz"
METRICS_FILE = "metrics.json"
GATE_METRIC = f"ndcg_at_{K}"


# the off-policy estimator the gate compares (feedbackloop/models/ope.py): doubly robust, unbiased if either the
# propensities or its reward model is right
GATE_ESTIMATOR = "dr"


def off_policy_refusal(off_policy: dict[str, Any] | None, margin: float) -> str | None:
    """Why the gate refuses the candidate on the off-policy estimate (its estimate below the current
    model's by more than `margin`, relative), or None."""
    if not off_policy or not off_policy.get("rounds"):
        return None
    name = off_policy.get("estimator", GATE_ESTIMATOR)
    new, old = off_policy["candidate"][name]["value"], off_policy["current"][name]["value"]
    floor = old * (1 - margin)
    if new < floor:
        return (f"off-policy {name.upper()} click rate {new:.4f} < {floor:.4f} (current {old:.4f} - {margin:.0%}, "
                f"{off_policy['rounds']:,} logged slots)")
    return None


def gate_value(metrics: dict[str, Any]) -> float | None:
    """The number the gate compares: the model's NDCG@10 on its temporal hold-out."""
    return metrics.get("ranking", {}).get("model", {}).get(GATE_METRIC)
