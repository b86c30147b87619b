"""The adjust run lease on a DynamoDB table in moto (the state table, built from its spec): one holder at a
time, expiry, release only by the holder, and two adjusters over the same lease doing one run's work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from feedbackloop.adapters.control import DynamoRunLease
from feedbackloop.resources import STATE_TABLE

pytestmark = pytest.mark.functional

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TABLE = "feedbackloop-state"


@pytest.fixture
def lease(monkeypatch) -> DynamoRunLease:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        session.client("dynamodb").create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": STATE_TABLE.partition_key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": STATE_TABLE.partition_key, "AttributeType": "S"}])
        yield DynamoRunLease(session, TABLE)


def test_a_second_holder_waits_for_the_release(lease):
    assert lease.acquire("run-a", T0, T0 + timedelta(minutes=6))
    assert not lease.acquire("run-b", T0 + timedelta(minutes=1), T0 + timedelta(minutes=7))
    lease.release("run-a")
    assert lease.acquire("run-b", T0 + timedelta(minutes=2), T0 + timedelta(minutes=8))


def test_a_lease_whose_holder_died_expires(lease):
    assert lease.acquire("crashed", T0, T0 + timedelta(minutes=6))
    assert not lease.acquire("next", T0 + timedelta(minutes=5), T0 + timedelta(minutes=11))
    assert lease.acquire("next", T0 + timedelta(minutes=7), T0 + timedelta(minutes=13))
    lease.release("crashed")  # the late release of the dead run leaves the new holder's lease alone
    assert not lease.acquire("third", T0 + timedelta(minutes=8), T0 + timedelta(minutes=14))


def test_the_two_runs_of_an_adjuster_overlapping_do_the_work_once(lease):
    from feedbackloop.adjust.engine import Adjuster

    runs: list[str] = []

    class Inner(Adjuster):
        def _run(self, report):  # an overlapping run starts while this one is inside
            runs.append(report.run_id)
            if report.run_id == "first":
                runs.append(("overlap", other.run(T0).skipped))
            return report

    ids = iter(["first", "second", "third"])
    clock = lambda: T0  # noqa: E731
    first = Inner(None, None, None, None, None, None, None, None, new_run_id=lambda: next(ids), lease=lease,
                  clock=clock)
    other = Inner(None, None, None, None, None, None, None, None, new_run_id=lambda: next(ids), lease=lease,
                  clock=clock)
    assert first.run(T0).skipped is None
    assert runs == ["first", ("overlap", "another adjust run holds the lease")]
    assert other.run(T0).skipped is None  # released at the end of the first run
    assert runs[-1] == "third"
