"""FeedbackLoopMonitoring: the effect and health dashboards chart the metrics feedbackloop.names defines,
addressed by the dimensions the handlers actually emit them with; every alarm an operator must act on
notifies the one alerts topic, which is encrypted and TLS-only; failed table job runs alert through an
EventBridge rule on the project's Glue jobs."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aws_cdk.assertions import Template

from cdk.app import INGEST_STACK, MONITORING_STACK, SERVING_STACK, STACKS, TABLES_STACK, TRAINING_STACK
from feedbackloop.cleaning.service import BatchOutcome
from feedbackloop.names import (
    EXPERIMENT_DIMENSION,
    METRICS_NAMESPACE,
    REASON_DIMENSION,
    RULE_DIMENSION,
    SEGMENT_DIMENSION,
    SERVICE,
    STREAM_DIMENSION,
    VARIANT_DIMENSION,
    Function,
    Metric,
    QuarantineReason,
)

pytestmark = pytest.mark.infra

SERVICE_DIMENSION = "service"  # the dimension Powertools adds; test_..._as_the_cleaner_emits_them checks it
ENGAGEMENT = (
    Metric.CTR,
    Metric.CONVERSION_RATE,
    Metric.AVG_SESSION_SECONDS,
    Metric.BOUNCE_RATE,
    Metric.RATING_MEAN,
    Metric.NPS,
    Metric.FEEDBACK_RETENTION_CORRELATION,
    Metric.FEEDBACK_CONVERSION_CORRELATION,
)
# The dimensions feedbackloop.names documents beside each metric (all others: none), `service` aside.
DOCUMENTED_DIMENSIONS: dict[str, set[str]] = {
    Metric.RECORDS_QUARANTINED_BY_REASON: {REASON_DIMENSION},
    Metric.RULE_EVALUATIONS: {RULE_DIMENSION},
    Metric.RULE_FIRED: {RULE_DIMENSION},
    Metric.RULE_DEFERRED: {RULE_DIMENSION},
    Metric.DRIFT_DETECTED: {STREAM_DIMENSION},
    Metric.SAMPLE_RATIO_MISMATCH: {EXPERIMENT_DIMENSION},
    **{metric: {SEGMENT_DIMENSION, VARIANT_DIMENSION} for metric in ENGAGEMENT},
}
EFFECT_METRICS = {
    *ENGAGEMENT,
    Metric.RECOMMENDATIONS_SERVED,
    Metric.RECOMMENDATIONS_FALLBACK,
    Metric.SAMPLE_RATIO_MISMATCH,
}
HEALTH_METRICS = {
    Metric.RECORDS_IN,
    Metric.RECORDS_CLEAN,
    Metric.RECORDS_QUARANTINED,
    Metric.RECORDS_QUARANTINED_BY_REASON,
    Metric.CONSERVATION_GAP,
    Metric.MODEL_CANDIDATE_NDCG,
    Metric.MODEL_GATE_PASSED,
    Metric.MODEL_GATE_REJECTED,
    Metric.MODEL_PUBLISHED,
    Metric.RULE_FIRED,
    Metric.RULE_DEFERRED,
    Metric.ADJUST_ERRORS,
    Metric.DRIFT_DETECTED,
    Metric.CONFIG_DEPLOYMENTS_STARTED,
    Metric.RETRAINING_STARTED,
    Metric.ALERTS_SENT,
    Metric.SERVING_ERRORS,
}


# -- reading the dashboards -------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRef:
    """One metric a widget or alarm reads: dimension values are kept where the body names them (a
    placeholder `${ref:N}` for a CloudFormation reference); expressions only name the dimensions."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str | None], ...]

    @property
    def dimension_names(self) -> set[str]:
        return {name for name, _ in self.dimensions}

    def value(self, dimension: str) -> str | None:
        return dict(self.dimensions)[dimension]


SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\}(?P<terms>[^']*)'")
SELECT = re.compile(r"SELECT \w+\((?P<name>\w+)\) FROM SCHEMA\((?P<schema>[^)]*)\)")
METRIC_NAME = re.compile(r'MetricName="(?P<name>[^"]+)"')


def expression_refs(expression: str) -> list[MetricRef]:
    refs = []
    for match in SEARCH.finditer(expression):
        namespace, *dimensions = match["schema"].split(",")
        (name,) = METRIC_NAME.findall(match["terms"])
        refs.append(MetricRef(namespace, name, tuple((d, None) for d in dimensions)))
    for match in SELECT.finditer(expression):
        namespace, *dimensions = (part.strip().strip('"') for part in match["schema"].split(","))
        refs.append(MetricRef(namespace, match["name"], tuple((d, None) for d in dimensions)))
    return refs


class Dashboard:
    """A dashboard's body, parsed: each CloudFormation reference inside the Fn::Join becomes `${ref:N}`
    and `refs[N]` is the reference."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.name: str = resource["Properties"]["DashboardName"]
        self.refs: list[Any] = []
        text = ""
        for part in resource["Properties"]["DashboardBody"]["Fn::Join"][1]:
            if isinstance(part, str):
                text += part
            else:
                text += f"${{ref:{len(self.refs)}}}"
                self.refs.append(part)
        self.body: dict[str, Any] = json.loads(text)
        self.widgets: list[dict[str, Any]] = self.body["widgets"]

    def reference(self, placeholder: str | None) -> Any:
        (index,) = re.fullmatch(r"\$\{ref:(\d+)\}", placeholder or "").groups()
        return self.refs[int(index)]

    def expressions(self) -> list[str]:
        return [
            entry[0]["expression"]
            for widget in self.widgets
            if widget["type"] == "metric"
            for entry in widget["properties"]["metrics"]
            if isinstance(entry[0], dict)
        ]

    def metric_refs(self) -> list[MetricRef]:
        refs = []
        for widget in self.widgets:
            if widget["type"] != "metric":
                continue
            for entry in widget["properties"]["metrics"]:
                if isinstance(entry[0], dict):
                    refs += expression_refs(entry[0]["expression"])
                    continue
                fields = [f for f in entry if not isinstance(f, dict)]
                assert "." not in fields, "a shorthand entry: this parser does not expand it"
                namespace, name, *pairs = fields
                refs.append(MetricRef(namespace, name, tuple(zip(pairs[::2], pairs[1::2], strict=True))))
        return refs

    def names_in(self, namespace: str) -> set[str]:
        return {ref.name for ref in self.metric_refs() if ref.namespace == namespace}

    def refs_of(self, namespace: str, name: str) -> list[MetricRef]:
        return [ref for ref in self.metric_refs() if (ref.namespace, ref.name) == (namespace, name)]


@pytest.fixture(scope="module")
def dashboards(monitoring: Template) -> dict[str, Dashboard]:
    parsed = [Dashboard(r) for r in monitoring.find_resources("AWS::CloudWatch::Dashboard").values()]
    return {d.name.removeprefix(f"{MONITORING_STACK}-"): d for d in parsed}


def _alarm_refs(alarm: dict[str, Any]) -> list[MetricRef]:
    properties = alarm["Properties"]
    if "MetricName" in properties:
        dimensions = tuple((d["Name"], d["Value"]) for d in properties.get("Dimensions", []))
        return [MetricRef(properties["Namespace"], properties["MetricName"], dimensions)]
    refs = []
    for query in properties["Metrics"]:
        if "Expression" in query:
            refs += expression_refs(query["Expression"])
        else:
            metric = query["MetricStat"]["Metric"]
            dimensions = tuple((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
            refs.append(MetricRef(metric["Namespace"], metric["MetricName"], dimensions))
    return refs


def _only(template: Template, resource_type: str) -> tuple[str, dict[str, Any]]:
    (item,) = template.find_resources(resource_type).items()
    return item


def _api_name(synthesis, stack: str) -> str:
    (api,) = [
        r for r in synthesis.template_json(stack)["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"
    ]
    return api["Properties"]["Name"]


def _logical_id(synthesis, stack: str, resource_type: str, contains: str = "") -> str:
    (logical_id,) = [
        k
        for k, r in synthesis.template_json(stack)["Resources"].items()
        if r["Type"] == resource_type and contains in k
    ]
    return logical_id


# -- dashboards ---------------------------------------------------------------------------------------


def test_two_dashboards_named_after_the_stack(dashboards: dict[str, Dashboard]) -> None:
    assert set(dashboards) == {"Effect", "Health"}


def test_effect_dashboard_charts_the_loops_effect_by_name(dashboards: dict[str, Dashboard]) -> None:
    assert dashboards["Effect"].names_in(METRICS_NAMESPACE) >= EFFECT_METRICS


def test_effect_metrics_are_charted_per_segment_and_per_variant(dashboards: dict[str, Dashboard]) -> None:
    """Per segment over all variants (the engagement layer's '*' roll-up), and per variant over all
    segments: the rolled-up series would otherwise be averaged in with the ones it sums up."""
    expressions = dashboards["Effect"].expressions()
    for metric in ENGAGEMENT:
        for group, rolled_up in ((SEGMENT_DIMENSION, VARIANT_DIMENSION), (VARIANT_DIMENSION, SEGMENT_DIMENSION)):
            assert any(
                SELECT.search(e)
                and SELECT.search(e)["name"] == metric
                and f"{rolled_up} = '*'" in e
                and e.endswith(f"GROUP BY {group}")
                for e in expressions
            ), f"{metric} by {group}"


def test_health_dashboard_charts_our_metrics_by_name(dashboards: dict[str, Dashboard]) -> None:
    assert dashboards["Health"].names_in(METRICS_NAMESPACE) >= HEALTH_METRICS


def test_our_metrics_are_addressed_with_service_and_their_documented_dimensions(
    dashboards: dict[str, Dashboard], monitoring: Template
) -> None:
    refs = [ref for d in dashboards.values() for ref in d.metric_refs()]
    refs += [
        ref for alarm in monitoring.find_resources("AWS::CloudWatch::Alarm").values() for ref in _alarm_refs(alarm)
    ]
    ours = [ref for ref in refs if ref.namespace == METRICS_NAMESPACE]
    assert ours
    for ref in ours:
        assert ref.name in set(Metric), ref
        assert ref.dimension_names == {SERVICE_DIMENSION, *DOCUMENTED_DIMENSIONS.get(ref.name, set())}, ref
        if ref.value(SERVICE_DIMENSION) is not None:
            assert ref.value(SERVICE_DIMENSION) == SERVICE
    # the SEARCH and SELECT expressions pin the service too
    expressions = [e for d in dashboards.values() for e in d.expressions() if METRICS_NAMESPACE in e]
    assert all(
        f'{SERVICE_DIMENSION}="{SERVICE}"' in e or f"{SERVICE_DIMENSION} = '{SERVICE}'" in e for e in expressions
    )


def test_every_function_is_its_own_service_and_names_the_metrics_namespace(synthesis) -> None:
    """Each function logs and traces under its own name (names.Function, from its handler's package), not
    another's; the metrics namespace is the application's (the handlers give the metrics' `service`
    dimension themselves: see test_..._as_the_cleaner_emits_them, which runs them in this environment)."""
    ours = [
        r["Properties"]
        for stack in STACKS
        for r in synthesis.template_json(stack)["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler", "").startswith("lambdas.")
    ]
    assert len(ours) >= 7  # ingest, cleaner, evaluate, publish, serving, eraser, adjust
    services = {}
    for function in ours:
        variables = function["Environment"]["Variables"]
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == METRICS_NAMESPACE
        services[function["Handler"]] = variables["POWERTOOLS_SERVICE_NAME"]
    assert services == {handler: Function.of_handler(handler) for handler in services}
    assert set(services.values()) == set(Function)  # every function of ours is deployed, under its own name


@pytest.fixture
def powertools_environment(synthesis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The POWERTOOLS_* variables every function of ours gets (PythonFunction), from the cleaner's template."""
    (cleaner,) = [
        r
        for k, r in synthesis.template_json(INGEST_STACK)["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function" and k.startswith("Cleaner")
    ]
    for name, value in cleaner["Properties"]["Environment"]["Variables"].items():
        if name.startswith("POWERTOOLS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


def _context(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        function_name=name,
        memory_limit_in_mb=1024,
        aws_request_id="request",
        invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
    )


def _emitted(stdout: str) -> dict[str, tuple[str, set[str], dict[str, str]]]:
    """Metric name -> (namespace, dimension names, dimension values) of the EMF documents printed."""
    emitted = {}
    for line in stdout.splitlines():
        document = json.loads(line) if line.startswith("{") else {}
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            (dimensions,) = directive["Dimensions"]
            for metric in directive["Metrics"]:
                emitted[metric["Name"]] = (
                    directive["Namespace"],
                    set(dimensions),
                    {d: document[d] for d in dimensions},
                )
    return emitted


def _assert_read_as_emitted(
    emitted: dict[str, tuple[str, set[str], dict[str, str]]],
    dashboards: dict[str, Dashboard],
    monitoring: Template,
) -> None:
    """Each metric emitted is charted, and every widget or alarm that reads it uses its namespace,
    dimension names and service value."""
    refs = [ref for d in dashboards.values() for ref in d.metric_refs()]
    refs += [ref for a in monitoring.find_resources("AWS::CloudWatch::Alarm").values() for ref in _alarm_refs(a)]
    for name, (namespace, dimension_names, values) in emitted.items():
        readers = [ref for ref in refs if ref.name == name]
        assert readers, f"{name} is emitted but not charted"
        for ref in readers:
            assert (ref.namespace, ref.dimension_names) == (namespace, dimension_names), ref
            assert ref.value(SERVICE_DIMENSION) in (None, values[SERVICE_DIMENSION]), ref


@pytest.mark.usefixtures("powertools_environment")
def test_dashboards_read_the_cleaners_metrics_as_it_emits_them(
    dashboards: dict[str, Dashboard], monitoring: Template, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The cleaner handler's own Powertools metrics on a batch outcome (its cleaning service replaced by
    the outcome), read back from the EMF it prints."""
    from lambdas.cleaner import handler

    outcome = BatchOutcome(records_in=3, clean=1, quarantined=Counter({QuarantineReason.OUTLIER: 2}))
    monkeypatch.setattr(handler, "_cleaner", lambda: SimpleNamespace(clean=lambda records: outcome))
    capsys.readouterr()
    assert handler.lambda_handler({"Records": []}, _context("cleaner")) == {"batchItemFailures": []}

    emitted = _emitted(capsys.readouterr().out)
    assert emitted[Metric.RECORDS_QUARANTINED_BY_REASON][1] == {REASON_DIMENSION, SERVICE_DIMENSION}
    assert {Metric.RECORDS_IN, Metric.RECORDS_CLEAN, Metric.RECORDS_QUARANTINED} <= set(emitted)
    _assert_read_as_emitted(emitted, dashboards, monitoring)


@pytest.mark.usefixtures("powertools_environment")
def test_dashboards_and_alarms_read_the_adjust_functions_metrics_as_it_emits_them(
    dashboards: dict[str, Dashboard], monitoring: Template, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The adjust handler's metrics for a run that fired, deferred, saw drift, deployed, retrained and
    failed once (its engine replaced by that run's report)."""
    from feedbackloop.adjust.drift import DriftEvent
    from feedbackloop.adjust.engine import DEFERRED, Decision, DeployedConfig, RunReport
    from feedbackloop.adjust.rules import Outcome
    from lambdas.adjust import handler

    now = datetime(2026, 11, 1, tzinfo=UTC)

    def decision(rule: str, outcome: str) -> Decision:
        return Decision(
            decided_at=now,
            run_id="run",
            rule=rule,
            scope="*",
            metric="ctr",
            value=0.1,
            samples=100,
            comparator="<",
            threshold=0.2,
            outcome=outcome,
            action="alert",
        )

    report = RunReport(
        run_id="run",
        now=now,
        decisions=[decision("low-ctr", Outcome.FIRE), decision("retrain", DEFERRED)],
        drift=[
            DriftEvent(
                stream="feedback_score", detected_at=now, values_seen=100, mean_before=0.5, mean_after=0.2, window=50
            )
        ],
        config=DeployedConfig(document={}, version="2"),
        retraining="execution",
        errors=["a rule failed"],
    )
    monkeypatch.setattr(handler, "_adjuster", lambda: SimpleNamespace(run=lambda now: report))
    capsys.readouterr()
    handler.lambda_handler({"scheduled_time": now.isoformat()}, _context("adjust"))

    emitted = _emitted(capsys.readouterr().out)
    assert emitted[Metric.RULE_FIRED][1] == {RULE_DIMENSION, SERVICE_DIMENSION}
    assert emitted[Metric.DRIFT_DETECTED][1] == {STREAM_DIMENSION, SERVICE_DIMENSION}
    assert {
        Metric.CONFIG_DEPLOYMENTS_STARTED,
        Metric.RETRAINING_STARTED,
        Metric.ALERTS_SENT,
        Metric.ADJUST_ERRORS,
        Metric.RULE_DEFERRED,
        Metric.RULE_EVALUATIONS,
    } <= set(emitted)
    _assert_read_as_emitted(emitted, dashboards, monitoring)


def test_health_dashboard_charts_both_apis_stream_cleaner_queue_and_workflow(
    synthesis, dashboards: dict[str, Dashboard]
) -> None:
    health = dashboards["Health"]
    ingest_api, serving_api = _api_name(synthesis, INGEST_STACK), _api_name(synthesis, SERVING_STACK)
    assert ingest_api != serving_api, "API Gateway metrics tell REST APIs apart by name only"
    for api in (ingest_api, serving_api):
        charted = {
            ref.name
            for ref in health.metric_refs()
            if ref.namespace == "AWS/ApiGateway" and ref.value("ApiName") == api
        }
        assert {"4XXError", "5XXError", "Latency"} <= charted, api

    def producers(namespace: str, name: str, dimension: str) -> list[Any]:
        refs = health.refs_of(namespace, name)
        assert refs, f"{namespace} {name} is not charted"
        return [synthesis.producer_value(health.reference(ref.value(dimension))) for ref in refs]

    stream = {"Ref": _logical_id(synthesis, "FeedbackLoopData", "AWS::Kinesis::Stream")}
    for name in (
        "GetRecords.IteratorAgeMilliseconds",
        "WriteProvisionedThroughputExceeded",
        "ReadProvisionedThroughputExceeded",
    ):
        assert producers("AWS/Kinesis", name, "StreamName") == [stream]
    cleaner = {"Ref": _logical_id(synthesis, INGEST_STACK, "AWS::Lambda::Function", "Cleaner")}
    for name in ("Errors", "Throttles", "Duration"):
        assert cleaner in producers("AWS/Lambda", name, "FunctionName")
    queue = _logical_id(synthesis, "FeedbackLoopData", "AWS::SQS::Queue", "CleanerFailures")
    assert producers("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName") == [
        {"Fn::GetAtt": [queue, "QueueName"]}
    ]
    machine = {"Ref": _logical_id(synthesis, TRAINING_STACK, "AWS::StepFunctions::StateMachine")}
    for name in ("ExecutionsFailed", "ExecutionsSucceeded"):
        assert producers("AWS/States", name, "StateMachineArn") == [machine]


def test_health_dashboard_charts_the_table_jobs_from_what_they_publish(
    synthesis, dashboards: dict[str, Dashboard], monitoring: Template
) -> None:
    """Python shell jobs have no job metrics: the failure rule's matches, and the jobs' Athena queries."""
    health = dashboards["Health"]
    rule_id, _ = _only(monitoring, "AWS::Events::Rule")
    for name in ("TriggeredRules", "FailedInvocations"):
        (ref,) = health.refs_of("AWS/Events", name)
        assert health.reference(ref.value("RuleName")) == {"Ref": rule_id}
    (athena,) = [e for e in health.expressions() if "AWS/Athena" in e]
    assert "QueryState" in athena and "WorkGroup=" in athena
    (placeholder,) = re.findall(r"\$\{ref:\d+\}", athena)
    workgroup = _logical_id(synthesis, TABLES_STACK, "AWS::Athena::WorkGroup")
    assert synthesis.producer_value(health.reference(placeholder)) == {"Ref": workgroup}


# -- alarms ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    namespace: str
    metric: str
    threshold: float
    comparison: str
    missing: str = "notBreaching"


GT, GE = "GreaterThanThreshold", "GreaterThanOrEqualToThreshold"
EXPECTED_ALARMS = {
    "IngestApi5xx": Expected("AWS/ApiGateway", "5XXError", 0, GT),
    "ServingApi5xxRate": Expected("AWS/ApiGateway", "5XXError", 0.01, GT),
    "CleanerErrors": Expected("AWS/Lambda", "Errors", 0, GT),
    "StreamIteratorAge": Expected("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", 5 * 60 * 1000, GT, "ignore"),
    "CleanerFailuresQueued": Expected("AWS/SQS", "ApproximateNumberOfMessagesVisible", 0, GT),
    "ConservationGap": Expected(METRICS_NAMESPACE, Metric.CONSERVATION_GAP, 0, GT),
    "RetrainingFailed": Expected("AWS/States", "ExecutionsFailed", 0, GT),
    "ModelGateRejected": Expected(METRICS_NAMESPACE, Metric.MODEL_GATE_REJECTED, 1, GE),
    "SampleRatioMismatch": Expected(METRICS_NAMESPACE, Metric.SAMPLE_RATIO_MISMATCH, 1, GE),
    "AdjustErrors": Expected(METRICS_NAMESPACE, Metric.ADJUST_ERRORS, 0, GT),
    "DriftDetected": Expected(METRICS_NAMESPACE, Metric.DRIFT_DETECTED, 0, GT),
}


def test_the_stack_has_exactly_the_expected_alarms(monitoring: Template) -> None:
    ids = monitoring.find_resources("AWS::CloudWatch::Alarm")
    assert len(ids) == len(EXPECTED_ALARMS)
    assert all(any(k.startswith(f"Monitoring{alarm}") for k in ids) for alarm in EXPECTED_ALARMS)


@pytest.mark.parametrize("alarm_id", sorted(EXPECTED_ALARMS))
def test_alarm_watches_its_metric_and_notifies_the_alerts_topic(monitoring: Template, alarm_id: str) -> None:
    expected = EXPECTED_ALARMS[alarm_id]
    (alarm,) = [
        r
        for k, r in monitoring.find_resources("AWS::CloudWatch::Alarm").items()
        if re.fullmatch(f"Monitoring{alarm_id}[0-9A-F]{{8}}", k)
    ]
    topic_id, _ = _only(monitoring, "AWS::SNS::Topic")
    properties = alarm["Properties"]
    assert properties["AlarmActions"] == [{"Ref": topic_id}]
    assert any((ref.namespace, ref.name) == (expected.namespace, expected.metric) for ref in _alarm_refs(alarm))
    assert (properties["Threshold"], properties["ComparisonOperator"], properties["TreatMissingData"]) == (
        expected.threshold,
        expected.comparison,
        expected.missing,
    )
    assert len(properties["AlarmDescription"].split()) >= 20, "say what it means and what to do"


def test_alarms_on_per_dimension_metrics_aggregate_every_value(monitoring: Template) -> None:
    """Alarms cannot use SEARCH: a metric emitted per experiment or stream is summed up by a Metrics
    Insights query (one series, evaluated over its period)."""
    for metric in (Metric.SAMPLE_RATIO_MISMATCH, Metric.DRIFT_DETECTED):
        (alarm,) = [
            a
            for a in monitoring.find_resources("AWS::CloudWatch::Alarm").values()
            if any(ref.name == metric for ref in _alarm_refs(a))
        ]
        (query,) = alarm["Properties"]["Metrics"]
        assert query["Expression"].startswith("SELECT ") and "GROUP BY" not in query["Expression"]
        assert query["Period"] >= 300


# -- the alerts topic and the Glue rule -----------------------------------------------------------------


def test_alerts_topic_is_encrypted_with_a_rotated_key_and_tls_only(monitoring: Template) -> None:
    topic_id, topic = _only(monitoring, "AWS::SNS::Topic")
    key_id, key = _only(monitoring, "AWS::KMS::Key")
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert key["Properties"]["EnableKeyRotation"] is True
    _, policy = _only(monitoring, "AWS::SNS::TopicPolicy")
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert {
        "Action": "sns:Publish",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": "*",
        "Resource": {"Ref": topic_id},
        "Sid": "AllowPublishThroughSSLOnly",
    } in statements
    (alarms,) = [s for s in statements if s["Effect"] == "Allow"]
    assert alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert alarms["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    key_statements = key["Properties"]["KeyPolicy"]["Statement"]
    assert any(
        s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
        and set(s["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
        for s in key_statements
    )


def test_glue_rule_alerts_on_failed_runs_of_the_projects_jobs(synthesis, monitoring: Template) -> None:
    _, rule = _only(monitoring, "AWS::Events::Rule")
    pattern = rule["Properties"]["EventPattern"]
    assert (pattern["source"], pattern["detail-type"]) == (["aws.glue"], ["Glue Job State Change"])
    assert set(pattern["detail"]["state"]) == {"FAILED", "TIMEOUT", "ERROR"}
    jobs = [
        {"Ref": k}
        for k, r in synthesis.template_json(TABLES_STACK)["Resources"].items()
        if r["Type"] == "AWS::Glue::Job"
    ]
    assert sorted(map(json.dumps, map(synthesis.producer_value, pattern["detail"]["jobName"]))) == sorted(
        map(json.dumps, jobs)
    )

    topic_id, _ = _only(monitoring, "AWS::SNS::Topic")
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": topic_id}
    assert "<detail-jobName>" in target["InputTransformer"]["InputTemplate"]
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    statements = synthesis.role_statements(MONITORING_STACK, role_id)
    assert {"sns:Publish"} == {s["Action"] for s in statements if "sns" in str(s["Action"])}
    assert all(
        s["Resource"] in ({"Ref": topic_id}, {"Fn::GetAtt": [_only(monitoring, "AWS::KMS::Key")[0], "Arn"]})
        for s in statements
    )


def test_the_monitoring_stack_runs_no_code_and_holds_no_data(monitoring: Template) -> None:
    types = {r["Type"] for r in monitoring.to_json()["Resources"].values()}
    assert types == {
        "AWS::KMS::Key",
        "AWS::SNS::Topic",
        "AWS::SNS::TopicPolicy",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",
        "AWS::Events::Rule",
        "AWS::IAM::Role",
        "AWS::IAM::Policy",
    }
