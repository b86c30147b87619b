"""The eraser: for each user on the erasure queue, rewrite every lake object and raw archive object that
holds them, then complete the audit record. SQS partial batch responses: a failed user is retried."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import cache

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from feedbackloop import erasure, wiring
from feedbackloop.lake import TABLES, LakeTable
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Metric
from feedbackloop.resources import RAW_PREFIX

logger = Logger(service=SERVICE)
tracer = Tracer()
metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)
processor = BatchProcessor(event_type=EventType.SQS)


@cache
def _settings():
    return wiring.eraser_settings()


def _folder(table: LakeTable) -> str:
    settings = _settings()
    bucket = {"curated": settings.curated_bucket, "quarantine": settings.quarantine_bucket}[table.bucket_key]
    return f"{bucket}/{table.prefix.rstrip('/')}"


def erase(record) -> None:
    user_id = json.loads(record.body)["user_id"]
    settings = _settings()
    result = erasure.erase_from_lake(wiring.lake_filesystem(), _folder,
                                     f"{settings.raw_bucket}/{RAW_PREFIX.rstrip('/')}", user_id, TABLES)
    erasure.complete(wiring.erasure_log(settings.erasure_table), user_id, asdict(result))
    metrics.add_metric(Metric.ERASURES_COMPLETED, MetricUnit.Count, 1)
    logger.info("user erased", extra={"user_id": user_id, "result": asdict(result)})


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    return process_partial_response(event=event, record_handler=erase, processor=processor, context=context)
