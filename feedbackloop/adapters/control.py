"""AWS adapters of the adjust function: Athena, CloudWatch, AppConfig, Step Functions, SNS and DynamoDB,
through boto3 only (the function ships no pandas or pyarrow; see `cdk/components/adjust.py`).

Every adapter takes a boto3 session, so the same code runs against AWS and against the local stand-in
(moto, and the AppConfig stand-in for the AppConfig control plane).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from feedbackloop.adjust.engine import (
    DeployedConfig,
    DeploymentInProgressError,
    RetrainingRunningError,
    StoredState,
)
from feedbackloop.adjust.rules import Observation
from feedbackloop.names import METRICS_NAMESPACE, SERVICE
from feedbackloop.uiconfig import InvalidConfigError

_ADJUST_STATE_KEY = "adjust"
_ADJUST_LEASE_KEY = "adjust#lease"
_IN_PROGRESS = ("DEPLOYING", "BAKING", "VALIDATING", "ROLLING_BACK")


class AthenaQueryRunner:
    """Runs a query in the workgroup (which enforces its result location, encryption and scan limit) and
    reads the rows back from GetQueryResults, typed by the result's column metadata."""

    def __init__(self, session: boto3.Session, database: str, workgroup: str, timeout_seconds: float = 120) -> None:
        self._athena = session.client("athena")
        self._database = database
        self._workgroup = workgroup
        self._timeout = timeout_seconds

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        query_id = self._athena.start_query_execution(
            QueryString=sql, QueryExecutionContext={"Database": self._database}, WorkGroup=self._workgroup,
        )["QueryExecutionId"]
        deadline, pause = time.monotonic() + self._timeout, 0.2
        while True:
            status = self._athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
            if status["State"] == "SUCCEEDED":
                break
            if status["State"] in ("FAILED", "CANCELLED"):
                raise RuntimeError(f"Athena query {query_id} {status['State']}: "
                                   f"{status.get('StateChangeReason', '')}")
            if time.monotonic() > deadline:
                self._athena.stop_query_execution(QueryExecutionId=query_id)
                raise TimeoutError(f"Athena query {query_id} took over {self._timeout} s")
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)
        rows: list[tuple[Any, ...]] = []
        types: list[str] = []
        for page in self._athena.get_paginator("get_query_results").paginate(QueryExecutionId=query_id):
            result = page["ResultSet"]
            if not types:
                types = [c["Type"] for c in result["ResultSetMetadata"]["ColumnInfo"]]
                data = result["Rows"][1:]  # the first page starts with the header row
            else:
                data = result["Rows"]
            rows.extend(tuple(_typed(cell.get("VarCharValue"), kind) for cell, kind in zip(r["Data"], types,
                                                                                              strict=True))
                        for r in data)
        return rows


def _typed(value: str | None, kind: str) -> Any:
    if value is None:
        return None
    if kind in ("bigint", "integer", "smallint", "tinyint"):
        return int(value)
    if kind in ("double", "float", "real", "decimal"):
        return float(value)
    if kind == "boolean":
        return value == "true"
    if kind.startswith("timestamp"):
        return datetime.fromisoformat(value.replace(" UTC", "")).replace(tzinfo=UTC)
    return value


