"""Stream consumers of the local runtime: the event source mapping that invokes the cleaner, and
the archiver that stands in for Firehose. Both read the moto Kinesis stream with GetRecords."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3

from feedbackloop.local.environment import REGION
from feedbackloop.resources import RAW_PREFIX, RAW_SUFFIX


@dataclass(frozen=True)
class MappingConfig:
    """The event source mapping's settings (the CDK construct sets the same in AWS)."""

    batch_size: int = 1000
    # Lambda invokes when the batch is full or the window has passed since its first record
    max_batching_window: float = 1.0
    max_retries: int = 3
    bisect_on_error: bool = True
    poll_interval: float = 0.05
    # an idle shard is polled less and less often, down to Lambda's base rate of once a second; a
    # `wake()` (a put on the stream through the local API) polls it at once
    max_idle_interval: float = 1.0


def kinesis_event(records: list[dict], shard_id: str, stream_arn: str) -> dict:
    """A Lambda Kinesis event from GetRecords output."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["PartitionKey"],
                    "sequenceNumber": r["SequenceNumber"],
                    "data": base64.b64encode(r["Data"]).decode("ascii"),
                    "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{r['SequenceNumber']}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::000000000000:role/{shard_id}",
                "awsRegion": REGION,
                "eventSourceARN": stream_arn,
            }
            for r in records
        ]
    }


class _ShardReader(threading.Thread, ABC):
    def __init__(self, session: boto3.Session, stream_name: str, shard_id: str, name: str, limit: int,
                 poll_interval: float, max_idle_interval: float) -> None:
        super().__init__(name=f"{name}-{shard_id}", daemon=True)
        self._kinesis = session.client("kinesis")
        self.stream_name = stream_name
        self.shard_id = shard_id
        self._limit = limit
        self._poll = poll_interval
        self._max_idle = max(max_idle_interval, poll_interval)
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self.records_seen = 0
        self.errors: list[str] = []

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()

    def wake(self) -> None:
        """Poll now: records were just put on the stream (an idle shard is otherwise polled once a second)."""
        self._woken.set()

    def _pause(self, seconds: float) -> None:
        self._woken.wait(seconds)
        self._woken.clear()

    @abstractmethod
    def handle(self, records: list[dict]) -> None:
        """What the consumer does with a batch of GetRecords output."""

    def idle(self) -> None:
        """Called when a poll returns nothing."""

    def batching_window(self) -> float:
        """Seconds to keep reading after a batch's first records before handling it (0: at once)."""
        return 0.0

    def run(self) -> None:
        self._iterator = self._kinesis.get_shard_iterator(
            StreamName=self.stream_name, ShardId=self.shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        idle = self._poll
        while not self._stopping.is_set():
            records = self._read(self._limit)
            if records is None:
                continue
            if records:
                window_ends = time.monotonic() + self.batching_window()
                while len(records) < self._limit and time.monotonic() < window_ends \
                        and not self._stopping.is_set():
                    self._pause(min(self._poll * 4, max(0.0, window_ends - time.monotonic())))
                    more = self._read(self._limit - len(records))
                    records += more or []
                self.handle(records)
                self.records_seen += len(records)
                idle = self._poll
            else:
                self.idle()
                self._pause(idle)
                idle = min(idle * 2, self._max_idle)

    def _read(self, limit: int) -> list[dict] | None:
        """The next records (None after an error, logged: the endpoint went away at shutdown, or a
        transient one)."""
        try:
            response = self._kinesis.get_records(ShardIterator=self._iterator, Limit=limit)
        except Exception as error:
            if not self._stopping.is_set():
                self.errors.append(repr(error))
                self._stopping.wait(0.5)
            return None
        self._iterator = response["NextShardIterator"]
        return response["Records"]


class EventSourceMapping(_ShardReader):
    """Lambda's Kinesis event source mapping for one shard: in order, partial batch responses,
    bisection on function errors, bounded retries, then the on-failure destination."""

    def __init__(self, session: boto3.Session, stream_name: str, shard_id: str, stream_arn: str,
                 invoke: Callable[[dict], dict], failure_queue_url: str, config: MappingConfig) -> None:
        super().__init__(session, stream_name, shard_id, "mapping", config.batch_size, config.poll_interval,
                         config.max_idle_interval)
        self._invoke = invoke
        self._arn = stream_arn
        self._sqs = session.client("sqs")
        self._queue = failure_queue_url
        self._config = config
        self.sent_to_failure_queue = 0

    def batching_window(self) -> float:
        return self._config.max_batching_window

    def handle(self, records: list[dict]) -> None:
        self._deliver(records)

    def _deliver(self, records: list[dict]) -> None:
        pending = records
        for _attempt in range(self._config.max_retries + 1):
            try:
                response = self._invoke(kinesis_event(pending, self.shard_id, self._arn)) or {}
                failed = [f["itemIdentifier"] for f in response.get("batchItemFailures", [])]
            except Exception as error:
                self.errors.append(repr(error))
                if self._config.bisect_on_error and len(pending) > 1:
                    middle = len(pending) // 2
                    self._deliver(pending[:middle])
                    self._deliver(pending[middle:])
                    return
                failed = [pending[0]["SequenceNumber"]]
            if not failed:
                return
            # Kinesis checkpoints at the lowest failed sequence number: retry from there on
            lowest = min(int(s) for s in failed)
            pending = [r for r in pending if int(r["SequenceNumber"]) >= lowest]
        self._to_failure_queue(pending)

    def _to_failure_queue(self, records: list[dict]) -> None:
        """What Lambda sends to an on-failure destination: where the batch is, not its data."""
        self.sent_to_failure_queue += len(records)
        self._sqs.send_message(QueueUrl=self._queue, MessageBody=json.dumps({
            "requestContext": {"condition": "RetryAttemptsExhausted", "functionArn": "local-cleaner"},
            "KinesisBatchInfo": {
                "shardId": self.shard_id, "streamArn": self._arn, "batchSize": len(records),
                "startSequenceNumber": records[0]["SequenceNumber"],
                "endSequenceNumber": records[-1]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": records[0]["ApproximateArrivalTimestamp"].isoformat(),
                "approximateArrivalOfLastRecord": records[-1]["ApproximateArrivalTimestamp"].isoformat(),
            },
        }))


def raw_object_key(shard_id: str, first_sequence: str, arrival: datetime) -> str:
    """Firehose's layout (RAW_PREFIX + yyyy/MM/dd/HH/), gzip-compressed JSON lines."""
    return f"{RAW_PREFIX}{arrival:%Y/%m/%d/%H}/local-archive-{shard_id}-{first_sequence}{RAW_SUFFIX}"


class RawArchiver(_ShardReader):
    """Stands in for the Firehose delivery stream: buffers records and writes them unchanged."""

    def __init__(self, session: boto3.Session, stream_name: str, shard_id: str, bucket: str,
                 buffer_records: int = 5000, buffer_seconds: float = 1.0, max_idle_interval: float = 1.0) -> None:
        super().__init__(session, stream_name, shard_id, "archiver", 10000, 0.1, max_idle_interval)
        self._s3 = session.client("s3")
        self._bucket = bucket
        self._buffer: list[dict] = []
        self._buffer_records = buffer_records
        self._buffer_seconds = buffer_seconds
        self._since = time.monotonic()
        self.records_archived = 0

    def handle(self, records: list[dict]) -> None:
        self._buffer.extend(records)
        if len(self._buffer) >= self._buffer_records or time.monotonic() - self._since > self._buffer_seconds:
            self.flush()

    def idle(self) -> None:
        if self._buffer and time.monotonic() - self._since > self._buffer_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            self._since = time.monotonic()
            return
        first = self._buffer[0]
        key = raw_object_key(self.shard_id, first["SequenceNumber"],
                             first["ApproximateArrivalTimestamp"].astimezone(UTC))
        body = gzip.compress(b"".join(r["Data"] for r in self._buffer))
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=body)
        self.records_archived += len(self._buffer)
        self._buffer = []
        self._since = time.monotonic()

    def flush_soon(self) -> None:
        """Ask for the buffer to be written at the next idle poll (Firehose's buffer interval), now."""
        self._since = 0.0
        self.wake()
