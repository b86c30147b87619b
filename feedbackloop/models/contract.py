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


def gate_value(metrics: dict[str, Any]) -> float | None:
    """The number the gate compares: the model's NDCG@10 on its temporal hold-out."""
    return metrics.get("ranking", {}).get("model", {}).get(GATE_METRIC)
