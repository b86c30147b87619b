"""POST /events behind API Gateway: parse, call the core, emit metrics."""

from __future__ import annotations

import base64
import json
from functools import cache

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from feedbackloop import wiring
from feedbackloop.api_errors import error_body
from feedbackloop.ingest import accept_batch
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Function, Metric

# logs and traces under the function's own name; metrics under the application's (names.SERVICE_DIMENSION)
logger = Logger(service=Function.of_handler(__name__))
tracer = Tracer(service=Function.of_handler(__name__))
# Ephemeral: no state shared with other functions that run in the same process (the local runtime)
metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)
app = APIGatewayRestResolver()


@cache
def _stream():
    return wiring.event_stream()


@app.post("/events")
@tracer.capture_method
def post_events() -> Response:
    event = app.current_event
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode("utf-8", "surrogatepass")
    result = accept_batch(body, wiring.utc_now(), _stream(), event.headers.get("content-type"))
    metrics.add_metric(Metric.EVENTS_ACCEPTED, MetricUnit.Count, result.accepted)
    metrics.add_metric(Metric.EVENTS_REJECTED, MetricUnit.Count, result.rejected)
    metrics.add_metric(Metric.EVENTS_THROTTLED, MetricUnit.Count, result.throttled)
    if result.status >= 400 and not result.accepted:
        metrics.add_metric(Metric.REQUESTS_REJECTED, MetricUnit.Count, 1)
        logger.info("batch refused", extra={"status": result.status, "error": result.body.get("error")})
    return Response(
        status_code=result.status,
        content_type="application/json",
        body=json.dumps(result.body),
        headers=result.headers,
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    try:
        return app.resolve(event, context)
    except Exception:
        # logged with its traceback and both request ids; the client gets a 500 that names the request
        request_id = (event.get("requestContext") or {}).get("requestId")
        logger.exception("unexpected error", extra={"api_request_id": request_id})
        body = error_body("internal_error", f"an unexpected error; the function's log has it under request id "
                                            f"{request_id}; nothing of this batch was confirmed, resend it whole")
        return {"statusCode": 500, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body),
                "isBase64Encoded": False}
