"""The adjust function, every 5 minutes from EventBridge Scheduler: evaluate the trigger rules, run the
drift detectors, act (a UI config deployment, a retraining run, an alert), record every decision.

The schedule passes its scheduled time (`{"scheduled_time": "<aws.scheduler.scheduled-time>"}`), so a
retried invocation evaluates the same window and names the same retraining execution.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cache

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric

from feedbackloop.adjust.engine import DEFERRED, EffectMetric, RunReport, decision_summary
from feedbackloop.adjust.rules import Outcome, packaged_rules
from feedbackloop.adjust.wiring import adjuster
from feedbackloop.names import (
    EXPERIMENT_DIMENSION,
    METRICS_NAMESPACE,
    RULE_DIMENSION,
    SEGMENT_DIMENSION,
    SERVICE,
    SERVICE_DIMENSION,
    STREAM_DIMENSION,
    VARIANT_DIMENSION,
    Function,
    Metric,
)
from feedbackloop.settings import AdjustSettings

# logs and traces under the function's own name; metrics under the application's (names.SERVICE_DIMENSION)
logger = Logger(service=Function.of_handler(__name__))
tracer = Tracer(service=Function.of_handler(__name__))
metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)


@cache
def _adjuster():
    return adjuster(AdjustSettings.from_env(os.environ), packaged_rules(), boto3.Session())


def scheduled_time(event: dict) -> datetime:
    value = event.get("scheduled_time") if isinstance(event, dict) else None
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else datetime.now(UTC)


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    report = _adjuster().run(scheduled_time(event))
    if report.skipped:
        logger.warning("adjust run skipped", extra={"reason": report.skipped, "run_id": report.run_id})
        metrics.add_metric(Metric.ADJUST_SKIPPED, MetricUnit.Count, 1)
        return decision_summary(report)
    emit(report)
    return decision_summary(report)


def emit(report: RunReport) -> None:
    """Every decision as a log line (queryable in Logs Insights, besides the decisions table) and the
    run's counts as metrics."""
    for decision in report.decisions:
        logger.info("rule decision", extra=decision.record())
        _count(Metric.RULE_EVALUATIONS, RULE_DIMENSION, decision.rule)
        if decision.outcome == Outcome.FIRE:
            _count(Metric.RULE_FIRED, RULE_DIMENSION, decision.rule)
        elif decision.outcome == DEFERRED:
            _count(Metric.RULE_DEFERRED, RULE_DIMENSION, decision.rule)
    for event in report.drift:
        logger.warning("drift detected", extra={"stream": event.stream, "mean_before": event.mean_before,
                                                "mean_after": event.mean_after, "values_seen": event.values_seen})
        _count(Metric.DRIFT_DETECTED, STREAM_DIMENSION, event.stream)
    if report.config is not None:
        metrics.add_metric(Metric.CONFIG_DEPLOYMENTS_STARTED, MetricUnit.Count, 1)
    if report.retraining is not None:
        metrics.add_metric(Metric.RETRAINING_STARTED, MetricUnit.Count, 1)
    metrics.add_metric(Metric.ALERTS_SENT, MetricUnit.Count,
                       sum(1 for d in report.decisions if d.action == "alert" and d.outcome == Outcome.FIRE))
    metrics.add_metric(Metric.ADJUST_ERRORS, MetricUnit.Count, len(report.errors))
    emit_effects(report.effects)
    for error in report.errors:
        logger.error("adjust error", extra={"error": error})


def emit_effects(effects: list[EffectMetric]) -> None:
    """The effect dashboard's numbers: one EMF document per dimension set (segment and variant, '*' when
    rolled up; experiment for the sample ratio check)."""
    groups: dict[tuple[str, str, str | None], list[EffectMetric]] = {}
    for effect in effects:
        groups.setdefault((effect.segment, effect.variant, effect.experiment), []).append(effect)
    for (segment, variant, experiment), group in sorted(groups.items(), key=lambda g: str(g[0])):
        document = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)
        if experiment is not None:
            document.add_dimension(name=EXPERIMENT_DIMENSION, value=experiment)
        else:
            document.add_dimension(name=SEGMENT_DIMENSION, value=segment)
            document.add_dimension(name=VARIANT_DIMENSION, value=variant)
        for effect in group:
            unit = MetricUnit.Seconds if effect.name == Metric.AVG_SESSION_SECONDS else MetricUnit.NoUnit
            document.add_metric(name=effect.name, unit=unit, value=effect.value)
        document.flush_metrics()


def _count(name: Metric, dimension: str, value: str) -> None:
    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=METRICS_NAMESPACE,
                       default_dimensions={SERVICE_DIMENSION: SERVICE}) as metric:
        metric.add_dimension(name=dimension, value=value)
