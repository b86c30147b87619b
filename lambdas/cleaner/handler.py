"""The cleaner on the Kinesis stream: decode, clean, write Parquet, report partial failures.

The batch is processed as a whole (vectorized; see docs/adr/0004) and the response uses Lambda's
ReportBatchItemFailures contract, so only records whose writes failed are retried (with bisection
and bounded retries configured on the event source mapping, then the on-failure destination).
"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from feedbackloop import wiring
from feedbackloop.cleaning.decode import records_from_kinesis_event
from feedbackloop.cleaning.service import BatchOutcome, ConservationError
from feedbackloop.names import METRICS_NAMESPACE, REASON_DIMENSION, SERVICE, SERVICE_DIMENSION, Function, Metric

# logs and traces under the function's own name; metrics under the application's (names.SERVICE_DIMENSION)
logger = Logger(service=Function.of_handler(__name__))
tracer = Tracer(service=Function.of_handler(__name__))
# Ephemeral: no state shared with other functions that run in the same process (the local runtime)
metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)


@cache
def _cleaner():
    return wiring.cleaner_service()


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> PartialItemFailureResponse:
    try:
        outcome = _cleaner().clean(records_from_kinesis_event(event))
    except ConservationError as error:
        # the gap goes out before the batch fails (metrics are flushed on the way out): the alarm fires, and
        # the stream retries the batch
        _report(error.outcome)
        raise
    _report(outcome)
    return outcome.partial_failure_response()


def _report(outcome: BatchOutcome) -> None:
    metrics.add_metric(Metric.RECORDS_IN, MetricUnit.Count, outcome.records_in)
    metrics.add_metric(Metric.RECORDS_CLEAN, MetricUnit.Count, outcome.clean)
    metrics.add_metric(Metric.RECORDS_QUARANTINED, MetricUnit.Count, outcome.quarantined_total)
    metrics.add_metric(Metric.RECORDS_DUPLICATE, MetricUnit.Count, outcome.duplicates)
    metrics.add_metric(Metric.RECORDS_IMPUTED, MetricUnit.Count, outcome.imputed)
    metrics.add_metric(Metric.RECORDS_FAST_PATH, MetricUnit.Count, outcome.fast_path)
    metrics.add_metric(Metric.BATCH_ITEM_FAILURES, MetricUnit.Count, len(outcome.failed_sources))
    metrics.add_metric(Metric.ONLINE_PROFILES_UPDATED, MetricUnit.Count, outcome.profiles_updated)
    # records in = clean + quarantined + duplicates + failed (retried); anything else was lost: an alarm
    metrics.add_metric(Metric.CONSERVATION_GAP, MetricUnit.Count, abs(outcome.conservation_gap))
    if outcome.conservation_gap:
        logger.error("records unaccounted for", extra={"gap": outcome.conservation_gap})
    for reason, count in outcome.quarantined.items():
        with single_metric(name=Metric.RECORDS_QUARANTINED_BY_REASON, unit=MetricUnit.Count, value=count,
                           namespace=METRICS_NAMESPACE, default_dimensions={SERVICE_DIMENSION: SERVICE}) as metric:
            metric.add_dimension(name=REASON_DIMENSION, value=reason)
    for error in outcome.write_errors:
        logger.error("write failed; its records will be retried", extra={"error": error})
    logger.info(
        "batch cleaned",
        extra={"records_in": outcome.records_in, "clean": outcome.clean, "duplicates": outcome.duplicates,
               "quarantined": dict(outcome.quarantined), "failed": len(outcome.failed_sources)},
    )
