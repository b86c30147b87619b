"""The serving API: recommendations, UI config, preferences and erasure per user (API Gateway REST
proxy, Powertools event handler with validation; `feedbackloop openapi` prints the OpenAPI document).

The published model is loaded once per container and refreshed when the registry moves; the user's
online profile is read on every request, so their latest feedback shapes the next response.
"""

# No `from __future__ import annotations`: Powertools reads the route signatures' types at runtime.
import json
import time
import warnings
from datetime import UTC, datetime
from functools import cache
from typing import Annotated

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from feedbackloop import erasure, wiring
from feedbackloop.api_errors import error_body
from feedbackloop.exploration import GREEDY, policy_for
from feedbackloop.item_counters import CachedCounts
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Function, Metric
from feedbackloop.resources import UI_CONFIG
from feedbackloop.schemas import strict_json
from feedbackloop.serving import ModelCache, popular_without_model, recommend
from feedbackloop.serving_api import (
    DEFAULT_K,
    MAX_K,
    REQUEST_ID_MAX_LENGTH,
    REQUEST_ID_PATTERN,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
    PreferencesRequest,
    decoded_path,
    recommendations_body,
)
from feedbackloop.uiconfig import AgentConfigReader, config_for, ordering_of

# status reads and rejected requests emit no metric, and that is fine
warnings.filterwarnings("ignore", message="No application metrics to publish")
# logs and traces under the function's own name; metrics under the application's (names.SERVICE_DIMENSION)
logger = Logger(service=Function.of_handler(__name__))
tracer = Tracer(service=Function.of_handler(__name__))
metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)
# bodies are strict JSON: NaN, a repeated key, a 5,000-digit number or deep nesting is a 422, not a 502
app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=strict_json.loads)

UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, max_length=USER_ID_MAX_LENGTH, description="the user")]


@cache
def _models() -> ModelCache:
    settings = wiring.serving_settings()
    return ModelCache(wiring.model_registry_for(settings.registry_table), wiring.artifacts(),
                      settings.model_refresh_seconds)


@cache
def _ui_config() -> AgentConfigReader:
    settings = wiring.serving_settings()
    return AgentConfigReader(settings.appconfig_agent_url, settings.appconfig_application or UI_CONFIG.application,
                             UI_CONFIG.environment, UI_CONFIG.profile, settings.appconfig_ttl_seconds)


@cache
def _online():
    return wiring.online_store(wiring.serving_settings().online_table)


@cache
def _item_counters():
    settings = wiring.serving_settings()
    if settings.item_counters_table is None:
        return None
    store = wiring.item_counter_store(settings.item_counters_table)
    ttl = settings.item_counters_ttl_seconds
    return CachedCounts(store, ttl) if ttl > 0 else store


@cache
def _erasure_log(table: str):  # clients once per container: a new one costs ~150 ms per request
    return wiring.erasure_log(table)


@cache
def _erasure_queue(queue_url: str):
    return wiring.erasure_queue(queue_url)


@app.exception_handler(RequestValidationError)
def invalid_request(error: RequestValidationError) -> Response:
    """422 with each error's location, type and message: Powertools' own answer drops the message, which
    the published document (HTTPValidationError) requires and a client needs. No input is echoed."""
    detail = [{"loc": e["loc"], "type": e["type"], "msg": _message(e)} for e in error.errors()]
    first = detail[0] if detail else {"loc": ["$"], "msg": "invalid request"}
    return _problem(422, "validation_error", "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)
                    or first["msg"], ".".join(map(str, first["loc"])), statusCode=422, detail=detail)


def _message(error: dict) -> str:
    why = (error.get("ctx") or {}).get("error") if error.get("type") == "json_invalid" else None
    return str(why or error.get("msg") or error["type"])


def _problem(status: int, error: str, reason: str, field: str = "$", headers: dict | None = None,
             **extra) -> Response:
    return Response(status, "application/json", error_body(error, reason, field, **extra), headers=headers)


@app.not_found
def no_such_route(error: Exception) -> Response:
    return _problem(404, "not_found", "no such route", "path")


