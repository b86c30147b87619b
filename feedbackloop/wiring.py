"""The one place that picks adapters and reads the environment.

Handlers call these factories; the domain never builds its own clients. Pointing at the local
stand-in is a matter of `AWS_ENDPOINT_URL`, which boto3 and awswrangler both honour.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3

from feedbackloop.adapters.aws import (
    DynamoDedupStore,
    DynamoErasureLog,
    DynamoItemCounterStore,
    DynamoModelRegistry,
    DynamoOnlineStore,
    DynamoStateStore,
    KinesisStream,
    S3Artifacts,
    S3Lake,
    S3NoncurrentVersions,
    SqsErasureQueue,
)
from feedbackloop.resources import CURATED_BUCKET, DEDUP_TTL_DAYS, QUARANTINE_BUCKET
from feedbackloop.settings import (
    CleanerSettings,
    EraserSettings,
    IngestSettings,
    RetrainSettings,
    ServingSettings,
)

# What only the cleaner and the eraser run (pyarrow: their arrow layer) is imported where
# they are built, so the functions without that layer (serving, ingest) import this module too.
if TYPE_CHECKING:
    from pyarrow import fs

    from feedbackloop.cleaning.clean import CleaningRules
    from feedbackloop.cleaning.service import CleanerService


def utc_now() -> datetime:
    return datetime.now(UTC)


def session() -> boto3.Session:
    return boto3.Session()


def event_stream(environ: Mapping[str, str] = os.environ) -> KinesisStream:
    settings = IngestSettings.from_env(environ)
    return KinesisStream(session(), settings.stream_name)


def cleaning_rules(settings: CleanerSettings) -> CleaningRules:
    from feedbackloop.cleaning.clean import CleaningRules

    return CleaningRules(
        max_event_age=timedelta(days=settings.max_event_age_days),
        max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds),
        min_samples=settings.min_samples,
        zscore_threshold=settings.zscore_threshold,
        iqr_k=settings.iqr_k,
    )


def cleaner_service(environ: Mapping[str, str] = os.environ) -> CleanerService:
    from feedbackloop.cleaning.service import CleanerService

    settings = CleanerSettings.from_env(environ)
    aws = session()
    return CleanerService(
        dedup=DynamoDedupStore(aws, settings.dedup_table, DEDUP_TTL_DAYS),
        state=DynamoStateStore(aws, settings.state_table),
        lake=S3Lake(
            aws,
            {CURATED_BUCKET.key: settings.curated_bucket, QUARANTINE_BUCKET.key: settings.quarantine_bucket},
            settings.glue_database,
        ),
        rules=cleaning_rules(settings),
        clock=utc_now,
        online=DynamoOnlineStore(aws, settings.online_table) if settings.online_table else None,
        write_threads=settings.write_threads,
        item_counters=DynamoItemCounterStore(aws, settings.item_counters_table) if settings.item_counters_table
        else None,
    )


def retrain_settings(environ: Mapping[str, str] = os.environ) -> RetrainSettings:
    return RetrainSettings.from_env(environ)


def model_registry(environ: Mapping[str, str] = os.environ) -> DynamoModelRegistry:
    return DynamoModelRegistry(session(), retrain_settings(environ).registry_table)


def artifacts() -> S3Artifacts:
    return S3Artifacts(session())


def serving_settings(environ: Mapping[str, str] = os.environ) -> ServingSettings:
    return ServingSettings.from_env(environ)


def model_registry_for(table_name: str) -> DynamoModelRegistry:
    return DynamoModelRegistry(session(), table_name)


def online_store(table_name: str) -> DynamoOnlineStore:
    return DynamoOnlineStore(session(), table_name)


def item_counter_store(table_name: str) -> DynamoItemCounterStore:
    return DynamoItemCounterStore(session(), table_name)


def erasure_log(table_name: str) -> DynamoErasureLog:
    return DynamoErasureLog(session(), table_name)


def noncurrent_versions() -> S3NoncurrentVersions:
    return S3NoncurrentVersions(session())


def erasure_queue(queue_url: str) -> SqsErasureQueue:
    return SqsErasureQueue(session(), queue_url)


def eraser_settings(environ: Mapping[str, str] = os.environ) -> EraserSettings:
    return EraserSettings.from_env(environ)


def lake_filesystem(environ: Mapping[str, str] = os.environ) -> fs.S3FileSystem:
    """pyarrow's S3 client with the function's credentials (and the local endpoint when one is set)."""
    from pyarrow import fs

    endpoint = environ.get("AWS_ENDPOINT_URL")
    if endpoint is None:
        return fs.S3FileSystem(region=environ.get("AWS_REGION"))
    url = urlsplit(endpoint)
    return fs.S3FileSystem(endpoint_override=url.netloc, scheme=url.scheme, region=environ.get("AWS_REGION"),
                           access_key=environ.get("AWS_ACCESS_KEY_ID"), secret_key=environ.get("AWS_SECRET_ACCESS_KEY"),
                           session_token=environ.get("AWS_SESSION_TOKEN"))
