"""FeedbackLoopTraining: a state machine whose top-level states are feedbackloop.retraining.STEPS (with the
read of the published model before Train, and the alert and KeptCurrent on the reject path), using only
.sync, Lambda, SNS and DynamoDB GetItem integrations; SageMaker's scikit-learn container in script mode
with a deterministic source bundle, given the published model when there is one; a nightly schedule; and
roles that can do their step and no other."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from cdk.app import DATA_STACK, TABLES_STACK, TRAINING_STACK
from cdk.components.retraining import (
    ARTIFACT_ATTRIBUTE,
    CURRENT_CHOICE_STATE,
    ENTRY_POINT,
    READ_CURRENT_STATE,
    TRAIN_WITH_CURRENT_STATE,
    build_source_bundle,
)
from cdk.components.table_jobs import JOB_TIMEOUT
from cdk.naming import pascal_case
from cdk.project import ProjectLayout
from feedbackloop.adapters.memory import MemoryArtifacts, MemoryModelRegistry
from feedbackloop.lake import FEEDBACK_DAILY, TRAINING_CHANNELS, USER_FEATURES
from feedbackloop.models.contract import GATE_METRIC, TUNING_MINUTES
from feedbackloop.registry import CURRENT_KEY
from feedbackloop.resources import (
    CANDIDATES_PREFIX,
    CURATED_BUCKET,
    MODELS_BUCKET,
    PUBLISHED_PREFIX,
    REGISTRY_TABLE,
)
from feedbackloop.retraining import (
    CURRENT_MODEL_CHANNEL,
    EVALUATE,
    GATE,
    KEPT_CURRENT,
    MODEL_ARCHIVE,
    PUBLISH,
    STEPS,
    TRAIN,
    publish,
)
from feedbackloop.settings import RetrainSettings
from glue_jobs.build_tables import JOB_NAMES

pytestmark = pytest.mark.infra

S3_WRITE_ACTIONS = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:PutObject*", "s3:*"}
REGISTRY_WRITE_ACTIONS = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:*",
}
# SageMaker's scikit-learn 1.9-0 training image, as AWS documents it for these two regions.
EXPECTED_IMAGES = {
    "us-east-1": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.9-0-cpu-py3",
    "eu-west-1": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.9-0-cpu-py3",
}


# -- reading the template ---------------------------------------------------------------------------


class Definition:
    """The state machine's definition, parsed: each CloudFormation reference inside the DefinitionString
    becomes a placeholder `${ref:N}` and `refs[N]` is the reference."""

    PLACEHOLDER = re.compile(r"\$\{ref:(\d+)\}")

    def __init__(self, training: Template) -> None:
        (machine,) = training.find_resources("AWS::StepFunctions::StateMachine").values()
        self.properties = machine["Properties"]
        self.refs: list[Any] = []
        text = ""
        for part in self.properties["DefinitionString"]["Fn::Join"][1]:
            if isinstance(part, str):
                text += part
            else:
                text += f"${{ref:{len(self.refs)}}}"
                self.refs.append(part)
        self.body: dict[str, Any] = json.loads(text)
        self.states: dict[str, Any] = self.body["States"]

    def references(self, value: str) -> list[Any]:
        return [self.refs[int(index)] for index in self.PLACEHOLDER.findall(value)]

    def reference(self, value: str) -> Any:
        (reference,) = self.references(value)
        return reference

    def resolved(self, node: Any) -> Any:
        """`node` with every placeholder replaced by its reference (as JSON), so that two states that use
        the same references compare equal."""
        if isinstance(node, str):
            return self.PLACEHOLDER.sub(lambda m: json.dumps(self.refs[int(m.group(1))]), node)
        if isinstance(node, dict):
            return {k: self.resolved(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.resolved(v) for v in node]
        return node

    def all_states(self, states: dict[str, Any] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, state in (self.states if states is None else states).items():
            yield name, state
            for branch in state.get("Branches", []):
                yield from self.all_states(branch["States"])


@pytest.fixture(scope="module")
def definition(training: Template) -> Definition:
    return Definition(training)


def _only(template: Template, resource_type: str) -> tuple[str, dict[str, Any]]:
    (item,) = template.find_resources(resource_type).items()
    return item


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _data(synthesis) -> dict[str, Any]:
    return synthesis.template_json(DATA_STACK)


def _data_output_ref(synthesis, output: str) -> str:
    return _data(synthesis)["Outputs"][output]["Value"]["Ref"]


def _data_key_arn(synthesis) -> dict[str, Any]:
    (key_id,) = [k for k, r in _data(synthesis)["Resources"].items() if r["Type"] == "AWS::KMS::Key"]
    return {"Fn::GetAtt": [key_id, "Arn"]}


def _function_id(training: Template, handler: str) -> str:
    (function_id,) = [
        logical_id
        for logical_id, function in training.find_resources("AWS::Lambda::Function").items()
        if function["Properties"]["Handler"] == handler
    ]
    return function_id


def _role_of_function(training: Template, handler: str) -> str:
    function = training.find_resources("AWS::Lambda::Function")[_function_id(training, handler)]
    return function["Properties"]["Role"]["Fn::GetAtt"][0]


def _statements(training: Template, synthesis, role_id: str) -> list[dict[str, Any]]:
    """Every statement of a role of the training stack: its own policies and the managed policies it
    attaches (which live in the data stack, beside the data they open), with cross-stack references
    replaced by what they stand for in the producing stack."""
    role = training.find_resources("AWS::IAM::Role")[role_id]
    statements = [
        s
        for policy in training.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    for arn in role["Properties"].get("ManagedPolicyArns", []):
        policy_id = synthesis.producer_value(arn)["Ref"]
        statements += _data(synthesis)["Resources"][policy_id]["Properties"]["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    return [_resolved(synthesis, s) for s in statements]


def _resolved(synthesis, node: Any) -> Any:
    if isinstance(node, dict) and "Fn::GetStackOutput" in node:
        return synthesis.producer_value(node)
    if isinstance(node, dict):
        return {k: _resolved(synthesis, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolved(synthesis, v) for v in node]
    return node


def _granted(statements: list[dict[str, Any]], actions: set[str]) -> list[str]:
    """The resources (as JSON) on which any of `actions` is allowed."""
    return [
        json.dumps(resource)
        for s in statements
        if actions & set(_listed(s["Action"]))
        for resource in _listed(s["Resource"])
    ]


def _objects(bucket_id: str, prefix: str) -> str:
    return json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{prefix}*"]]})


def _trainer_role_id(definition: Definition) -> str:
    return definition.reference(definition.states[TRAIN]["Parameters"]["RoleArn"])["Fn::GetAtt"][0]


# -- the workflow -----------------------------------------------------------------------------------


def test_top_level_states_are_the_steps_in_order_then_the_reject_path(definition: Definition) -> None:
    states = definition.states
    gate = states[GATE]
    assert gate["Type"] == "Choice"
    (choice,) = gate["Choices"]
    assert choice == {"Variable": "$.decision.publish", "BooleanEquals": True, "Next": PUBLISH}
    # the main path from StartAt: through the published model's choice to Train (its other branch, Train
    # with the current model, joins the path at the same state: the next test) and through the gate to
    # Publish, the end
    path, name = [], definition.body["StartAt"]
    while name is not None:
        path.append(name)
        state = states[name]
        assert len(path) <= len(states), path  # no loop
        name = {CURRENT_CHOICE_STATE: state.get("Default"), GATE: choice["Next"]}.get(name, state.get("Next"))
    assert [name for name in path if name in STEPS] == list(STEPS)
    assert [name for name in path if name not in STEPS] == [READ_CURRENT_STATE, CURRENT_CHOICE_STATE]
    assert path.index(READ_CURRENT_STATE) == path.index(TRAIN) - 2  # read, choose, then train
    assert states[PUBLISH].get("End") is True
    alert = states[gate["Default"]]
    assert alert["Resource"].endswith(":states:::sns:publish")
    assert "$.decision.reason" in alert["Parameters"]["Message.$"]
    assert alert["Next"] == KEPT_CURRENT
    assert states[KEPT_CURRENT]["Type"] == "Succeed"  # keeping the current model is not a failure
    assert set(states) == {
        *STEPS, READ_CURRENT_STATE, CURRENT_CHOICE_STATE, TRAIN_WITH_CURRENT_STATE, gate["Default"], KEPT_CURRENT
    }


def test_train_gets_the_published_model_when_the_registry_points_at_one(
    definition: Definition, synthesis
) -> None:
    states = definition.states
    read = states[READ_CURRENT_STATE]
    assert read["Resource"].endswith(":states:::dynamodb:getItem")  # request-response: the item, now
    parameters = read["Parameters"]
    table = synthesis.producer_value(definition.reference(parameters["TableName"]))
    assert table == {"Ref": _data_output_ref(synthesis, f"{pascal_case(REGISTRY_TABLE.key)}TableName")}
    assert parameters["Key"] == {REGISTRY_TABLE.partition_key: {"S": CURRENT_KEY}} == {"key": {"S": "current"}}
    assert parameters["ConsistentRead"] is True
    assert parameters["ProjectionExpression"] == ARTIFACT_ATTRIBUTE  # the archive's URL, nothing else
    assert read["Next"] == CURRENT_CHOICE_STATE
    # no Item before the first publication: the choice asks for the artifact itself
    artifact = f"{read['ResultPath']}.Item.{ARTIFACT_ATTRIBUTE}.S"
    choice = states[CURRENT_CHOICE_STATE]
    assert choice["Type"] == "Choice"
    assert choice["Choices"] == [{"Variable": artifact, "IsPresent": True, "Next": TRAIN_WITH_CURRENT_STATE}]
    assert choice["Default"] == TRAIN
    assert states[TRAIN]["Next"] == states[TRAIN_WITH_CURRENT_STATE]["Next"] == EVALUATE


def test_train_with_the_current_model_is_train_with_the_published_archive_as_a_third_channel(
    definition: Definition,
) -> None:
    states = definition.states
    read = states[READ_CURRENT_STATE]
    train, with_current = states[TRAIN], states[TRAIN_WITH_CURRENT_STATE]
    channels = with_current["Parameters"]["InputDataConfig"]
    assert [c["ChannelName"] for c in channels] == [*TRAINING_CHANNELS, CURRENT_MODEL_CHANNEL]
    assert [c["ChannelName"] for c in channels] == ["feedback", "users", "current"]
    (current,) = [c for c in channels if c["ChannelName"] == CURRENT_MODEL_CHANNEL]
    # the pointer's artifact (s3://<models>/published/<version>/model.tar.gz) as a prefix: that one object
    assert current["DataSource"] == {
        "S3DataSource": {"S3Uri.$": f"{read['ResultPath']}.Item.{ARTIFACT_ATTRIBUTE}.S", "S3DataType": "S3Prefix"}
    }
    # the same job otherwise: the table channels, image, role, output, resources, result and next state
    assert definition.resolved(channels[: len(TRAINING_CHANNELS)]) == definition.resolved(
        train["Parameters"]["InputDataConfig"]
    )
    def without_channels(state: dict[str, Any]) -> dict[str, Any]:
        return definition.resolved(
            {k: v for k, v in state.items() if k != "Comment"}
            | {"Parameters": {k: v for k, v in state["Parameters"].items() if k != "InputDataConfig"}}
        )
    assert without_channels(with_current) == without_channels(train)


def test_the_artifact_read_before_train_is_what_publish_writes() -> None:
    """ReadCurrentModel projects the pointer's `artifact`: the URL of the archive Publish copied under the
    published prefix (which the trainer may read, see below)."""
    artifacts, registry = MemoryArtifacts(), MemoryModelRegistry()
    candidate = f"s3://models/{CANDIDATES_PREFIX}job/output/{MODEL_ARCHIVE}"
    artifacts.objects[candidate] = b"archive"
    evaluation = {"candidate": {"url": candidate, "version": "v1", "gate_value": 0.3, "metrics": {}}, "current": None}
    publish(evaluation, artifacts, registry, f"s3://models/{PUBLISHED_PREFIX}")
    url = registry.current()[ARTIFACT_ATTRIBUTE]
    assert url == f"s3://models/{PUBLISHED_PREFIX}v1/{MODEL_ARCHIVE}"
    assert artifacts.objects[url] == b"archive"


def test_build_tables_runs_every_table_job_in_dependency_order_and_waits_for_each(
    definition: Definition, synthesis
) -> None:
    build = definition.states[STEPS[0]]
    assert build["Type"] == "Parallel"
    assert build["ResultPath"] is None  # the tables are the result, the input passes on
    (branch,) = build["Branches"]
    jobs_by_id = {
        logical_id: job["Properties"]["DefaultArguments"]["--job"]
        for logical_id, job in synthesis.template_json(TABLES_STACK)["Resources"].items()
        if job["Type"] == "AWS::Glue::Job"
    }
    ran, name = [], branch["StartAt"]
    while True:
        state = branch["States"][name]
        assert state["Resource"].endswith(":states:::glue:startJobRun.sync")
        job = synthesis.producer_value(definition.reference(state["Parameters"]["JobName"]))
        ran.append(jobs_by_id[job["Ref"]])
        (retry,) = state["Retry"]
        assert retry["ErrorEquals"] == ["Glue.ConcurrentRunsExceededException"]
        assert retry["BackoffRate"] > 1
        waits = [min(retry["IntervalSeconds"] * retry["BackoffRate"] ** n, retry.get("MaxDelaySeconds", 1e9))
                 for n in range(retry["MaxAttempts"])]
        assert sum(waits) > JOB_TIMEOUT.to_seconds()  # outlasts a run of the hourly workflow in progress
        if state.get("End"):
            break
        name = state["Next"]
    assert ran == list(JOB_NAMES)
    assert len(branch["States"]) == len(JOB_NAMES)


def test_only_sync_lambda_sns_and_dynamodb_read_integrations_and_no_polling(
    definition: Definition, training: Template
) -> None:
    functions = set(training.find_resources("AWS::Lambda::Function"))
    for name, state in definition.all_states():
        assert state["Type"] in {"Parallel", "Task", "Choice", "Succeed"}, f"{name}: {state['Type']}"
        if state["Type"] != "Task":
            continue
        resource = state["Resource"]
        if resource.endswith((".sync", ":states:::sns:publish", ":states:::dynamodb:getItem")):
            continue
        # a Lambda task: the function's ARN itself (the response is the state's output)
        assert definition.reference(resource)["Fn::GetAtt"][0] in functions, name
    resources = [s["Resource"] for _, s in definition.all_states() if s["Type"] == "Task"]
    assert sum(r.endswith(":states:::glue:startJobRun.sync") for r in resources) == len(JOB_NAMES)
    assert sum(r.endswith(":states:::sagemaker:createTrainingJob.sync") for r in resources) == 2  # ± current
    assert sum(r.endswith(":states:::dynamodb:getItem") for r in resources) == 1


def test_train_runs_the_training_script_in_script_mode(
    definition: Definition, layout: ProjectLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = definition.states[TRAIN]
    assert train["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
    parameters = train["Parameters"]
    assert parameters["TrainingJobName.$"] == "$$.Execution.Name"
    hyperparameters = parameters["HyperParameters"]
    assert hyperparameters["sagemaker_program"] == ENTRY_POINT == "train.py"
    assert (layout.sagemaker_dir / ENTRY_POINT).is_file()
    assert hyperparameters["version.$"] == "$$.Execution.Name"
    assert hyperparameters["tuning_minutes"] == str(TUNING_MINUTES)  # the tuning's budget inside the job
    assert definition.reference(hyperparameters["sagemaker_region"]) == {"Ref": "AWS::Region"}
    submit = definition.reference(hyperparameters["sagemaker_submit_directory"])
    assert submit["Fn::Sub"].startswith("s3://cdk-")
    assert parameters["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert parameters["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert parameters["ResourceConfig"]["InstanceCount"] == 1
    assert 0 < parameters["StoppingCondition"]["MaxRuntimeInSeconds"] <= 24 * 3600
    # the script accepts what the container passes it (hyperparameters other than sagemaker_*)
    spec = importlib.util.spec_from_file_location("training_entry_point", layout.sagemaker_dir / ENTRY_POINT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    arguments = script.parse_args(["--version", "an-execution-name", "--feedback", "/opt/ml/input/data/feedback"])
    assert arguments.version == "an-execution-name"
    # and reads every channel either Train task gives it from SM_CHANNEL_<NAME>
    channels = [c["ChannelName"] for c in definition.states[TRAIN_WITH_CURRENT_STATE]["Parameters"]["InputDataConfig"]]
    for channel in channels:
        monkeypatch.setenv(f"SM_CHANNEL_{channel.upper()}", f"/opt/ml/input/data/{channel}")
    arguments = script.parse_args([])
    assert {channel: getattr(arguments, channel) for channel in channels} == {
        channel: f"/opt/ml/input/data/{channel}" for channel in channels
    }


def test_train_reads_the_two_tables_and_writes_candidates_encrypted_with_the_data_key(
    definition: Definition, synthesis
) -> None:
    parameters = definition.states[TRAIN]["Parameters"]
    curated = _data_output_ref(synthesis, f"{pascal_case(CURATED_BUCKET.key)}BucketName")
    channels = {}
    for channel in parameters["InputDataConfig"]:
        source = channel["DataSource"]["S3DataSource"]
        assert source["S3DataType"] == "S3Prefix"
        bucket = synthesis.producer_value(definition.reference(source["S3Uri"]))
        channels[channel["ChannelName"]] = (bucket, definition.PLACEHOLDER.sub("", source["S3Uri"]))
    assert channels == {
        "feedback": ({"Ref": curated}, f"s3:///{FEEDBACK_DAILY.prefix}"),
        "users": ({"Ref": curated}, f"s3:///{USER_FEATURES.prefix}"),
    }
    output = parameters["OutputDataConfig"]
    models = _data_output_ref(synthesis, f"{pascal_case(MODELS_BUCKET.key)}BucketName")
    assert synthesis.producer_value(definition.reference(output["S3OutputPath"])) == {"Ref": models}
    assert definition.PLACEHOLDER.sub("", output["S3OutputPath"]) == f"s3:///{CANDIDATES_PREFIX}"
    data_key = _data_key_arn(synthesis)
    assert synthesis.producer_value(definition.reference(output["KmsKeyId"])) == data_key
    assert synthesis.producer_value(definition.reference(parameters["ResourceConfig"]["VolumeKmsKeyId"])) == data_key


def test_train_reports_the_metrics_the_script_prints(definition: Definition) -> None:
    specification = definition.states[TRAIN]["Parameters"]["AlgorithmSpecification"]
    regexes = {m["Name"]: m["Regex"] for m in specification["MetricDefinitions"]}
    assert {f"model_{GATE_METRIC}", f"current_{GATE_METRIC}"} <= set(regexes)
    log = "model_ndcg_at_10=0.3612;\npopularity_ndcg_at_10=8.1e-02;\nmodel_precision_at_10=0.05;\n"
    assert re.search(regexes["model_ndcg_at_10"], log).group(1) == "0.3612"
    assert re.search(regexes["popularity_ndcg_at_10"], log).group(1) == "8.1e-02"


def test_training_image_is_the_sklearn_container_for_the_deploying_region(
    definition: Definition, training: Template
) -> None:
    image = definition.reference(definition.states[TRAIN]["Parameters"]["AlgorithmSpecification"]["TrainingImage"])
    mapping_id, region, attribute = image["Fn::FindInMap"]
    assert (region, attribute) == ({"Ref": "AWS::Region"}, "ImageUri")
    mapping = training.to_json()["Mappings"][mapping_id]
    for region, uri in EXPECTED_IMAGES.items():
        assert mapping[region]["ImageUri"] == uri
        assert mapping[region]["Account"] == uri.split(".")[0]
    assert len(mapping) > 20  # every region the SDK lists, not only the two above
    assert all(entry["ImageUri"].endswith("/sagemaker-scikit-learn:1.9-0-cpu-py3") for entry in mapping.values())


def test_evaluate_gets_the_training_jobs_model_archive(definition: Definition, training: Template) -> None:
    train = definition.states[TRAIN]
    assert train["ResultPath"] == "$.train"
    assert train["ResultSelector"]["candidate_url.$"] == "$.ModelArtifacts.S3ModelArtifacts"
    evaluate = definition.states[EVALUATE]
    assert evaluate["Parameters"] == {"candidate_url.$": "$.train.candidate_url"}
    assert definition.reference(evaluate["Resource"]) == {
        "Fn::GetAtt": [_function_id(training, "lambdas.retrain.handler.evaluate"), "Arn"]
    }
    publish = definition.states[PUBLISH]
    assert "Parameters" not in publish  # the evaluation, as it is
    assert definition.reference(publish["Resource"]) == {
        "Fn::GetAtt": [_function_id(training, "lambdas.retrain.handler.publish"), "Arn"]
    }


@pytest.mark.parametrize("handler", ["lambdas.retrain.handler.evaluate", "lambdas.retrain.handler.publish"])
def test_functions_run_the_retrain_handlers_with_their_settings(
    training: Template, synthesis, handler: str
) -> None:
    module, name = handler.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
    function = training.find_resources("AWS::Lambda::Function")[_function_id(training, handler)]
    environment = function["Properties"]["Environment"]["Variables"]
    expected = {RetrainSettings.env_name(field) for field in RetrainSettings.model_fields}
    assert expected - {RetrainSettings.env_name("gate_margin")} <= set(environment)
    models = environment[RetrainSettings.env_name("models_bucket")]
    registry = environment[RetrainSettings.env_name("registry_table")]
    assert synthesis.producer_value(models) == {
        "Ref": _data_output_ref(synthesis, f"{pascal_case(MODELS_BUCKET.key)}BucketName")
    }
    assert synthesis.producer_value(registry) == {
        "Ref": _data_output_ref(synthesis, f"{pascal_case(REGISTRY_TABLE.key)}TableName")
    }


def test_state_machine_logs_everything_encrypted_and_traces(definition: Definition, training: Template) -> None:
    properties = definition.properties
    assert properties["StateMachineType"] == "STANDARD"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    logging = properties["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    (destination,) = logging["Destinations"]
    log_group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    log_group = training.find_resources("AWS::Logs::LogGroup")[log_group_id]["Properties"]
    key_id = log_group["KmsKeyId"]["Fn::GetAtt"][0]
    key = training.find_resources("AWS::KMS::Key")[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    # CloudWatch Logs may use the key for this log group only
    (logs,) = [s for s in key["KeyPolicy"]["Statement"] if "Service" in s.get("Principal", {})]
    context = json.dumps(logs["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"])
    assert context.endswith(f':log-group:{log_group["LogGroupName"]}"]]}}')


def test_alert_topic_is_encrypted_and_refuses_plain_http(training: Template) -> None:
    topic_id, topic = _only(training, "AWS::SNS::Topic")
    assert topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0] in training.find_resources("AWS::KMS::Key")
    (policy,) = training.find_resources("AWS::SNS::TopicPolicy").values()
    assert {"Ref": topic_id} in policy["Properties"]["Topics"]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def test_schedule_starts_the_workflow_nightly_with_a_role_that_can_do_nothing_else(training: Template) -> None:
    _, schedule = _only(training, "AWS::Scheduler::Schedule")
    properties = schedule["Properties"]
    assert properties["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert properties["ScheduleExpressionTimezone"] == "Etc/UTC"
    assert properties["State"] == "ENABLED"
    machine_id, _ = _only(training, "AWS::StepFunctions::StateMachine")
    assert properties["Target"]["Arn"] == {"Ref": machine_id}
    role_id = properties["Target"]["RoleArn"]["Fn::GetAtt"][0]
    role = training.find_resources("AWS::IAM::Role")[role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
    assert "ManagedPolicyArns" not in role
    statements = [
        s
        for policy in training.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert statements == [{"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": machine_id}}]


def test_outputs_name_the_state_machine_and_the_topic(training: Template) -> None:
    outputs = training.to_json()["Outputs"]
    assert outputs["StateMachineArn"]["Value"] == {"Ref": _only(training, "AWS::StepFunctions::StateMachine")[0]}
    assert outputs["ModelAlertsTopicArn"]["Value"] == {"Ref": _only(training, "AWS::SNS::Topic")[0]}


# -- least privilege --------------------------------------------------------------------------------


def test_trainer_reads_its_two_tables_and_published_models_and_writes_only_candidates(
    definition: Definition, training: Template, synthesis
) -> None:
    statements = _statements(training, synthesis, _trainer_role_id(definition))
    curated = _data_output_ref(synthesis, f"{pascal_case(CURATED_BUCKET.key)}BucketName")
    models = _data_output_ref(synthesis, f"{pascal_case(MODELS_BUCKET.key)}BucketName")
    writable = _granted(statements, S3_WRITE_ACTIONS)
    assert writable == [_objects(models, CANDIDATES_PREFIX)]
    assert _objects(models, PUBLISHED_PREFIX) not in writable
    readable = set(_granted(statements, {"s3:GetObject", "s3:GetObject*", "s3:*"}))
    channels = {
        _objects(curated, FEEDBACK_DAILY.prefix),
        _objects(curated, USER_FEATURES.prefix),
        _objects(models, PUBLISHED_PREFIX),  # the current channel: the published model's archive
    }
    assert channels <= readable
    (bundle,) = readable - channels  # and the source bundle, one object of the assets bucket
    assert "cdk-" in bundle and not bundle.endswith('*"]]}')
    # File mode lists a channel's prefix first: the models bucket's listing is the published prefix only
    listings = {
        json.dumps(s["Resource"]): s["Condition"]["StringLike"]["s3:prefix"]
        for s in statements
        if "s3:ListBucket" in _listed(s["Action"])
    }
    assert listings[json.dumps({"Fn::GetAtt": [models, "Arn"]})] == [f"{PUBLISHED_PREFIX}*"]
    assert not _granted(statements, {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:*"})
    data_key = json.dumps(_data_key_arn(synthesis))
    assert _granted(statements, {"kms:CreateGrant"}) == [data_key]


def test_trainer_is_trusted_by_sagemaker_and_passed_only_to_it(
    definition: Definition, training: Template
) -> None:
    trainer_id = _trainer_role_id(definition)
    role = training.find_resources("AWS::IAM::Role")[trainer_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    passes = [
        s
        for policy in training.find_resources("AWS::IAM::Policy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if "iam:PassRole" in _listed(s["Action"])
    ]
    assert passes == [
        {
            "Action": "iam:PassRole",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [trainer_id, "Arn"]},
        }
    ]


def test_trainer_pulls_only_the_training_image_repository(definition: Definition, training: Template) -> None:
    statements = [
        s
        for policy in training.find_resources("AWS::IAM::Policy").values()
        if {"Ref": _trainer_role_id(definition)} in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    (pull,) = [s for s in statements if "ecr:BatchGetImage" in _listed(s["Action"])]
    assert json.dumps(pull["Resource"]).endswith(':repository/sagemaker-scikit-learn"]]}')
    (token,) = [s for s in statements if "ecr:GetAuthorizationToken" in _listed(s["Action"])]
    assert _listed(token["Action"]) == ["ecr:GetAuthorizationToken"]  # the only action that needs '*'


def test_workflow_reads_the_registry_pointer_and_nothing_else_of_the_data(
    definition: Definition, training: Template, synthesis
) -> None:
    role_id = definition.properties["RoleArn"]["Fn::GetAtt"][0]
    statements = _statements(training, synthesis, role_id)
    registry = _data_output_ref(synthesis, f"{pascal_case(REGISTRY_TABLE.key)}TableName")
    (get_item,) = [s for s in statements if any(a.startswith("dynamodb:") for a in _listed(s["Action"]))]
    assert _listed(get_item["Action"]) == ["dynamodb:GetItem"]
    assert get_item["Resource"] == {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":dynamodb:", {"Ref": "AWS::Region"}, ":",
                          {"Ref": "AWS::AccountId"}, ":table/", {"Ref": registry}]]
    }
    assert not _granted(statements, {"s3:GetObject", "s3:GetObject*", "s3:*"} | S3_WRITE_ACTIONS)
    # the table's key, through DynamoDB only
    data_key = _data_key_arn(synthesis)
    (decrypt,) = [s for s in statements if s["Resource"] == data_key]
    assert _listed(decrypt["Action"]) == ["kms:Decrypt"]
    assert "dynamodb." in json.dumps(decrypt["Condition"]["StringEquals"]["kms:ViaService"])


def test_evaluate_reads_candidates_and_the_registry_and_writes_nothing(training: Template, synthesis) -> None:
    statements = _statements(training, synthesis, _role_of_function(training, "lambdas.retrain.handler.evaluate"))
    models = _data_output_ref(synthesis, f"{pascal_case(MODELS_BUCKET.key)}BucketName")
    registry = _data_output_ref(synthesis, f"{pascal_case(REGISTRY_TABLE.key)}TableName")
    assert _granted(statements, {"s3:GetObject"}) == [_objects(models, CANDIDATES_PREFIX)]
    assert not _granted(statements, S3_WRITE_ACTIONS)
    assert _granted(statements, {"dynamodb:GetItem"}) == [json.dumps({"Fn::GetAtt": [registry, "Arn"]})]
    assert not _granted(statements, REGISTRY_WRITE_ACTIONS)


def test_publish_copies_candidates_to_published_and_moves_the_pointer(training: Template, synthesis) -> None:
    statements = _statements(training, synthesis, _role_of_function(training, "lambdas.retrain.handler.publish"))
    models = _data_output_ref(synthesis, f"{pascal_case(MODELS_BUCKET.key)}BucketName")
    registry = _data_output_ref(synthesis, f"{pascal_case(REGISTRY_TABLE.key)}TableName")
    assert _granted(statements, {"s3:GetObject"}) == [_objects(models, CANDIDATES_PREFIX)]
    assert _granted(statements, S3_WRITE_ACTIONS) == [_objects(models, PUBLISHED_PREFIX)]
    assert _granted(statements, REGISTRY_WRITE_ACTIONS) == [json.dumps({"Fn::GetAtt": [registry, "Arn"]})]
    assert _granted(statements, {"dynamodb:DeleteItem", "dynamodb:UpdateItem"}) == []


def test_registry_table_lives_in_the_data_stack_with_pitr_and_the_data_key(synthesis) -> None:
    data = _data(synthesis)
    registry_id = _data_output_ref(synthesis, f"{pascal_case(REGISTRY_TABLE.key)}TableName")
    table = data["Resources"][registry_id]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["DeletionPolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": REGISTRY_TABLE.partition_key, "KeyType": "HASH"}]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {
        "KMSMasterKeyId": _data_key_arn(synthesis),
        "SSEEnabled": True,
        "SSEType": "KMS",
    }
    assert not synthesis.template_json(TRAINING_STACK)["Resources"].keys() & {registry_id}
    tables = [r for r in synthesis.template_json(TRAINING_STACK)["Resources"].values()
              if r["Type"] == "AWS::DynamoDB::Table"]
    assert not tables  # the training stack is stateless


# -- the source bundle ------------------------------------------------------------------------------


def _staged_bundle(definition: Definition, synthesis) -> Path:
    hyperparameters = definition.states[TRAIN]["Parameters"]["HyperParameters"]
    submit = definition.reference(hyperparameters["sagemaker_submit_directory"])
    object_key = submit["Fn::Sub"].rsplit("/", 1)[1]
    files = json.loads((synthesis.outdir / f"{TRAINING_STACK}.assets.json").read_text("utf-8"))["files"]
    (source,) = [f["source"] for f in files.values()
                 if any(d["objectKey"] == object_key for d in f["destinations"].values())]
    assert source.get("packaging", "file") == "file"  # uploaded as it is: a tar.gz, not a zip of a folder
    return synthesis.outdir / source["path"]


def test_source_bundle_holds_the_script_at_its_root_and_the_core_package(
    definition: Definition, synthesis, layout: ProjectLayout
) -> None:
    bundle = _staged_bundle(definition, synthesis)
    with tarfile.open(bundle, mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("train.py").read() == (layout.sagemaker_dir / "train.py").read_bytes()
        requirements = tar.extractfile("requirements.txt").read()
    assert requirements == (layout.sagemaker_dir / "requirements.txt").read_bytes()
    assert "feedbackloop/models/training.py" in members
    assert "feedbackloop/retraining.py" in members
    for left_out in ("datasets", "local", "bench", "__pycache__"):
        assert not any(f"/{left_out}/" in name for name in members), left_out
    assert not any(name.endswith(".pyc") or name.startswith("sagemaker/") for name in members)
    assert all(m.isfile() and m.mtime == 0 and m.uid == m.gid == 0 and m.uname == m.gname == ""
               for m in members.values())
    assert list(members) == sorted(members)


def test_source_bundle_is_the_same_bytes_for_the_same_sources(layout: ProjectLayout, tmp_path: Path) -> None:
    """Built from two copies of the sources with other timestamps: the same archive, so the asset hash
    (and the deployed training job) changes only when the code does."""
    bundles = []
    for copy, mtime in (("a", 1_000_000_000), ("b", 1_700_000_000)):
        root = tmp_path / copy
        for folder in (layout.sagemaker_dir, layout.core_package_dir):
            shutil.copytree(folder, root / folder.name, ignore=shutil.ignore_patterns("datasets"))
        for path in root.rglob("*"):
            os.utime(path, (mtime, mtime))
        bundles.append(build_source_bundle(ProjectLayout(root)).read_bytes())
    assert bundles[0] == bundles[1]
    with gzip.GzipFile(fileobj=io.BytesIO(bundles[0])) as compressed:
        compressed.read()
        assert compressed.mtime == 0


def test_the_sdk_is_not_shadowed_by_the_projects_sagemaker_folder(layout: ProjectLayout) -> None:
    from sagemaker.core import image_uris

    assert not (layout.sagemaker_dir / "__init__.py").exists()
    assert layout.sagemaker_dir not in Path(image_uris.__file__).parents
