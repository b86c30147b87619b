"""Start moto server on loopback and create, from feedbackloop.resources, what the stacks define."""

from __future__ import annotations

import importlib.resources
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import awswrangler as wr
import boto3

from feedbackloop import resources, uiconfig
from feedbackloop.lake import LakeTable
from feedbackloop.names import METRICS_NAMESPACE, SERVICE
from feedbackloop.settings import (
    AdjustSettings,
    CleanerSettings,
    EraserSettings,
    IngestSettings,
    ReplaySettings,
    RetrainSettings,
    ServingSettings,
)

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
STATE_DIR = Path(".feedbackloop")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def physical_name(key: str) -> str:
    return f"{SERVICE}-{key}-local"


@dataclass(frozen=True)
class LocalEndpoints:
    """What another process needs to reach a running local stack (written to .feedbackloop/)."""

    aws_endpoint: str
    api_url: str
    api_key: str
    appconfig_endpoint: str = ""  # AppConfig's control plane (the stand-in in front of moto)
    pid: int = 0  # the process serving the stack (`local up`): `local reset` signals it
    started_at: float = 0.0  # when the stack (re)started, on the wall clock: a reset writes a later one

    def save(self, folder: Path = STATE_DIR) -> Path:
        folder.mkdir(exist_ok=True)
        path = folder / "endpoints.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, folder: Path = STATE_DIR) -> LocalEndpoints:
        path = folder / "endpoints.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: start the local stack with `feedbackloop local up`")
        return cls(**json.loads(path.read_text()))


def ingest_settings() -> IngestSettings:
    return IngestSettings(stream_name=physical_name(resources.EVENT_STREAM.key))


def cleaner_settings(**overrides) -> CleanerSettings:
    return CleanerSettings(
        curated_bucket=physical_name(resources.CURATED_BUCKET.key),
        quarantine_bucket=physical_name(resources.QUARANTINE_BUCKET.key),
        dedup_table=physical_name(resources.DEDUP_TABLE.key),
        state_table=physical_name(resources.STATE_TABLE.key),
        glue_database=resources.GLUE_DATABASE,
        online_table=physical_name(resources.ONLINE_TABLE.key),
        item_counters_table=physical_name(resources.ITEM_COUNTERS_TABLE.key),
        **overrides,
    )


def serving_settings(**overrides) -> ServingSettings:
    return ServingSettings(registry_table=physical_name(resources.REGISTRY_TABLE.key),
                           online_table=physical_name(resources.ONLINE_TABLE.key),
                           item_counters_table=physical_name(resources.ITEM_COUNTERS_TABLE.key),
                           erasure_table=physical_name(resources.ERASURE_TABLE.key), **overrides)


def eraser_settings() -> EraserSettings:
    return EraserSettings(erasure_table=physical_name(resources.ERASURE_TABLE.key),
                          curated_bucket=physical_name(resources.CURATED_BUCKET.key),
                          quarantine_bucket=physical_name(resources.QUARANTINE_BUCKET.key),
                          raw_bucket=physical_name(resources.RAW_BUCKET.key))


def retrain_settings(**overrides) -> RetrainSettings:
    return RetrainSettings(models_bucket=physical_name(resources.MODELS_BUCKET.key),
                           registry_table=physical_name(resources.REGISTRY_TABLE.key), **overrides)


def adjust_settings(config: LocalUiConfig, session: boto3.Session, **overrides) -> AdjustSettings:
    """engine local: DuckDB for Athena, the in-process retraining runner for Step Functions."""
    from feedbackloop.lake import CURATED_EVENTS, ENGAGEMENT, INTERACTIONS, USER_DAILY

    topic = session.client("sns").create_topic(Name=physical_name(resources.ALERTS_TOPIC.key))["TopicArn"]
    return AdjustSettings(
        engine="local", state_table=physical_name(resources.STATE_TABLE.key),
        decisions_table=physical_name(resources.DECISIONS_TABLE.key), glue_database=resources.GLUE_DATABASE,
        events_table=CURATED_EVENTS.name, interactions_table=INTERACTIONS.name, engagement_table=ENGAGEMENT.name,
        user_daily_table=USER_DAILY.name,
        appconfig_application_id=config.application_id, appconfig_environment_id=config.environment_id,
        appconfig_profile_id=config.profile_id, appconfig_strategy_id=config.rollout_strategy_id,
        alerts_topic_arn=topic, **overrides)


