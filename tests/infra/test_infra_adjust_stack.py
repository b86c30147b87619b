"""FeedbackLoopAdjust (the adjust function, its layers, settings, schedule and every permission it holds),
the decisions table it writes (FeedbackLoopData), and the rollback monitor of the UI config environment it
deploys to (FeedbackLoopServing)."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest
from aws_cdk.assertions import Template

import feedbackloop.adjust.rules as adjust_rules
from cdk.app import ADJUST_STACK, DATA_STACK, MONITORING_STACK, SERVING_STACK, TABLES_STACK, TRAINING_STACK
from cdk.components.adjust import HANDLER, SCHEDULED_TIME, Adjust, validated_rules
from cdk.components.lake import CATALOG_READ_ACTIONS
from cdk.components.table_jobs import ATHENA_QUERY_ACTIONS
from cdk.components.ui_config import DEPLOY_ACTIONS
from cdk.naming import pascal_case
from feedbackloop.lake import CURATED_EVENTS, ENGAGEMENT, INTERACTIONS, TABLES
from feedbackloop.names import METRICS_NAMESPACE, SERVICE
from feedbackloop.resources import (
    CONFIG_ROLLBACK_ALARM,
    CURATED_BUCKET,
    DECISIONS_TABLE,
    GLUE_DATABASE,
    QUERY_RESULTS_BUCKET,
    STATE_TABLE,
)
from feedbackloop.settings import AdjustSettings

pytestmark = pytest.mark.infra

PLACEHOLDER = "resolved-at-deploy"


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _only(template: Template, resource_type: str) -> tuple[str, dict[str, Any]]:
    (item,) = template.find_resources(resource_type).items()
    return item


def _function(adjust: Template) -> dict[str, Any]:
    (function,) = [f["Properties"] for f in adjust.find_resources("AWS::Lambda::Function").values()
                   if f["Properties"]["Handler"] == HANDLER]
    return function


def _function_id(adjust: Template) -> str:
    (function_id,) = [i for i, f in adjust.find_resources("AWS::Lambda::Function").items()
                      if f["Properties"]["Handler"] == HANDLER]
    return function_id


def _ref(synthesis, stack: str, output: str) -> str:
    return synthesis.template_json(stack)["Outputs"][output]["Value"]["Ref"]


def _only_id(synthesis, stack: str, resource_type: str) -> str:
    (logical_id,) = [i for i, r in synthesis.template_json(stack)["Resources"].items() if r["Type"] == resource_type]
    return logical_id


def _arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _join(*parts: Any) -> dict[str, Any]:
    return {"Fn::Join": ["", list(parts)]}


def _arn_of(service: str, resource: str, *rest: Any) -> dict[str, Any]:
    """arn:<partition>:<service>:<region>:<account>:<resource><rest...>, as format_arn renders it."""
    return _join("arn:", {"Ref": "AWS::Partition"}, f":{service}:", {"Ref": "AWS::Region"}, ":",
                 {"Ref": "AWS::AccountId"}, f":{resource}", *rest)


def _allowed(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Actions allowed on each resource (as JSON); "*" stands for every resource."""
    assert all(s["Effect"] == "Allow" for s in statements)
    allowed: dict[str, set[str]] = {}
    for s in statements:
        for resource in _listed(s["Resource"]):
            allowed.setdefault(json.dumps(resource) if resource != "*" else "*", set()).update(_listed(s["Action"]))
    return allowed


# -- the function ----------------------------------------------------------------------------------------------


def test_function_settings_parse_as_the_handler_reads_them_with_engine_aws(adjust: Template, synthesis,
                                                                          data: Template) -> None:
    variables = _function(adjust)["Environment"]["Variables"]
    environ = {name: value if isinstance(value, str) else PLACEHOLDER for name, value in variables.items()}
    settings = AdjustSettings.from_env(environ)
    assert settings.engine == "aws"
    assert (settings.events_table, settings.interactions_table, settings.engagement_table) == (
        CURATED_EVENTS.name, INTERACTIONS.name, ENGAGEMENT.name
    )
    # the lake's database, by reference (its name carries the stage): GLUE_DATABASE without one
    database = synthesis.producer_value(variables[AdjustSettings.env_name("glue_database")])
    assert data.to_json()["Resources"][database["Ref"]]["Properties"]["DatabaseInput"]["Name"] == GLUE_DATABASE
    # every setting the function needs is set, none by accident
    required = {AdjustSettings.env_name(n) for n, f in AdjustSettings.model_fields.items() if f.is_required()}
    assert required <= set(variables)


