"""FeedbackLoopIngest: the API contract, the functions' packaging and settings, the event source mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from cdk.app import INGEST_STACK
from feedbackloop.names import METRICS_NAMESPACE, Function
from feedbackloop.schemas.registry import batch_schema
from feedbackloop.settings import CleanerSettings, IngestSettings

pytestmark = pytest.mark.infra

INGEST_HANDLER = "lambdas.ingest.handler.lambda_handler"
CLEANER_HANDLER = "lambdas.cleaner.handler.lambda_handler"


def _function(ingest: Template, handler: str) -> dict[str, Any]:
    (function,) = [
        f["Properties"]
        for f in ingest.find_resources("AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == handler
    ]
    return function


def _required_env(settings: type[IngestSettings] | type[CleanerSettings]) -> set[str]:
    return {settings.env_name(name) for name, field in settings.model_fields.items() if field.is_required()}


def test_post_events_requires_an_api_key_and_validates_the_body(ingest: Template) -> None:
    ingest.resource_count_is("AWS::ApiGateway::Method", 1)
    (validator_id,) = ingest.find_resources(
        "AWS::ApiGateway::RequestValidator", {"Properties": {"ValidateRequestBody": True}}
    )
    (model_id,) = ingest.find_resources("AWS::ApiGateway::Model")
    ingest.has_resource_properties(
        "AWS::ApiGateway::Method",
        {
            "HttpMethod": "POST",
            "ApiKeyRequired": True,
            "RequestValidatorId": {"Ref": validator_id},
            "RequestModels": {"application/json": {"Ref": model_id}},
            "Integration": {"Type": "AWS_PROXY"},
        },
    )


def test_request_model_is_the_batch_schema_including_nullable_enums(ingest: Template) -> None:
    (model,) = ingest.find_resources("AWS::ApiGateway::Model").values()
    assert json.loads(model["Properties"]["Schema"]) == batch_schema()
    device = batch_schema()["properties"]["events"]["items"]["properties"]["context"]["properties"]["device"]
    assert None in device["enum"]  # the case CDK's own rendering would lose


def test_bad_request_body_answers_with_the_validation_errors(ingest: Template) -> None:
    ingest.has_resource_properties(
        "AWS::ApiGateway::GatewayResponse",
        {
            "ResponseType": "BAD_REQUEST_BODY",
            "StatusCode": "400",
            "ResponseTemplates": {
                "application/json": Match.string_like_regexp(r"\$context\.error\.validationErrorString")
            },
        },
    )


def test_stage_traces_logs_access_and_throttles(ingest: Template) -> None:
    ingest.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
            "MethodSettings": [
                Match.object_like(
                    {
                        "ThrottlingRateLimit": Match.any_value(),
                        "ThrottlingBurstLimit": Match.any_value(),
                        "DataTraceEnabled": False,
                    }
                )
            ],
        },
    )


def test_usage_plan_throttles_and_caps_the_api_key(ingest: Template) -> None:
    ingest.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Throttle": {"RateLimit": Match.any_value(), "BurstLimit": Match.any_value()},
            "Quota": {"Limit": Match.any_value(), "Period": "DAY"},
        },
    )
    (key_id,) = ingest.find_resources("AWS::ApiGateway::ApiKey")
    ingest.has_resource_properties("AWS::ApiGateway::UsagePlanKey", {"KeyId": {"Ref": key_id}, "KeyType": "API_KEY"})


@pytest.mark.parametrize("handler", [INGEST_HANDLER, CLEANER_HANDLER])
def test_functions_share_runtime_tracing_and_layers(ingest: Template, handler: str) -> None:
    function = _function(ingest, handler)
    assert function["Runtime"] == "python3.12"
    assert function["Architectures"] == ["x86_64"]
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == Function.of_handler(handler)
    assert function["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == METRICS_NAMESPACE
    (dependencies,) = [r for r in ingest.find_resources("AWS::Lambda::LayerVersion") if "Layer3Dependencies" in r]
    # our dependency layer (Powertools among them) first, then the function's own: numpy (ingest) or the
    # arrow layer (the cleaner); no managed layer
    assert len(function["Layers"]) == 2 and function["Layers"][0] == {"Ref": dependencies}
    assert function["Layers"][1] != function["Layers"][0] and "Ref" in function["Layers"][1]
    assert "LoggingConfig" in function


def test_ingest_function_has_its_settings(ingest: Template) -> None:
    function = _function(ingest, INGEST_HANDLER)
    assert _required_env(IngestSettings) <= set(function["Environment"]["Variables"])
    assert (function["MemorySize"], function["Timeout"]) == (512, 10)


def test_cleaner_function_has_every_required_setting(ingest: Template) -> None:
    function = _function(ingest, CLEANER_HANDLER)
    assert _required_env(CleanerSettings) <= set(function["Environment"]["Variables"])
    assert (function["MemorySize"], function["Timeout"]) == (1024, 120)


def test_code_asset_holds_only_the_core_package_and_the_handlers(ingest: Template, synthesis) -> None:
    function = _function(ingest, CLEANER_HANDLER)
    asset_hash = function["Code"]["S3Key"].removesuffix(".zip")
    files = json.loads((synthesis.outdir / f"{INGEST_STACK}.assets.json").read_text("utf-8"))["files"]
    asset_dir: Path = synthesis.outdir / files[asset_hash]["source"]["path"]
    assert {p.name for p in asset_dir.iterdir()} == {"feedbackloop", "lambdas"}
    assert not list(asset_dir.rglob("__pycache__"))
    assert (asset_dir / "lambdas" / "cleaner" / "handler.py").is_file()


def test_cleaner_reads_the_stream_with_bisect_retries_and_partial_failures(ingest: Template) -> None:
    ingest.resource_count_is("AWS::Lambda::EventSourceMapping", 1)
    ingest.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 1000,
            "MaximumBatchingWindowInSeconds": 1,
            "ParallelizationFactor": 2,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 3,
            "MaximumRecordAgeInSeconds": 24 * 3600,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {"OnFailure": {"Destination": Match.any_value()}},
        },
    )


def test_cleaner_role_attaches_the_lake_writer_policy(ingest: Template) -> None:
    roles = ingest.find_resources("AWS::IAM::Role", {"Properties": {"ManagedPolicyArns": Match.any_value()}})
    cleaner_role = _function(ingest, CLEANER_HANDLER)["Role"]["Fn::GetAtt"][0]
    assert cleaner_role in roles


def test_outputs_give_the_api_url_and_key_id(ingest: Template) -> None:
    outputs = ingest.to_json()["Outputs"]
    (key_id,) = ingest.find_resources("AWS::ApiGateway::ApiKey")
    assert outputs["ApiKeyId"]["Value"] == {"Ref": key_id}
    assert "/events" in json.dumps(outputs["ApiUrl"]["Value"])
