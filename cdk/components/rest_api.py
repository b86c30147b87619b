"""What every feedbackloop REST API has, built once: a regional API with one stage that traces (X-Ray),
logs access as JSON and errors, keeps request bodies out of its logs and throttles; a usage plan with
per-key throttling and a daily quota and its API key; validation errors answered with the reason.

The helpers add their resources under the caller's construct (no construct of their own), so the
logical ids of an API are those of its capability construct. REST APIs are HTTPS only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Names, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_logs as logs
from constructs import Construct

STAGE = "v1"


@dataclass(frozen=True)
class ApiLimits:
    """Request limits of one API (each API says why its numbers are what they are)."""

    stage_rate: float  # requests/s, all keys together
    stage_burst: int
    key_rate: float  # requests/s per API key
    key_burst: int
    key_daily_quota: int


def keyed_rest_api(
    scope: Construct, *, description: str, limits: ApiLimits, cloud_watch_role: bool
) -> apigw.RestApi:
    """The API (id "Api") and its access log group ("AccessLogs") under `scope`.

    Execution and access logging need the account-level API Gateway CloudWatch role; exactly one API
    of the app sets it (`cloud_watch_role=True`), the others deploy after it.
    """
    access_logs = logs.LogGroup(
        scope,
        "AccessLogs",
        retention=logs.RetentionDays.THREE_MONTHS,
        removal_policy=RemovalPolicy.DESTROY,
    )
    api = apigw.RestApi(
        scope,
        "Api",
        # unique per API: API Gateway's CloudWatch metrics tell REST APIs apart by this name only
        rest_api_name=Names.unique_resource_name(scope, max_length=255, separator="-"),
        description=description,
        endpoint_types=[apigw.EndpointType.REGIONAL],
        cloud_watch_role=cloud_watch_role,
        deploy_options=apigw.StageOptions(
            stage_name=STAGE,
            tracing_enabled=True,
            metrics_enabled=True,
            logging_level=apigw.MethodLoggingLevel.ERROR,
            data_trace_enabled=False,  # bodies and paths carry user ids: keep them out of the logs
            throttling_rate_limit=limits.stage_rate,
            throttling_burst_limit=limits.stage_burst,
            access_log_destination=apigw.LogGroupLogDestination(access_logs),
            access_log_format=access_log_format(),
        ),
    )
    # an unknown route is API Gateway's MISSING_AUTHENTICATION_TOKEN (these APIs use keys, not IAM): say so
    api.add_gateway_response(
        "NoSuchRoute",
        type=apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN,
        status_code="404",
        templates={"application/json": json.dumps({"message": "no such route"})},
    )
    return api


def add_keyed_usage_plan(
    api: apigw.RestApi, plan_id: str, key_id: str, *, description: str, key_description: str, limits: ApiLimits
) -> apigw.IApiKey:
    """A usage plan on the API's stage with per-key throttling and a daily quota, and its first key."""
    plan = api.add_usage_plan(
        plan_id,
        description=description,
        throttle=apigw.ThrottleSettings(rate_limit=limits.key_rate, burst_limit=limits.key_burst),
        quota=apigw.QuotaSettings(limit=limits.key_daily_quota, period=apigw.Period.DAY),
        api_stages=[apigw.UsagePlanPerApiStage(api=api, stage=api.deployment_stage)],
    )
    key = api.add_api_key(key_id, description=key_description)
    plan.add_api_key(key)
    return key


def add_validation_response(
    api: apigw.RestApi, response_id: str, response_type: apigw.ResponseType, message: str
) -> None:
    """A 400 for a request the validator rejects, saying why (API Gateway's default says only
    "Invalid request body")."""
    api.add_gateway_response(
        response_id,
        type=response_type,
        status_code="400",
        templates={
            "application/json": json.dumps(
                {
                    "message": message,
                    "errors": "$context.error.validationErrorString",
                    "request_id": "$context.requestId",
                }
            )
        },
    )


def access_log_format() -> apigw.AccessLogFormat:
    field = apigw.AccessLogField
    return apigw.AccessLogFormat.custom(
        json.dumps(
            {
                "requestId": field.context_request_id(),
                "xrayTraceId": field.context_xray_trace_id(),
                "apiKeyId": field.context_identity_api_key_id(),
                "sourceIp": field.context_identity_source_ip(),
                "requestTime": field.context_request_time(),
                "httpMethod": field.context_http_method(),
                "resourcePath": field.context_resource_path(),
                "status": field.context_status(),
                "responseLength": field.context_response_length(),
                "integrationLatency": field.context_integration_latency(),
                "errorMessage": field.context_error_message(),
                "validationError": field.context_error_validation_error_string(),
            }
        )
    )