def test_function_settings_name_the_deployed_resources(adjust: Template, synthesis) -> None:
    variables = _function(adjust)["Environment"]["Variables"]

    def setting(name: str) -> Any:
        return synthesis.producer_value(variables[AdjustSettings.env_name(name)])

    assert setting("state_table") == {"Ref": _ref(synthesis, DATA_STACK, f"{pascal_case(STATE_TABLE.key)}TableName")}
    assert setting("decisions_table") == {
        "Ref": _ref(synthesis, DATA_STACK, f"{pascal_case(DECISIONS_TABLE.key)}TableName")
    }
    assert setting("athena_workgroup") == {"Ref": _ref(synthesis, TABLES_STACK, "WorkgroupName")}
    for name, resource_type in (
        ("appconfig_application_id", "AWS::AppConfig::Application"),
        ("appconfig_environment_id", "AWS::AppConfig::Environment"),
        ("appconfig_profile_id", "AWS::AppConfig::ConfigurationProfile"),
        ("appconfig_strategy_id", "AWS::AppConfig::DeploymentStrategy"),
    ):
        assert setting(name) == {"Ref": _only_id(synthesis, SERVING_STACK, resource_type)}, name
    assert setting("state_machine_arn") == {"Ref": _ref(synthesis, TRAINING_STACK, "StateMachineArn")}
    assert setting("alerts_topic_arn") == {"Ref": _ref(synthesis, MONITORING_STACK, "AlertsTopicArn")}


def test_function_layers_are_ours_and_drift_without_sdk_for_pandas(adjust: Template) -> None:
    layers = _function(adjust)["Layers"]
    parameters = adjust.to_json().get("Parameters", {})
    layer_versions = adjust.find_resources("AWS::Lambda::LayerVersion")
    assert len(layers) == 2
    dependencies, drift = (layer["Ref"] for layer in layers)
    assert "`lambda` dependency group" in layer_versions[dependencies]["Properties"]["Description"]
    assert "`lambda-drift` dependency group" in layer_versions[drift]["Properties"]["Description"]
    # our packages last (they override what an AWS layer ships), and no SDK for pandas anywhere in the stack
    assert set(layer_versions) == {dependencies, drift}
    assert not [p for p in parameters.values() if "aws-sdk-pandas" in str(p.get("Default", ""))]


def test_function_runs_one_at_a_time_within_the_period(adjust: Template) -> None:
    function = _function(adjust)
    # no reserved concurrency unless a deployment asks (a new account's quota of 10 cannot spare it): one
    # run at a time comes from the lease (tests/functional/test_adjust_lease.py)
    assert "ReservedConcurrentExecutions" not in function
    assert (function["MemorySize"], function["Timeout"]) == (1024, 300)
    assert (function["Runtime"], function["Architectures"]) == ("python3.12", ["x86_64"])
    assert function["TracingConfig"] == {"Mode": "Active"}
    _, config = _only(adjust, "AWS::Lambda::EventInvokeConfig")
    assert config["Properties"]["FunctionName"] == {"Ref": _function_id(adjust)}
    assert config["Properties"]["MaximumEventAgeInSeconds"] <= 3600


# -- the schedule -----------------------------------------------------------------------------------------------