class CloudWatchMetricReader:
    """A metric of the project's namespace (the `service` dimension the handlers emit with) over a window:
    the statistic's value, and its sample count as the evidence."""

    def __init__(self, session: boto3.Session) -> None:
        self._cloudwatch = session.client("cloudwatch")

    def observe(self, metric: str, statistic: str, start: datetime, end: datetime) -> Observation:
        period = max(60, int((end - start).total_seconds()) // 60 * 60)
        response = self._cloudwatch.get_metric_statistics(
            Namespace=METRICS_NAMESPACE, MetricName=metric, Dimensions=[{"Name": "service", "Value": SERVICE}],
            StartTime=start, EndTime=end, Period=period, Statistics=[statistic, "SampleCount"],
        )
        points = response["Datapoints"]
        if not points:
            return Observation(0.0 if statistic == "Sum" else None, 0)
        samples = int(sum(p["SampleCount"] for p in points))
        values = [p[statistic] for p in points]
        value = {"Sum": sum, "Maximum": max, "Minimum": min}.get(statistic)
        if value is not None:
            return Observation(float(value(values)), samples)
        total = sum(p["Average"] * p["SampleCount"] for p in points)
        return Observation(total / samples if samples else None, samples)


class AppConfigPublisher:
    """The UI configuration's control plane: the deployed version, and a new hosted version deployed with
    the environment's strategy. AppConfig refuses a version its validator refuses (BadRequest) and a
    second deployment while one runs (Conflict); both surface as the engine's errors."""

    def __init__(self, session: boto3.Session, application_id: str, environment_id: str, profile_id: str,
                 strategy_id: str) -> None:
        self._appconfig = session.client("appconfig")
        self._application, self._environment = application_id, environment_id
        self._profile, self._strategy = profile_id, strategy_id

    def _deployments(self) -> list[dict[str, Any]]:
        items = self._appconfig.list_deployments(ApplicationId=self._application,
                                                 EnvironmentId=self._environment)["Items"]
        return sorted(items, key=lambda d: d["DeploymentNumber"], reverse=True)

    def current(self) -> DeployedConfig:
        deployments = self._deployments()
        running = [d for d in deployments if d["State"] in _IN_PROGRESS]
        if running:
            raise DeploymentInProgressError(f"deployment {running[0]['DeploymentNumber']} is {running[0]['State']}")
        for summary in deployments:
            if summary["State"] != "COMPLETE":
                continue
            deployment = self._appconfig.get_deployment(ApplicationId=self._application,
                                                        EnvironmentId=self._environment,
                                                        DeploymentNumber=summary["DeploymentNumber"])
            if deployment["ConfigurationProfileId"] != self._profile:
                continue
            version = deployment["ConfigurationVersion"]
            hosted = self._appconfig.get_hosted_configuration_version(
                ApplicationId=self._application, ConfigurationProfileId=self._profile, VersionNumber=int(version))
            return DeployedConfig(json.loads(hosted["Content"].read()), version, summary["DeploymentNumber"])
        raise DeploymentInProgressError("no deployment of the profile has completed yet")

    def publish(self, document: dict[str, Any], based_on: str, description: str) -> DeployedConfig:
        try:
            version = self._appconfig.create_hosted_configuration_version(
                ApplicationId=self._application, ConfigurationProfileId=self._profile,
                Content=json.dumps(document, indent=2).encode(), ContentType="application/json",
                Description=description[:1024],
            )["VersionNumber"]
            deployment = self._appconfig.start_deployment(
                ApplicationId=self._application, EnvironmentId=self._environment,
                DeploymentStrategyId=self._strategy, ConfigurationProfileId=self._profile,
                ConfigurationVersion=str(version), Description=description[:1024],
            )
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code == "ConflictException":
                raise DeploymentInProgressError(error.response["Error"].get("Message", code)) from None
            if code == "BadRequestException":
                raise InvalidConfigError(error.response["Error"].get("Message", code)) from None
            raise
        return DeployedConfig(document, str(version), deployment["DeploymentNumber"])


class StepFunctionsRetraining:
    """Starts the retraining state machine, unless an execution is already running."""

    def __init__(self, session: boto3.Session, state_machine_arn: str) -> None:
        self._sfn = session.client("stepfunctions")
        self._arn = state_machine_arn

    def start(self, reason: str, now: datetime) -> str:
        running = self._sfn.list_executions(stateMachineArn=self._arn, statusFilter="RUNNING",
                                            maxResults=1)["executions"]
        if running:
            raise RetrainingRunningError(running[0]["executionArn"])
        name = f"adjust-{now:%Y%m%dT%H%M%S}"  # one start per run: a retried invocation reuses the name
        try:
            return self._sfn.start_execution(stateMachineArn=self._arn, name=name,
                                             input=json.dumps({"reason": reason[:1000]}))["executionArn"]
        except ClientError as error:
            if error.response["Error"]["Code"] == "ExecutionAlreadyExists":
                raise RetrainingRunningError(name) from None
            raise


class SnsAlerter:
    def __init__(self, session: boto3.Session, topic_arn: str) -> None:
        self._sns = session.client("sns")
        self._topic = topic_arn

    def send(self, subject: str, message: str) -> None:
        self._sns.publish(TopicArn=self._topic, Subject=subject[:100], Message=message)


class DynamoAdjustState:
    """Rule states, drift watermarks and the pickled detectors: one item of the state table, saved
    conditionally on the version it was loaded at (a second run at the same time fails rather than
    overwriting; runs take `DynamoRunLease` first anyway)."""

    def __init__(self, session: boto3.Session, table_name: str) -> None:
        self._table = session.resource("dynamodb").Table(table_name)

    def load(self) -> StoredState:
        item = self._table.get_item(Key={"key": _ADJUST_STATE_KEY}, ConsistentRead=True).get("Item")
        if not item:
            return StoredState({}, {}, None, 0)
        detectors = item.get("detectors")
        return StoredState(json.loads(item["rules"]), json.loads(item["drift"]),
                           None if detectors is None else bytes(detectors), int(item["version"]))

    def save(self, state: StoredState) -> None:
        version = int(state.token or 0)
        try:
            self._table.put_item(
                Item={"key": _ADJUST_STATE_KEY, "rules": json.dumps(state.rules), "drift": json.dumps(state.drift),
                      "detectors": state.detectors or b"", "version": Decimal(version + 1)},
                ConditionExpression="attribute_not_exists(#k) OR version = :v",
                ExpressionAttributeNames={"#k": "key"}, ExpressionAttributeValues={":v": Decimal(version)},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise RuntimeError("another adjust run saved its state first; this run's decisions stand, "
                                   "its state changes are dropped") from None
            raise


class DynamoRunLease:
    """The adjust run lease: one item of the state table, taken with a conditional PutItem (free, expired,
    or already ours) and given back the same way (expiry set to 0 while we still hold it). PutItem only:
    the function may not delete items of the cleaner's state table."""

    def __init__(self, session: boto3.Session, table_name: str) -> None:
        self._table = session.resource("dynamodb").Table(table_name)

    def acquire(self, holder: str, now: datetime, expires: datetime) -> bool:
        try:
            self._table.put_item(
                Item={"key": _ADJUST_LEASE_KEY, "holder": holder, "expires": Decimal(int(expires.timestamp())),
                      "taken_at": now.isoformat()},
                ConditionExpression="attribute_not_exists(#k) OR expires < :now OR holder = :me",
                ExpressionAttributeNames={"#k": "key"},
                ExpressionAttributeValues={":now": Decimal(int(now.timestamp())), ":me": holder},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release(self, holder: str) -> None:
        try:
            self._table.put_item(
                Item={"key": _ADJUST_LEASE_KEY, "holder": holder, "expires": Decimal(0)},
                ConditionExpression="holder = :me", ExpressionAttributeValues={":me": holder},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise


class DynamoDecisionLog:
    """Every decision and drift event, by subject (rule#<name>, drift#<stream>) and time."""

    def __init__(self, session: boto3.Session, table_name: str, ttl_days: int) -> None:
        self._table = session.resource("dynamodb").Table(table_name)
        self._ttl = timedelta(days=ttl_days)

    def write(self, records: list[dict[str, Any]]) -> None:
        expires = int((datetime.now(UTC) + self._ttl).timestamp())
        with self._table.batch_writer(overwrite_by_pkeys=["subject", "at"]) as batch:
            for record in records:
                batch.put_item(Item=_dynamo(record) | {"expires_at": expires})

    def query(self, subject: str, since: datetime | None = None) -> list[dict[str, Any]]:
        condition = Key("subject").eq(subject)
        if since is not None:
            condition = condition & Key("at").gte(since.isoformat())
        items, kwargs = [], {"KeyConditionExpression": condition}
        while True:
            page = self._table.query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return [_plain(i) for i in items]
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def subjects(self) -> list[str]:
        found: set[str] = set()
        kwargs: dict[str, Any] = {"ProjectionExpression": "subject"}
        while True:
            page = self._table.scan(**kwargs)
            found.update(i["subject"] for i in page["Items"])
            if "LastEvaluatedKey" not in page:
                return sorted(found)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _dynamo(record: dict[str, Any]) -> dict[str, Any]:
    return {k: Decimal(str(v)) if isinstance(v, float) else v for k, v in record.items() if v is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: (int(v) if v == v.to_integral_value() else float(v)) if isinstance(v, Decimal) else v
            for k, v in item.items()}
