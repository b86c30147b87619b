"""The ingest and cleaner handlers against moto: API Gateway event in, Parquet and Glue partitions out."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import awswrangler as wr
import pandas as pd
import pytest

from feedbackloop.adapters.aws import S3Lake
from feedbackloop.lake import CURATED_EVENTS, QUARANTINE
from feedbackloop.names import Metric
from feedbackloop.settings import SettingsError

pytestmark = [
    pytest.mark.functional,
    # awswrangler 3.17 reads Series.values of tz-aware columns, which pandas 3.1 deprecates: not ours
    pytest.mark.filterwarnings("ignore:Series.values returning an ndarray:pandas.errors.Pandas4Warning"),
]

STARTED = datetime.now(UTC)


def _ago(days: int = 0, minutes: int = 5) -> str:
    return (STARTED - timedelta(days=days, minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _date_of(timestamp: str) -> str:
    return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%Y-%m-%d")


def _events(make_event, count: int = 9, days: int = 3) -> list[dict]:
    types = [("rating", 4), ("click", None), ("dwell", 42.5), ("purchase", 19.99), ("nps", 9)]
    return [
        make_event(event_id=f"evt-{i:04d}", user_id=f"user-{i % 4}", item_id=f"item-{i % 5}",
                   event_type=types[i % len(types)][0], value=types[i % len(types)][1], timestamp=_ago(days=i % days))
        for i in range(count)
    ]


def _read(account, table) -> pd.DataFrame:
    path = f"s3://{account.buckets[table.bucket_key]}/{table.prefix}"
    return wr.s3.read_parquet(path, dataset=True, boto3_session=account.session)


def _partitions(account, table) -> set[str]:
    found = wr.catalog.get_parquet_partitions(database=account.cleaner.glue_database, table=table.name,
                                              boto3_session=account.session)
    return {values[0] for values in found.values()}


def _emf(stdout: str) -> list[dict]:
    documents = []
    for line in stdout.splitlines():
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict) and "_aws" in document:
            documents.append(document)
    return documents


def test_events_flow_from_the_api_to_curated_parquet_and_quarantine(
    account, post, cleaner_handler, make_event, capsys
):
    events = _events(make_event)
    late = make_event(event_id="evt-late", timestamp=_ago(days=45))
    early = make_event(event_id="evt-early", timestamp=(STARTED + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    status, body = post([*events, events[0], late, early])  # the API accepts a repeated id; the cleaner settles it
    assert status == 200, body
    assert body["accepted"] == len(events) + 3
    # a producer writing to the stream directly, badly
    account.session.client("kinesis").put_record(StreamName=account.ingest.stream_name, PartitionKey="rogue",
                                                 Data=b'{"received_at": "now", "event": {')

    kinesis_events = account.kinesis_events()
    assert sum(len(e["Records"]) for e in kinesis_events) == len(events) + 4
    capsys.readouterr()
    for event in kinesis_events:
        assert cleaner_handler(event) == {"batchItemFailures": []}

    curated = _read(account, CURATED_EVENTS)
    assert Counter(curated["event_id"]) == Counter(e["event_id"] for e in events)
    assert set(CURATED_EVENTS.arrow_schema.names) <= set(curated.columns)
    assert curated["source"].str.match(r"^shardId-\d+:\d+$").all()
    days = {_date_of(e["timestamp"]) for e in events}
    assert set(curated[CURATED_EVENTS.partition.name].astype(str)) == days
    assert _partitions(account, CURATED_EVENTS) == days
    imputed = curated[curated["event_type"] == "click"]
    assert imputed["value_imputed"].all() and (imputed["value"] == 1.0).all()

    quarantine = _read(account, QUARANTINE)
    assert Counter(quarantine["reason"]) == {"duplicate": 1, "too_old": 1, "future": 1, "malformed_json": 1}
    assert set(quarantine.loc[quarantine["reason"] == "too_old", "event_id"]) == {"evt-late"}
    assert quarantine["detail"].str.len().min() > 0
    assert _partitions(account, QUARANTINE) == {datetime.now(UTC).strftime("%Y-%m-%d")}

    emitted = [d[Metric.RECORDS_IN] for d in _emf(capsys.readouterr().out) if Metric.RECORDS_IN in d]
    records_in = sum(sum(v) if isinstance(v, list) else v for v in emitted)
    assert records_in == len(events) + 4


def test_dedup_and_state_tables_hold_what_the_cleaner_committed(account, post, cleaner_handler, make_event):
    events = _events(make_event, count=10)
    assert post(events)[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)

    dynamodb = account.session.client("dynamodb")
    items = dynamodb.scan(TableName=account.cleaner.dedup_table)["Items"]
    keys = {item["event_id"]["S"]: item["object_key"]["S"] for item in items}
    assert set(keys) == {e["event_id"] for e in events}
    s3 = account.session.client("s3")
    for key in set(keys.values()):
        bucket_key, _, object_key = key.partition("/")
        s3.head_object(Bucket=account.buckets[bucket_key], Key=object_key)  # the object each id points at
    assert all(int(item["expires_at"]["N"]) > STARTED.timestamp() + 300 * 86400 for item in items)

    state = dynamodb.get_item(TableName=account.cleaner.state_table, Key={"key": {"S": "cleaner-stats"}},
                              ConsistentRead=True)["Item"]
    doc = json.loads(state["doc"]["S"])
    observed = Counter(e["event_type"] for e in events if e.get("value") is not None)
    assert {name: stats["n"] for name, stats in doc["values"].items() if stats["n"]} == dict(observed)
    assert doc["devices"]["rating"] == {"mobile": Counter(e["event_type"] for e in events)["rating"]}


def test_reinvoking_the_same_kinesis_event_writes_nothing_twice(account, post, cleaner_handler, make_event):
    events = _events(make_event)
    assert post(events)[0] == 200
    kinesis_events = account.kinesis_events()
    for event in kinesis_events:
        assert cleaner_handler(event) == {"batchItemFailures": []}
    first = _read(account, CURATED_EVENTS)
    state_before = json.loads(account.session.client("dynamodb").get_item(
        TableName=account.cleaner.state_table, Key={"key": {"S": "cleaner-stats"}})["Item"]["doc"]["S"])

    for event in kinesis_events:
        assert cleaner_handler(event) == {"batchItemFailures": []}

    again = _read(account, CURATED_EVENTS)
    assert len(again) == len(first) == len(events)
    assert again["event_id"].is_unique
    quarantine = _read(account, QUARANTINE)
    assert Counter(quarantine["reason"]) == {"duplicate": len(events)}
    state_after = json.loads(account.session.client("dynamodb").get_item(
        TableName=account.cleaner.state_table, Key={"key": {"S": "cleaner-stats"}})["Item"]["doc"]["S"])
    assert state_after["values"] == state_before["values"]  # a replay teaches nothing new


def test_a_failed_s3_write_reports_exactly_its_records_and_the_retry_completes(
    account, post, cleaner_handler, make_event, monkeypatch
):
    events = _events(make_event, count=12)
    assert post(events)[0] == 200
    failing_day = _date_of(events[1]["timestamp"])
    write = S3Lake.write
    broken = {"on": True}

    def flaky_write(self, table, partition, name, rows):
        if broken["on"] and table is CURATED_EVENTS and partition == failing_day:
            raise ConnectionError("simulated S3 outage")
        return write(self, table, partition, name, rows)

    monkeypatch.setattr(S3Lake, "write", flaky_write)
    kinesis_events = account.kinesis_events()
    by_id = {e["event_id"]: e for e in events}
    for event in kinesis_events:
        response = cleaner_handler(event)
        expected = [
            r["kinesis"]["sequenceNumber"] for r in event["Records"]
            if _date_of(by_id[_event_id(r)]["timestamp"]) == failing_day
        ]
        assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in expected]}
    assert failing_day not in set(_read(account, CURATED_EVENTS)[CURATED_EVENTS.partition.name].astype(str))

    broken["on"] = False
    for event in kinesis_events:  # the whole batch comes again
        assert cleaner_handler(event) == {"batchItemFailures": []}
    curated = _read(account, CURATED_EVENTS)
    assert Counter(curated["event_id"]) == {e["event_id"]: 1 for e in events}
    assert failing_day in _partitions(account, CURATED_EVENTS)


def _event_id(lambda_record: dict) -> str:
    return json.loads(base64.b64decode(lambda_record["kinesis"]["data"]))["event"]["event_id"]


def test_the_state_accumulates_across_invocations(account, post, cleaner_handler, make_event):
    for round_ in range(2):
        batch = [make_event(event_id=f"r{round_}-{i}", event_type="dwell", value=10.0 + i, timestamp=_ago())
                 for i in range(5)]
        assert post(batch)[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    item = account.session.client("dynamodb").get_item(TableName=account.cleaner.state_table,
                                                       Key={"key": {"S": "cleaner-stats"}})["Item"]
    doc = json.loads(item["doc"]["S"])
    assert doc["values"]["dwell"]["n"] == 10
    assert int(item["version"]["N"]) == len(account.kinesis_events())  # one optimistic write per batch


# --- the ingest handler ------------------------------------------------------------------------

def _stream_records(account) -> list[dict]:
    return [r for e in account.kinesis_events() for r in e["Records"]]


def test_an_invalid_batch_is_400_and_nothing_reaches_the_stream(account, post, make_event):
    status, body = post([make_event(event_id="fine"), make_event(event_id="bad", event_type="like")])
    assert status == 400
    assert body["field"] == "events[1].event_type"
    assert [r["accepted"] for r in body["results"]] == [False, False]
    assert _stream_records(account) == []


def test_the_api_puts_records_partitioned_by_user(account, post, make_event):
    events = _events(make_event, count=6)
    status, body = post(events)
    assert (status, body["accepted"]) == (200, 6)
    records = _stream_records(account)
    assert sorted(r["kinesis"]["partitionKey"] for r in records) == sorted(e["user_id"] for e in events)
    envelopes = [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in records]
    assert sorted(e["event"]["event_id"] for e in envelopes) == sorted(e["event_id"] for e in events)
    received = {datetime.fromisoformat(e["received_at"]) for e in envelopes}
    assert len(received) == 1 and abs((received.pop() - datetime.now(UTC)).total_seconds()) < 60


def test_a_base64_body_is_decoded_and_bytes_that_are_not_utf8_are_400(account, ingest_handler, api_event,
                                                                       make_event):
    body = json.dumps({"events": [make_event()]}).encode()
    ok = ingest_handler(api_event(body, base64_encoded=True))
    assert ok["statusCode"] == 200
    refused = ingest_handler(api_event(b'{"events": ["\xff"]}', base64_encoded=True))
    assert refused["statusCode"] == 400
    assert json.loads(refused["body"])["error"] == "invalid_encoding"


def test_a_response_is_json_with_its_headers(account, ingest_handler, api_event):
    response = ingest_handler(api_event("not json"))
    assert response["statusCode"] == 400
    headers = response.get("multiValueHeaders") or {k: [v] for k, v in response.get("headers", {}).items()}
    assert headers["Content-Type"] == ["application/json"]
    assert json.loads(response["body"])["error"] == "malformed_json"


def test_a_stream_that_cannot_take_records_is_503_with_retryable_events(account, ingest_handler, api_event,
                                                                       make_event, monkeypatch):
    monkeypatch.setenv("FEEDBACKLOOP_STREAM_NAME", "no-such-stream")
    response = ingest_handler(api_event(json.dumps({"events": [make_event()]})))
    assert response["statusCode"] == 503
    headers = response.get("multiValueHeaders") or {k: [v] for k, v in response.get("headers", {}).items()}
    assert headers["Retry-After"] == ["1"]
    (result,) = json.loads(response["body"])["results"]
    assert result["retryable"] is True
    assert result["error"]["reason"] == "ResourceNotFoundException"


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_a_missing_setting_fails_with_its_name(account, cleaner_handler, monkeypatch):
    monkeypatch.delenv("FEEDBACKLOOP_CURATED_BUCKET")
    with pytest.raises(SettingsError, match="FEEDBACKLOOP_CURATED_BUCKET"):
        cleaner_handler({"Records": []})


def test_a_lost_record_fails_the_batch_and_reports_the_gap_the_alarm_watches(
    account, post, cleaner_handler, make_event, monkeypatch, capsys
):
    """A bug that drops a clean row without quarantining it: the batch fails (so it is retried), and the
    ConservationGap metric goes out first, non-zero, under the namespace and the `service` dimension the
    ConservationGap alarm watches (tests/infra/test_infra_monitoring_stack.py pins the alarm to them)."""
    from feedbackloop.cleaning import service
    from feedbackloop.cleaning.service import ConservationError
    from feedbackloop.names import METRICS_NAMESPACE, SERVICE, SERVICE_DIMENSION

    clean_events = service.clean_events

    def losing_one(*args, **kwargs):
        result = clean_events(*args, **kwargs)
        result.curated = result.curated.slice(1)  # the first clean row vanishes
        return result

    monkeypatch.setattr(service, "clean_events", losing_one)
    events = _events(make_event, count=6)
    assert post(events)[0] == 200
    capsys.readouterr()
    batches = account.kinesis_events()  # one per shard the events landed on
    for batch in batches:
        with pytest.raises(ConservationError) as raised:
            cleaner_handler(batch)
        assert raised.value.gap == 1 and raised.value.outcome.records_in == len(batch["Records"])

    emitted = [d for d in _emf(capsys.readouterr().out) if Metric.CONSERVATION_GAP in d]
    assert len(emitted) == len(batches)
    for document, batch in zip(emitted, batches, strict=True):
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == METRICS_NAMESPACE and document[SERVICE_DIMENSION] == SERVICE
        assert [SERVICE_DIMENSION] in directive["Dimensions"]
        value = {name: sum(v) if isinstance(v := document[name], list) else v
                 for name in (Metric.CONSERVATION_GAP, Metric.RECORDS_IN, Metric.RECORDS_CLEAN)}
        records = len(batch["Records"])
        assert value == {Metric.CONSERVATION_GAP: 1, Metric.RECORDS_IN: records, Metric.RECORDS_CLEAN: records - 1}