def test_schedule_invokes_the_function_every_five_minutes_with_its_scheduled_time(adjust: Template) -> None:
    _, schedule = _only(adjust, "AWS::Scheduler::Schedule")
    properties = schedule["Properties"]
    assert properties["ScheduleExpression"] == "rate(5 minutes)"
    assert properties["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert properties["State"] == "ENABLED"
    target = properties["Target"]
    assert target["Arn"] == _arn(_function_id(adjust))
    assert json.loads(target["Input"]) == {SCHEDULED_TIME: "<aws.scheduler.scheduled-time>"}
    retry = target["RetryPolicy"]
    assert retry["MaximumRetryAttempts"] >= 1
    assert 60 <= retry["MaximumEventAgeInSeconds"] <= 300  # never past the next run


def test_schedule_role_may_invoke_exactly_this_function(adjust: Template) -> None:
    _, schedule = _only(adjust, "AWS::Scheduler::Schedule")
    role_id = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    role = adjust.find_resources("AWS::IAM::Role")[role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert {"aws:SourceAccount", "aws:SourceArn"} <= set(trust["Condition"]["StringEquals"])
    assert "ManagedPolicyArns" not in role
    statements = [s for policy in adjust.find_resources("AWS::IAM::Policy").values()
                  if {"Ref": role_id} in policy["Properties"]["Roles"]
                  for s in policy["Properties"]["PolicyDocument"]["Statement"]]
    function = _arn(_function_id(adjust))
    # the unqualified function and its $LATEST, no other version or alias (no "<function ARN>:*")
    assert statements == [{"Action": "lambda:InvokeFunction", "Effect": "Allow",
                           "Resource": [function, _join(function, ":$LATEST")]}]


# -- what the function may do -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def allowed(adjust: Template, synthesis) -> dict[str, set[str]]:
    role_id = _function(adjust)["Role"]["Fn::GetAtt"][0]
    return _allowed(synthesis.role_statements(ADJUST_STACK, role_id))


@pytest.fixture(scope="module")
def expected(adjust: Template, synthesis) -> dict[str, set[str]]:
    """Every resource the function may touch, with exactly the actions on it."""
    data_key = _arn(_only_id(synthesis, DATA_STACK, "AWS::KMS::Key"))
    monitoring_key = _arn(_only_id(synthesis, MONITORING_STACK, "AWS::KMS::Key"))
    curated = _arn(_ref(synthesis, DATA_STACK, f"{pascal_case(CURATED_BUCKET.key)}BucketName"))
    results = _arn(_ref(synthesis, DATA_STACK, f"{pascal_case(QUERY_RESULTS_BUCKET.key)}BucketName"))
    database = {"Ref": _ref(synthesis, DATA_STACK, "GlueDatabase")}
    queryable = [t for t in TABLES if t.bucket_key == CURATED_BUCKET.key]
    catalog = [_arn_of("glue", "catalog"), _arn_of("glue", "database/", database),
               *(_arn_of("glue", "table/", database, f"/{t.name}") for t in queryable)]
    workgroup = _arn_of("athena", "workgroup/", {"Ref": _ref(synthesis, TABLES_STACK, "WorkgroupName")})
    app, env, profile, strategy = (
        {"Ref": _only_id(synthesis, SERVING_STACK, t)}
        for t in ("AWS::AppConfig::Application", "AWS::AppConfig::Environment",
                  "AWS::AppConfig::ConfigurationProfile", "AWS::AppConfig::DeploymentStrategy")
    )
    appconfig = {
        "application": _arn_of("appconfig", "application/", app),
        "environment": _arn_of("appconfig", "application/", app, "/environment/", env),
        "profile": _arn_of("appconfig", "application/", app, "/configurationprofile/", profile),
        "strategy": _arn_of("appconfig", "deploymentstrategy/", strategy),
        "deployments": _arn_of("appconfig", "application/", app, "/environment/", env, "/deployment/*"),
        "versions": _arn_of("appconfig", "application/", app, "/configurationprofile/", profile,
                            "/hostedconfigurationversion/*"),
    }
    expected: dict[str, set[str]] = {}

    def allow(resource: Any, *actions: str) -> None:
        expected.setdefault(json.dumps(resource) if resource != "*" else "*", set()).update(actions)

    allow("*", "cloudwatch:GetMetricStatistics", "xray:PutTraceSegments", "xray:PutTelemetryRecords")
    allow(_arn(_only(adjust, "AWS::Logs::LogGroup")[0]), "logs:CreateLogStream", "logs:PutLogEvents")
    # the state item and the decisions (the data stack's adjuster policy)
    allow(_arn(_ref(synthesis, DATA_STACK, f"{pascal_case(STATE_TABLE.key)}TableName")),
          "dynamodb:GetItem", "dynamodb:PutItem")
    allow(_arn(_ref(synthesis, DATA_STACK, f"{pascal_case(DECISIONS_TABLE.key)}TableName")), "dynamodb:BatchWriteItem")
    allow(data_key, "kms:Decrypt", "kms:GenerateDataKey")
    # the lake through Athena (the Lake's reader policy and the table jobs' workgroup)
    for table in queryable:
        allow(_join(curated, f"/{table.prefix}*"), "s3:GetObject")
    allow(curated, "s3:ListBucket", "s3:GetBucketLocation")
    allow(_join(results, "/*"), "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
          "s3:ListMultipartUploadParts")
    allow(results, "s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads")
    for resource in catalog:
        allow(resource, *CATALOG_READ_ACTIONS)
    allow(workgroup, *ATHENA_QUERY_ACTIONS)
    allow(_arn_of("glue", "database/default"), "glue:GetDatabase")
    # the actions: a UI config deployment, a retraining run, an alert
    for action, kinds in DEPLOY_ACTIONS.items():
        for kind in kinds:
            allow(appconfig[kind], action)
    allow({"Ref": _ref(synthesis, TRAINING_STACK, "StateMachineArn")}, "states:StartExecution", "states:ListExecutions")
    allow({"Ref": _ref(synthesis, MONITORING_STACK, "AlertsTopicArn")}, "sns:Publish")
    allow(monitoring_key, "kms:Decrypt", "kms:GenerateDataKey*")
    return expected


def test_function_holds_exactly_the_expected_grants(allowed, expected) -> None:
    assert allowed.keys() == expected.keys(), {
        "unexpected": sorted(allowed.keys() - expected.keys()), "missing": sorted(expected.keys() - allowed.keys())
    }
    for resource, actions in expected.items():
        assert allowed[resource] == actions, resource


def test_function_writes_decisions_and_its_state_only(allowed, synthesis) -> None:
    tables = {r: {a for a in actions if a.startswith("dynamodb:")} for r, actions in allowed.items()}
    tables = {r: a for r, a in tables.items() if a}
    decisions = json.dumps(_arn(_ref(synthesis, DATA_STACK, f"{pascal_case(DECISIONS_TABLE.key)}TableName")))
    state = json.dumps(_arn(_ref(synthesis, DATA_STACK, f"{pascal_case(STATE_TABLE.key)}TableName")))
    assert tables == {decisions: {"dynamodb:BatchWriteItem"}, state: {"dynamodb:GetItem", "dynamodb:PutItem"}}


def test_no_wildcard_beyond_the_acknowledged_ones(allowed) -> None:
    # '*' for what has no resource-level permissions only: the rules' CloudWatch reads and X-Ray
    assert allowed["*"] == {"cloudwatch:GetMetricStatistics", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    wildcard_actions = {a for actions in allowed.values() for a in actions if "*" in a}
    assert wildcard_actions == {"kms:GenerateDataKey*"}  # SNS's grant_publish on the alerts topic's key
    wildcard_resources = {r for r in allowed if r != "*" and "*" in r}
    # object prefixes of the lake tables and the results bucket, numbered AppConfig deployments and versions
    assert all(re.search(r'"(/[a-z_/]+/\*|/\*|/deployment/\*|/hostedconfigurationversion/\*)"\]\]\}$', r)
               for r in wildcard_resources), wildcard_resources
    # nothing that changes a lake table or the catalog
    assert not {a for actions in allowed.values() for a in actions
                if a.startswith("glue:") and not a.startswith("glue:Get")}


def test_the_deployer_policy_lives_in_the_serving_stack_beside_the_ui_config(adjust: Template) -> None:
    role_id = _function(adjust)["Role"]["Fn::GetAtt"][0]
    producers = {arn["Fn::GetStackOutput"]["StackName"]
                 for arn in adjust.find_resources("AWS::IAM::Role")[role_id]["Properties"]["ManagedPolicyArns"]}
    assert producers == {DATA_STACK, SERVING_STACK}


# -- the decisions table (FeedbackLoopData) --------------------------------------------------------------------


def test_decisions_table_has_its_sort_key_ttl_pitr_the_data_key_and_is_retained(synthesis) -> None:
    table_id = _ref(synthesis, DATA_STACK, f"{pascal_case(DECISIONS_TABLE.key)}TableName")
    table = synthesis.template_json(DATA_STACK)["Resources"][table_id]
    assert table["DeletionPolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": "subject", "KeyType": "HASH"},
                                       {"AttributeName": "at", "KeyType": "RANGE"}]
    assert (DECISIONS_TABLE.partition_key, DECISIONS_TABLE.sort_key) == ("subject", "at")
    assert properties["TimeToLiveSpecification"] == {"AttributeName": DECISIONS_TABLE.ttl_attribute, "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["KMSMasterKeyId"] == _arn(_only_id(synthesis, DATA_STACK, "AWS::KMS::Key"))
    stateless = [synthesis.template_json(stack)["Resources"] for stack in (ADJUST_STACK, SERVING_STACK)]
    assert not [r for resources_ in stateless for r in resources_.values() if r["Type"] == "AWS::DynamoDB::Table"]


# -- the UI config environment's rollback monitor (FeedbackLoopServing) ------------------------------------------


def test_ui_config_environment_is_monitored_by_the_rollback_alarm_through_a_role_appconfig_assumes(
    serving: Template,
) -> None:
    _, environment = _only(serving, "AWS::AppConfig::Environment")
    (monitor,) = environment["Properties"]["Monitors"]
    alarm_id = monitor["AlarmArn"]["Fn::GetAtt"][0]
    role_id = monitor["AlarmRoleArn"]["Fn::GetAtt"][0]
    assert serving.find_resources("AWS::CloudWatch::Alarm")[alarm_id]
    role = serving.find_resources("AWS::IAM::Role")[role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert (trust["Principal"], trust["Action"]) == ({"Service": "appconfig.amazonaws.com"}, "sts:AssumeRole")
    # inline, so the permission exists as soon as the role does (before the environment's first deployment)
    (policy,) = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {"Action": "cloudwatch:DescribeAlarms", "Effect": "Allow", "Resource": _arn(alarm_id)}
    ]
    assert "ManagedPolicyArns" not in role
    assert not [p for p in serving.find_resources("AWS::IAM::Policy").values()
                if {"Ref": role_id} in p["Properties"]["Roles"]]


def test_rollback_alarm_follows_its_spec_on_the_metric_powertools_emits(serving: Template) -> None:
    _, alarm = _only(serving, "AWS::CloudWatch::Alarm")
    properties = alarm["Properties"]
    spec = CONFIG_ROLLBACK_ALARM
    (query,) = properties["Metrics"]
    stat = query["MetricStat"]
    assert stat["Metric"] == {"Namespace": METRICS_NAMESPACE, "MetricName": spec.metric,
                              "Dimensions": [{"Name": "service", "Value": SERVICE}]}
    assert (stat["Stat"], stat["Period"]) == (spec.statistic, spec.period_seconds)
    assert (properties["Threshold"], properties["ComparisonOperator"], properties["EvaluationPeriods"]) == (
        spec.threshold, spec.comparison, spec.evaluation_periods
    )
    assert properties["TreatMissingData"] == "notBreaching"


# -- the rule file, validated at synth ----------------------------------------------------------------------------


def test_the_construct_validated_the_packaged_rules(synthesis) -> None:
    (construct,) = [c for c in synthesis.app.node.find_all() if isinstance(c, Adjust)]
    assert construct.rules == adjust_rules.packaged_rules()


def test_an_invalid_rule_file_stops_synth_naming_the_rule_and_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    document = json.loads(resources.files("feedbackloop.config").joinpath(adjust_rules.RULES_FILE).read_text())
    name = document["rules"][1]["name"]
    document["rules"][1]["window_minutes"] = -5
    monkeypatch.setattr(adjust_rules, "packaged_rules", lambda: adjust_rules.parse_rules(document))
    with pytest.raises(adjust_rules.InvalidRulesError, match=rf"rule '{name}' \(rules\[1\]\), field window_minutes"):
        validated_rules()