@app.exception_handler(RequestUnsupportedContentType)
def unsupported_content_type(error: RequestUnsupportedContentType) -> Response:
    return _problem(415, "unsupported_media_type", "the body must be application/json")


@app.exception_handler(ValueError)
def unreadable_body(error: ValueError) -> Response:
    """Powertools raises, instead of answering, on a body it cannot read: bytes that are not UTF-8, or
    multipart without a boundary. The client's to fix, so a 422 that says why; any other ValueError is
    ours, and still fails the invocation."""
    event = app.current_event
    if isinstance(error, UnicodeDecodeError) and event.is_base64_encoded:
        kind, why = "utf8_invalid", f"the body is not UTF-8 (byte {error.start})"
    elif (event.headers.get("content-type") or "").strip().startswith("multipart/form-data"):
        kind, why = "multipart_invalid", f"the body cannot be read as multipart/form-data: {error}"
    else:
        raise error
    return _problem(422, kind, why, "body", statusCode=422, detail=[{"loc": ["body"], "type": kind, "msg": why}])


@app.get("/users/<user_id>/recommendations", summary="Ranked items for a user, with the reason for each")
@tracer.capture_method
def get_recommendations(user_id: UserId,
                        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many items")] = DEFAULT_K,
                        request_id: Annotated[str | None, Query(
                            pattern=REQUEST_ID_PATTERN, max_length=REQUEST_ID_MAX_LENGTH,
                            description="draws the exploration (the same id, the same slate); "
                                        "default: the gateway's request id")] = None):
    model = _models().get()
    settings = wiring.serving_settings()
    if model is None:  # before the first model: popularity from the item counters the cleaner keeps
        profile = _online().load([user_id])[user_id]
        ranked = popular_without_model(_online().item_counts(), user_id, k, settings.blocked_items,
                                       personalization=profile.personalization)
        if ranked is None:
            return _problem(503, "no_model", "no model is published and no event is counted yet",
                            headers={"Retry-After": "60"})
        metrics.add_metric(Metric.RECOMMENDATIONS_SERVED, MetricUnit.Count, 1)
        metrics.add_metric(Metric.RECOMMENDATIONS_FALLBACK, MetricUnit.Count, 1)
        return Response(200, "application/json", recommendations_body(ranked)
                        | {"ordering": "popularity", "experiments": {}})
    profile = _online().load([user_id])[user_id]
    config = _user_config(user_id, model.user_segments.get(user_id))
    ordering = ordering_of(config) if config is not None else "personalized"
    exploration = policy_for(_ui_config().get(), config["experiments"]) if config is not None else GREEDY
    request_id = request_id or app.current_event.request_context.request_id
    now = time.time()
    counters = _item_counters()
    ranked = recommend(model, user_id, profile, now, k, blocked=settings.blocked_items,
                       exclude_consumed=settings.exclude_consumed, ordering=ordering, exploration=exploration,
                       request_id=request_id,
                       item_counts=None if counters is None else lambda items: counters.load(items, now))
    metrics.add_metric(Metric.RECOMMENDATIONS_SERVED, MetricUnit.Count, 1)
    if ordering == "personalized" and (not ranked.personalized or ranked.strategy.endswith("popularity")):
        metrics.add_metric(Metric.RECOMMENDATIONS_FALLBACK, MetricUnit.Count, 1)
    # the arms the user is in, so the client tags the exposure and its outcomes with them; the request id
    # and each item's position and propensity go back on its exposure event
    return Response(200, "application/json", recommendations_body(ranked)
                    | {"ordering": ordering, "experiments": {} if config is None else config["experiments"],
                       "request_id": request_id})


def _user_config(user_id: str, segment: str | None) -> dict | None:
    """The user's UI config, or None while none is deployed (recommendations still work: personalized)."""
    try:
        return config_for(_ui_config().get(), user_id, segment)
    except OSError as error:
        logger.warning("UI config unavailable; ranking personalized", extra={"error": repr(error)})
        return None


