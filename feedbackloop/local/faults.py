"""Fault injection on the local stand-in, and the figures that show the loop survives each fault.

Every fault runs against one started `LocalRuntime` and sends its own events (ids `<fault>-<run>-<n>`)
through the local API, so its figures are read back from the lake by that prefix:

    accepted = what the API accepted; stored = curated rows; quarantined = quarantine rows with a verdict
    other than `duplicate`; duplicated = rows that repeat an event id (in curated, in the quarantine's
    verdicts, or across the two); lost = the ids the API accepted that are in neither table (sets of
    ids compared, not counts: a duplicated row cannot hide a lost one); parked = records the event
    source mapping gave up on (its on-failure queue). duplicated, lost and parked must be 0.

The seams, all outside the code under test (no handler, adapter or runtime file is edited; what is
swapped at run time is put back when the fault ends):
- botocore event hooks. `feedbackloop.wiring.session` is the one factory of the handlers' boto3
  sessions; `injected(...)` wraps it so the sessions built while a fault is on carry its hooks, and gives
  the functions a new container (they rebuild their clients) on entry and on exit.
- the Lambda runtime boundary. A crash is an `InjectedCrashError` (a BaseException: no `except
  Exception` in the cleaner stops it, as nothing in a process stops it being killed); while the crash
  fault is on, the local cleaner function reports it to its event source mapping as a function error,
  as Lambda reports a runtime that died.
- redelivery: the stream read again and delivered to the cleaner function a second time, and the raw
  archive replayed through the cleaner service (what `feedbackloop replay` does).
- a training script that exits non-zero, given to `run_retraining(script=...)`.
- AppConfig: a document the profile's JSON Schema validator refuses, and one it lets through that the
  serving function refuses, watched by the rollback alarm. moto stores alarms but never evaluates them,
  so `evaluate_alarm` does what CloudWatch does once a period.
"""

from __future__ import annotations

import importlib
import json
import operator
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.exceptions import ClientError
from botocore.hooks import BaseEventHooks

from feedbackloop import resources, wiring
from feedbackloop.adapters.aws import DynamoModelRegistry
from feedbackloop.adapters.control import AppConfigPublisher
from feedbackloop.ingest import THROTTLED
from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.local.client import EventsClient, SendReport
from feedbackloop.local.environment import STATE_DIR, physical_name, replay_settings
from feedbackloop.local.functions import CLEANER_FUNCTION, LocalFunction
from feedbackloop.local.lake_reader import connect
from feedbackloop.local.retrain import RetrainingRun, TrainingFailedError, run_retraining
from feedbackloop.local.runtime import LocalRuntime, _reset_handler_caches
from feedbackloop.local.stream import kinesis_event
from feedbackloop.models.training import TrainingParams
from feedbackloop.names import METRICS_NAMESPACE, SERVICE, Metric, QuarantineReason
from feedbackloop.replay import raw_records, replay
from feedbackloop.uiconfig import InvalidConfigError, default_document

# serving reads the registry and the UI config on every request, so a change (or a rollback) shows at once
SERVING_OVERRIDES = {"model_refresh_seconds": 0, "appconfig_ttl_seconds": 0}
HISTORY_DAYS = 12  # each fault's events spread over this many days, so they are training data too
TOO_OLD, INVALID = 3, 2  # per fault: events the cleaner quarantines (too old), events the API refuses
TRAINING = TrainingParams(tuning_minutes=0.0, max_trees=20, segments_max=3)  # small: the figures, not the model
GATE_MARGIN = 0.01
PROBE_USER = "fl-u0"
EVENTS_PER_FAULT = 80
_WAIT_SECONDS = 120

# the stand-in's Step Functions: the metrics the RetrainingFailed alarm reads in AWS (AWS/States)
STATES_NAMESPACE = "AWS/States"
RETRAINING_STATE_MACHINE = f"arn:aws:states:us-east-1:000000000000:stateMachine:{physical_name('retraining')}"

_INJECTED = "(injected fault)"  # in every injected error's message
FAILING_TRAINING_SCRIPT = f"""\
import sys
print("training: killed, out of memory {_INJECTED}", file=sys.stderr)
sys.exit(137)
"""


class FaultRunError(RuntimeError):
    """A fault run could not complete (the loop did not catch up, or a step answered unexpectedly)."""


class InjectedCrashError(BaseException):
    """The function's process dies. A BaseException, so the handler's own `except Exception` cannot
    turn it into a partial failure, as nothing in a process can stop it being killed."""


class FunctionCrashedError(RuntimeError):
    """What Lambda reports to the event source mapping when the runtime died (Runtime.ExitError)."""


