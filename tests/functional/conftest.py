"""An AWS account in moto, in-process, holding the resources the handlers use, built from the same
specs as the CDK stacks (feedbackloop.resources and feedbackloop.lake), and the handlers themselves."""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from feedbackloop.local.api import proxy_event
from feedbackloop.local.environment import cleaner_settings, create_resources, ingest_settings, serving_settings
from feedbackloop.local.stream import kinesis_event
from feedbackloop.names import METRICS_NAMESPACE, SERVICE
from feedbackloop.settings import CleanerSettings, IngestSettings

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass(frozen=True)
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Account:
    """The moto account and the names of what it holds."""

    session: boto3.Session
    ingest: IngestSettings
    cleaner: CleanerSettings

    @property
    def buckets(self) -> dict[str, str]:
        return {"curated": self.cleaner.curated_bucket, "quarantine": self.cleaner.quarantine_bucket}

    def stream_arn(self) -> str:
        kinesis = self.session.client("kinesis")
        return kinesis.describe_stream_summary(StreamName=self.ingest.stream_name)["StreamDescriptionSummary"][
            "StreamARN"]

    def kinesis_events(self) -> list[dict[str, Any]]:
        """What the event source mapping would hand the cleaner: one Lambda event per shard, built
        from the records really on the stream."""
        kinesis = self.session.client("kinesis")
        arn = self.stream_arn()
        events = []
        for shard in kinesis.list_shards(StreamName=self.ingest.stream_name)["Shards"]:
            iterator = kinesis.get_shard_iterator(StreamName=self.ingest.stream_name, ShardId=shard["ShardId"],
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            records = kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]
            if records:
                events.append(kinesis_event(records, shard["ShardId"], arn))
        return events


def api_gateway_event(body: str | bytes, *, base64_encoded: bool = False, method: str = "POST",
                      path: str = "/events") -> dict[str, Any]:
    """An API Gateway REST API (v1) proxy integration event, as the ingest function receives it in AWS."""
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Host": "abc123defg.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "feedbackloop-tests/1.0",
        "X-Amzn-Trace-Id": "Root=1-68482a40-0123456789abcdef01234567",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        "x-api-key": "test-api-key",
    }
    data = body.encode("utf-8") if isinstance(body, str) else body
    return proxy_event(method, path, headers, data, base64_encoded=base64_encoded, stage="prod",
                       source_ip="203.0.113.7", account_id=ACCOUNT, api_id="abc123defg")


@pytest.fixture
def account(monkeypatch) -> Iterator[Account]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KINESIS",
                 "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_GLUE"):
        monkeypatch.delenv(name, raising=False)
    ingest, cleaner = ingest_settings(), cleaner_settings()
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": SERVICE, "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING",
        **ingest.to_env(), **cleaner.to_env(),
        **serving_settings(model_refresh_seconds=0, item_counters_ttl_seconds=0).to_env(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        create_resources(session)  # what the stacks define, from the same specs
        yield Account(session, ingest, cleaner)


def _handler_module(name: str, cache: str):
    # imported only once the environment is set: Powertools reads it when the module is loaded
    module = importlib.import_module(name)
    getattr(module, cache).cache_clear()
    return module


@pytest.fixture
def ingest_handler(account):
    module = _handler_module("lambdas.ingest.handler", "_stream")
    yield lambda event: module.lambda_handler(event, LambdaContext("feedbackloop-ingest"))
    module._stream.cache_clear()


@pytest.fixture
def cleaner_handler(account):
    module = _handler_module("lambdas.cleaner.handler", "_cleaner")
    yield lambda event: module.lambda_handler(event, LambdaContext("feedbackloop-cleaner"))
    module._cleaner.cache_clear()


@pytest.fixture
def serving_handler(account):
    module = _handler_module("lambdas.serving.handler", "_models")
    module._online.cache_clear()
    module._item_counters.cache_clear()
    yield lambda event: module.lambda_handler(event, LambdaContext("feedbackloop-serving"))
    module._models.cache_clear()
    module._online.cache_clear()
    module._item_counters.cache_clear()


def post_events(ingest_handler, events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    response = ingest_handler(api_gateway_event(json.dumps({"events": events})))
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def post(ingest_handler):
    """POST /events through the ingest handler: (status code, decoded body)."""
    return lambda events: post_events(ingest_handler, events)


@pytest.fixture(scope="session")
def api_event():
    return api_gateway_event
