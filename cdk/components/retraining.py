"""The retraining workflow: a Step Functions state machine whose top-level states are
`feedbackloop.retraining.STEPS`, started nightly by EventBridge Scheduler.

- BuildTables: one branch that runs the table jobs (`glue_jobs.build_tables.JOB_NAMES`, in dependency
  order) with `glue:startJobRun.sync`, each retried while the hourly Glue workflow runs the same job.
- ReadCurrentModel, then the Choice HasCurrentModel: a consistent GetItem of the registry's `current`
  pointer (its `artifact` only); when a model is published, Train gets its archive as the
  `CURRENT_MODEL_CHANNEL` as well, so the job scores it on the candidate's own hold-out.
- Train (TrainWithCurrentModel when a model is published; one task definition, one channel more): a
  SageMaker training job (`createTrainingJob.sync`) in SageMaker's scikit-learn container, script mode:
  `sagemaker/train.py` from a source bundle built at synth, channels `TRAINING_CHANNELS`, output under the
  models bucket's candidates prefix. Its job name and the model version are the execution name (Step
  Functions generates a UUID, a valid training job name; a hand-started execution needs a name of
  letters, digits and hyphens).
- Evaluate: a Lambda compares the candidate's hold-out metrics with the published model's.
- Gate: a Choice on the evaluation's `decision.publish`.
- Publish: a Lambda copies the candidate to its version and moves the registry pointer.
- Otherwise: an alert on the model topic, then `KeptCurrent`, a success: keeping the current model is a
  decision, not a failure.

Only `.sync` and request-response integrations (Lambda, SNS, the DynamoDB read): Step Functions waits for
Glue and SageMaker itself, so the definition has no polling loop. Permissions on data are the ModelStore's
managed policies; this construct adds what belongs to the workflow (logs, the training image, the source
bundle, its key and topic, and the state machine's own read of the registry pointer).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

from aws_cdk import ArnFormat, Aws, CfnMapping, Duration, Names, RemovalPolicy, Size, Stack, TimeZone
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as assets
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from cdk import nag
from cdk.components.alert_subscriptions import subscribe_alerts
from cdk.components.function import LayerSet, PythonFunction
from cdk.components.lake import Lake
from cdk.components.model_store import ModelStore
from cdk.components.schedules import scheduler_role
from cdk.naming import pascal_case
from cdk.project import ProjectLayout
from feedbackloop.lake import TRAINING_CHANNELS
from feedbackloop.models.contract import GATE_METRIC, TUNING_MINUTES, K
from feedbackloop.registry import CURRENT_KEY
from feedbackloop.resources import CANDIDATES_PREFIX, MODELS_BUCKET, REGISTRY_TABLE
from feedbackloop.retraining import (
    BUILD_TABLES,
    CURRENT_MODEL_CHANNEL,
    EVALUATE,
    GATE,
    KEPT_CURRENT,
    PUBLISH,
    TRAIN,
)
from feedbackloop.settings import RetrainSettings
from glue_jobs.build_tables import JOB_NAMES

# The training container: SageMaker's scikit-learn image, script mode.
IMAGE_FRAMEWORK = "sklearn"
IMAGE_VERSION = "1.9-0"
IMAGE_PY_VERSION = "py3"
INSTANCE_TYPE = "ml.m5.large"
VOLUME_SIZE = Size.gibibytes(30)
MAX_RUNTIME = Duration.hours(2)
ENTRY_POINT = "train.py"
TRAINING_REQUIREMENTS = "requirements.txt"  # the container pip-installs it from the bundle's root
# sagemaker/train.py prints `<scope>_<metric>=<value>;` for the model, the popularity baseline and, when
# it has the `current` channel, the published model on the same hold-out.
METRIC_NAMES = tuple(
    f"{scope}_{metric}"
    for scope in ("model", "popularity", "current")
    for metric in (GATE_METRIC, f"precision_at_{K}", f"recall_at_{K}", f"map_at_{K}")
)
# SageMaker names the log group of every training job itself.
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"

NIGHTLY_HOUR_UTC = 2
# Glue tasks: the hourly workflow may be running the same job (one concurrent run per job). A run lasts
# 30 minutes at most, so waits of 5, 10, 20, 30 and 30 minutes outlast the one in progress.
GLUE_BUSY = "Glue.ConcurrentRunsExceededException"
GLUE_BUSY_INTERVAL = Duration.minutes(5)
GLUE_BUSY_ATTEMPTS = 5
GLUE_BUSY_MAX_DELAY = Duration.minutes(30)
WORKFLOW_TIMEOUT = Duration.hours(6)
ALERT_STATE = "AlertKeptCurrent"
# Before Train: the registry's `current` pointer, and the choice of the Train task that gets its archive.
READ_CURRENT_STATE = "ReadCurrentModel"
CURRENT_CHOICE_STATE = "HasCurrentModel"
TRAIN_WITH_CURRENT_STATE = f"{TRAIN}WithCurrentModel"
# The pointer's attribute that is the published archive's s3:// URL (`feedbackloop.retraining.publish`
# writes it), and where ReadCurrentModel leaves GetItem's answer (no `Item` before the first publication).
ARTIFACT_ATTRIBUTE = "artifact"
CURRENT_RESULT_PATH = "$.current"
CURRENT_ARTIFACT_PATH = f"{CURRENT_RESULT_PATH}.Item.{ARTIFACT_ATTRIBUTE}.S"

# What of the core package the training job imports, and what it never does (as in the Lambda asset).
BUNDLE_EXCLUDED_DIRS = frozenset({"datasets", "local", "bench", "__pycache__"})


class Retraining(Construct):
    """`state_machine`, `topic` (model alerts), `schedule`, and the training role `trainer`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        lake: Lake,
        key: kms.IKey,
        model_store: ModelStore,
        glue_jobs: Mapping[str, glue.CfnJob],
    ) -> None:
        super().__init__(scope, construct_id)
        models: s3.IBucket = lake.buckets[MODELS_BUCKET.key]

        # The workflow's own logs and alerts use a key of their own: CloudWatch Logs needs a key-policy
        # statement, and the data key (stateful stack) stays free of services that never read data.
        self.key = kms.Key(
            self,
            "Key",
            enable_key_rotation=True,
            description="feedbackloop retraining: workflow logs and model alerts",
        )
        self.topic = sns.Topic(
            self,
            "ModelAlerts",
            display_name="feedbackloop model alerts",
            master_key=self.key,
            enforce_ssl=True,
        )
        subscribe_alerts(self, self.topic)

        self.trainer = self._trainer_role(model_store)
        evaluate_function, publish_function = self._functions(layout, models, model_store)

        build_tables = sfn.Parallel(
            self,
            BUILD_TABLES,
            comment="rebuild the modelled tables, one job after the other, before training reads them",
            result_path=sfn.JsonPath.DISCARD,
        ).branch(self._glue_chain(glue_jobs))
        read_current = tasks.DynamoGetItem(
            self,
            READ_CURRENT_STATE,
            table=model_store.registry,
            key={REGISTRY_TABLE.partition_key: tasks.DynamoAttributeValue.from_string(CURRENT_KEY)},
            consistent_read=True,  # the pointer as Publish last wrote it
            projection_expression=[tasks.DynamoProjectionExpression().with_attribute(ARTIFACT_ATTRIBUTE)],
            result_path=CURRENT_RESULT_PATH,
            comment="the published model's archive, if any, for the training job to score on the same hold-out",
        )
        train, train_with_current = self._train_tasks(layout, lake, models, key)
        choose_train = (
            sfn.Choice(self, CURRENT_CHOICE_STATE, comment="give Train the published model when there is one")
            .when(sfn.Condition.is_present(CURRENT_ARTIFACT_PATH), train_with_current)
            .otherwise(train)
            .afterwards()
        )
        evaluate = tasks.LambdaInvoke(
            self,
            EVALUATE,
            lambda_function=evaluate_function,
            payload=sfn.TaskInput.from_object({"candidate_url": sfn.JsonPath.string_at("$.train.candidate_url")}),
            payload_response_only=True,
            comment="the candidate's hold-out metrics against the published model's; the gate's decision",
        )
        publish = tasks.LambdaInvoke(
            self,
            PUBLISH,
            lambda_function=publish_function,
            payload_response_only=True,
            comment="copy the candidate to its version, move the registry pointer",
        )
        alert = tasks.SnsPublish(
            self,
            ALERT_STATE,
            topic=self.topic,
            subject="feedbackloop: candidate model not published",
            message=sfn.TaskInput.from_text(
                sfn.JsonPath.format(
                    "Candidate {} was not published; the current model stays. {}",
                    sfn.JsonPath.string_at("$.candidate.version"),
                    sfn.JsonPath.string_at("$.decision.reason"),
                )
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        gate = (
            sfn.Choice(self, GATE, comment="publish only what the evaluation let through")
            .when(sfn.Condition.boolean_equals("$.decision.publish", True), publish)
            .otherwise(alert.next(sfn.Succeed(self, KEPT_CURRENT, comment="the published model stays")))
        )

        log_group = self._log_group()
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            comment="feedbackloop retraining: build tables, train, evaluate, gate, publish",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(
                sfn.Chain.start(build_tables).next(read_current).next(choose_train).next(evaluate).next(gate)
            ),
            timeout=WORKFLOW_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        )
        self.key.grant(self.state_machine, "kms:Decrypt", "kms:GenerateDataKey")  # publish to the topic
        # ReadCurrentModel: the task grants dynamodb:GetItem on the registry table; the table is encrypted
        # with the data key, which the role may use through DynamoDB only
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{Aws.REGION}.amazonaws.com"}},
            )
        )
        self.schedule = self._nightly_schedule()
        self._acknowledge_workflow_findings(evaluate_function.function_arn, publish_function.function_arn)

    # -- BuildTables -------------------------------------------------------------------------------

    def _glue_chain(self, glue_jobs: Mapping[str, glue.CfnJob]) -> sfn.Chain:
        steps = []
        for name in JOB_NAMES:
            step = tasks.GlueStartJobRun(
                self,
                f"Build{pascal_case(name)}",
                glue_job_name=glue_jobs[name].ref,
                integration_pattern=sfn.IntegrationPattern.RUN_JOB,
                result_path=sfn.JsonPath.DISCARD,
                comment=f"the {name} table job (the hourly Glue workflow runs it too)",
            )
            step.add_retry(
                errors=[GLUE_BUSY],
                interval=GLUE_BUSY_INTERVAL,
                backoff_rate=2,
                max_attempts=GLUE_BUSY_ATTEMPTS,
                max_delay=GLUE_BUSY_MAX_DELAY,
            )
            steps.append(step)
        chain = sfn.Chain.start(steps[0])
        for step in steps[1:]:
            chain = chain.next(step)
        return chain

    # -- Train -------------------------------------------------------------------------------------

    def _train_tasks(
        self, layout: ProjectLayout, lake: Lake, models: s3.IBucket, key: kms.IKey
    ) -> tuple[sfn.TaskStateBase, sfn.TaskStateBase]:
        """(Train, TrainWithCurrentModel): one training job definition; the second has the published model's
        archive as the `CURRENT_MODEL_CHANNEL` too."""
        images = training_images()
        image_mapping = CfnMapping(
            self,
            "TrainingImage",
            mapping={region: {"ImageUri": uri, "Account": uri.split(".", 1)[0]} for region, uri in images.items()},
        )
        self._grant_image_pull(image_mapping.find_in_map(Aws.REGION, "Account"), _repository(images))

        bundle = assets.Asset(self, "SourceBundle", path=str(build_source_bundle(layout)))
        # the one object of the bootstrap bucket the job reads (Asset.grant_read would open the bucket)
        self.trainer.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[bundle.bucket.arn_for_objects(bundle.s3_object_key)]
            )
        )

        def train(state_name: str, channels: Mapping[str, str], comment: str) -> sfn.TaskStateBase:
            return tasks.SageMakerCreateTrainingJob(
                self,
                state_name,
                training_job_name=sfn.JsonPath.execution_name,
                integration_pattern=sfn.IntegrationPattern.RUN_JOB,
                # The task would grant the role read on each channel's bucket and write on the output's, and
                # the key, with `grant_*` wildcards; its permissions are the ModelStore's trainer policy and
                # the statements of _trainer_role instead.
                role=self.trainer.without_policy_updates(),
                algorithm_specification=tasks.AlgorithmSpecification(
                    training_image=tasks.DockerImage.from_registry(image_mapping.find_in_map(Aws.REGION, "ImageUri")),
                    training_input_mode=tasks.InputMode.FILE,
                    metric_definitions=[
                        tasks.MetricDefinition(name=name, regex=f"{name}=([-+0-9.eE]+);") for name in METRIC_NAMES
                    ],
                ),
                hyperparameters={
                    "sagemaker_program": ENTRY_POINT,
                    "sagemaker_submit_directory": bundle.s3_object_url,
                    "sagemaker_region": Aws.REGION,
                    "version": sfn.JsonPath.execution_name,
                    "tuning_minutes": str(TUNING_MINUTES),  # the budget of the tuning inside the job
                },
                input_data_config=[
                    tasks.Channel(
                        channel_name=channel,
                        data_source=tasks.DataSource(
                            s3_data_source=tasks.S3DataSource(
                                s3_location=_S3Url(url), s3_data_type=tasks.S3DataType.S3_PREFIX
                            )
                        ),
                    )
                    for channel, url in channels.items()
                ],
                output_data_config=tasks.OutputDataConfig(
                    s3_output_location=_S3Url(f"s3://{models.bucket_name}/{CANDIDATES_PREFIX}"),
                    encryption_key=key,
                ),
                resource_config=tasks.ResourceConfig(
                    instance_count=1,
                    instance_type=ec2.InstanceType(INSTANCE_TYPE.removeprefix("ml.")),
                    volume_size=VOLUME_SIZE,
                    volume_encryption_key=key,
                ),
                stopping_condition=tasks.StoppingCondition(max_runtime=MAX_RUNTIME),
                # what the next states need of DescribeTrainingJob's answer
                result_selector={
                    "job_name": sfn.JsonPath.string_at("$.TrainingJobName"),
                    "candidate_url": sfn.JsonPath.string_at("$.ModelArtifacts.S3ModelArtifacts"),
                },
                result_path="$.train",
                comment=comment,
            )

        tables = {
            channel: f"s3://{lake.buckets[table.bucket_key].bucket_name}/{table.prefix}"
            for channel, table in TRAINING_CHANNELS.items()
        }
        # The pointer's artifact is the archive's own URL: as an S3 prefix it is the one object, which
        # SageMaker copies into the channel's folder under its file name.
        with_current = {**tables, CURRENT_MODEL_CHANNEL: sfn.JsonPath.string_at(CURRENT_ARTIFACT_PATH)}
        return (
            train(TRAIN, tables, "train a candidate (SageMaker scikit-learn container, script mode)"),
            train(
                TRAIN_WITH_CURRENT_STATE,
                with_current,
                "train a candidate and score the published model on the same hold-out",
            ),
        )

    def _trainer_role(self, model_store: ModelStore) -> iam.Role:
        role = iam.Role(
            self,
            "TrainerRole",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
            description="feedbackloop: the SageMaker training job of the retraining workflow",
        )
        role.add_managed_policy(model_store.trainer_policy)
        stack = Stack.of(self)
        log_streams = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{TRAINING_LOG_GROUP}:log-stream:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        log_group = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=TRAINING_LOG_GROUP,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["logs:CreateLogGroup", "logs:DescribeLogStreams"], resources=[log_group])
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_streams])
        )
        # the training metrics (metric definitions) land in SageMaker's namespace
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": TRAINING_LOG_GROUP}},
            )
        )
        nag.acknowledge(
            role,
            nag.wildcard_resource(self, log_streams),
            "SageMaker writes one log stream per training job and instance into its fixed log group "
            "/aws/sagemaker/TrainingJobs; the wildcard is the streams of that one group.",
        )
        nag.acknowledge(
            role,
            "IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level permissions; "
            "PutMetricData is limited to SageMaker's training namespace by a condition, and image pulls are "
            "limited to the one training image repository.",
        )
        return role

    def _grant_image_pull(self, registry_account: str, repository: str) -> None:
        stack = Stack.of(self)
        self.trainer.add_to_policy(
            iam.PolicyStatement(
                actions=["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                resources=[
                    stack.format_arn(
                        service="ecr",
                        account=registry_account,
                        resource="repository",
                        resource_name=repository,
                        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.trainer.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))

    # -- Evaluate, Publish -------------------------------------------------------------------------

    def _functions(
        self, layout: ProjectLayout, models: s3.IBucket, model_store: ModelStore
    ) -> tuple[lambda_.IFunction, lambda_.IFunction]:
        environment = RetrainSettings(
            models_bucket=models.bucket_name, registry_table=model_store.registry.table_name
        ).to_env()
        evaluate = PythonFunction(
            self,
            "EvaluateFunction",
            layout=layout,
            handler="lambdas.retrain.handler.evaluate",
            description="retraining Evaluate: a candidate's hold-out metrics against the published model's",
            environment=environment,
            memory_size=512,
            timeout=Duration.seconds(60),
            # a model archive's metrics and the registry record: no pandas or pyarrow
            layers=LayerSet.NUMPY,
        )
        evaluate.role.add_managed_policy(model_store.evaluator_policy)
        publish = PythonFunction(
            self,
            "PublishFunction",
            layout=layout,
            handler="lambdas.retrain.handler.publish",
            description="retraining Publish: copy the candidate to its version, move the registry pointer",
            environment=environment,
            memory_size=512,
            timeout=Duration.seconds(120),
            layers=LayerSet.NUMPY,
        )
        publish.role.add_managed_policy(model_store.publisher_policy)
        return evaluate.function, publish.function

    # -- logs, schedule ----------------------------------------------------------------------------

    def _log_group(self) -> logs.LogGroup:
        """Encrypted with the workflow key. The name is derived from this construct's path (like CDK's
        generated names) so the key policy can name the one log group CloudWatch Logs may use it for;
        /aws/vendedlogs/ keeps Step Functions' log delivery clear of the log resource policy's size limit."""
        stack = Stack.of(self)
        name = f"/aws/vendedlogs/states/{Names.unique_resource_name(self, max_length=200, separator='-')}"
        arn = stack.format_arn(
            service="logs", resource="log-group", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
                resources=["*"],
                conditions={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": arn}},
            )
        )
        return logs.LogGroup(
            self,
            "Logs",
            log_group_name=name,
            encryption_key=self.key,
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )

    def _nightly_schedule(self) -> scheduler.Schedule:
        role = scheduler_role(
            self, "ScheduleRole", description="feedbackloop: start the retraining workflow on schedule"
        )
        return scheduler.Schedule(
            self,
            "NightlySchedule",
            description="feedbackloop: retrain nightly",
            schedule=scheduler.ScheduleExpression.cron(
                minute="0", hour=str(NIGHTLY_HOUR_UTC), time_zone=TimeZone.ETC_UTC
            ),
            # the target grants its role states:StartExecution on this state machine, and nothing else;
            # a start that keeps failing is given up after an hour (the next night's run comes anyway)
            target=scheduler_targets.StepFunctionsStartExecution(
                self.state_machine, role=role, max_event_age=Duration.hours(1), retry_attempts=10
            ),
        )

    def _acknowledge_workflow_findings(self, *function_arns: str) -> None:
        role = self.state_machine.role
        nag.acknowledge_all(
            role,
            [nag.wildcard_resource(self, f"{arn}:*") for arn in function_arns],
            "LambdaInvoke grants the function and its versions and aliases (<function ARN>:*); the wildcard "
            "is the qualifiers of the Evaluate and Publish functions of this workflow only.",
        )
        nag.acknowledge(
            role,
            nag.wildcard_resource(
                self,
                Stack.of(self).format_arn(
                    service="sagemaker",
                    resource="training-job",
                    resource_name="*",
                    arn_format=ArnFormat.SLASH_RESOURCE_NAME,
                ),
            ),
            "The training job is named at run time after the execution, so the task may create, describe "
            "and stop training jobs of this account and region; it passes only the workflow's trainer role.",
        )
        nag.acknowledge(
            role,
            "IAM5[Resource::*]",
            "Step Functions log delivery (logs:CreateLogDelivery and friends), X-Ray tracing and "
            "sagemaker:ListTags support no resource-level permissions; these are the only statements on '*'.",
        )


class _S3Url(tasks.S3Location):
    """An s3:// location that grants nothing when a task binds it (the trainer's S3 permissions are the
    ModelStore's trainer policy). `S3Location.from_bucket` would render an https:// URL and grant
    `bucket.grant_read/grant_write` wildcards."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url

    def bind(self, task: tasks.ISageMakerTask, *, for_reading: bool | None = None,
             for_writing: bool | None = None) -> tasks.S3LocationConfig:
        return tasks.S3LocationConfig(uri=self._url)


@cache
def training_images() -> dict[str, str]:
    """Region -> URI of the training image, for every region the SageMaker SDK's image config lists for
    it, looked up offline. (The SDK's `sagemaker` package is a regular package that extends its path, so
    the project's `sagemaker/` folder, which has no __init__.py, cannot shadow it.)"""
    with warnings.catch_warnings():  # the SDK's modules compile with invalid-escape warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        from sagemaker.core import image_uris  # takes seconds to import: only when a stack needs it

    config = image_uris.config_for_framework(IMAGE_FRAMEWORK)["training"]["versions"][IMAGE_VERSION]
    return {
        region: image_uris.retrieve(
            IMAGE_FRAMEWORK,
            region=region,
            version=IMAGE_VERSION,
            py_version=IMAGE_PY_VERSION,
            instance_type=INSTANCE_TYPE,
            image_scope="training",
        )
        for region in sorted(config["registries"])
    }


def _repository(images: Mapping[str, str]) -> str:
    """The ECR repository name all the regional URIs share (<account>.dkr.ecr.<region>.<domain>/<name>:<tag>)."""
    (repository,) = {uri.split("/", 1)[1].split(":", 1)[0] for uri in images.values()}
    return repository


def source_bundle_entries(layout: ProjectLayout) -> Iterator[tuple[str, Path]]:
    """(name in the archive, file): the training scripts and their requirements at the root, the core
    package beside them without what never runs in training."""
    for path in sorted(layout.sagemaker_dir.iterdir()):
        if path.is_file() and (path.suffix == ".py" or path.name == TRAINING_REQUIREMENTS):
            yield path.name, path
    package = layout.core_package_dir
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package)
        if path.is_file() and path.suffix != ".pyc" and not BUNDLE_EXCLUDED_DIRS & set(relative.parts[:-1]):
            yield f"{package.name}/{relative.as_posix()}", path


def build_source_bundle(layout: ProjectLayout) -> Path:
    """Write `layout.sagemaker_source_bundle`: a tar.gz that is the same bytes for the same sources
    (sorted entries, mtime 0, root ownership, fixed modes, no gzip timestamp or name), so its asset
    hash changes only when the code does. Written atomically: parallel syntheses may build it at once."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path in sorted(source_bundle_entries(layout)):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    target = layout.sagemaker_source_bundle
    content = buffer.getvalue()
    if target.is_file() and target.read_bytes() == content:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".sourcedir-", delete=False) as temporary:
        temporary.write(content)
    os.chmod(temporary.name, 0o644)
    os.replace(temporary.name, target)
    return target
