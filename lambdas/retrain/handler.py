"""The retraining workflow's Evaluate and Publish steps (Step Functions Lambda tasks).

Evaluate reads the candidate's metrics from the training job's model archive, compares them with the
published model's and returns the gate's decision; the Gate is a Choice state on `decision.publish`.
Publish copies the candidate to its versioned place and moves the registry pointer.
"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from feedbackloop import retraining, wiring
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Function, Metric
from feedbackloop.resources import PUBLISHED_PREFIX

# logs and traces under the function's own name; metrics under the application's (names.SERVICE_DIMENSION)
logger = Logger(service=Function.of_handler(__name__))
tracer = Tracer(service=Function.of_handler(__name__))
metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)


@cache
def _settings():
    return wiring.retrain_settings()


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def evaluate(event: dict, context: object) -> dict:
    """`event`: {"candidate_url": the training job's S3ModelArtifacts}."""
    evaluation = retraining.evaluate(event["candidate_url"], wiring.artifacts(), wiring.model_registry(),
                                     _settings().gate_margin)
    decision = evaluation["decision"]
    if decision["candidate"] is not None:
        metrics.add_metric(Metric.MODEL_CANDIDATE_NDCG, MetricUnit.NoUnit, decision["candidate"])
    metrics.add_metric(Metric.MODEL_GATE_PASSED if decision["publish"] else Metric.MODEL_GATE_REJECTED,
                       MetricUnit.Count, 1)
    logger.info("gate decided", extra={"decision": decision})
    return evaluation


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def publish(event: dict, context: object) -> dict:
    """`event`: the Evaluate step's output."""
    record = retraining.publish(event, wiring.artifacts(), wiring.model_registry(),
                                f"s3://{_settings().models_bucket}/{PUBLISHED_PREFIX}")
    metrics.add_metric(Metric.MODEL_PUBLISHED, MetricUnit.Count, 1)
    logger.info("model published", extra={"record": record})
    return record
