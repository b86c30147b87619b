"""From an HTTP request on the local API to curated Parquet read back with DuckDB, then a replay."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from urllib.error import HTTPError

import boto3
import pytest

from feedbackloop.local.client import EventsClient
from feedbackloop.local.environment import physical_name, replay_settings
from feedbackloop.local.lake_reader import connect
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.replay import raw_records, replay
from feedbackloop.resources import CLEANER_FAILURES
from feedbackloop.uiconfig import RANKING_EXPERIMENT, assign, default_document
from feedbackloop.wiring import cleaner_service

pytestmark = pytest.mark.local


def _event(i: int, **changes) -> dict:
    now = datetime.now(UTC) - timedelta(minutes=5)
    event = {
        "event_id": f"e2e-{i}", "user_id": f"u{i % 7}", "item_id": f"item-{i % 11}",
        "event_type": ["rating", "click", "purchase", "dwell", "nps"][i % 5],
        "value": [4, 1, 3, 42.5, 9][i % 5],
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "schema_version": "1.0",
        "context": {"session_id": f"s{i % 5}", "device": "mobile", "page": "/home"},
    }
    return event | changes


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    with LocalRuntime(state_dir=tmp_path_factory.mktemp("local")) as runtime:
        yield runtime


def _post(runtime: LocalRuntime, body: bytes, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{runtime.api.url}/events", data=body, method="POST",
                                     headers={"x-api-key": key if key is not None else runtime.api_key,
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_the_local_api_refuses_what_api_gateway_refuses(runtime):
    assert _post(runtime, b'{"events": []}', key="wrong")[0] == 403
    status, body = _post(runtime, b"\xff\xfe not utf-8")
    assert status == 400 and body["error"] == "invalid_encoding"
    status, body = _post(runtime, b'{"events": [')
    assert status == 400 and body["error"] == "malformed_json"
    status, body = _post(runtime, json.dumps({"events": [_event(1, value="high")]}).encode())
    assert status == 400 and body["field"] == "events[0].value"
    status, body = _post(runtime, json.dumps({"events": [_event(i) for i in range(501)]}).encode())
    assert status == 413 and body["field"] == "events"


def test_events_reach_curated_parquet_exactly_once_and_replay_adds_nothing(runtime):
    good = [_event(i) for i in range(300)]
    redelivered = good[:20]  # a client retry: same ids again
    late = [_event(1000, event_id="e2e-old", timestamp="2020-01-01T00:00:00Z")]
    client = EventsClient(runtime.api.url, runtime.api_key)
    report = client.send(good + redelivered + late, batch_size=100)
    client.close()
    assert report.accepted == 321 and report.refused_total == 0
    assert runtime.wait_until_processed(321, timeout=120)

    con = connect(runtime.moto.endpoint)
    clean, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM feedback_events").fetchone()
    reasons = dict(con.execute("SELECT reason, count(*) FROM feedback_quarantine GROUP BY 1").fetchall())
    assert clean == distinct == 300
    assert reasons == {"duplicate": 20, "too_old": 1}
    row = con.execute("SELECT feedback_score, confidence, device_code FROM feedback_events "
                      "WHERE event_id = 'e2e-0'").fetchone()
    assert row == (0.5, 1.0, 2)  # rating 4 of 1..5 -> 0.5 on [-1, 1]; explicit weight 1; mobile

    # every accepted record is in the raw archive, unchanged, and replaying it adds no row
    session = boto3.Session()
    archived = list(raw_records(session.client("s3"), replay_settings().raw_bucket))
    assert len(archived) == 321
    outcome = replay(cleaner_service(), iter(archived))
    # the late event was settled in the quarantine: its redelivery is a duplicate too
    assert outcome.clean == 0 and outcome.duplicates == 321 and not outcome.quarantined
    assert connect(runtime.moto.endpoint).execute("SELECT count(*) FROM feedback_events").fetchone()[0] == 300

    # nothing went to the on-failure destination
    sqs = session.client("sqs")
    queue = sqs.get_queue_url(QueueName=physical_name(CLEANER_FAILURES.key))["QueueUrl"]
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)


def test_table_jobs_build_the_modelled_tables_on_the_local_lake_and_catalog(runtime):
    """After the curated rows above: the Glue jobs' SQL on DuckDB over the local S3, partitions
    registered in the local Glue catalog, row counts reconciled, and a rerun changes nothing."""
    from feedbackloop.local.sql_engine import local_engine
    from feedbackloop.resources import GLUE_DATABASE, MODELLED_LAKE_TABLES
    from glue_jobs.build_tables import JOB_NAMES, run_job

    assert runtime.wait_until_processed(321, timeout=120)
    engine = local_engine(runtime.moto.endpoint, runtime.session)
    reports = {r.table: r for name in JOB_NAMES for r in run_job(name, engine, settle=timedelta(0))}
    assert reports["interactions"].rows == 300
    con = connect(runtime.moto.endpoint)
    count = {t.name: con.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0] for t in MODELLED_LAKE_TABLES}
    pairs = con.execute("SELECT count(*) FROM (SELECT DISTINCT user_id, item_id FROM feedback_events)").fetchone()[0]
    assert count["interactions"] == 300
    assert count["user_feedback"] == pairs
    assert count["user_features"] == 7 and count["item_features"] == 11
    daily = con.execute("SELECT sum(events) FROM engagement WHERE grain = 'day' AND scope = 'global'").fetchone()
    assert daily[0] == 300

    glue = runtime.session.client("glue")
    for table in MODELLED_LAKE_TABLES:
        partitions = glue.get_partitions(DatabaseName=GLUE_DATABASE, TableName=table.name)["Partitions"]
        assert [p["Values"][0] for p in partitions] == engine.partitions(table.name), table.name
        assert partitions, table.name
    # as a data scientist reads them: awswrangler lists each table's location and reads every object in it
    # (it failed with "Parquet magic bytes not found" on the bookmark that sat there)
    import awswrangler as wr

    for table in MODELLED_LAKE_TABLES:
        frame = wr.s3.read_parquet_table(table=table.name, database=GLUE_DATABASE, boto3_session=runtime.session)
        assert len(frame) == count[table.name], table.name

    rerun = [r for name in JOB_NAMES for r in run_job(name, engine, settle=timedelta(0))]
    assert sum(r.rows for r in rerun) == 0 and not any(r.partitions for r in rerun)
    assert {r.skipped for r in rerun} <= {"up to date", "no new data"}


def test_retraining_trains_evaluates_gates_and_publishes_on_the_local_stack(runtime):
    """The state machine's steps in process: a first model is published to the local S3 and registry,
    and the same data again leaves it in place (the gate needs a margin)."""
    from feedbackloop import retraining
    from feedbackloop.adapters.aws import DynamoModelRegistry
    from feedbackloop.local.retrain import run_retraining
    from feedbackloop.models.training import TrainingParams
    from feedbackloop.resources import REGISTRY_TABLE

    # twelve days of purchases by users with a taste each, so there is a hold-out to score
    days = datetime.now(UTC) - timedelta(days=12)
    history = [_event(2000 + i, event_id=f"hist-{i}", user_id=f"h{i % 9}", item_id=f"item-{(i % 9) % 3}{i % 4}",
                      event_type="purchase", value=1 + i % 3,
                      timestamp=(days + timedelta(hours=7 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")) for i in range(40)]
    client = EventsClient(runtime.api.url, runtime.api_key)
    assert client.send(history, batch_size=100).accepted == len(history)
    client.close()
    assert runtime.wait_until_processed(321 + len(history), timeout=120)

    params = TrainingParams(tuning_minutes=0.0, max_trees=20, segments_max=3)
    lines: list[str] = []
    first = run_retraining(runtime.moto.endpoint, runtime.session, params, margin=0.01, say=lines.append)
    registry = DynamoModelRegistry(runtime.session, physical_name(REGISTRY_TABLE.key))
    assert first.steps == list(retraining.STEPS), lines
    assert first.evaluation["decision"]["candidate"] > 0
    current = registry.current()
    assert current["version"] == first.version and current["artifact"].endswith(f"/{first.version}/model.tar.gz")
    second = run_retraining(runtime.moto.endpoint, runtime.session, params, margin=0.01, say=lines.append)
    assert second.steps[-1] == retraining.KEPT_CURRENT and registry.current()["version"] == first.version


def test_serving_routes_on_the_local_api(runtime):
    """After the model above is published: rankings over HTTP follow new feedback, an opt-out is
    honoured, and an erasure completes and leaves nothing behind."""
    client = EventsClient(runtime.api.url, runtime.api_key)
    ranking = default_document()["experiments"][RANKING_EXPERIMENT]
    newcomer = next(f"newcomer{i}" for i in range(100)  # in the personalized arm of the ranking experiment
                    if assign(f"newcomer{i}", ranking["salt"], ranking["variants"]) == "personalized")
    status, cold, _ = client.request("GET", f"/users/{newcomer}/recommendations?k=3")
    assert status == 200 and cold["strategy"] in {"popularity", "segment_popularity"}
    assert client.request("GET", f"/users/{newcomer}/recommendations?k=0")[0] == 422
    assert client.request("GET", "/users/x/nowhere")[0] == 404
    status, config, _ = client.request("GET", f"/users/{newcomer}/config")
    assert status == 200 and config["config_version"] == "1" and config["layout"]["ordering"] == "personalized"
    assert config["experiments"]["ranking"] in {"personalized", "popularity"}

    buys = [_event(3000 + i, event_id=f"srv-{i}", user_id=newcomer, item_id=f"item-0{i}", event_type="purchase",
                   value=2) for i in range(2)]
    assert client.send(buys).accepted == 2
    total = 321 + 40 + 2
    assert runtime.wait_until_processed(total, timeout=60)
    warm = client.request("GET", f"/users/{newcomer}/recommendations?k=3")[1]
    assert warm["strategy"] == "fold_in" and warm["ranker"] and warm["items"]  # ranked from the purchases
    reasons = " ".join(i["reason"] for i in warm["items"])
    assert "item-00" in reasons or "item-01" in reasons or "you bought it before" in reasons, warm

    assert client.request("PUT", f"/users/{newcomer}/preferences", {"personalization": False})[0] == 200
    quiet = client.request("GET", f"/users/{newcomer}/recommendations?k=3")[1]
    assert quiet["personalized"] is False and quiet["strategy"] == "opted_out"
    assert client.request("PUT", f"/users/{newcomer}/preferences", {"personalization": "no"})[0] == 422

    assert client.request("GET", "/users/u3/erasure")[0] == 404
    status, body, _ = client.request("DELETE", "/users/u3")
    assert status == 202 and body["status"] == "pending" and body["expected_by"] > body["requested_at"]
    repeat = client.request("DELETE", "/users/u3")[1]  # combined with the first: its time stands
    assert repeat["requested_at"] == body["requested_at"] or repeat["status"] == "complete"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and client.request("GET", "/users/u3/erasure")[1]["status"] != "complete":
        time.sleep(0.2)
    record = client.request("GET", "/users/u3/erasure")[1]
    assert record["status"] == "complete" and record["steps"]["rows_removed"]["feedback_events"] > 0
    con = connect(runtime.moto.endpoint)
    assert con.execute("SELECT count(*) FROM feedback_events WHERE user_id = 'u3'").fetchall()[0][0] == 0
    assert con.execute("SELECT count(*) FROM feedback_events WHERE user_id = 'u4'").fetchall()[0][0] > 0
    archived = raw_records(runtime.session.client("s3"), replay_settings().raw_bucket)
    assert not [r for r in archived if json.loads(r.data)["event"]["user_id"] == "u3"]
    # the raw bucket is versioned: no version the rewrites left behind holds u3 either
    s3, raw_bucket = runtime.session.client("s3"), replay_settings().raw_bucket
    versions = s3.list_object_versions(Bucket=raw_bucket).get("Versions", [])
    assert not [v for v in versions if not v["IsLatest"]]
    assert record["steps"]["noncurrent_versions_removed"] > 0 and "models" in record["steps"]["stores"]

    # still on the stream: u3's event from before the request, read after it, is quarantined (erased_user,
    # no payload kept); one from after the request is a new relationship's, kept as an opted-out user's
    requested = datetime.fromisoformat(body["requested_at"])
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    late = [_event(4000, event_id="srv-erased-before", user_id="u3",
                   timestamp=(requested - timedelta(minutes=1)).strftime(stamp)),
            _event(4001, event_id="srv-erased-after", user_id="u3",
                   timestamp=(max(datetime.now(UTC), requested) + timedelta(seconds=2)).strftime(stamp))]
    assert client.send(late).accepted == 2
    assert runtime.wait_until_processed(total + 2, timeout=60)
    con = connect(runtime.moto.endpoint)  # a connection sees the objects that existed when it was made
    assert con.execute("SELECT reason, payload FROM feedback_quarantine WHERE event_id = 'srv-erased-before'"
                       ).fetchall() == [("erased_user", None)]
    assert con.execute("SELECT count(*) FROM feedback_events WHERE event_id = 'srv-erased-before'").fetchall() == [(0,)]
    assert con.execute("SELECT personalized FROM feedback_events WHERE event_id = 'srv-erased-after'"
                       ).fetchall() == [(False,)]
    client.close()


def test_smoke_passes_against_the_stand_in_and_says_what_failed(runtime, capsys):
    """`feedbackloop smoke --local` against the running stand-in (a model is published above): every step
    passes, timed; with a wrong key it stops at the first step and says what to check."""
    from feedbackloop.cli import main
    from feedbackloop.local.smoke import local_target
    from feedbackloop.smoke import Api, run_smoke

    assert main(["smoke", "--local", "--state-dir", str(runtime.state_dir), "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    steps = [line[6:28].strip() for line in out.splitlines() if line.startswith("ok ")]
    assert steps == ["config route", "cold recommendations", "post events",
                                            "curated lake", "recommendations", "erasure"]
    assert "passed in" in out

    target = local_target(runtime.endpoints)
    wrong = target.__class__(ingest=target.ingest, serving=Api(target.serving.url, "not-the-key"), lake=target.lake,
                             where=target.where)
    report = run_smoke(wrong, timeout=5)
    assert not report.ok and report.failure.startswith("config route") and "API key" in report.failure
