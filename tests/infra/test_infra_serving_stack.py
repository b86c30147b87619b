"""FeedbackLoopServing (the API contract, its function and what that function may touch, the UI
configuration in AppConfig, the eraser), the online store it shares with the cleaner (FeedbackLoopData's
table, FeedbackLoopIngest's cleaner) and the erasure store (FeedbackLoopData's table and queues)."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest
from aws_cdk import aws_appconfig as appconfig
from aws_cdk.assertions import Match, Template

from cdk.app import DATA_STACK, INGEST_STACK, SERVING_STACK
from cdk.json_schema import DRAFT_04, draft04_from_pydantic
from cdk.naming import pascal_case
from feedbackloop.resources import (
    CURATED_BUCKET,
    ERASURE_REQUESTS,
    ERASURE_TABLE,
    ITEM_COUNTERS_TABLE,
    MODELS_BUCKET,
    ONLINE_TABLE,
    PUBLISHED_PREFIX,
    QUARANTINE_BUCKET,
    RAW_BUCKET,
    REGISTRY_TABLE,
    UI_CONFIG,
)
from feedbackloop.serving_api import PreferencesRequest
from feedbackloop.settings import EraserSettings, ServingSettings

pytestmark = pytest.mark.infra

SERVING_HANDLER = "lambdas.serving.handler.lambda_handler"
ERASER_HANDLER = "lambdas.eraser.handler.lambda_handler"
CLEANER_HANDLER = "lambdas.cleaner.handler.lambda_handler"
# The contract, written out: the routes the serving function answers and clients call.
ROUTES = {
    ("GET", "/users/{user_id}/recommendations"),
    ("GET", "/users/{user_id}/config"),
    ("PUT", "/users/{user_id}/preferences"),
    ("DELETE", "/users/{user_id}"),
    ("GET", "/users/{user_id}/erasure"),
}
ONLINE_ITEM_ACTIONS = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem", "dynamodb:PutItem",
                       "dynamodb:DeleteItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchWriteItem"}
S3_WRITE_ACTIONS = {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload",
                    "s3:PutObjectTagging", "s3:PutObjectAcl", "s3:RestoreObject"}
SQS_CONSUME_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteMessageBatch",
                       "sqs:ChangeMessageVisibility", "sqs:PurgeQueue", "sqs:*"}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _methods(serving: Template) -> dict[tuple[str, str], dict[str, Any]]:
    """Each method's properties by (HTTP method, full resource path)."""
    resources = serving.find_resources("AWS::ApiGateway::Resource")

    def path(resource_id: dict[str, Any]) -> str:
        if "Fn::GetAtt" in resource_id:  # the API's root resource
            return ""
        props = resources[resource_id["Ref"]]["Properties"]
        return f"{path(props['ParentId'])}/{props['PathPart']}"

    return {
        (m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"])): m["Properties"]
        for m in serving.find_resources("AWS::ApiGateway::Method").values()
    }


def _function_id(template: Template, handler: str) -> str:
    (function_id,) = [
        logical_id
        for logical_id, function in template.find_resources("AWS::Lambda::Function").items()
        if function["Properties"]["Handler"] == handler
    ]
    return function_id


def _function(template: Template, handler: str) -> dict[str, Any]:
    return template.find_resources("AWS::Lambda::Function")[_function_id(template, handler)]["Properties"]


def _data_output_ref(synthesis, output: str) -> str:
    return synthesis.template_json(DATA_STACK)["Outputs"][output]["Value"]["Ref"]


def _table_arn(synthesis, spec) -> str:
    return json.dumps({"Fn::GetAtt": [_data_output_ref(synthesis, f"{pascal_case(spec.key)}TableName"), "Arn"]})


def _data_key_arn(synthesis) -> str:
    (key_id,) = [k for k, r in synthesis.template_json(DATA_STACK)["Resources"].items() if r["Type"] == "AWS::KMS::Key"]
    return json.dumps({"Fn::GetAtt": [key_id, "Arn"]})


def _allowed(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Actions allowed on each resource (as JSON); "*" stands for every resource."""
    assert all(s["Effect"] == "Allow" for s in statements)
    allowed: dict[str, set[str]] = {}
    for s in statements:
        for resource in _listed(s["Resource"]):
            allowed.setdefault(json.dumps(resource) if resource != "*" else "*", set()).update(_listed(s["Action"]))
    return allowed


def _actions_on(statements: list[dict[str, Any]], resource: str) -> set[str]:
    allowed = _allowed(statements)
    return allowed.get(resource, set()) | allowed.get("*", set())


def _role_id(template: Template, handler: str) -> str:
    return _function(template, handler)["Role"]["Fn::GetAtt"][0]


# -- the API ---------------------------------------------------------------------------------------


def test_every_route_exists_with_its_method(serving: Template) -> None:
    assert set(_methods(serving)) == ROUTES


def test_every_route_the_handler_serves_has_its_method(serving: Template) -> None:
    """The API may define a route before the function answers it (a 404 from the resolver), never the
    reverse: a route the function serves but API Gateway lacks is unreachable."""
    from lambdas.serving.handler import app

    served = {
        (method.upper(), path)
        for path, operations in app.get_openapi_schema().paths.items()
        for method in ("get", "put", "post", "delete", "patch")
        if getattr(operations, method) is not None
    }
    assert {("GET", "/users/{user_id}/recommendations"), ("PUT", "/users/{user_id}/preferences")} <= served
    unreachable = served - set(_methods(serving))
    assert not unreachable, f"routes the serving function answers but the API does not define: {unreachable}"


def test_every_method_requires_an_api_key_and_the_user_id(serving: Template) -> None:
    validators = serving.find_resources("AWS::ApiGateway::RequestValidator")
    for route, method in _methods(serving).items():
        assert method["ApiKeyRequired"] is True, route
        assert method["RequestParameters"]["method.request.path.user_id"] is True, route
        validator = validators[method["RequestValidatorId"]["Ref"]]["Properties"]
        assert validator["ValidateRequestParameters"] is True, route


def test_every_method_proxies_to_the_serving_function(serving: Template) -> None:
    # the serving function and the eraser, which no route reaches
    handlers = {f["Properties"]["Handler"] for f in serving.find_resources("AWS::Lambda::Function").values()}
    assert handlers == {SERVING_HANDLER, ERASER_HANDLER}
    function_id = _function_id(serving, SERVING_HANDLER)
    for route, method in _methods(serving).items():
        assert method["Integration"]["Type"] == "AWS_PROXY", route
        assert {"Fn::GetAtt": [function_id, "Arn"]} in method["Integration"]["Uri"]["Fn::Join"][1], route


def test_put_preferences_validates_its_body_against_the_pydantic_model(serving: Template) -> None:
    put = _methods(serving)[("PUT", "/users/{user_id}/preferences")]
    model = serving.find_resources("AWS::ApiGateway::Model")[put["RequestModels"]["application/json"]["Ref"]]
    schema = json.loads(model["Properties"]["Schema"])
    assert schema == draft04_from_pydantic(PreferencesRequest.model_json_schema())
    assert schema["$schema"] == DRAFT_04
    assert (schema["required"], schema["additionalProperties"]) == (["personalization"], False)
    assert schema["properties"]["personalization"]["type"] == "boolean"
    validator = serving.find_resources("AWS::ApiGateway::RequestValidator")[put["RequestValidatorId"]["Ref"]]
    assert validator["Properties"]["ValidateRequestBody"] is True
    others = [m for route, m in _methods(serving).items() if route[0] != "PUT"]
    assert all("RequestModels" not in m for m in others)


def test_validation_errors_say_why(serving: Template) -> None:
    for response_type in ("BAD_REQUEST_BODY", "BAD_REQUEST_PARAMETERS"):
        serving.has_resource_properties(
            "AWS::ApiGateway::GatewayResponse",
            {
                "ResponseType": response_type,
                "StatusCode": "400",
                "ResponseTemplates": {
                    "application/json": Match.string_like_regexp(r"\$context\.error\.validationErrorString")
                },
            },
        )


def test_stage_traces_logs_access_and_throttles(serving: Template) -> None:
    serving.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
            "MethodSettings": [
                Match.object_like(
                    {
                        "LoggingLevel": "ERROR",
                        "ThrottlingRateLimit": Match.any_value(),
                        "ThrottlingBurstLimit": Match.any_value(),
                        "DataTraceEnabled": False,
                    }
                )
            ],
        },
    )
    serving.has_resource_properties("AWS::ApiGateway::RestApi", {"EndpointConfiguration": {"Types": ["REGIONAL"]}})


def test_usage_plan_throttles_and_caps_the_api_key(serving: Template) -> None:
    (api_id,) = serving.find_resources("AWS::ApiGateway::RestApi")
    serving.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "ApiStages": [Match.object_like({"ApiId": {"Ref": api_id}})],
            "Throttle": {"RateLimit": Match.any_value(), "BurstLimit": Match.any_value()},
            "Quota": {"Limit": Match.any_value(), "Period": "DAY"},
        },
    )
    (key_id,) = serving.find_resources("AWS::ApiGateway::ApiKey")
    serving.has_resource_properties("AWS::ApiGateway::UsagePlanKey", {"KeyId": {"Ref": key_id}, "KeyType": "API_KEY"})


def test_outputs_give_the_api_url_and_key_id(serving: Template) -> None:
    outputs = serving.to_json()["Outputs"]
    (key_id,) = serving.find_resources("AWS::ApiGateway::ApiKey")
    (api_id,) = serving.find_resources("AWS::ApiGateway::RestApi")
    assert outputs["ApiKeyId"]["Value"] == {"Ref": key_id}
    url = json.dumps(outputs["ApiUrl"]["Value"])
    assert url.startswith('{"Fn::Join": ["", ["https://", {"Ref": "' + api_id)


def test_serving_sets_no_account_level_api_gateway_logging_role(synthesis) -> None:
    # the role is an opt-in of the ingestion API (tests/infra/test_infra_stages.py): without it, no stack
    # sets it and serving need not wait for ingest
    manifest = json.loads((synthesis.outdir / "manifest.json").read_text("utf-8"))
    assert INGEST_STACK not in manifest["artifacts"][SERVING_STACK].get("dependencies", [])
    resources = synthesis.template_json(SERVING_STACK)["Resources"].values()
    assert not [r for r in resources if r["Type"] == "AWS::ApiGateway::Account"]
    principals = sorted(r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]
                        for r in resources if r["Type"] == "AWS::IAM::Role")
    # the serving function's and the eraser's, and the one AppConfig reads the rollback alarm with
    assert principals == ["appconfig.amazonaws.com", "lambda.amazonaws.com", "lambda.amazonaws.com"]


# -- the serving function --------------------------------------------------------------------------


def test_serving_function_has_its_settings_size_and_tracing(serving: Template, synthesis) -> None:
    function = _function(serving, SERVING_HANDLER)
    variables = function["Environment"]["Variables"]
    required = {ServingSettings.env_name(n) for n, f in ServingSettings.model_fields.items() if f.is_required()}
    assert required <= set(variables)
    for name, spec in (("registry_table", REGISTRY_TABLE), ("online_table", ONLINE_TABLE),
                       ("item_counters_table", ITEM_COUNTERS_TABLE), ("erasure_table", ERASURE_TABLE)):
        table_id = _data_output_ref(synthesis, f"{pascal_case(spec.key)}TableName")
        assert synthesis.producer_value(variables[ServingSettings.env_name(name)]) == {"Ref": table_id}
    queue_url = synthesis.producer_value(variables[ServingSettings.env_name("erasure_queue_url")])
    assert queue_url == {"Ref": _data_output_ref(synthesis, f"{pascal_case(ERASURE_REQUESTS.key)}QueueUrl")}
    assert variables["OPENBLAS_NUM_THREADS"] == "1"  # one vCPU at most: one BLAS thread
    assert (function["MemorySize"], function["Timeout"]) == (1024, 10)
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["Runtime"] == "python3.12"


def test_serving_role_reads_the_model_and_cannot_write_it(serving: Template, synthesis) -> None:
    statements = synthesis.role_statements(SERVING_STACK, _role_id(serving, SERVING_HANDLER))
    models = _data_output_ref(synthesis, f"{pascal_case(MODELS_BUCKET.key)}BucketName")
    published = json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [models, "Arn"]}, f"/{PUBLISHED_PREFIX}*"]]})
    s3 = {r: {a for a in actions if a.startswith("s3:")} for r, actions in _allowed(statements).items()}
    assert {r: a for r, a in s3.items() if a} == {published: {"s3:GetObject"}}
    registry = _table_arn(synthesis, REGISTRY_TABLE)
    assert {a for a in _actions_on(statements, registry) if a.startswith("dynamodb:")} == {"dynamodb:GetItem"}
    assert all("*" not in action for s in statements for action in _listed(s["Action"]))
    assert not any(S3_WRITE_ACTIONS & actions for actions in _allowed(statements).values())


def test_serving_role_reads_updates_and_erases_profiles_but_cannot_scan(serving: Template, synthesis) -> None:
    statements = synthesis.role_statements(SERVING_STACK, _role_id(serving, SERVING_HANDLER))
    online = _actions_on(statements, _table_arn(synthesis, ONLINE_TABLE))
    assert online & ONLINE_ITEM_ACTIONS == {
        "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"
    }
    kms = {r: {a for a in actions if a.startswith("kms:")} for r, actions in _allowed(statements).items()}
    # GenerateDataKey: SQS encrypts the erasure requests it sends (only through SQS, see the data stack test)
    assert {r: a for r, a in kms.items() if a} == {_data_key_arn(synthesis): {"kms:Decrypt", "kms:GenerateDataKey"}}
    dynamodb = {r for r, actions in _allowed(statements).items() if any(a.startswith("dynamodb:") for a in actions)}
    assert dynamodb == {_table_arn(synthesis, spec)
                        for spec in (REGISTRY_TABLE, ONLINE_TABLE, ITEM_COUNTERS_TABLE, ERASURE_TABLE)}
    # item counters: read, nothing else (the cleaner writes them)
    items = _actions_on(statements, _table_arn(synthesis, ITEM_COUNTERS_TABLE))
    assert {a for a in items if a.startswith("dynamodb:")} == {"dynamodb:BatchGetItem"}


# -- the online store ------------------------------------------------------------------------------


def test_cleaner_reads_and_updates_profiles_but_cannot_delete_or_scan(ingest: Template, synthesis) -> None:
    statements = synthesis.role_statements(INGEST_STACK, _role_id(ingest, CLEANER_HANDLER))
    online = _actions_on(statements, _table_arn(synthesis, ONLINE_TABLE))
    assert online & ONLINE_ITEM_ACTIONS == {
        "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem", "dynamodb:PutItem"
    }
    assert "kms:Decrypt" in _actions_on(statements, _data_key_arn(synthesis))


def test_cleaner_is_told_the_online_table(ingest: Template, synthesis) -> None:
    variables = _function(ingest, CLEANER_HANDLER)["Environment"]["Variables"]
    table_id = _data_output_ref(synthesis, f"{pascal_case(ONLINE_TABLE.key)}TableName")
    assert synthesis.producer_value(variables["FEEDBACKLOOP_ONLINE_TABLE"]) == {"Ref": table_id}
    items_id = _data_output_ref(synthesis, f"{pascal_case(ITEM_COUNTERS_TABLE.key)}TableName")
    assert synthesis.producer_value(variables["FEEDBACKLOOP_ITEM_COUNTERS_TABLE"]) == {"Ref": items_id}


def test_cleaner_only_adds_to_item_counters(ingest: Template, synthesis) -> None:
    statements = synthesis.role_statements(INGEST_STACK, _role_id(ingest, CLEANER_HANDLER))
    items = _actions_on(statements, _table_arn(synthesis, ITEM_COUNTERS_TABLE))
    assert {a for a in items if a.startswith("dynamodb:")} == {"dynamodb:UpdateItem"}


def test_online_table_is_keyed_by_user_with_ttl_pitr_the_data_key_and_retained(synthesis) -> None:
    table = synthesis.template_json(DATA_STACK)["Resources"][
        _data_output_ref(synthesis, f"{pascal_case(ONLINE_TABLE.key)}TableName")
    ]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["DeletionPolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": "user_id", "KeyType": "HASH"}]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {
        "KMSMasterKeyId": json.loads(_data_key_arn(synthesis)),
        "SSEEnabled": True,
        "SSEType": "KMS",
    }
    stateless = [synthesis.template_json(stack)["Resources"] for stack in (SERVING_STACK, INGEST_STACK)]
    assert not [r for resources in stateless for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]


# -- the UI configuration (AppConfig) --------------------------------------------------------------


def _only(template: Template, resource_type: str) -> tuple[str, dict[str, Any]]:
    (item,) = template.find_resources(resource_type).items()
    return item


def _config_file(name: str) -> str:
    return resources.files("feedbackloop.config").joinpath(name).read_text("utf-8")


def test_appconfig_resources_carry_the_shared_names(serving: Template) -> None:
    application_id, application = _only(serving, "AWS::AppConfig::Application")
    assert application["Properties"]["Name"] == UI_CONFIG.application
    _, environment = _only(serving, "AWS::AppConfig::Environment")
    assert (environment["Properties"]["ApplicationId"], environment["Properties"]["Name"]) == (
        {"Ref": application_id}, UI_CONFIG.environment
    )
    _, profile = _only(serving, "AWS::AppConfig::ConfigurationProfile")
    assert (profile["Properties"]["ApplicationId"], profile["Properties"]["Name"]) == (
        {"Ref": application_id}, UI_CONFIG.profile
    )
    assert (profile["Properties"]["LocationUri"], profile["Properties"]["Type"]) == ("hosted", "AWS.Freeform")


def test_appconfig_validator_is_the_schema_file(serving: Template) -> None:
    _, profile = _only(serving, "AWS::AppConfig::ConfigurationProfile")
    (validator,) = profile["Properties"]["Validators"]
    assert validator["Type"] == "JSON_SCHEMA"
    assert validator["Content"] == _config_file("ui_config.schema.json")
    assert json.loads(validator["Content"])["$schema"] == DRAFT_04  # the draft AppConfig's validator speaks


def test_the_hosted_version_is_the_first_document_and_the_deployment_points_at_it(serving: Template) -> None:
    application_id, _ = _only(serving, "AWS::AppConfig::Application")
    environment_id, _ = _only(serving, "AWS::AppConfig::Environment")
    profile_id, _ = _only(serving, "AWS::AppConfig::ConfigurationProfile")
    version_id, version = _only(serving, "AWS::AppConfig::HostedConfigurationVersion")
    assert version["Properties"]["ConfigurationProfileId"] == {"Ref": profile_id}
    assert version["Properties"]["Content"] == _config_file("ui_config.json")
    assert version["Properties"]["ContentType"] == "application/json"
    strategy_id, _ = _only(serving, "AWS::AppConfig::DeploymentStrategy")
    _, deployment = _only(serving, "AWS::AppConfig::Deployment")
    assert {k: v for k, v in deployment["Properties"].items() if k != "Description"} == {
        "ApplicationId": {"Ref": application_id},
        "EnvironmentId": {"Ref": environment_id},
        "ConfigurationProfileId": {"Ref": profile_id},
        "ConfigurationVersion": {"Ref": version_id},  # the version number of the hosted version
        "DeploymentStrategyId": {"Ref": strategy_id},
    }


def test_deployment_strategy_rolls_out_gradually_and_bakes(serving: Template) -> None:
    _, strategy = _only(serving, "AWS::AppConfig::DeploymentStrategy")
    properties = strategy["Properties"]
    assert (properties["GrowthType"], properties["GrowthFactor"]) == ("LINEAR", 20)
    steps = 100 / properties["GrowthFactor"]
    assert properties["DeploymentDurationInMinutes"] / steps == 1  # a step a minute
    assert properties["FinalBakeTimeInMinutes"] > 0
    assert properties["ReplicateTo"] == "NONE"


def _extension_lookup(serving: Template, handler: str) -> list[list[Any]]:
    return [layer["Fn::FindInMap"] for layer in _function(serving, handler)["Layers"]
            if isinstance(layer, dict) and "Fn::FindInMap" in layer]


def test_serving_function_gets_the_appconfig_extension_of_its_region(serving: Template) -> None:
    (lookup,) = _extension_lookup(serving, SERVING_HANDLER)
    mapping_id, region, attribute = lookup
    assert region == {"Ref": "AWS::Region"}
    mapping = serving.to_json()["Mappings"][mapping_id]
    for name in ("us-east-1", "eu-west-1"):
        layer = rf"arn:aws:lambda:{name}:\d{{12}}:layer:AWS-AppConfig-Extension:\d+"
        assert re.fullmatch(layer, mapping[name][attribute]), name
    # x86-64 (the function's architecture), not the -Arm64 layers
    assert _function(serving, SERVING_HANDLER)["Architectures"] == ["x86_64"]
    assert all(entry[attribute].rsplit(":", 2)[1] == "AWS-AppConfig-Extension" for entry in mapping.values())
    # each region's publishing account is the one aws-cdk-lib's own (older) table names
    checked = 0
    for name, entry in mapping.items():
        try:
            known = appconfig.Application.get_lambda_layer_version_arn(name)
        except Exception:  # a region that table does not list
            continue
        assert entry[attribute].split(":")[:5] == known.split(":")[:5], name
        checked += 1
    assert checked >= 25
    # the extension comes after our layers, which keep their order (the serving function's: our dependency
    # layer and numpy; the eraser's: our dependency layer and the arrow layer)
    layers = _function(serving, SERVING_HANDLER)["Layers"]
    assert layers[-1] == {"Fn::FindInMap": lookup}
    eraser_layers = _function(serving, ERASER_HANDLER)["Layers"]
    assert layers[0] == eraser_layers[0] and len(layers) == 3 and len(eraser_layers) == 2
    assert not _extension_lookup(serving, ERASER_HANDLER)


def test_serving_function_prefetches_the_profile_the_handler_reads(
    serving: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambdas.serving.handler import _ui_config

    variables = _function(serving, SERVING_HANDLER)["Environment"]["Variables"]
    monkeypatch.setenv(ServingSettings.env_name("registry_table"), "registry")
    monkeypatch.setenv(ServingSettings.env_name("online_table"), "online")
    reader = _ui_config.__wrapped__()  # the handler's reader, uncached, with the deployed agent URL
    agent = variables.get(ServingSettings.env_name("appconfig_agent_url"), "http://localhost:2772")
    assert agent == "http://localhost:2772"  # the extension's default port (AWS_APPCONFIG_EXTENSION_HTTP_PORT unset)
    assert "AWS_APPCONFIG_EXTENSION_HTTP_PORT" not in variables
    assert reader.url == agent + variables["AWS_APPCONFIG_EXTENSION_PREFETCH_LIST"]


def test_serving_role_reads_exactly_this_configuration_profile(serving: Template, synthesis) -> None:
    statements = synthesis.role_statements(SERVING_STACK, _role_id(serving, SERVING_HANDLER))
    (read,) = [s for s in statements if any(a.startswith("appconfig:") for a in _listed(s["Action"]))]
    assert sorted(_listed(read["Action"])) == [
        "appconfig:GetLatestConfiguration", "appconfig:StartConfigurationSession"
    ]
    application_id, _ = _only(serving, "AWS::AppConfig::Application")
    environment_id, _ = _only(serving, "AWS::AppConfig::Environment")
    profile_id, _ = _only(serving, "AWS::AppConfig::ConfigurationProfile")
    parts = read["Resource"]["Fn::Join"][1]
    assert parts[-6:] == [":application/", {"Ref": application_id}, "/environment/", {"Ref": environment_id},
                          "/configuration/", {"Ref": profile_id}]
    assert "*" not in json.dumps(read["Resource"])


# -- erasure ---------------------------------------------------------------------------------------


def _queue_arn(synthesis, output: str = f"{pascal_case(ERASURE_REQUESTS.key)}QueueUrl") -> str:
    return json.dumps({"Fn::GetAtt": [_data_output_ref(synthesis, output), "Arn"]})


def _sqs_actions(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    allowed = {r: {a for a in actions if a.startswith("sqs:")} for r, actions in _allowed(statements).items()}
    return {r: a for r, a in allowed.items() if a}


def test_serving_role_sends_erasure_requests_but_cannot_receive_or_delete_them(serving: Template, synthesis) -> None:
    statements = synthesis.role_statements(SERVING_STACK, _role_id(serving, SERVING_HANDLER))
    assert _sqs_actions(statements) == {_queue_arn(synthesis): {"sqs:SendMessage"}}
    assert not any(SQS_CONSUME_ACTIONS & set(_listed(s["Action"])) for s in statements)
    erasures = _actions_on(statements, _table_arn(synthesis, ERASURE_TABLE))
    assert {a for a in erasures if a.startswith("dynamodb:")} == {"dynamodb:GetItem", "dynamodb:PutItem"}


def test_eraser_runs_the_eraser_handler_with_its_settings_and_size(serving: Template, synthesis) -> None:
    function = _function(serving, ERASER_HANDLER)
    variables = function["Environment"]["Variables"]
    expected = {
        "erasure_table": f"{pascal_case(ERASURE_TABLE.key)}TableName",
        "curated_bucket": f"{pascal_case(CURATED_BUCKET.key)}BucketName",
        "quarantine_bucket": f"{pascal_case(QUARANTINE_BUCKET.key)}BucketName",
        "raw_bucket": f"{pascal_case(RAW_BUCKET.key)}BucketName",
    }
    assert set(expected) == set(EraserSettings.model_fields)
    for name, output in expected.items():
        assert synthesis.producer_value(variables[EraserSettings.env_name(name)]) == {
            "Ref": _data_output_ref(synthesis, output)
        }
    assert (function["MemorySize"], function["Timeout"]) == (2048, 15 * 60)
    assert function["TracingConfig"] == {"Mode": "Active"}


def test_eraser_takes_a_batch_of_users_from_the_queue_and_reports_failures(serving: Template, synthesis) -> None:
    _, mapping = _only(serving, "AWS::Lambda::EventSourceMapping")
    properties = mapping["Properties"]
    assert properties["FunctionName"] == {"Ref": _function_id(serving, ERASER_HANDLER)}
    assert json.dumps(synthesis.producer_value(properties["EventSourceArn"])) == _queue_arn(synthesis)
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # up to 10 requests (FIFO's largest batch), erased in one pass (feedbackloop.lake_erasure.erase_users)
    assert properties["BatchSize"] == 10
    # one pass at a time comes from the FIFO queue's single message group
    queue = synthesis.template_json(DATA_STACK)["Resources"][json.loads(_queue_arn(synthesis))["Fn::GetAtt"][0]]
    assert queue["Properties"]["FifoQueue"] is True


def test_erasure_queue_hides_a_message_six_times_the_erasers_timeout(serving: Template, synthesis) -> None:
    queue = synthesis.template_json(DATA_STACK)["Resources"][json.loads(_queue_arn(synthesis))["Fn::GetAtt"][0]]
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * _function(serving, ERASER_HANDLER)["Timeout"]
    assert queue["Properties"]["VisibilityTimeout"] <= 12 * 3600  # the SQS maximum


def test_eraser_consumes_the_queue_and_cannot_send_to_it(serving: Template, synthesis) -> None:
    statements = synthesis.role_statements(SERVING_STACK, _role_id(serving, ERASER_HANDLER))
    (actions,) = _sqs_actions(statements).values()
    assert _sqs_actions(statements).keys() == {_queue_arn(synthesis)}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= actions
    assert "sqs:SendMessage" not in actions


def test_eraser_cannot_touch_the_registry_the_models_bucket_or_the_online_store(serving: Template, synthesis) -> None:
    statements = synthesis.role_statements(SERVING_STACK, _role_id(serving, ERASER_HANDLER))
    rendered = json.dumps(statements)
    for output in (f"{pascal_case(REGISTRY_TABLE.key)}TableName", f"{pascal_case(MODELS_BUCKET.key)}BucketName",
                   f"{pascal_case(ONLINE_TABLE.key)}TableName"):
        assert f'"{_data_output_ref(synthesis, output)}"' not in rendered, output
    # the only statement on every resource is X-Ray's
    assert _allowed(statements).get("*") == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    assert all("*" not in action for s in statements for action in _listed(s["Action"]))
    # it deletes no current object (the rewrite replaces it), only noncurrent versions of the raw archive's
    assert not any("s3:DeleteObject" in actions for actions in _allowed(statements).values())
    deletes = [r for r, actions in _allowed(statements).items() if "s3:DeleteObjectVersion" in actions]
    assert len(deletes) == 2 and all("/raw/" in r for r in deletes)
    erasures = _actions_on(statements, _table_arn(synthesis, ERASURE_TABLE))
    assert {a for a in erasures if a.startswith("dynamodb:")} == {"dynamodb:GetItem", "dynamodb:PutItem"}


def test_an_unknown_route_says_no_such_route(serving: Template) -> None:
    """API Gateway answers an unknown route with MISSING_AUTHENTICATION_TOKEN, "Missing Authentication Token"."""
    serving.has_resource_properties(
        "AWS::ApiGateway::GatewayResponse",
        {"ResponseType": "MISSING_AUTHENTICATION_TOKEN", "StatusCode": "404",
         "ResponseTemplates": {"application/json": '{"message": "no such route"}'}},
    )
