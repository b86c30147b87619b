"""The retraining workflow: build tables, train, evaluate, gate, publish.

One ordered list of steps is the shape of both the Step Functions state machine (an infra test checks
the synthesized definition against it) and the local in-process runner. The decisions are pure
functions here; the Lambdas and the local runner call them.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from feedbackloop.models.contract import GATE_METRIC, METRICS_FILE, gate_value, off_policy_refusal
from feedbackloop.registry import Artifacts, ModelRegistry

BUILD_TABLES, TRAIN, EVALUATE, GATE, PUBLISH = "BuildTables", "Train", "Evaluate", "Gate", "Publish"
STEPS = (BUILD_TABLES, TRAIN, EVALUATE, GATE, PUBLISH)
KEPT_CURRENT = "KeptCurrent"  # the state the gate takes instead of Publish, after raising the alert
MODEL_ARCHIVE = "model.tar.gz"
CURRENT_MODEL_CHANNEL = "current"  # optional: the published model's archive, scored on the same hold-out

@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str
    metric: str
    candidate: float | None
    current: float | None
    margin: float


def decide(candidate: dict[str, Any], current: dict[str, Any] | None, margin: float) -> GateDecision:
    """Whether to publish the candidate: the hold-out decision below, then, when the training job
    estimated both models off-policy from logged exposures (`off_policy`, feedbackloop/models/ope.py), a
    candidate whose estimated click rate is below the current model's by more than `margin` is refused."""
    decision = _decide_on_holdout(candidate, current, margin)
    off_policy = candidate.get("off_policy")
    if not off_policy or not off_policy.get("rounds"):
        return decision
    refused = off_policy_refusal(off_policy, margin)
    if decision.publish and refused:
        return replace(decision, publish=False, reason=f"{decision.reason}; but {refused}: keeping the current model")
    name = off_policy["estimator"]
    return replace(decision, reason=f"{decision.reason}; off-policy {name.upper()} "
                                    f"{off_policy['candidate'][name]['value']:.4f} vs current "
                                    f"{off_policy['current'][name]['value']:.4f}")


def _decide_on_holdout(candidate: dict[str, Any], current: dict[str, Any] | None, margin: float) -> GateDecision:
    """Whether to publish the candidate; never without a hold-out score.

    When the training job scored the current model on the candidate's own hold-out (same users, same
    hidden days, both ranking as serving does), the gate publishes a candidate that beats it by `margin`
    (relative), or one trained on fresher data that is no worse than `margin` below it: freshness is
    what retraining buys (new users, new items, today's tastes), and the hold-out shows it costs
    nothing. Otherwise the candidate must beat the score the current model was published with."""
    rescored = candidate.get("ranking", {}).get("current", {})
    same_holdout = rescored.get(GATE_METRIC)
    served = candidate.get("ranking", {}).get("served", {}).get(GATE_METRIC)
    new = served if same_holdout is not None and served is not None else gate_value(candidate)
    old = same_holdout if same_holdout is not None else (None if current is None else current.get("gate_value"))
    if new is None:
        return GateDecision(False, "the candidate has no hold-out score (too little data to evaluate)",
                            GATE_METRIC, new, old, margin)
    if current is None:
        return GateDecision(True, "no model is published yet", GATE_METRIC, new, old, margin)
    if old is None:
        return GateDecision(True, "the current model has no score to beat", GATE_METRIC, new, old, margin)
    seen_by_current = candidate.get("current_as_of")
    if seen_by_current and str(candidate.get("as_of") or "") <= seen_by_current:
        return GateDecision(False, f"no day newer than the current model's (its data ends {seen_by_current}): "
                                   "keeping the current model", GATE_METRIC, new, old, margin)
    basis = "on the same hold-out" if same_holdout is not None else "as published"
    better = old * (1 + margin)
    if new >= better:
        return GateDecision(True, f"{GATE_METRIC} {new:.4f} >= {better:.4f} (current {old:.4f} {basis} + "
                                  f"{margin:.0%})", GATE_METRIC, new, old, margin)
    fresher = same_holdout is not None and str(candidate.get("as_of") or "") > str(rescored.get("as_of") or "")
    floor = old * (1 - margin)
    if fresher and new >= floor:
        return GateDecision(True, f"fresher data (to {candidate['as_of']}, the current model to "
                                  f"{rescored.get('as_of')}) and {GATE_METRIC} {new:.4f} >= {floor:.4f} (current "
                                  f"{old:.4f} on the same hold-out - {margin:.0%})", GATE_METRIC, new, old, margin)
    return GateDecision(False, f"{GATE_METRIC} {new:.4f} < {better:.4f} (current {old:.4f} {basis} + {margin:.0%})"
                               + ("" if not fresher else f", and below {floor:.4f} despite fresher data")
                               + ": keeping the current model", GATE_METRIC, new, old, margin)


def metrics_from_archive(archive: bytes) -> dict[str, Any]:
    """metrics.json from a SageMaker model.tar.gz."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.extractfile(METRICS_FILE)
        if member is None:
            raise FileNotFoundError(f"{METRICS_FILE} is not in the model archive")
        return json.loads(member.read())


def evaluate(candidate_url: str, artifacts: Artifacts, registry: ModelRegistry, margin: float) -> dict[str, Any]:
    """The Evaluate step: the candidate's metrics against the current model's, and the gate's decision."""
    metrics = metrics_from_archive(artifacts.read(candidate_url))
    current = registry.current()
    decision = decide(metrics["metrics"], current, margin)
    return {"candidate": {"url": candidate_url, "version": metrics["version"], "gate_value": decision.candidate,
                          "metrics": metrics["metrics"]},
            "current": current, "decision": asdict(decision)}


def publish(evaluation: dict[str, Any], artifacts: Artifacts, registry: ModelRegistry, published_prefix: str,
            now: datetime | None = None) -> dict[str, Any]:
    """The Publish step: copy the candidate to its versioned place and move the registry pointer (only
    from the model the gate compared against)."""
    candidate = evaluation["candidate"]
    target = f"{published_prefix.rstrip('/')}/{candidate['version']}/{MODEL_ARCHIVE}"
    artifacts.copy(candidate["url"], target)
    record = {"version": candidate["version"], "artifact": target, "gate_metric": GATE_METRIC,
              "gate_value": candidate["gate_value"], "published_at": (now or datetime.now(UTC)).isoformat(),
              "metrics": json.dumps(candidate["metrics"], default=float)}
    current = evaluation.get("current")
    registry.publish(record, replaces=None if current is None else current["version"])
    return record
