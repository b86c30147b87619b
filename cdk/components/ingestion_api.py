"""`POST /events`: API Gateway (API key, usage plan, schema validation) in front of the ingest Lambda,
which writes the batch to the stream with PutRecords (see docs/adr/0002)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk import nag
from cdk.components.function import PythonFunction
from cdk.json_schema import add_model
from cdk.project import ProjectLayout
from feedbackloop.schemas.registry import batch_schema
from feedbackloop.settings import IngestSettings

STAGE = "v1"


@dataclass(frozen=True)
class ApiLimits:
    """Request limits. A full batch is 500 events and a shard takes 1,000 records/s, so a few full
    batches per second fill the stream: beyond that the ingest Lambda answers 429 per event, and
    these limits stop a runaway producer before it gets there."""

    stage_rate: float = 50  # requests/s, all keys together
    stage_burst: int = 100
    key_rate: float = 20  # requests/s per API key
    key_burst: int = 40
    key_daily_quota: int = 1_000_000


class IngestionApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        stream: kinesis.IStream,
        limits: ApiLimits = ApiLimits(),
    ) -> None:
        super().__init__(scope, construct_id)
        ingest = PythonFunction(
            self,
            "Ingest",
            layout=layout,
            handler="lambdas.ingest.handler.lambda_handler",
            description="POST /events: validate each event, PutRecords the accepted ones",
            environment=IngestSettings(stream_name=stream.stream_name).to_env(),
            memory_size=512,
            timeout=Duration.seconds(10),
        )
        stream.grant_write(ingest.function)
        nag.acknowledge_all(
            ingest.role,
            ["IAM5[Action::kms:GenerateDataKey*]", "IAM5[Action::kms:ReEncrypt*]"],
            "Stream.grant_write lets the producer encrypt records with the stream's key; the actions are "
            "wildcards on that one key ARN, written by the grant.",
        )
        self.function = ingest.function

        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            description="feedbackloop event ingestion",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Execution and access logging need the account-level CloudWatch role; this API sets it.
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies carry user ids: keep them out of the logs
                throttling_rate_limit=limits.stage_rate,
                throttling_burst_limit=limits.stage_burst,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=_access_log_format(),
            ),
        )
        model = add_model(
            self.api,
            "FeedbackEventBatch",
            batch_schema(),
            description="POST /events body, from feedbackloop.schemas.registry.batch_schema()",
        )
        validator = self.api.add_request_validator(
            # No method declares parameters, so parameter validation is a no-op kept for cdk-nag's APIG2.
            "RequestValidator",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        self.api.add_gateway_response(
            "BadRequestBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="400",
            templates={
                "application/json": json.dumps(
                    {
                        "message": "the body does not match the FeedbackEventBatch schema",
                        "errors": "$context.error.validationErrorString",
                        "request_id": "$context.requestId",
                    }
                )
            },
        )
        self.api.root.add_resource("events").add_method(
            "POST",
            apigw.LambdaIntegration(self.function),
            api_key_required=True,
            request_validator=validator,
            request_models={"application/json": model},
        )

        plan = self.api.add_usage_plan(
            "Producers",
            description="feedback producers",
            throttle=apigw.ThrottleSettings(rate_limit=limits.key_rate, burst_limit=limits.key_burst),
            quota=apigw.QuotaSettings(limit=limits.key_daily_quota, period=apigw.Period.DAY),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        self.api_key = self.api.add_api_key("ProducerKey", description="default feedback producer")
        plan.add_api_key(self.api_key)
        self._acknowledge_findings()

    def _acknowledge_findings(self) -> None:
        nag.acknowledge(
            self.api,
            "APIG3",
            "No WAF web ACL yet: the AWS managed common rule set blocks bodies over 8 KB, and batches are "
            "up to 1 MB; abuse is bounded by API keys, per-key throttling and quotas, and schema validation.",
        )
        nag.acknowledge(
            self.api,
            "APIG4",
            "Producers are services that authenticate with an API key bound to a usage plan; there is no "
            "end-user identity at this edge to authorize against.",
        )
        nag.acknowledge(
            self.api,
            "COG4",
            "No Cognito user pool: producers are machine clients identified by API key (see APIG4).",
        )
        nag.acknowledge(
            self.api,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-level API Gateway logging role needs exactly this AWS-managed, logging-only policy.",
        )


def _access_log_format() -> apigw.AccessLogFormat:
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