def replay_settings() -> ReplaySettings:
    return ReplaySettings(raw_bucket=physical_name(resources.RAW_BUCKET.key))


def aws_environment(endpoint: str) -> dict[str, str]:
    """Point boto3 and awswrangler at the local endpoint with throwaway credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_SESSION_TOKEN": "local",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": SERVICE,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


# the services awswrangler has an endpoint setting for (boto3 clients follow AWS_ENDPOINT_URL)
_WRANGLER_SERVICES = ("s3", "glue", "dynamodb", "sts")


def use_endpoint(endpoint: str) -> None:
    os.environ.update(aws_environment(endpoint))
    for service in _WRANGLER_SERVICES:
        setattr(wr.config, f"{service}_endpoint_url", endpoint)


# botocore's endpoint for one service (by service id), ahead of AWS_ENDPOINT_URL
APPCONFIG_ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_APPCONFIG"


def use_appconfig_endpoint(endpoint: str) -> None:
    """Send boto3 `appconfig` clients to the AppConfig stand-in (moto lacks deployments); release_endpoint
    puts the environment back."""
    os.environ[APPCONFIG_ENDPOINT_VARIABLE] = endpoint


def release_endpoint(environ: dict[str, str]) -> None:
    """Undo use_endpoint and the settings set beside it: put back the environment as it was."""
    os.environ.clear()
    os.environ.update(environ)
    for service in _WRANGLER_SERVICES:
        wr.config.reset(f"{service}_endpoint_url")


class MotoServer:
    """moto server on loopback, in a child process (see feedbackloop.local.moto_process)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 120) -> MotoServer:  # a loaded machine took 37 s to import moto
        self._process = subprocess.Popen(
            [sys.executable, "-m", "feedbackloop.local.moto_process", str(self.port)],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._process.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex((LOOPBACK, self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"moto server did not listen on {self.endpoint} within {timeout}s")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def create_resources(session: boto3.Session) -> None:
    """Create every resource of feedbackloop.resources, the same list the CDK constructs read."""
    stream = resources.EVENT_STREAM
    kinesis = session.client("kinesis")
    kinesis.create_stream(StreamName=physical_name(stream.key), ShardCount=stream.shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=physical_name(stream.key))
    s3 = session.client("s3")
    for bucket in resources.BUCKETS:
        s3.create_bucket(Bucket=physical_name(bucket.key))
    # versioned as in AWS (cdk/components/lake.py): the eraser deletes the versions its rewrites leave
    s3.put_bucket_versioning(Bucket=physical_name(resources.RAW_BUCKET.key),
                             VersioningConfiguration={"Status": "Enabled"})
    dynamodb = session.client("dynamodb")
    for table in resources.KEY_VALUE_TABLES:
        keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
        dynamodb.create_table(
            TableName=physical_name(table.key),
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=physical_name(table.key),
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
    sns = session.client("sns")
    for topic in resources.TOPICS:
        sns.create_topic(Name=physical_name(topic.key))
    sqs = session.client("sqs")
    for queue in resources.QUEUES:
        attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if queue.fifo else {}
        sqs.create_queue(QueueName=physical_name(queue.key) + queue.name_suffix, Attributes=attributes)
    glue = session.client("glue")
    glue.create_database(DatabaseInput={"Name": resources.GLUE_DATABASE})
    for table in resources.LAKE_TABLES:
        glue.create_table(DatabaseName=resources.GLUE_DATABASE, TableInput=glue_table_input(table))


def glue_table_input(table: LakeTable) -> dict:
    bucket = next(b for b in resources.BUCKETS if b.key == table.bucket_key)
    return {
        "Name": table.name,
        "Description": table.description,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
        "PartitionKeys": [{"Name": table.partition.name, "Type": table.partition.glue_type}],
        "StorageDescriptor": {
            "Columns": [{"Name": c.name, "Type": c.glue_type, "Comment": c.comment} for c in table.columns],
            "Location": f"s3://{physical_name(bucket.key)}/{table.prefix}",
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
        },
    }


def new_api_key() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class LocalUiConfig:
    """The UI configuration's AppConfig resources on the stand-in, by id (what AWS code is given)."""

    application_id: str
    environment_id: str
    profile_id: str
    rollout_strategy_id: str  # resources.UI_CONFIG_ROLLOUT: every change after the first
    first_strategy_id: str  # all at once, no bake: the first version has nothing to roll back to
    rollback_alarm_name: str
    first_deployment_number: int


def create_ui_config(session: boto3.Session) -> LocalUiConfig:
    """What the UiConfig construct creates, through boto3 (appconfig to the stand-in, CloudWatch to moto):
    the application, the environment watched by the rollback alarm, the profile with its JSON Schema
    validator, the two strategies, and the first document deployed."""
    alarm = resources.CONFIG_ROLLBACK_ALARM
    alarm_name = physical_name(alarm.key)
    cloudwatch = session.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName=alarm_name, AlarmDescription=alarm.purpose, Namespace=METRICS_NAMESPACE, MetricName=alarm.metric,
        Dimensions=[{"Name": "service", "Value": SERVICE}], Statistic=alarm.statistic, Period=alarm.period_seconds,
        EvaluationPeriods=alarm.evaluation_periods, Threshold=alarm.threshold, ComparisonOperator=alarm.comparison,
        TreatMissingData="notBreaching",
    )
    alarm_arn = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"][0]["AlarmArn"]
    spec, rollout = resources.UI_CONFIG, resources.UI_CONFIG_ROLLOUT
    appconfig = session.client("appconfig")
    application = appconfig.create_application(Name=spec.application)["Id"]
    environment = appconfig.create_environment(ApplicationId=application, Name=spec.environment,
                                               Monitors=[{"AlarmArn": alarm_arn}])["Id"]
    schema = config_text(uiconfig.SCHEMA_FILE)
    profile = appconfig.create_configuration_profile(
        ApplicationId=application, Name=spec.profile, LocationUri="hosted", Type="AWS.Freeform",
        Validators=[{"Type": "JSON_SCHEMA", "Content": schema}])["Id"]
    rollout_strategy = appconfig.create_deployment_strategy(
        Name=physical_name(f"{spec.profile}-rollout"), GrowthType=rollout.growth_type,
        GrowthFactor=rollout.growth_factor, DeploymentDurationInMinutes=rollout.duration_minutes,
        FinalBakeTimeInMinutes=rollout.bake_minutes, ReplicateTo="NONE")["Id"]
    first_strategy = appconfig.create_deployment_strategy(
        Name=physical_name(f"{spec.profile}-first"), GrowthType="LINEAR", GrowthFactor=100,
        DeploymentDurationInMinutes=0, FinalBakeTimeInMinutes=0, ReplicateTo="NONE")["Id"]
    version = appconfig.create_hosted_configuration_version(
        ApplicationId=application, ConfigurationProfileId=profile, ContentType="application/json",
        Content=json.dumps(uiconfig.default_document(), indent=2).encode(),
        Description=f"feedbackloop/config/{uiconfig.DEFAULT_FILE}")["VersionNumber"]
    deployment = appconfig.start_deployment(
        ApplicationId=application, EnvironmentId=environment, DeploymentStrategyId=first_strategy,
        ConfigurationProfileId=profile, ConfigurationVersion=str(version),
        Description=f"feedbackloop/config/{uiconfig.DEFAULT_FILE}")["DeploymentNumber"]
    return LocalUiConfig(application, environment, profile, rollout_strategy, first_strategy, alarm_name, deployment)


def config_text(name: str) -> str:
    """A file of the `feedbackloop.config` package, as it is (what the CDK construct gives AppConfig)."""
    return importlib.resources.files("feedbackloop.config").joinpath(name).read_text("utf-8")
