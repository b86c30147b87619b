"""Fault injection on the local stand-in: for each fault, no clean row lost, none doubled, the failure
seen in the local CloudWatch (or an alarm), and the previous model or config still serving.

One runtime and one `run_faults` for the module (about a minute); each test reads its fault's figures."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from feedbackloop import wiring
from feedbackloop.local import faults
from feedbackloop.local.environment import physical_name
from feedbackloop.local.faults import (
    EVENTS_PER_FAULT,
    INVALID,
    TOO_OLD,
    CleanerCrash,
    FaultFigures,
    FaultLoop,
    crashes_reported,
    fault_events,
    fault_runtime,
    format_table,
    injected,
    lake_count,
    metric_total,
    run_faults,
    to_json,
    unregistered_partitions,
)
from feedbackloop.names import Metric
from feedbackloop.resources import CLEANER_FAILURES

# a crashed cleaner invocation flushes no metrics, and Powertools warns about it
pytestmark = [pytest.mark.local, pytest.mark.filterwarnings("ignore:No application metrics to publish")]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    with fault_runtime(tmp_path_factory.mktemp("faults")) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def figures(runtime) -> dict[str, FaultFigures]:
    with forwarding_emf(runtime):
        return {f.fault: f for f in run_faults(runtime)}


@contextmanager
def forwarding_emf(runtime):
    """pytest puts its capture back on sys.stdout for every test phase, in place of the runtime's log sink
    (what forwards the handlers' EMF to the local CloudWatch): the sink goes back while faults run."""
    captured, sys.stdout = sys.stdout, runtime.log_sink
    try:
        yield
    finally:
        sys.stdout = captured


def assert_nothing_lost_or_doubled(f: FaultFigures) -> None:
    """Every accepted event is a curated row or a quarantine verdict, exactly once."""
    assert f.sent == EVENTS_PER_FAULT + TOO_OLD + INVALID
    assert f.details["refused_by_api"] == INVALID
    assert f.accepted == EVENTS_PER_FAULT + TOO_OLD
    assert f.stored == EVENTS_PER_FAULT  # the clean rows
    assert f.quarantined == TOO_OLD  # too old, each once
    assert f.duplicated == 0
    assert f.lost == 0  # every id the API accepted is in the lake (sets compared)
    assert f.details["kept_but_never_accepted"] == 0
    assert f.parked == 0  # nothing on the mapping's on-failure queue


def test_s3_write_errors_are_retried_until_every_row_lands_once(figures):
    f = figures["s3_write_errors"]
    assert_nothing_lost_or_doubled(f)
    assert f.injected == 3  # S3 refused three Parquet writes, then recovered
    assert f.signal == Metric.BATCH_ITEM_FAILURES and f.signal_value >= 1
    assert f.details["conservation_gap"] == 0
    assert f.kept_serving == "GET config 200, version 1" and f.serving_ok
    assert f.ok


def test_a_crash_after_the_first_parquet_write_is_redelivered_and_deduplicated(figures):
    f = figures["cleaner_crash"]
    assert_nothing_lost_or_doubled(f)
    assert f.injected == 1 and f.details["function_errors"] == 1  # the mapping saw one function error
    # the rows committed before the crash came back in the halves, and were recognized
    assert f.signal == Metric.RECORDS_DUPLICATE and f.details["duplicates_caught"] >= 1
    # the metric is read over a time window, which under load can also hold the previous fault's late
    # retries; the quarantine's duplicate verdicts are this fault's own
    assert f.signal_value >= f.details["duplicates_caught"]
    assert f.details["conservation_gap"] == 0
    assert f.details["unregistered_partitions"] == []
    assert f.serving_ok and f.ok


def test_records_delivered_twice_are_counted_as_duplicates_and_stored_once(figures):
    f = figures["duplicate_redelivery"]
    assert_nothing_lost_or_doubled(f)
    # every accepted record again from the stream, and again from the raw archive
    assert f.details["redelivered"] == f.details["replayed"] == f.accepted
    assert f.injected == 2 * f.accepted
    # the stream redelivery (the metric's time window may also hold an earlier fault's late retries)
    assert f.signal == Metric.RECORDS_DUPLICATE and f.signal_value >= f.accepted
    assert f.details["replay_duplicates"] == f.accepted
    assert f.details["replay_clean"] == f.details["replay_failed"] == 0
    assert f.details["duplicates_caught"] == 2 * f.accepted  # each a 'duplicate' verdict in the quarantine
    assert f.serving_ok and f.ok


def test_throttled_events_are_answered_429_retried_by_the_client_and_stored_once(figures):
    f = figures["kinesis_throttling"]
    assert_nothing_lost_or_doubled(f)
    first = f.accepted // 2  # every second record of the first call, then of the resent ones
    assert f.injected == first + first // 2
    assert f.details["client_retries"] == 2
    assert f.signal == Metric.EVENTS_THROTTLED and f.signal_value == f.injected
    assert f.serving_ok and f.ok


def test_a_failed_training_job_leaves_the_previous_model_serving(figures):
    f = figures["training_failure"]
    assert_nothing_lost_or_doubled(f)
    assert f.injected == 1 and "exited with 137" in f.details["training_error"]
    assert f.signal == "AWS/States ExecutionsFailed" and f.signal_value == 1
    previous = f.details["previous_model"]
    assert previous.startswith("local-")
    assert f.details["registry_after"] == f.details["served_model"] == previous
    assert f.serving_ok and f.ok


def test_a_config_the_schema_refuses_is_not_deployed_and_the_previous_one_serves(figures):
    f = figures["invalid_config"]
    assert_nothing_lost_or_doubled(f)
    assert f.injected == 1 and f.signal_value == 1
    assert "JSON_SCHEMA validation" in f.details["refusal"] and "ordering" in f.details["refusal"]
    assert f.kept_serving == "config version 1 (agent), GET config 200 unchanged"
    assert f.serving_ok and f.ok


def test_a_config_that_breaks_serving_fires_the_alarm_and_rolls_back(figures):
    f = figures["config_rollback"]
    assert_nothing_lost_or_doubled(f)
    during = f.details["statuses_during"]
    assert len(during) == 3 and all(status >= 500 for status in during)  # serving failed on the new version
    assert f.injected == 3  # each of them served the bad config
    assert f.signal_value == 3  # ServingErrors, one per failed request
    assert f.details["alarm_state"] == "ALARM" and f.details["alarm_value"] == 3
    assert f.details["deployment_state"] == "ROLLED_BACK" and f.details["deployed_version"] == "3"
    assert f.details["agent_version_after"] == "1"
    assert f.kept_serving == "GET config 200, version 1 after ROLLED_BACK"
    assert f.serving_ok and f.ok


def test_the_report_has_a_row_per_fault_and_round_trips_as_json(figures):
    rows = format_table(list(figures.values())).splitlines()
    assert len(rows) == 1 + len(faults.FAULTS) and rows[0].split()[:2] == ["fault", "sent"]
    assert all(row.endswith("yes") for row in rows[1:])
    document = json.loads(json.dumps(to_json(list(figures.values())), default=str))
    assert [f["fault"] for f in document["faults"]] == [fault.__name__ for fault in faults.FAULTS]
    assert all(f["ok"] and f["lost"] == 0 and f["duplicated"] == 0 for f in document["faults"])


def test_the_cli_runs_the_faults_and_writes_json():
    from feedbackloop.cli import _faults, build_parser

    args = build_parser().parse_args(["faults", "--json", "out/faults.json"])
    assert args.func is _faults and args.json == "out/faults.json" and args.events is None


def test_no_fault_stays_on_after_the_run(runtime, figures):
    """The seams are back as they were, the failure queue is empty, and a new batch flows cleanly."""
    assert wiring.session.__module__ == "feedbackloop.wiring"
    assert runtime.cleaner._handler.__module__ == "lambdas.cleaner.handler"
    cloudwatch = runtime.session.client("cloudwatch")
    alarm = cloudwatch.describe_alarms(AlarmNames=[runtime.appconfig.rollback_alarm_name])["MetricAlarms"][0]
    assert alarm["StateValue"] == "OK"
    sqs = runtime.session.client("sqs")
    queue = sqs.get_queue_url(QueueName=physical_name(CLEANER_FAILURES.key))["QueueUrl"]
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)

    loop = FaultLoop(runtime, events_per_fault=20)
    since = datetime.now(UTC)
    with forwarding_emf(runtime):
        report = loop.send(loop.prefix("after"))
    loop.client.close()
    count = lake_count(runtime.moto.endpoint, loop.prefix("after"))
    assert report.retries == 0 and count.stored == 20 and count.quarantined == TOO_OLD and count.duplicated == 0
    assert metric_total(cloudwatch, Metric.RECORDS_IN, since) == report.accepted  # the metrics do arrive
    for metric in (Metric.BATCH_ITEM_FAILURES, Metric.EVENTS_THROTTLED, Metric.RECORDS_DUPLICATE):
        assert metric_total(cloudwatch, metric, since) == 0, metric


def test_a_crash_before_the_partition_is_registered_leaves_no_rows_out_of_the_catalog(runtime):
    loop = FaultLoop(runtime)
    prefix = loop.prefix("catalog")
    now = datetime.now(UTC)
    events = fault_events(prefix, 10, now)[:10]
    for event in events:
        event["user_id"] = "fl-catalog"  # one shard, one batch
    events[0]["timestamp"] = (now - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")  # a day no one else writes
    fault = CleanerCrash(loop.buckets)
    before = runtime.records_cleaned
    with injected(fault), crashes_reported(runtime.cleaner):
        assert loop.client.send(events).accepted == 10
        assert runtime.wait_until_processed(before + 10, timeout=120)
    loop.client.close()
    count = lake_count(runtime.moto.endpoint, prefix)
    assert fault.injected == 1 and count.stored == 10 and count.duplicated == 0  # S3 has every row once
    assert unregistered_partitions(runtime) == []  # ... and the catalog lists every partition holding them
