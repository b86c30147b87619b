"""`POST /events`: API Gateway (API key, usage plan, schema validation) in front of the ingest Lambda,
which writes the batch to the stream with PutRecords (see docs/adr/0002)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from constructs import Construct

from cdk import nag
from cdk.components.function import LayerSet, PythonFunction
from cdk.components.rest_api import ApiLimits, add_keyed_usage_plan, add_validation_response, keyed_rest_api
from cdk.deployment import Deployment
from cdk.json_schema import add_model
from cdk.project import ProjectLayout
from feedbackloop.schemas.registry import batch_schema
from feedbackloop.settings import IngestSettings

# A full batch is 500 events and a shard takes 1,000 records/s, so a few full batches per second fill
# the stream: beyond that the ingest Lambda answers 429 per event, and these limits stop a runaway
# producer before it gets there.
INGESTION_LIMITS = ApiLimits(stage_rate=50, stage_burst=100, key_rate=20, key_burst=40, key_daily_quota=1_000_000)


class IngestionApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        stream: kinesis.IStream,
        limits: ApiLimits = INGESTION_LIMITS,
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
            # the schema's checks and timestamps need no pandas or pyarrow (feedbackloop.schemas.registry)
            layers=LayerSet.NUMPY,
        )
        # exactly what KinesisStream.put_records (feedbackloop.adapters.aws) calls: PutRecords, with the
        # stream's key for the data keys Kinesis encrypts the records with (no Encrypt, no ReEncrypt)
        ingest.role.add_to_policy(iam.PolicyStatement(actions=["kinesis:PutRecords"], resources=[stream.stream_arn]))
        if stream.encryption_key is not None:
            ingest.role.add_to_policy(
                iam.PolicyStatement(actions=["kms:GenerateDataKey"], resources=[stream.encryption_key.key_arn])
            )
        self.function = ingest.function

        # The account-level CloudWatch role API Gateway logging needs: set here on request only (an
        # account-wide singleton that would replace the one an account has; see cdk/deployment.py).
        self.sets_account_logging_role = Deployment.of(self).api_gateway_logging_role
        self.api = keyed_rest_api(
            self, description="feedbackloop event ingestion", limits=limits,
            cloud_watch_role=self.sets_account_logging_role,
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
        add_validation_response(
            self.api,
            "BadRequestBody",
            apigw.ResponseType.BAD_REQUEST_BODY,
            "the body does not match the FeedbackEventBatch schema",
        )
        self.api.root.add_resource("events").add_method(
            "POST",
            apigw.LambdaIntegration(self.function),
            api_key_required=True,
            request_validator=validator,
            request_models={"application/json": model},
        )

        self.api_key = add_keyed_usage_plan(
            self.api,
            "Producers",
            "ProducerKey",
            description="feedback producers",
            key_description="default feedback producer",
            limits=limits,
        )
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
        if not self.sets_account_logging_role:
            return
        nag.acknowledge(
            self.api,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-level API Gateway logging role needs exactly this AWS-managed, logging-only policy.",
        )

