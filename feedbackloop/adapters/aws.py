"""AWS adapters: Kinesis, DynamoDB, S3 and the Glue catalog through boto3.

Every adapter takes a boto3 session, so the same code talks to AWS or to the local endpoint
(`AWS_ENDPOINT_URL`, set in one place: feedbackloop.wiring).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from feedbackloop.cleaning.stats import CleanerState
from feedbackloop.item_counters import ItemCounts, counts_at, stale_fields, writable
from feedbackloop.item_counts import ITEM_COUNT_CHUNK, ITEM_COUNT_PREFIX, item_count_key, item_count_keys
from feedbackloop.online import UserProfile
from feedbackloop.registry import CURRENT_KEY, StaleRegistryError
from feedbackloop.resources import ERASURE_MESSAGE_GROUP, ITEM_COUNTERS_TTL_DAYS, ONLINE_TTL_DAYS

if TYPE_CHECKING:  # the lake's adapter only: functions without pyarrow (serving, ingest) use the others
    import pyarrow as pa

    from feedbackloop.lake import LakeTable

_BATCH_GET = 100  # DynamoDB BatchGetItem limit
_STATE_KEY = "cleaner-stats"
_STATE_ATTEMPTS = 8


class KinesisStream:
    def __init__(self, session: boto3.Session, stream_name: str) -> None:
        self._client = session.client("kinesis")
        self._stream = stream_name

    def put_records(self, records: list[tuple[str, bytes]]) -> list[str | None]:
        try:
            response = self._client.put_records(
                StreamName=self._stream,
                Records=[{"PartitionKey": key, "Data": data} for key, data in records],
            )
        except ClientError as error:
            code = error.response["Error"]["Code"]
            return [code] * len(records)
        return [r.get("ErrorCode") for r in response["Records"]]


class DynamoDedupStore:
    def __init__(self, session: boto3.Session, table_name: str, ttl_days: int) -> None:
        self._client = session.client("dynamodb")
        self._table = session.resource("dynamodb").Table(table_name)
        self._name = table_name
        self._ttl_seconds = ttl_days * 86400

    def lookup(self, event_ids: Iterable[str]) -> dict[str, str]:
        ids = list(event_ids)
        found: dict[str, str] = {}
        for start in range(0, len(ids), _BATCH_GET):
            request = {self._name: {"Keys": [{"event_id": {"S": i}} for i in ids[start:start + _BATCH_GET]],
                                    "ProjectionExpression": "event_id, object_key"}}
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self._name, []):
                    found[item["event_id"]["S"]] = item["object_key"]["S"]
                request = response.get("UnprocessedKeys") or None
        return found

    def remember(self, keys: Mapping[str, str]) -> None:
        expires = int(time.time()) + self._ttl_seconds
        with self._table.batch_writer(overwrite_by_pkeys=["event_id"]) as batch:
            for event_id, object_key in keys.items():
                batch.put_item(Item={"event_id": event_id, "object_key": object_key, "expires_at": expires})


class DynamoStateStore:
    """The cleaner's statistics as one JSON document with optimistic concurrency."""

    def __init__(self, session: boto3.Session, table_name: str) -> None:
        self._table = session.resource("dynamodb").Table(table_name)

    def _get(self) -> tuple[CleanerState, int]:
        item = self._table.get_item(Key={"key": _STATE_KEY}, ConsistentRead=True).get("Item")
        if not item:
            return CleanerState(), 0
        return CleanerState.from_json(json.loads(item["doc"])), int(item["version"])

    def load(self) -> CleanerState:
        return self._get()[0]

    def merge(self, learned: CleanerState) -> None:
        for _ in range(_STATE_ATTEMPTS):
            state, version = self._get()
            merged = state.merge(learned)
            try:
                self._table.put_item(
                    Item={"key": _STATE_KEY, "doc": json.dumps(merged.to_json()), "version": Decimal(version + 1)},
                    ConditionExpression="attribute_not_exists(#k) OR version = :v",
                    ExpressionAttributeNames={"#k": "key"},
                    ExpressionAttributeValues={":v": Decimal(version)},
                )
                return
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        raise RuntimeError(f"state merge lost {_STATE_ATTEMPTS} races in a row")


class LakeCatalogError(RuntimeError):
    """The Glue catalog refused to register a partition (other than because it exists)."""