class BotocoreFault(Protocol):
    """A fault made of botocore event hooks, registered on each session the functions build."""

    def register(self, events: BaseEventHooks) -> None: ...


# -- the faults -------------------------------------------------------------------------------------


@dataclass
class S3WriteErrors:
    """Fault 1: S3 refuses the cleaner's next `failures` Parquet writes (503 SlowDown), then recovers.

    The cleaner reports the records of each failed write as batch item failures; the event source
    mapping retries from the lowest of them, and rows already committed come back as duplicates. Every
    attempt counts, also the one awswrangler makes again when the failed writer is collected. With
    `failures` at most the mapping's retries, every record lands within its retries; an outage that
    outlasts them parks the batch on the on-failure queue (parked and lost then show it; the raw archive
    replays it)."""

    buckets: frozenset[str]
    failures: int = 3
    code: str = "SlowDown"
    injected: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def register(self, events: BaseEventHooks) -> None:
        events.register("before-parameter-build.s3.PutObject", self._refuse)

    def _refuse(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("Bucket") not in self.buckets or not str(params.get("Key", "")).endswith(".parquet"):
            return
        with self._lock:
            if self.injected >= self.failures:
                return
            self.injected += 1
        raise ClientError({"Error": {"Code": self.code, "Message": f"Please reduce your request rate. {_INJECTED}"},
                           "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")


_BUCKET = "feedbackloop_fault_bucket"


@dataclass
class CleanerCrash:
    """Fault 2: the cleaner's process dies right after its first Parquet object lands (before the
    object's partition is registered, the rest of the batch is written and the statistics are merged).

    The mapping sees a function error, halves the batch and delivers each half again. The ids whose
    object exists come back as duplicates; the rows whose objects were never written are written then;
    so each event id ends up in curated (or the quarantine) exactly once."""

    buckets: frozenset[str]
    crashes: int = 1
    injected: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def register(self, events: BaseEventHooks) -> None:
        events.register("before-parameter-build.s3.PutObject", self._note_bucket)
        events.register("after-call.s3.PutObject", self._crash)

    @staticmethod
    def _note_bucket(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if str(params.get("Key", "")).endswith(".parquet"):
            context[_BUCKET] = params.get("Bucket")

    def _crash(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        if context.get(_BUCKET) not in self.buckets or http_response.status_code >= 300:
            return
        with self._lock:
            if self.injected >= self.crashes:
                return
            self.injected += 1
        raise InjectedCrashError(f"the cleaner was killed after writing a Parquet object {_INJECTED}")


_THROTTLED = "feedbackloop_fault_throttled"


@dataclass
class KinesisThrottling:
    """Fault 4: for the next `calls` PutRecords calls, Kinesis refuses every `every`-th record
    (positions 1, 3, ... for 2) with ProvisionedThroughputExceededException, and does not store it.

    The refused records never reach the stream (they are taken out of the request); the response
    carries their error codes where they were. The ingest API answers 429 with a per-event result marking
    exactly those retryable, and the client resends them with the same ids."""

    calls: int = 2
    every: int = 2
    injected: int = field(default=0, init=False)  # records refused
    _calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.every < 2:  # a request keeps its first record: PutRecords takes 1 to 500
            raise ValueError(f"every must be 2 or more, got {self.every}")
        self._lock = threading.Lock()

    def register(self, events: BaseEventHooks) -> None:
        events.register("provide-client-params.kinesis.PutRecords", self._refuse_some)
        events.register("after-call.kinesis.PutRecords", self._report_refused)

    def _refuse_some(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> dict[str, Any] | None:
        records = params["Records"]
        refused = {i for i in range(len(records)) if i % self.every == self.every - 1}
        if not refused:
            return None
        with self._lock:
            if self._calls >= self.calls:
                return None
            self._calls += 1
            self.injected += len(refused)
        context[_THROTTLED] = (refused, len(records))
        return {**params, "Records": [r for i, r in enumerate(records) if i not in refused]}

    @staticmethod
    def _report_refused(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        refused, total = context.pop(_THROTTLED, (None, 0))
        if refused is None or "Records" not in parsed:
            return
        stored = iter(parsed["Records"])
        parsed["Records"] = [
            {"ErrorCode": THROTTLED, "ErrorMessage": f"Rate exceeded for shard {_INJECTED}"} if i in refused
            else next(stored) for i in range(total)]
        parsed["FailedRecordCount"] = parsed.get("FailedRecordCount", 0) + len(refused)


@contextmanager
def injected(*faults: BotocoreFault) -> Iterator[None]:
    """While on, every boto3 session the functions build (through `wiring.session`, their one factory)
    carries the faults' hooks. The functions get a new container on entry and on exit, so their cached
    clients are rebuilt with the hooks, then without."""
    original = wiring.session

    def session() -> boto3.Session:
        built = original()
        for fault in faults:
            fault.register(built.events)
        return built

    wiring.session = session
    _reset_handler_caches()
    unraisable = sys.unraisablehook
    sys.unraisablehook = _quiet_injected(unraisable)
    try:
        yield
    finally:
        wiring.session = original
        _reset_handler_caches()
        sys.unraisablehook = unraisable


def _quiet_injected(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """awswrangler's S3 writer retries a failed PutObject from its finalizer (`__del__`, when the failed
    write is collected), where an error is only printed: an injected one is expected there, anything else
    is still printed."""

    def report(unraisable: Any) -> None:
        if _INJECTED not in str(unraisable.exc_value):
            hook(unraisable)

    return report


@contextmanager
def crashes_reported(function: LocalFunction, handler: str = CLEANER_FUNCTION) -> Iterator[None]:
    """Lambda's side of a crash: while on, an `InjectedCrashError` out of the function's handler reaches
    its caller (the event source mapping) as a function error, not as a dead poller thread."""
    module, _, attribute = handler.rpartition(".")
    real = getattr(importlib.import_module(module), attribute)

    def run(event: dict, context: Any) -> Any:
        try:
            return real(event, context)
        except InjectedCrashError as crash:
            raise FunctionCrashedError(f"{function.name}: Runtime.ExitError: {crash}") from None

    function._handler = run  # LocalFunction's loaded handler: the one place an invocation goes through
    try:
        yield
    finally:
        function._handler = real


# -- reading the outcome ----------------------------------------------------------------------------

_COMPARISONS = {"GreaterThanOrEqualToThreshold": operator.ge, "GreaterThanThreshold": operator.gt,
                "LessThanThreshold": operator.lt, "LessThanOrEqualToThreshold": operator.le}


def metric_total(cloudwatch, metric: str, since: datetime, *, namespace: str = METRICS_NAMESPACE,
                 dimensions: dict[str, str] | None = None, statistic: str = "Sum") -> float:
    """The metric's `statistic` (Sum or Maximum) from `since` to now, in the local CloudWatch."""
    dimensions = {"service": SERVICE} if dimensions is None else dimensions
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=metric, Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        StartTime=since, EndTime=datetime.now(UTC) + timedelta(minutes=1), Period=60, Statistics=[statistic],
    )["Datapoints"]
    values = [p[statistic] for p in points]
    return float(max(values, default=0.0) if statistic == "Maximum" else sum(values))


def evaluate_alarm(cloudwatch, name: str, now: datetime | None = None) -> tuple[str, float]:
    """One evaluation of a metric alarm, as CloudWatch makes every period (moto never does): the
    statistic of each of the last EvaluationPeriods periods against the threshold; ALARM when all
    breach, else OK (a period without data does not breach: TreatMissingData notBreaching). Sets the
    alarm's state and returns it with the latest period's value."""
    alarm = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    now = now or datetime.now(UTC)
    period = timedelta(seconds=alarm["Period"])
    breaches, latest = [], 0.0
    for k in range(alarm["EvaluationPeriods"]):
        end = now - k * period
        points = cloudwatch.get_metric_statistics(
            Namespace=alarm["Namespace"], MetricName=alarm["MetricName"], Dimensions=alarm.get("Dimensions", []),
            StartTime=end - period, EndTime=end + timedelta(seconds=1), Period=alarm["Period"],
            Statistics=[alarm["Statistic"]])["Datapoints"]
        values = [p[alarm["Statistic"]] for p in points]
        value = (sum(values) if alarm["Statistic"] == "Sum" else max(values)) if values else None
        if k == 0:
            latest = value or 0.0
        breaches.append(value is not None and _COMPARISONS[alarm["ComparisonOperator"]](value, alarm["Threshold"]))
    state = "ALARM" if all(breaches) else "OK"
    if state != alarm["StateValue"]:
        cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=(
            f"local evaluation: {alarm['Statistic']} of {alarm['MetricName']} = {latest:g} over the last "
            f"{alarm['EvaluationPeriods']} period(s) of {alarm['Period']} s, threshold {alarm['Threshold']:g}"))
    return state, latest


@dataclass
class LakeCount:
    stored: int  # curated rows
    quarantined: int  # quarantine rows with a verdict other than duplicate
    duplicated: int  # rows beyond the first of their event id, in and across the two tables
    kept: int  # distinct event ids in curated or quarantined (not as a duplicate)
    duplicates_caught: int  # quarantine rows with the verdict duplicate: redeliveries recognized
    kept_ids: frozenset[str] = frozenset()  # those ids


def lake_count(endpoint: str, prefix: str) -> LakeCount:
    """The prefix's rows in the curated table and the quarantine, read back with DuckDB."""
    con = connect(endpoint)
    ids = [f"{prefix}-", QuarantineReason.DUPLICATE.value]
    stored = con.execute("SELECT count(*) FROM feedback_events WHERE starts_with(event_id, $1)", ids[:1]).fetchone()[0]
    quarantined, caught = con.execute(
        "SELECT count(*) FILTER (WHERE reason <> $2), count(*) FILTER (WHERE reason = $2) "
        "FROM feedback_quarantine WHERE starts_with(event_id, $1)", ids).fetchone()
    kept = frozenset(row[0] for row in con.execute(
        "SELECT event_id FROM feedback_events WHERE starts_with(event_id, $1) UNION "
        "SELECT event_id FROM feedback_quarantine WHERE starts_with(event_id, $1) AND reason <> $2", ids).fetchall())
    return LakeCount(stored, quarantined, stored + quarantined - len(kept), len(kept), caught, kept)


def unregistered_partitions(runtime: LocalRuntime) -> list[str]:
    """Curated partitions that hold objects but are missing from the Glue catalog (Athena would not
    read their rows)."""
    s3, glue = runtime.session.client("s3"), runtime.session.client("glue")
    bucket = physical_name(resources.CURATED_BUCKET.key)
    column = CURATED_EVENTS.partition.name
    on_s3 = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=CURATED_EVENTS.prefix):
        for item in page.get("Contents", []):
            part = next((p for p in item["Key"].split("/") if p.startswith(f"{column}=")), None)
            if part:
                on_s3.add(part.split("=", 1)[1])
    registered = {p["Values"][0] for page in glue.get_paginator("get_partitions").paginate(
        DatabaseName=resources.GLUE_DATABASE, TableName=CURATED_EVENTS.name) for p in page["Partitions"]}
    return sorted(on_s3 - registered)


# -- the events -------------------------------------------------------------------------------------


def fault_events(prefix: str, count: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """`count` valid purchases spread over the last HISTORY_DAYS days by nine users with a taste each
    (enough for a model to be scored on a hold-out), then TOO_OLD events the cleaner quarantines and
    INVALID ones the API refuses. Ids: `<prefix>-<n>`."""
    now = now or datetime.now(UTC)
    start = now - timedelta(days=HISTORY_DAYS)
    step = timedelta(days=HISTORY_DAYS) / max(count, 1)

    def event(i: int, at: datetime, **changes: Any) -> dict[str, Any]:
        user = i % 9
        return {"event_id": f"{prefix}-{i}", "user_id": f"fl-u{user}", "item_id": f"fl-item-{user % 3}{i % 4}",
                "event_type": "purchase", "value": 1 + i % 3, "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "schema_version": "1.0",
                "context": {"session_id": f"{prefix}-s{i % 7}", "device": "mobile", "page": "/home"}} | changes

    events = [event(i, start + i * step) for i in range(count)]
    events += [event(count + i, datetime(2020, 1, 1, tzinfo=UTC)) for i in range(TOO_OLD)]
    events += [event(count + TOO_OLD + i, now, value="high") for i in range(INVALID)]
    return events


# -- running the faults -----------------------------------------------------------------------------


@dataclass
class Observed:
    """What a fault showed besides the lake's figures."""

    injected: int  # how many times the fault fired
    signal: str  # the metric or alarm that showed the failure
    signal_value: float
    kept_serving: str  # what answered while (or after) the fault was on
    serving_ok: bool  # ... and whether it was the previous model or config
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultFigures:
    fault: str
    description: str
    sent: int
    accepted: int
    stored: int
    quarantined: int
    duplicated: int  # must be 0
    lost: int  # accepted events in neither table; must be 0
    parked: int  # records the mapping sent to its on-failure queue during the fault; must be 0
    injected: int
    signal: str
    signal_value: float
    kept_serving: str
    serving_ok: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.duplicated == 0 and self.lost == 0 and self.parked == 0 and self.injected > 0
                and self.signal_value > 0 and self.serving_ok)


@dataclass
class FaultLoop:
    """What the faults share: the started runtime, an API client and the run's id (in every event id)."""

    runtime: LocalRuntime
    events_per_fault: int = EVENTS_PER_FAULT
    say: Callable[[str], None] = lambda line: None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def __post_init__(self) -> None:
        self.client = EventsClient(self.runtime.api.url, self.runtime.api_key)
        self.cloudwatch = self.runtime.session.client("cloudwatch")
        self.buckets = frozenset(physical_name(b.key) for b in (resources.CURATED_BUCKET, resources.QUARANTINE_BUCKET))

    def prefix(self, fault: str) -> str:
        return f"{fault.replace('_', '-')}-{self.run_id}"

    @property
    def parked(self) -> int:
        return sum(m.sent_to_failure_queue for m in self.runtime.mappings)

    def send(self, prefix: str) -> SendReport:
        """The fault's events through the API; back when the cleaner and the archiver have them all."""
        before = self.runtime.records_cleaned
        report = self.client.send(fault_events(prefix, self.events_per_fault))
        if not self.runtime.wait_until_processed(before + report.accepted, timeout=_WAIT_SECONDS):
            raise FaultRunError(f"{prefix}: the cleaner did not take {report.accepted} records within "
                                f"{_WAIT_SECONDS}s ({self.runtime.records_cleaned - before} taken)")
        return report

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body, _ = self.client.request("GET", path)
        return status, body

    def config_served(self) -> tuple[int, dict[str, Any]]:
        return self.get(f"/users/{PROBE_USER}/config")

    def config_probe(self, expected_version: str = "1") -> tuple[str, bool]:
        status, body = self.config_served()
        version = body.get("config_version")
        return f"GET config {status}, version {version}", status == 200 and version == expected_version

    def figures(self, fault: str, description: str, prefix: str, report: SendReport, parked_before: int,
                observed: Observed) -> FaultFigures:
        count = lake_count(self.runtime.moto.endpoint, prefix)
        figures = FaultFigures(
            fault, description, report.sent, report.accepted, count.stored, count.quarantined, count.duplicated,
            len(report.accepted_ids - count.kept_ids), self.parked - parked_before, observed.injected,
            observed.signal, observed.signal_value, observed.kept_serving, observed.serving_ok,
            {"refused_by_api": report.refused_total, "client_retries": report.retries,
             "duplicates_caught": count.duplicates_caught,
             "kept_but_never_accepted": len(count.kept_ids - report.accepted_ids), **observed.details})
        self.say(f"  {fault}: {'ok' if figures.ok else 'FAILED'}  {figures.signal} = {figures.signal_value:g}; "
                 f"{figures.kept_serving}")
        return figures


def s3_write_errors(loop: FaultLoop, failures: int = 3) -> FaultFigures:
    """Fault 1 (`S3WriteErrors`) while the fault's events flow; seen as BatchItemFailures."""
    prefix, since, parked = loop.prefix("s3_write_errors"), datetime.now(UTC), loop.parked
    fault = S3WriteErrors(loop.buckets, failures)
    with injected(fault):
        report = loop.send(prefix)
        serving, serving_ok = loop.config_probe()
    return loop.figures("s3_write_errors", f"the cleaner's next {failures} Parquet writes fail (503 SlowDown)",
                        prefix, report, parked, Observed(
                            fault.injected, Metric.BATCH_ITEM_FAILURES,
                            metric_total(loop.cloudwatch, Metric.BATCH_ITEM_FAILURES, since), serving, serving_ok,
                            {"conservation_gap": metric_total(loop.cloudwatch, Metric.CONSERVATION_GAP, since,
                                                              statistic="Maximum")}))


def cleaner_crash(loop: FaultLoop) -> FaultFigures:
    """Fault 2 (`CleanerCrash`) while the fault's events flow; seen as the redelivered rows' RecordsDuplicate
    (and the stand-in's count of function errors, Lambda's Errors metric in AWS)."""
    prefix, since, parked = loop.prefix("cleaner_crash"), datetime.now(UTC), loop.parked
    errors_before = loop.runtime.cleaner.errors
    fault = CleanerCrash(loop.buckets)
    with injected(fault), crashes_reported(loop.runtime.cleaner):
        report = loop.send(prefix)
        serving, serving_ok = loop.config_probe()
    return loop.figures("cleaner_crash", "the cleaner dies right after its first Parquet write", prefix, report,
                        parked, Observed(
                            fault.injected, Metric.RECORDS_DUPLICATE,
                            metric_total(loop.cloudwatch, Metric.RECORDS_DUPLICATE, since), serving, serving_ok,
                            {"function_errors": loop.runtime.cleaner.errors - errors_before,
                             "conservation_gap": metric_total(loop.cloudwatch, Metric.CONSERVATION_GAP, since,
                                                              statistic="Maximum"),
                             "unregistered_partitions": unregistered_partitions(loop.runtime)}))


def redeliver_from_stream(runtime: LocalRuntime, prefix: str) -> int:
    """At-least-once delivery: the prefix's records read again from the start of every shard and
    delivered to the cleaner function a second time (what a mapping that lost its checkpoint does).
    Returns how many records were delivered again."""
    kinesis = runtime.session.client("kinesis")
    delivered = 0
    for mapping in runtime.mappings:
        arn = kinesis.describe_stream_summary(StreamName=mapping.stream_name)["StreamDescriptionSummary"]["StreamARN"]
        iterator = kinesis.get_shard_iterator(StreamName=mapping.stream_name, ShardId=mapping.shard_id,
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        batch: list[dict] = []
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if not response["Records"]:
                break
            batch += [r for r in response["Records"] if _event_id(r["Data"]).startswith(f"{prefix}-")]
            iterator = response.get("NextShardIterator")
        if batch:
            response = runtime.cleaner.invoke(kinesis_event(batch, mapping.shard_id, arn)) or {}
            if response.get("batchItemFailures"):
                raise FaultRunError(f"the redelivered batch failed: {response}")
            delivered += len(batch)
    return delivered


def _event_id(data: bytes) -> str:
    return json.loads(data)["event"]["event_id"]


def duplicate_redelivery(loop: FaultLoop) -> FaultFigures:
    """Fault 3: the fault's records delivered twice more after they were cleaned: read again from the
    stream and handed to the cleaner function (at-least-once delivery, a mapping re-reading its shard),
    then replayed from the raw archive. Each comes back as a duplicate (RecordsDuplicate for the stream
    redelivery; the replay's own count for the archive) and curated keeps each id once."""
    prefix, parked = loop.prefix("duplicate_redelivery"), loop.parked
    report = loop.send(prefix)
    since = datetime.now(UTC)  # after the first delivery
    redelivered = redeliver_from_stream(loop.runtime, prefix)
    archive = raw_records(loop.runtime.session.client("s3"), replay_settings().raw_bucket)
    replayed = replay(wiring.cleaner_service(), (r for r in archive if _event_id(r.data).startswith(f"{prefix}-")))
    serving, serving_ok = loop.config_probe()
    return loop.figures("duplicate_redelivery", "the stream's records delivered again, and replayed from the raw "
                        "archive", prefix, report, parked, Observed(
                            redelivered + replayed.records_in, Metric.RECORDS_DUPLICATE,
                            metric_total(loop.cloudwatch, Metric.RECORDS_DUPLICATE, since), serving, serving_ok,
                            {"redelivered": redelivered, "replayed": replayed.records_in,
                             "replay_duplicates": replayed.duplicates, "replay_clean": replayed.clean,
                             "replay_failed": len(replayed.failed_sources)}))


def kinesis_throttling(loop: FaultLoop, calls: int = 2) -> FaultFigures:
    """Fault 4 (`KinesisThrottling`) while the fault's events are sent; seen as EventsThrottled."""
    prefix, since, parked = loop.prefix("kinesis_throttling"), datetime.now(UTC), loop.parked
    fault = KinesisThrottling(calls)
    with injected(fault):
        report = loop.send(prefix)
        serving, serving_ok = loop.config_probe()
    return loop.figures("kinesis_throttling", f"PutRecords refuses every 2nd record of {calls} calls "
                        "(ProvisionedThroughputExceededException)", prefix, report, parked, Observed(
                            fault.injected, Metric.EVENTS_THROTTLED,
                            metric_total(loop.cloudwatch, Metric.EVENTS_THROTTLED, since), serving, serving_ok))


def run_retraining_execution(loop: FaultLoop, script: Path | None = None) -> RetrainingRun | TrainingFailedError:
    """The stand-in's Step Functions execution of the retraining workflow: `run_retraining`, and its
    outcome recorded as AWS/States ExecutionsSucceeded or ExecutionsFailed (the metric the RetrainingFailed
    alarm reads in AWS; the local runner records none). Returns the run, or the TrainingFailedError."""
    try:
        outcome = run_retraining(loop.runtime.moto.endpoint, loop.runtime.session, TRAINING, GATE_MARGIN,
                                 say=lambda line: None, **({} if script is None else {"script": script}))
        metric = "ExecutionsSucceeded"
    except TrainingFailedError as error:
        outcome, metric = error, "ExecutionsFailed"
    loop.cloudwatch.put_metric_data(Namespace=STATES_NAMESPACE, MetricData=[{
        "MetricName": metric, "Value": 1.0, "Unit": "Count",
        "Dimensions": [{"Name": "StateMachineArn", "Value": RETRAINING_STATE_MACHINE}]}])
    return outcome


def training_failure(loop: FaultLoop) -> FaultFigures:
    """Fault 5: with a model published (a baseline run on the lake so far), a retraining whose training
    script exits 137, as a SageMaker job killed for memory fails. run_retraining raises TrainingFailedError
    before Evaluate; the registry still points at the previous model and GET recommendations serves it."""
    prefix, parked = loop.prefix("training_failure"), loop.parked
    report = loop.send(prefix)
    registry = DynamoModelRegistry(loop.runtime.session, physical_name(resources.REGISTRY_TABLE.key))
    baseline = run_retraining_execution(loop)
    previous = registry.current()
    if isinstance(baseline, Exception) or previous is None:
        raise FaultRunError(f"the baseline training published no model: {baseline}")
    since = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="feedbackloop-fault-") as folder:
        script = Path(folder) / "train.py"
        script.write_text(FAILING_TRAINING_SCRIPT)
        failed = run_retraining_execution(loop, script)
    after = registry.current() or {}
    status, body = loop.get(f"/users/{PROBE_USER}/recommendations?k=3")
    served = body.get("model_version")
    return loop.figures("training_failure", "the training script exits 137 (the training job fails)", prefix,
                        report, parked, Observed(
                            int(isinstance(failed, TrainingFailedError)), f"{STATES_NAMESPACE} ExecutionsFailed",
                            metric_total(loop.cloudwatch, "ExecutionsFailed", since, namespace=STATES_NAMESPACE,
                                         dimensions={"StateMachineArn": RETRAINING_STATE_MACHINE}),
                            f"model {served}: GET recommendations {status}, registry unchanged",
                            isinstance(failed, TrainingFailedError) and after == previous and status == 200
                            and served == previous["version"],
                            {"previous_model": previous["version"], "registry_after": after.get("version"),
                             "served_model": served, "training_error": str(failed)[:200]}))


def _agent_version(loop: FaultLoop) -> str | None:
    """The version the AppConfig agent serves (what the serving Lambda's extension would read)."""
    spec = resources.UI_CONFIG
    url = (f"{loop.runtime.appconfig_server.agent_url}/applications/{spec.application}/environments/"
           f"{spec.environment}/configurations/{spec.profile}")
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers.get("Configuration-Version")


def _publisher(loop: FaultLoop) -> AppConfigPublisher:
    """The adapter the adjust function deploys UI config with (the environment's rollout strategy)."""
    ui = loop.runtime.appconfig
    return AppConfigPublisher(loop.runtime.session, ui.application_id, ui.environment_id, ui.profile_id,
                              ui.rollout_strategy_id)


def invalid_config(loop: FaultLoop) -> FaultFigures:
    """Fault 6: a new hosted UI config version that the profile's JSON Schema validator refuses, deployed
    through the adjust function's adapter. StartDeployment answers BadRequestException; the agent keeps
    serving version 1 and GET /users/{id}/config answers as before."""
    prefix, parked = loop.prefix("invalid_config"), loop.parked
    report = loop.send(prefix)
    before_status, before = loop.config_served()
    document = default_document()
    document["defaults"]["layout"]["ordering"] = "shuffled"  # not one of the schema's orderings
    refusal = ""
    try:
        _publisher(loop).publish(document, based_on="1", description="fault: an ordering the schema refuses")
    except InvalidConfigError as error:  # AppConfig's BadRequestException, as the adapter raises it
        refusal = str(error)
    after_status, after = loop.config_served()
    agent = _agent_version(loop)
    return loop.figures("invalid_config", "a new hosted config version the JSON Schema validator refuses", prefix,
                        report, parked, Observed(
                            int(bool(refusal)), "StartDeployment BadRequestException", float(bool(refusal)),
                            f"config version {agent} (agent), GET config {after_status} unchanged",
                            bool(refusal) and before_status == after_status == 200 and after == before
                            and agent == "1", {"refusal": refusal[:200]}))


def config_rollback(loop: FaultLoop, requests: int = 3) -> FaultFigures:
    """Fault 6, continued: a new version the schema lets through (experiment weights summing to 0.9) but
    the serving function refuses, rolled out with the environment's strategy. Serving answers 5xx and
    counts ServingErrors; the rollback alarm fires; AppConfig rolls the deployment back (ROLLED_BACK)
    and version 1 serves again. The alarm is set back to OK afterwards."""
    prefix, parked = loop.prefix("config_rollback"), loop.parked
    report = loop.send(prefix)
    ui = loop.runtime.appconfig
    document = default_document()  # weights summing to 0.9: the schema allows them, serving does not
    document["experiments"]["ranking"]["variants"] = {"personalized": 0.7, "popularity": 0.2}
    since = datetime.now(UTC)
    deployed = _publisher(loop).publish(document, based_on="1", description="fault: weights that sum to 0.9")
    during = [loop.config_served()[0] for _ in range(requests)]
    refused = sum(status >= 500 for status in during)  # the bad config, served and refused: the fault firing
    errors = metric_total(loop.cloudwatch, Metric.SERVING_ERRORS, since)
    state, value = evaluate_alarm(loop.cloudwatch, ui.rollback_alarm_name)
    loop.runtime.appconfig_server.tick()  # the stand-in reads the alarm, as AppConfig watches it
    deployment = loop.runtime.session.client("appconfig").get_deployment(
        ApplicationId=ui.application_id, EnvironmentId=ui.environment_id, DeploymentNumber=deployed.deployment)
    serving, serving_ok = loop.config_probe()
    agent = _agent_version(loop)
    # the errors stopped with the rollback: the next evaluation (a period without data) clears the alarm
    loop.cloudwatch.set_alarm_state(AlarmName=ui.rollback_alarm_name, StateValue="OK",
                                    StateReason="local evaluation: no serving errors since the rollback")
    return loop.figures("config_rollback", "a new config the schema allows and serving refuses, rolled out",
                        prefix, report, parked, Observed(
                            refused, f"{ui.rollback_alarm_name} alarm ({Metric.SERVING_ERRORS})", errors,
                            f"{serving} after {deployment['State']}",
                            serving_ok and state == "ALARM" and deployment["State"] == "ROLLED_BACK" and agent == "1",
                            {"statuses_during": during, "alarm_state": state, "alarm_value": value,
                             "deployment": deployment["DeploymentNumber"], "deployment_state": deployment["State"],
                             "deployed_version": deployed.version, "agent_version_after": agent}))


FAULTS: tuple[Callable[[FaultLoop], FaultFigures], ...] = (
    s3_write_errors, cleaner_crash, duplicate_redelivery, kinesis_throttling, training_failure, invalid_config,
    config_rollback)


def fault_runtime(state_dir: Path = STATE_DIR / "faults") -> LocalRuntime:
    """A local runtime for the faults (not started): its serving function sees a new model or config at once,
    and it keeps its endpoints file and logs apart from a running `feedbackloop local up`."""
    return LocalRuntime(state_dir=state_dir, serving_overrides=dict(SERVING_OVERRIDES))


def run_faults(runtime: LocalRuntime | None = None, events_per_fault: int = EVENTS_PER_FAULT,
               say: Callable[[str], None] = lambda line: None,
               faults: Sequence[Callable[[FaultLoop], FaultFigures]] = FAULTS) -> list[FaultFigures]:
    """Every fault, in order, against one started runtime (a `fault_runtime()` started and stopped here
    when none is given); the figures of each. Each fault is switched off before the next one starts.
    The metrics come from the handlers' EMF, which the runtime's log sink forwards while it is sys.stdout
    (as `LocalRuntime.start` leaves it)."""
    if runtime is None:
        runtime = fault_runtime()
        runtime.state_dir.mkdir(parents=True, exist_ok=True)
        with runtime:
            return run_faults(runtime, events_per_fault, say, faults)
    loop = FaultLoop(runtime, events_per_fault, say)
    try:
        return [fault(loop) for fault in faults]
    finally:
        loop.client.close()


_COLUMNS = ("fault", "sent", "accepted", "stored", "quarantined", "duplicated", "lost", "parked", "injected")


def format_table(figures: Sequence[FaultFigures]) -> str:
    rows = [[*_COLUMNS, "signal", "value", "kept serving", "ok"]]
    rows += [[str(getattr(f, c)) for c in _COLUMNS] + [f.signal, f"{f.signal_value:g}", f.kept_serving,
                                                       "yes" if f.ok else "NO"] for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = {0, len(_COLUMNS), len(_COLUMNS) + 2}  # names and text left, numbers right
    return "\n".join("  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                     for row in rows)


def to_json(figures: Sequence[FaultFigures]) -> dict[str, Any]:
    return {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "faults": [asdict(f) | {"ok": f.ok} for f in figures]}