@app.get("/users/<user_id>/config", summary="The user's UI configuration: flags, layout, experiment variants")
@tracer.capture_method
def get_config(user_id: UserId):
    reader = _ui_config()
    try:
        document = reader.get()
    except OSError as error:  # the agent has no deployed version yet (the first rollout), or is starting
        logger.warning("UI config unavailable", extra={"error": repr(error)})
        return _problem(503, "config_unavailable", "no UI configuration is deployed yet",
                        headers={"Retry-After": "30"})
    model = _models().get()
    segment = model.user_segments.get(user_id) if model is not None else None
    metrics.add_metric(Metric.CONFIG_SERVED, MetricUnit.Count, 1)
    return Response(200, "application/json", config_for(document, user_id, segment)
                    | {"config_version": reader.version})


@app.put("/users/<user_id>/preferences", summary="Turn personalization off or back on for a user")
@tracer.capture_method
def put_preferences(user_id: UserId, preferences: PreferencesRequest):
    _online().set_personalization(user_id, preferences.personalization)
    metrics.add_metric(Metric.PREFERENCES_CHANGED, MetricUnit.Count, 1)
    logger.info("preferences changed", extra={"user_id": user_id, "personalization": preferences.personalization})
    return Response(200, "application/json", {"user_id": user_id, "personalization": preferences.personalization})


@app.delete("/users/<user_id>", summary="Erase a user: online profile now, the lake by the eraser function")
@tracer.capture_method
def delete_user(user_id: UserId):
    settings = wiring.serving_settings()
    if not (settings.erasure_table and settings.erasure_queue_url):
        return _problem(501, "erasure_not_configured", "erasure has no log table or queue in this deployment")
    now = datetime.now(UTC)
    record = erasure.request(_erasure_log(settings.erasure_table), user_id, now)
    # the profile goes now; the tombstone keeps the user's later events out of training and the
    # online store, as an opt-out does, and has the cleaner quarantine their events from before this
    # request still on the stream
    _online().delete(user_id)
    _online().tombstone(user_id, now.timestamp())
    _erasure_queue(settings.erasure_queue_url).send(user_id, record["requested_at"])
    metrics.add_metric(Metric.ERASURES_REQUESTED, MetricUnit.Count, 1)
    logger.info("erasure requested", extra={"user_id": user_id})
    return Response(202, "application/json", {**record, "status_url": f"/users/{user_id}/erasure"})


@app.get("/users/<user_id>/erasure", summary="Whether a user's erasure is complete, and what it removed")
@tracer.capture_method
def get_erasure(user_id: UserId):
    settings = wiring.serving_settings()
    record = _erasure_log(settings.erasure_table).get(user_id) if settings.erasure_table else None
    if record is None:
        return _problem(404, "not_found", "no erasure was requested for this user", "path.user_id")
    return Response(200, "application/json", record)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    # every 5xx and every failure is counted: a UI config deployment rolls back on ServingErrors
    refusal = _content_type_refusal(event)
    if refusal is not None:
        return refusal
    if event.get("path"):  # API Gateway (REST) passes the path percent-encoded: decode it once
        event = {**event, "path": decoded_path(event["path"])}
    try:
        response = app.resolve(event, context)
    except Exception:
        # logged with its traceback and both request ids; the client gets a 500 that names the request
        request_id = (event.get("requestContext") or {}).get("requestId")
        logger.exception("unexpected error", extra={"api_request_id": request_id})
        metrics.add_metric(Metric.SERVING_ERRORS, MetricUnit.Count, 1)
        return _internal_error(request_id)
    if response["statusCode"] >= 500:
        metrics.add_metric(Metric.SERVING_ERRORS, MetricUnit.Count, 1)
    return response


def _internal_error(request_id: str | None) -> dict:
    body = error_body("internal_error", f"an unexpected error; the function's log has it under request id {request_id}")
    return {"statusCode": 500, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body),
            "isBase64Encoded": False}


def _content_type_refusal(event: dict) -> dict | None:
    """415 for a body that does not say it is JSON (a form, text/plain), as the ingest route answers."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if not event.get("body") or strict_json.is_json_media_type(headers.get("content-type")):
        return None
    body = error_body("unsupported_media_type", "the body must be application/json, not "
                      f"{headers['content-type'].split(';')[0].strip()[:80]}")
    return {"statusCode": 415, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body),
            "isBase64Encoded": False}