def parquet_partition_input(location: str, value: str) -> dict[str, Any]:
    """A Glue PartitionInput for a partition of snappy Parquet objects at `location`: the definition the
    table's own storage descriptor has (Hive's Parquet SerDe), as awswrangler's add_parquet_partitions
    writes it, so Athena and the table jobs read a partition the same whoever registered it."""
    return {
        "StorageDescriptor": {
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "Location": location,
            "Compressed": True,
            "SerdeInfo": {
                "Parameters": {"serialization.format": "1"},
                "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
            },
            "StoredAsSubDirectories": False,
            "NumberOfBuckets": -1,
            "BucketColumns": [],
        },
        "Values": [value],
        "Parameters": {},
    }


class S3Lake:
    """Parquet objects on S3, one per batch and partition, registered in the Glue catalog. Safe to call
    from several threads: the client is built once (a session is not thread-safe, its clients are)."""

    def __init__(self, session: boto3.Session, buckets: Mapping[str, str], database: str) -> None:
        self._buckets = buckets  # BucketSpec.key -> bucket name
        self._database = database
        self._s3 = session.client("s3")
        self._glue = session.client("glue")
        self._registered: set[tuple[str, str]] = set()
        self._registering = threading.Lock()  # partitions are few: registering them one at a time is enough

    def _url(self, table: LakeTable, key: str) -> str:
        return f"s3://{self._buckets[table.bucket_key]}/{key}"

    def write(self, table: LakeTable, partition: str, name: str, rows: pa.Table) -> str:
        """Register the partition first, then upload: a crash between the two leaves an empty registered
        partition (harmless), never stored rows that Athena cannot see (a redelivery finds them as
        duplicates and writes nothing more)."""
        key = table.partition_prefix(partition) + name
        with self._registering:
            if (table.name, partition) not in self._registered:
                location = self._url(table, table.partition_prefix(partition))
                response = self._glue.batch_create_partition(
                    DatabaseName=self._database, TableName=table.name,
                    PartitionInputList=[parquet_partition_input(location, partition)],
                )
                # an existing partition is fine; anything else is not
                errors = [e for e in response.get("Errors", [])
                          if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"]
                if errors:
                    raise LakeCatalogError(f"{self._database}.{table.name}: partition {partition} not registered: "
                                           f"{errors}")
                self._registered.add((table.name, partition))
        # one PUT: a batch's object is a few MB at most, far below where a multipart upload pays
        self._s3.put_object(Bucket=self._buckets[table.bucket_key], Key=key, Body=table.parquet(rows))
        return table.object_key(partition, name)

    def exists(self, key: str) -> bool:
        bucket_key, _, object_key = key.partition("/")
        try:
            self._s3.head_object(Bucket=self._buckets[bucket_key], Key=object_key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


class DynamoModelRegistry:
    """The published model as a DynamoDB pointer: `current` names the version serving reads; one
    record per version keeps the history. Moving the pointer is conditional on what it pointed at."""

    def __init__(self, session: boto3.Session, table_name: str) -> None:
        self._client = session.client("dynamodb")
        self._table = session.resource("dynamodb").Table(table_name)
        self._name = table_name

    def current(self) -> dict[str, Any] | None:
        item = self._table.get_item(Key={"key": CURRENT_KEY}, ConsistentRead=True).get("Item")
        return None if item is None else {k: _plain(v) for k, v in item.items() if k != "key"}

    def publish(self, record: dict[str, Any], replaces: str | None) -> None:
        from boto3.dynamodb.types import TypeSerializer

        serialize = TypeSerializer().serialize
        values = {k: Decimal(str(v)) if isinstance(v, float) else v for k, v in record.items() if v is not None}
        condition = ({"ConditionExpression": "attribute_not_exists(#k)", "ExpressionAttributeNames": {"#k": "key"}}
                     if replaces is None else
                     {"ConditionExpression": "version = :replaces",
                      "ExpressionAttributeValues": {":replaces": serialize(replaces)}})
        def item(key: str) -> dict[str, Any]:
            return {k: serialize(v) for k, v in ({"key": key} | values).items()}

        try:
            self._client.transact_write_items(TransactItems=[
                {"Put": {"TableName": self._name, "Item": item(f"version#{record['version']}")}},
                {"Put": {"TableName": self._name, "Item": item(CURRENT_KEY), **condition}},
            ])
        except ClientError as error:
            if error.response["Error"]["Code"] == "TransactionCanceledException":
                raise StaleRegistryError(f"the current model is no longer {replaces!r}") from error
            raise


class S3Artifacts:
    def __init__(self, session: boto3.Session) -> None:
        self._s3 = session.client("s3")

    @staticmethod
    def _split(url: str) -> tuple[str, str]:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        return bucket, key

    def read(self, url: str) -> bytes:
        bucket, key = self._split(url)
        return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def copy(self, source_url: str, target_url: str) -> None:
        bucket, key = self._split(source_url)
        target_bucket, target_key = self._split(target_url)
        self._s3.copy({"Bucket": bucket, "Key": key}, target_bucket, target_key)


_SAVE_THREADS = 8


class DynamoOnlineStore:
    """One item per user: the profile document (JSON), its version, and `personalization`."""

    def __init__(self, session: boto3.Session, table_name: str, ttl_days: int = ONLINE_TTL_DAYS) -> None:
        self._client = session.client("dynamodb")
        self._resource = session.resource("dynamodb")
        self._table = self._resource.Table(table_name)
        self._name = table_name
        self._ttl = ttl_days * 86400

    def load(self, user_ids: Iterable[str]) -> dict[str, UserProfile]:
        wanted = list(dict.fromkeys(user_ids))
        found: dict[str, dict] = {}
        for start in range(0, len(wanted), 100):
            request = {self._name: {"Keys": [{"user_id": u} for u in wanted[start:start + 100]],
                                    "ConsistentRead": True}}
            while request:
                response = self._resource.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self._name, []):
                    found[item["user_id"]] = item
                request = response.get("UnprocessedKeys") or None
        return {u: self._profile(u, found.get(u)) for u in wanted}

    @staticmethod
    def _profile(user_id: str, item: dict | None) -> UserProfile:
        if item is None:
            return UserProfile(user_id)
        document = json.loads(item["doc"]) if "doc" in item else None
        erased_at = item.get("erased_at")
        return UserProfile.from_document(user_id, document, bool(item.get("personalization", True)),
                                         int(item.get("version", 0)), None if erased_at is None else float(erased_at))

    def save(self, profiles: Iterable[UserProfile]) -> list[str]:
        """Conditional writes, several at a time (each is one round trip; a batch touches hundreds)."""
        profiles = list(profiles)
        with ThreadPoolExecutor(max_workers=min(_SAVE_THREADS, max(1, len(profiles)))) as pool:
            saved = list(pool.map(self._save_one, profiles))
        return [p.user_id for p, ok in zip(profiles, saved, strict=True) if not ok]

    def _save_one(self, profile: UserProfile) -> bool:
        try:  # the low-level client: boto3 clients are thread-safe, resources are not
            self._client.update_item(
                TableName=self._name,
                Key={"user_id": {"S": profile.user_id}},
                UpdateExpression="SET doc = :doc, version = :next, expires_at = :expires",
                ConditionExpression="attribute_not_exists(version) OR version = :version",
                ExpressionAttributeValues={
                    ":doc": {"S": json.dumps(profile.to_document(), separators=(",", ":"))},
                    ":next": {"N": str(profile.version + 1)}, ":version": {"N": str(profile.version)},
                    ":expires": {"N": str(int(profile.updated_at) + self._ttl)}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False
        profile.version += 1
        return True

    def set_personalization(self, user_id: str, enabled: bool) -> None:
        # the version moves too, so a cleaner that read the old preference retries and sees the new one
        self._table.update_item(
            Key={"user_id": user_id},
            UpdateExpression="SET personalization = :enabled ADD version :one",
            ExpressionAttributeValues={":enabled": enabled, ":one": 1})

    def delete(self, user_id: str) -> None:
        self._table.delete_item(Key={"user_id": user_id})

    def tombstone(self, user_id: str, erased_at: float) -> None:
        """What an erasure leaves: personalization off and when it was requested, so the cleaner keeps the
        user's earlier events still on the stream out (ADR 0013). The version moves, as a preference's does."""
        self._table.update_item(
            Key={"user_id": user_id},
            UpdateExpression="SET personalization = :off, erased_at = :at ADD version :one",
            ExpressionAttributeValues={":off": False, ":at": Decimal(repr(erased_at)), ":one": 1})

    def add_item_counts(self, counts: Mapping[str, int]) -> None:
        """ADD to one numeric attribute per item in ITEM_COUNT_SHARDS items (keys no user id can take; each
        stays far below 400 KB), ITEM_COUNT_CHUNK items an update (an expression is at most 4 KB)."""
        by_shard: dict[str, list[tuple[str, int]]] = {}
        for item, count in counts.items():
            by_shard.setdefault(item_count_key(item), []).append((item, int(count)))
        for key, pairs in by_shard.items():
            for start in range(0, len(pairs), ITEM_COUNT_CHUNK):
                chunk = pairs[start:start + ITEM_COUNT_CHUNK]
                self._client.update_item(
                    TableName=self._name, Key={"user_id": {"S": key}},
                    UpdateExpression="ADD " + ", ".join(f"#i{n} :n{n}" for n in range(len(chunk))),
                    ExpressionAttributeNames={f"#i{n}": f"{ITEM_COUNT_PREFIX}{item}"
                                              for n, (item, _) in enumerate(chunk)},
                    ExpressionAttributeValues={f":n{n}": {"N": str(c)} for n, (_, c) in enumerate(chunk)})

    def item_counts(self) -> dict[str, int]:
        keys = [{"user_id": key} for key in item_count_keys()]
        counts: dict[str, int] = {}
        request = {self._name: {"Keys": keys, "ConsistentRead": False}}
        while request:
            response = self._resource.batch_get_item(RequestItems=request)
            for found in response["Responses"].get(self._name, []):
                counts.update({k[len(ITEM_COUNT_PREFIX):]: int(v) for k, v in found.items()
                               if k.startswith(ITEM_COUNT_PREFIX)})
            request = response.get("UnprocessedKeys") or None
        return counts


class DynamoItemCounterStore:
    """One item per catalogue item (key `item_id`): forward-decayed counter fields, `<counter>@<landmark>`
    (feedbackloop.item_counters), only ever ADDed to, so shards writing the same item never race."""

    def __init__(self, session: boto3.Session, table_name: str, ttl_days: int = ITEM_COUNTERS_TTL_DAYS) -> None:
        self._client = session.client("dynamodb")
        self._name = table_name
        self._ttl = ttl_days * 86400

    def add(self, additions: Mapping[str, Mapping[str, float]], now: float) -> None:
        items = list(writable(additions, now).items())
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(_SAVE_THREADS, len(items))) as pool:
            list(pool.map(lambda entry: self._add_one(*entry, now), items))

    def _add_one(self, item_id: str, fields: Mapping[str, float], now: float) -> None:
        names = {f"#a{j}": name for j, name in enumerate(fields)}
        stale = {f"#r{j}": name for j, name in enumerate(stale_fields(now))}
        values = {f":a{j}": {"N": repr(float(value))} for j, value in enumerate(fields.values())}
        self._client.update_item(
            TableName=self._name,
            Key={"item_id": {"S": item_id}},
            UpdateExpression="ADD " + ", ".join(f"{n} :{n[1:]}" for n in names)
                             + " SET expires_at = :expires REMOVE " + ", ".join(stale),
            ExpressionAttributeNames=names | stale,
            ExpressionAttributeValues=values | {":expires": {"N": str(int(now) + self._ttl)}},
        )

    def load(self, item_ids: Iterable[str], now: float) -> dict[str, ItemCounts]:
        wanted = list(dict.fromkeys(item_ids))
        found: dict[str, ItemCounts] = {}
        for start in range(0, len(wanted), 100):
            request = {self._name: {"Keys": [{"item_id": {"S": i}} for i in wanted[start:start + 100]]}}
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self._name, []):
                    fields = {k: float(v["N"]) for k, v in item.items() if "@" in k and "N" in v}
                    found[item["item_id"]["S"]] = counts_at(fields, now)
                request = response.get("UnprocessedKeys") or None
        return found


class DynamoErasureLog:
    def __init__(self, session: boto3.Session, table_name: str) -> None:
        self._table = session.resource("dynamodb").Table(table_name)

    def get(self, user_id: str) -> dict[str, Any] | None:
        item = self._table.get_item(Key={"user_id": user_id}, ConsistentRead=True).get("Item")
        return None if item is None else {k: json.loads(v) if k == "steps" else v for k, v in item.items()}

    def put(self, record: dict[str, Any]) -> None:
        self._table.put_item(Item={k: json.dumps(v, default=str) if k == "steps" else v for k, v in record.items()})


class S3NoncurrentVersions:
    """Deletes the noncurrent versions of one object of a versioned bucket (the eraser, after rewriting a
    raw archive object: the overwritten versions still hold the erased user). Never the current version."""

    def __init__(self, session: boto3.Session) -> None:
        self._s3 = session.client("s3")

    def purge(self, path: str) -> int:
        bucket, _, key = path.partition("/")
        removed = 0
        for page in self._s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if version["Key"] == key and not version["IsLatest"]:
                    self._s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
                    removed += 1
        return removed


class SqsErasureQueue:
    def __init__(self, session: boto3.Session, queue_url: str) -> None:
        self._sqs = session.client("sqs")
        self._url = queue_url

    def send(self, user_id: str, requested_at: str) -> None:
        # one group: erasures run one after another; a repeated request within SQS's dedup window is one
        self._sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps({"user_id": user_id}),
                               MessageGroupId=ERASURE_MESSAGE_GROUP,
                               MessageDeduplicationId=hashlib.sha256(f"{user_id}|{requested_at}".encode()).hexdigest())
