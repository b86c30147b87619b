"""The adjust function on the local stand-in, through its real handler: a segment whose CTR falls below
the rule's threshold gets a new UI config version deployed through the AppConfig stand-in (validated,
rolled out, baked), the serving route's answer changes because of it, every decision is recorded, and
the rule does not act again while the segment stays low."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from model_fixtures import publish_model

from feedbackloop.adapters.control import DynamoDecisionLog
from feedbackloop.local.client import EventsClient
from feedbackloop.local.environment import physical_name
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.local.sql_engine import local_engine
from feedbackloop.resources import DECISIONS_TABLE
from glue_jobs.build_tables import JOB_NAMES, run_job

pytestmark = pytest.mark.local

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _events() -> list[dict]:
    """Two hours of a low-CTR segment s1 (1 click per 50 views) whose users liked garden items, and a
    healthy segment s2."""
    events, n = [], 0
    for segment, users, clicks_every in (("s1", range(0, 20), 50), ("s2", range(20, 40), 5)):
        for user in users:
            for j in range(20):
                at = NOW - timedelta(minutes=110) + timedelta(minutes=5 * j)
                base = {"user_id": f"u{user}", "schema_version": "1.1",
                        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "context": {"session_id": f"u{user}-s", "device": "mobile", "segment": segment,
                                    "category": "garden" if j % 2 else "kitchen"}}
                events.append(base | {"event_id": f"v{n}", "item_id": f"i{j}", "event_type": "view", "value": 1})
                if n % clicks_every == 0:
                    events.append(base | {"event_id": f"c{n}", "item_id": f"i{j}", "event_type": "click",
                                          "value": 1, "context": base["context"] | {"category": "garden"}})
                n += 1
    return events


def _publish_model_with_segments(session: boto3.Session) -> None:
    publish_model(session, [f"i{j}" for j in range(20)], users=[f"u{u}" for u in range(40)],
                  segments={f"u{u}": "s1" if u < 20 else "s2" for u in range(40)})


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    with LocalRuntime(state_dir=tmp_path_factory.mktemp("local"), appconfig_time_scale=600,
                      serving_overrides={"model_refresh_seconds": 0, "appconfig_ttl_seconds": 0}) as runtime:
        yield runtime


def test_a_low_ctr_segment_gets_a_config_deployment_and_serving_changes(runtime):
    client = EventsClient(runtime.api.url, runtime.api_key)
    sent = client.send(_events())
    assert runtime.wait_until_processed(sent.accepted, timeout=120)
    engine = local_engine(runtime.moto.endpoint, runtime.session)
    for name in JOB_NAMES:
        run_job(name, engine, settle=timedelta(0))
    _publish_model_with_segments(runtime.session)
    before = client.request("GET", "/users/u3/config")[1]
    assert before["segment"] == "s1" and before["config_version"] == "1"
    assert before["layout"]["highlighted_categories"] == []

    summary = runtime.adjust.invoke({"scheduled_time": NOW.isoformat()})
    fired = {(f["rule"], f["scope"]) for f in summary["fired"]}
    assert ("segment-ctr-low", "segment=s1") in fired and ("segment-ctr-low", "segment=s2") not in fired
    assert summary["config_version"] == "2" and not summary["errors"]

    deadline = time.monotonic() + 30  # the stand-in rolls out and bakes 600x faster than AWS
    while time.monotonic() < deadline:
        deployment = runtime.session.client("appconfig").get_deployment(
            ApplicationId=runtime.appconfig.application_id, EnvironmentId=runtime.appconfig.environment_id,
            DeploymentNumber=runtime.appconfig.first_deployment_number + 1)
        if deployment["State"] == "COMPLETE":
            break
        time.sleep(0.2)
    assert deployment["State"] == "COMPLETE" and deployment["ConfigurationVersion"] == "2"
    after = client.request("GET", "/users/u3/config")[1]
    assert after["config_version"] == "2" and after["flags"]["highlight_categories"] is True
    assert after["layout"]["highlighted_categories"] == ["garden"]  # the segment's positive feedback
    healthy = client.request("GET", "/users/u30/config")[1]
    assert healthy["segment"] == "s2" and healthy["layout"]["highlighted_categories"] == []

    log = DynamoDecisionLog(runtime.session, physical_name(DECISIONS_TABLE.key), ttl_days=1)
    records = log.query("rule#segment-ctr-low")
    s1 = [r for r in records if r["scope"] == "segment=s1"]
    assert s1[0]["outcome"] == "fire" and s1[0]["config_version"] == "2" and s1[0]["value"] < 0.05
    assert s1[0]["samples"] >= 200

    again = runtime.adjust.invoke({"scheduled_time": (NOW + timedelta(minutes=5)).isoformat()})
    assert again["config_version"] is None and again["outcomes"].get("holding", 0) >= 1
    client.close()


def test_the_experiment_report_reads_the_arms_from_the_local_lake(runtime, tmp_path, monkeypatch):
    """`feedbackloop experiment report ranking --local`: exposures and clicks tagged with each user's
    arm, the interaction layer built, the verdict and the per-arm table printed."""
    import contextlib

    from feedbackloop.cli import main
    from feedbackloop.uiconfig import RANKING_EXPERIMENT, assign, default_document

    ranking = default_document()["experiments"][RANKING_EXPERIMENT]
    events, n = [], 0
    for user in range(200):
        user_id = f"ab{user}"
        arm = assign(user_id, ranking["salt"], ranking["variants"])
        for j in range(10):
            at = (NOW - timedelta(minutes=50) + timedelta(minutes=j)).strftime("%Y-%m-%dT%H:%M:%SZ")
            context = {"session_id": f"{user_id}-s", "device": "mobile", "experiment": RANKING_EXPERIMENT,
                       "variant": arm}
            events.append({"event_id": f"ab-v{n}", "user_id": user_id, "item_id": f"i{j}", "event_type": "view",
                           "value": 1, "timestamp": at, "schema_version": "1.1", "context": context})
            if j < (3 if arm == "personalized" else 1):
                events.append({"event_id": f"ab-c{n}", "user_id": user_id, "item_id": f"i{j}", "event_type": "click",
                               "value": 1, "timestamp": at, "schema_version": "1.1", "context": context})
            n += 1
    client = EventsClient(runtime.api.url, runtime.api_key)
    before = runtime.records_cleaned
    accepted = client.send(events).accepted
    client.close()
    assert runtime.wait_until_processed(before + accepted, timeout=120)
    engine = local_engine(runtime.moto.endpoint, runtime.session)
    for name in JOB_NAMES:
        run_job(name, engine, settle=timedelta(0))
    runtime.endpoints.save(tmp_path / ".feedbackloop")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main(["experiment", "report", RANKING_EXPERIMENT, "--local", "--days", "1", "--mde", "0.5"])
    text = out.getvalue()
    assert status == 0, text
    assert text.startswith("experiment ranking: SHIP") and "personalized" in text and "popularity" in text
    assert "sample ratio" in text and "planned" in text
