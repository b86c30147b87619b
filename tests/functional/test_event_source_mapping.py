"""The local event source mapping keeps Lambda's contract for Kinesis: partial batch responses
resume from the lowest failed sequence number, a function error bisects the batch, retries are
bounded, and what is given up on goes to the on-failure destination."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from feedbackloop.local.environment import physical_name
from feedbackloop.local.stream import EventSourceMapping, MappingConfig
from feedbackloop.resources import CLEANER_FAILURES

pytestmark = pytest.mark.functional

SHARD = "shardId-000000000000"


def _records(n: int) -> list[dict]:
    """GetRecords output."""
    return [{"SequenceNumber": str(1000 + i), "Data": f'{{"n": {i}}}\n'.encode(), "PartitionKey": f"u{i}",
             "ApproximateArrivalTimestamp": datetime(2026, 1, 1, tzinfo=UTC)} for i in range(n)]


def _sequences(event: dict) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


@pytest.fixture
def mapping(account):
    sqs = account.session.client("sqs")
    queue = sqs.get_queue_url(QueueName=physical_name(CLEANER_FAILURES.key))["QueueUrl"]

    def build(invoke, retries: int = 2) -> EventSourceMapping:
        return EventSourceMapping(account.session, account.ingest.stream_name, SHARD, account.stream_arn(),
                                  invoke, queue, MappingConfig(max_retries=retries))

    def failures() -> list[dict]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]

    return build, failures


def test_a_partial_failure_resumes_from_the_lowest_failed_sequence_number(mapping):
    build, failures = mapping
    calls: list[list[str]] = []

    def invoke(event):
        calls.append(_sequences(event))
        failed = [s for s in calls[-1] if s in ("1006", "1003")] if len(calls) == 1 else []
        return {"batchItemFailures": [{"itemIdentifier": s} for s in failed]}

    build(invoke).handle(_records(10))
    assert calls == [[str(1000 + i) for i in range(10)], [str(1000 + i) for i in range(3, 10)]]
    assert failures() == []


def test_a_function_error_bisects_until_the_poison_record_is_alone_then_gives_it_up(mapping):
    build, failures = mapping
    delivered: set[str] = set()

    def invoke(event):
        if "1005" in _sequences(event):
            raise RuntimeError("poison")
        delivered.update(_sequences(event))
        return {"batchItemFailures": []}

    esm = build(invoke)
    esm.handle(_records(8))
    assert delivered == {str(1000 + i) for i in range(8)} - {"1005"}  # the rest of the batch is not lost
    (gave_up,) = failures()
    assert gave_up["KinesisBatchInfo"]["startSequenceNumber"] == "1005"
    assert gave_up["KinesisBatchInfo"]["batchSize"] == 1
    assert esm.sent_to_failure_queue == 1


def test_retries_are_bounded(mapping):
    build, failures = mapping
    calls = []

    def invoke(event):
        calls.append(_sequences(event))
        return {"batchItemFailures": [{"itemIdentifier": "1001"}]}  # never gets through

    build(invoke, retries=2).handle(_records(4))
    assert calls == [["1000", "1001", "1002", "1003"]] + [["1001", "1002", "1003"]] * 2  # one try, two retries
    (gave_up,) = failures()
    assert gave_up["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = gave_up["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("1001", "1003", 3)


def _put(account, n: int, key: str = "u1") -> str:
    """Put n records under one partition key; the shard they went to."""
    kinesis = account.session.client("kinesis")
    shards = {kinesis.put_record(StreamName=account.ingest.stream_name, Data=f'{{"n": {i}}}\n'.encode(),
                                 PartitionKey=key)["ShardId"] for i in range(n)}
    (shard,) = shards
    return shard


def _running(account, shard: str, invoke, config: MappingConfig) -> EventSourceMapping:
    queue = account.session.client("sqs").get_queue_url(QueueName=physical_name(CLEANER_FAILURES.key))["QueueUrl"]
    esm = EventSourceMapping(account.session, account.ingest.stream_name, shard, account.stream_arn(), invoke,
                             queue, config)
    esm.start()
    return esm


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_records_put_within_the_batching_window_reach_the_function_in_one_invocation(account):
    calls: list[list[str]] = []
    shard = _put(account, 2)
    esm = _running(account, shard, lambda event: calls.append(_sequences(event)) or {},
                   MappingConfig(max_batching_window=1.0))
    try:
        time.sleep(0.3)  # within the window of the first records
        _put(account, 3)
        assert _wait_for(lambda: esm.records_seen == 5, 10)
    finally:
        esm.stop()
        esm.join(5)
    assert [len(c) for c in calls] == [5]


def test_an_idle_shard_is_polled_at_once_when_woken(account):
    calls: list[list[str]] = []
    shard = _put(account, 1)
    # an idle interval far longer than the test waits: only the wake-up can bring the second record in time
    esm = _running(account, shard, lambda event: calls.append(_sequences(event)) or {},
                   MappingConfig(max_batching_window=0, max_idle_interval=30))
    try:
        assert _wait_for(lambda: esm.records_seen == 1, 10)
        time.sleep(3.5)  # idle polls back off: the next one is seconds away
        _put(account, 1)
        esm.wake()
        assert _wait_for(lambda: esm.records_seen == 2, 1.0)
    finally:
        esm.stop()
        esm.join(5)
    assert [len(c) for c in calls] == [1, 1]
