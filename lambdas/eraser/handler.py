"""The eraser: a batch of erasure requests from the queue (up to 10) becomes one pass over the lake for
every user in it not yet erased since their request (`feedbackloop.lake_erasure.erase_users`), then each
user's audit record is completed. A failed pass reports the whole batch for a retry (the queue is FIFO:
nothing after a failure may be acknowledged)."""

from __future__ import annotations

import json
from functools import cache

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from feedbackloop import erasure, lake_erasure, wiring
from feedbackloop.lake import TABLES, LakeTable
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Function, Metric

# logs and traces under the function's own name; metrics under the application's (names.SERVICE_DIMENSION)
logger = Logger(service=Function.of_handler(__name__))
tracer = Tracer(service=Function.of_handler(__name__))
metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)


@cache
def _settings():
    return wiring.eraser_settings()


def _folder(table: LakeTable) -> str:
    settings = _settings()
    bucket = {"curated": settings.curated_bucket, "quarantine": settings.quarantine_bucket}[table.bucket_key]
    return f"{bucket}/{table.prefix.rstrip('/')}"


def erase_batch(user_ids: list[str]) -> dict[str, dict]:
    """Erase the users of one batch in one pass; returns each erased user's completed audit record."""
    settings = _settings()
    log = wiring.erasure_log(settings.erasure_table)
    users = sorted({u for u in user_ids if erasure.needs_erasure(log.get(u))})
    if not users:
        return {}
    results = lake_erasure.erase_users(
        wiring.lake_filesystem(), _folder, settings.raw_bucket, users, TABLES,
        versions=wiring.noncurrent_versions(),
        known_days=lambda user: erasure.known_raw_hours(log, user),
        remember_days=lambda user, days: erasure.remember_raw_hours(log, user, days),
    )
    return {user: erasure.complete(log, user, erasure.audit_steps(result, TABLES, users))
            for user, result in results.items()}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    records = event.get("Records", [])
    user_ids = [json.loads(r["body"])["user_id"] for r in records]
    try:
        completed = erase_batch(user_ids)
    except Exception:
        logger.exception("erasure pass failed", extra={"users": len(set(user_ids))})
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}
    metrics.add_metric(Metric.ERASURES_COMPLETED, MetricUnit.Count, len(completed))
    for user, record in completed.items():
        logger.info("user erased", extra={"user_id": user, "steps": {k: v for k, v in record["steps"].items()
                                                                      if k != "stores"}})
    logger.info("erasure batch", extra={"requests": len(records), "users": len(set(user_ids)),
                                        "erased": len(completed)})
    return {"batchItemFailures": []}
