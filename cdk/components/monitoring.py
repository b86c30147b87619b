"""Monitoring: two CloudWatch dashboards, the alarms an operator must act on, and the one topic that
carries every operator alert.

- "Effect" dashboard: did the loop help? Engagement (CTR, conversion, session duration, bounce rate) per
  segment and per experiment variant, satisfaction (rating mean, NPS), the feedback signal's quality
  (its correlation with retention and conversion), sample ratio mismatch per experiment, and
  recommendations served against popularity fallbacks.
- "Health" dashboard: is the loop running? The two REST APIs, the stream, the cleaner and its failure
  queue, record conservation and quarantine reasons, the table jobs, retraining, rule decisions, drift
  and configuration deployments, with the alarms' states on top.

Every metric of our own is named by `feedbackloop.names` (the handlers emit them as EMF through
Powertools). Powertools adds the `service` dimension (`names.SERVICE`) to each metric, so a metric is
addressed by `service` plus the dimensions its emitter adds (`EMITTED_DIMENSIONS`). Metrics emitted once
per dimension value (per quarantine reason, rule, drift stream, segment and variant, experiment) are
charted with SEARCH expressions, or Metrics Insights queries where a value must be filtered or rolled up
('*', `ROLLED_UP`); alarms cannot use SEARCH, so theirs are Metrics Insights queries that aggregate every
value into one series.

Table jobs: Glue Python shell jobs publish no CloudWatch job metrics (Glue's job metrics and
observability metrics are for Spark jobs), but every job run ends with a "Glue Job State Change" event.
An EventBridge rule sends the failed, timed-out and errored runs of the project's jobs straight to the
alerts topic (an alarm on the rule's own metrics would only add a minute of delay and a second place to
look); the dashboard charts that rule's matches and failed deliveries, and the Athena queries the jobs
run in their workgroup, by final state (the workgroup publishes query metrics).

The alerts topic has a key of its own: CloudWatch alarms publish as the CloudWatch service, which needs a
key-policy statement, and the data key stays free of services that never read data (as the retraining
workflow's key). The retraining workflow's model-alerts topic stays where it is: it carries the gate's
reason from inside the workflow, and an alarm here forwards the rejection to the operators' topic, so
operators subscribe to this one topic for everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Aws, Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk import nag
from cdk.components.alert_subscriptions import subscribe_alerts
from feedbackloop.names import (
    EXPERIMENT_DIMENSION,
    METRICS_NAMESPACE,
    REASON_DIMENSION,
    RULE_DIMENSION,
    SEGMENT_DIMENSION,
    SERVICE,
    SERVICE_DIMENSION,
    STREAM_DIMENSION,
    VARIANT_DIMENSION,
    Metric,
)

# The engagement layer's value of a segment or variant dimension rolled up over all its values.
ROLLED_UP = "*"
ENGAGEMENT_DIMENSIONS = (SEGMENT_DIMENSION, VARIANT_DIMENSION)
ENGAGEMENT_METRICS = (
    Metric.CTR,
    Metric.CONVERSION_RATE,
    Metric.AVG_SESSION_SECONDS,
    Metric.BOUNCE_RATE,
    Metric.RATING_MEAN,
    Metric.NPS,
    Metric.FEEDBACK_RETENTION_CORRELATION,
    Metric.FEEDBACK_CONVERSION_CORRELATION,
)
# The dimensions each metric is emitted with beside `service` (as feedbackloop.names documents them);
# a metric not listed has `service` only.
EMITTED_DIMENSIONS: Mapping[Metric, tuple[str, ...]] = {
    Metric.RECORDS_QUARANTINED_BY_REASON: (REASON_DIMENSION,),
    Metric.RULE_EVALUATIONS: (RULE_DIMENSION,),
    Metric.RULE_FIRED: (RULE_DIMENSION,),
    Metric.RULE_DEFERRED: (RULE_DIMENSION,),
    Metric.DRIFT_DETECTED: (STREAM_DIMENSION,),
    Metric.SAMPLE_RATIO_MISMATCH: (EXPERIMENT_DIMENSION,),
    **dict.fromkeys(ENGAGEMENT_METRICS, ENGAGEMENT_DIMENSIONS),
}

GLUE_FAILED_STATES = ("FAILED", "TIMEOUT", "ERROR")  # STOPPED is an operator's own doing
GLUE_JOB_STATE_CHANGE = "Glue Job State Change"

FIVE_MINUTES = Duration.minutes(5)
HOUR = Duration.hours(1)
# The engagement metrics come from the engagement layer, rebuilt hourly by the table jobs.
EFFECT_PERIOD = HOUR
ITERATOR_AGE_LIMIT = Duration.minutes(5)
SERVING_5XX_RATE_LIMIT = 0.01  # share of requests


@dataclass(frozen=True)
class MonitoredResources:
    """What the dashboards and alarms watch, from the other stacks."""

    ingestion_api: apigw.RestApi
    serving_api: apigw.RestApi
    stream: kinesis.IStream
    cleaner: lambda_.IFunction
    cleaner_failures: sqs.IQueue
    serving: lambda_.IFunction
    glue_job_names: Mapping[str, str]  # job name (glue_jobs.build_tables.JOB_NAMES) -> its physical name
    athena_workgroup: str  # the table jobs' workgroup name
    retraining: sfn.IStateMachine


# -- our metrics, by name from feedbackloop.names -------------------------------------------------------


def dimensions_of(metric: Metric) -> tuple[str, ...]:
    """The dimension names `metric` is emitted with, sorted (the order CloudWatch keeps)."""
    return tuple(sorted((SERVICE_DIMENSION, *EMITTED_DIMENSIONS.get(metric, ()))))


def emf_metric(
    metric: Metric, statistic: str, *, period: Duration = FIVE_MINUTES, label: str | None = None
) -> cw.Metric:
    """A metric emitted with `service` only."""
    if metric in EMITTED_DIMENSIONS:
        raise ValueError(f"{metric} is emitted per {EMITTED_DIMENSIONS[metric]}: use search() or insights()")
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=metric,
        dimensions_map={SERVICE_DIMENSION: SERVICE},
        statistic=statistic,
        period=period,
        label=label or metric,
    )


def search(metric: Metric, statistic: str, *, period: Duration = FIVE_MINUTES, label: str = "") -> cw.SearchExpression:
    """One series per dimension value (e.g. per quarantine reason); for dashboards only."""
    schema = ",".join((METRICS_NAMESPACE, *dimensions_of(metric)))
    seconds = int(period.to_seconds())
    return cw.SearchExpression(
        expression=f'SEARCH(\'{{{schema}}} {SERVICE_DIMENSION}="{SERVICE}" MetricName="{metric}"\', '
        f"'{statistic}', {seconds})",
        label=label,
        period=period,
    )


def insights(
    function: str,
    metric: Metric,
    *,
    where: Mapping[str, str] | None = None,
    group_by: str | None = None,
    period: Duration = FIVE_MINUTES,
    label: str | None = None,
) -> cw.MathExpression:
    """A Metrics Insights query over every series of `metric` (SUM, MAX, AVG...): one series, or one per
    `group_by` value. Alarms can use the ungrouped form; dashboards show up to two weeks of it."""
    schema = ", ".join((f'"{METRICS_NAMESPACE}"', *dimensions_of(metric)))
    conditions = {SERVICE_DIMENSION: SERVICE, **(where or {})}
    query = (
        f"SELECT {function}({metric}) FROM SCHEMA({schema}) WHERE "
        + " AND ".join(f"{name} = '{value}'" for name, value in conditions.items())
        + (f" GROUP BY {group_by}" if group_by else "")
    )
    # "" leaves a grouped query's series labelled by their group (a label would name them all alike)
    return cw.MathExpression(expression=query, using_metrics={}, period=period, label=label or "")


# -- the construct ----------------------------------------------------------------------------------------


class Monitoring(Construct):
    """`topic` (operator alerts), `alarms` by id, `glue_failures` (the EventBridge rule), and the
    dashboards `effect` and `health`."""

    def __init__(self, scope: Construct, construct_id: str, *, resources: MonitoredResources) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self, "Key", enable_key_rotation=True, description="feedbackloop monitoring: operator alerts"
        )
        self.topic = sns.Topic(
            self,
            "Alerts",
            display_name="feedbackloop operator alerts",
            master_key=self.key,
            enforce_ssl=True,
        )
        subscribe_alerts(self, self.topic)
        self._allow_alarms_to_publish()
        self.alarms: dict[str, cw.Alarm] = {}
        self._alarms(resources)
        self.glue_failures = self._glue_failure_rule(resources.glue_job_names)

        stack_name = Stack.of(self).stack_name
        self.effect = cw.Dashboard(
            self,
            "EffectDashboard",
            dashboard_name=f"{stack_name}-Effect",
            default_interval=Duration.days(7),
            widgets=self._effect_widgets(),
        )
        self.health = cw.Dashboard(
            self,
            "HealthDashboard",
            dashboard_name=f"{stack_name}-Health",
            default_interval=Duration.hours(12),
            widgets=self._health_widgets(resources),
        )

    # -- the alerts topic -----------------------------------------------------------------------------

    def _allow_alarms_to_publish(self) -> None:
        """CloudWatch publishes an alarm's notification as its service principal: the topic policy (which
        replaces SNS's default one) and the key policy must let it, for this account's alarms only."""
        stack = Stack.of(self)
        cloudwatch = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        this_accounts_alarms = {
            "ArnLike": {
                "aws:SourceArn": stack.format_arn(
                    service="cloudwatch",
                    resource="alarm",
                    resource_name="*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            },
            "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
        }
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisAccountsAlarms",
                principals=[cloudwatch],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions=this_accounts_alarms,
            )
        )
        # the same conditions on the key: no other account's alarm (confused deputy) gets data keys from it
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublishToTheEncryptedTopic",
                principals=[cloudwatch],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=this_accounts_alarms,
            )
        )

    # -- alarms ---------------------------------------------------------------------------------------

    def _alarm(
        self,
        alarm_id: str,
        metric: cw.IMetric,
        *,
        threshold: float,
        description: str,
        comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods: int = 1,
        datapoints_to_alarm: int | None = None,
        missing: cw.TreatMissingData = cw.TreatMissingData.NOT_BREACHING,
    ) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            alarm_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=missing,
            alarm_description=description,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.alarms[alarm_id] = alarm
        return alarm

    def _alarms(self, r: MonitoredResources) -> None:
        sum_ = cw.Stats.SUM
        self._alarm(
            "IngestApi5xx",
            r.ingestion_api.metric_server_error(statistic=sum_, period=FIVE_MINUTES),
            threshold=0,
            description="The ingestion API (POST /events) answered 5XX: producers' feedback may be lost unless "
            "they retry. Check the ingest function's errors and logs, and the stream's write throttling "
            "(health dashboard, Ingestion).",
        )
        self._alarm(
            "ServingApi5xxRate",
            r.serving_api.metric_server_error(statistic=cw.Stats.AVERAGE, period=FIVE_MINUTES),
            threshold=SERVING_5XX_RATE_LIMIT,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            description=f"Over {SERVING_5XX_RATE_LIMIT:.0%} of serving API requests answered 5XX for 15 minutes. "
            "503 means no model is published yet or no UI configuration is deployed (publish one, or "
            "deploy the configuration); other 5XX: check the serving function's errors, throttles and logs.",
        )
        self._alarm(
            "CleanerErrors",
            r.cleaner.metric_errors(statistic=sum_, period=FIVE_MINUTES),
            threshold=0,
            description="The cleaner function failed on a batch. The event source mapping retries it (halving "
            "it to isolate bad records) and parks what still fails on the cleaner-failures queue. Read "
            "the cleaner's logs; if the cause is fixed, replay the parked batches (`feedbackloop replay`).",
        )
        self._alarm(
            "StreamIteratorAge",
            r.stream.metric_get_records_iterator_age_milliseconds(
                statistic=cw.Stats.MAXIMUM, period=Duration.minutes(1)
            ),
            threshold=ITERATOR_AGE_LIMIT.to_milliseconds(),
            evaluation_periods=5,
            datapoints_to_alarm=5,
            # No data means no consumer polled in that minute: it neither raises nor clears the alarm.
            missing=cw.TreatMissingData.IGNORE,
            description=f"The stream's oldest unread record has been over {ITERATOR_AGE_LIMIT.to_minutes()} "
            "minutes old for 5 minutes: the cleaner (or the raw archive) falls behind, and records near "
            "the stream's retention may expire unread. Check the cleaner's errors, throttles and duration; "
            "add shards or raise the parallelization factor if it is simply too slow.",
        )
        self._alarm(
            "CleanerFailuresQueued",
            r.cleaner_failures.metric_approximate_number_of_messages_visible(
                statistic=cw.Stats.MAXIMUM, period=FIVE_MINUTES
            ),
            threshold=0,
            description="Stream batches the cleaner gave up on are parked on the cleaner-failures queue: their "
            "records are neither curated nor quarantined. Find the cause in the cleaner's logs, fix it, "
            "then replay them (`feedbackloop replay`) and delete the messages.",
        )
        self._alarm(
            "ConservationGap",
            emf_metric(Metric.CONSERVATION_GAP, cw.Stats.MAXIMUM),
            threshold=0,
            description="The cleaner counted more records in than it accounted for (clean, quarantined, "
            "duplicate): records went missing. Compare RecordsIn with the outcomes on the health dashboard and read "
            "the cleaner's logs for the batch; the raw archive holds every record for a replay.",
        )
        self._alarm(
            "RetrainingFailed",
            cw.MathExpression(
                expression="FILL(failed, 0) + FILL(timedOut, 0)",
                using_metrics={
                    "failed": r.retraining.metric_failed(statistic=sum_, period=FIVE_MINUTES),
                    "timedOut": r.retraining.metric_timed_out(statistic=sum_, period=FIVE_MINUTES),
                },
                label="retraining executions failed or timed out",
                period=FIVE_MINUTES,
            ),
            threshold=0,
            description="A retraining execution failed or timed out: the published model stays, but no new "
            "one was trained. Open the execution in Step Functions to see the failed state (a table job, "
            "the training job or a Lambda step), fix it and start an execution again.",
        )
        self._alarm(
            "ModelGateRejected",
            emf_metric(Metric.MODEL_GATE_REJECTED, sum_),
            threshold=1,
            comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            description="A trained candidate did not beat the published model on the hold-out set, so the "
            "current model stays (the model-alerts topic carries the gate's reason). Once is normal; night "
            "after night means the data or the training drifted: check ModelCandidateNdcgAt10 and the "
            "feedback volume on the health dashboard.",
        )
        self._alarm(
            "SampleRatioMismatch",
            insights("MAX", Metric.SAMPLE_RATIO_MISMATCH, period=HOUR, label="experiments with a mismatch"),
            threshold=1,
            comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            description="An experiment's arms received users in proportions that differ from its allocation "
            "(chi-squared p < 0.001): its results are not trustworthy. Find the experiment on the effect "
            "dashboard, check the assignment (UI configuration) and what filters users per arm; do not "
            "decide on it until fixed.",
        )
        self._alarm(
            "AdjustErrors",
            emf_metric(Metric.ADJUST_ERRORS, sum_),
            threshold=0,
            description="A rule or drift detector of the adjust function failed to evaluate (the others still "
            "ran): its decisions are not being made. Read the adjust function's logs for the rule and its "
            "error, and fix the rule or its input.",
        )
        self._alarm(
            "DriftDetected",
            insights("SUM", Metric.DRIFT_DETECTED, label="drift detections, all streams"),
            threshold=0,
            description="The drift detector saw a change in a stream (feedback score, or CTR of a segment). "
            "The adjust function's rules may already have acted (retraining, a configuration deployment): "
            "check RuleFired and RetrainingStarted on the health dashboard, and whether the change is real.",
        )

    # -- table jobs -----------------------------------------------------------------------------------

    def _glue_failure_rule(self, job_names: Mapping[str, str]) -> events.Rule:
        rule = events.Rule(
            self,
            "GlueJobFailed",
            description="feedbackloop: a table job run failed, timed out or errored",
            event_pattern=events.EventPattern(
                source=["aws.glue"],
                detail_type=[GLUE_JOB_STATE_CHANGE],
                detail={"jobName": list(job_names.values()), "state": list(GLUE_FAILED_STATES)},
            ),
        )
        field = events.EventField.from_path
        rule.add_target(
            targets.SnsTopic(
                self.topic,
                # A role of the rule's own rather than a topic-policy grant to every EventBridge rule.
                authorize_using_role=True,
                message=events.RuleTargetInput.from_text(
                    f"Table job {field('$.detail.jobName')} run {field('$.detail.jobRunId')} ended "
                    f"{field('$.detail.state')}: {field('$.detail.message')}. The modelled tables it builds "
                    "are stale until a run succeeds (the hourly workflow retries; the job's logs are under "
                    "/aws-glue/)."
                ),
            )
        )
        for child in rule.node.find_all():
            if isinstance(child, iam.Role):
                nag.acknowledge(
                    child,
                    "IAM5[Action::kms:GenerateDataKey*]",
                    "Written by the topic's publish grant: the rule's role encrypts its message with the "
                    "alerts topic's key; the action wildcard is on that one key ARN.",
                )
        return rule

    # -- dashboards -----------------------------------------------------------------------------------

    def _effect_widgets(self) -> list[list[cw.IWidget]]:
        rows: list[list[cw.IWidget]] = [
            [
                cw.TextWidget(
                    markdown="# feedbackloop: effect\nThe loop's effect, from the engagement layer (hourly): each "
                    "metric per segment (all variants) and per experiment variant (all segments); `*` is "
                    "the whole population. Compare variants only while their experiment shows no sample "
                    "ratio mismatch.",
                    width=24,
                    height=2,
                )
            ]
        ]
        sections = (
            ("Engagement", (Metric.CTR, Metric.CONVERSION_RATE, Metric.AVG_SESSION_SECONDS, Metric.BOUNCE_RATE)),
            ("Satisfaction", (Metric.RATING_MEAN, Metric.NPS)),
            (
                "Feedback signal quality: correlation of feedback with",
                (Metric.FEEDBACK_RETENTION_CORRELATION, Metric.FEEDBACK_CONVERSION_CORRELATION),
            ),
        )
        for section, metrics in sections:
            rows.append([_header(section)])
            for metric in metrics:
                rows.append(
                    [
                        _graph(
                            f"{metric} by segment",
                            [_by(metric, group_by=SEGMENT_DIMENSION, rolled_up=VARIANT_DIMENSION)],
                            width=12,
                        ),
                        _graph(
                            f"{metric} by variant",
                            [_by(metric, group_by=VARIANT_DIMENSION, rolled_up=SEGMENT_DIMENSION)],
                            width=12,
                        ),
                    ]
                )
        served = emf_metric(Metric.RECOMMENDATIONS_SERVED, cw.Stats.SUM, period=EFFECT_PERIOD)
        fallback = emf_metric(Metric.RECOMMENDATIONS_FALLBACK, cw.Stats.SUM, period=EFFECT_PERIOD)
        rows.append([_header("Recommendations and experiments")])
        rows.append(
            [
                _graph("Recommendations served and popularity fallbacks", [served, fallback], width=8),
                _graph(
                    "Fallback share (%)",
                    [
                        cw.MathExpression(
                            expression="100 * fallback / served",
                            using_metrics={"fallback": fallback, "served": served},
                            label="fallback share",
                            period=EFFECT_PERIOD,
                        )
                    ],
                    width=8,
                ),
                _graph(
                    f"{Metric.SAMPLE_RATIO_MISMATCH} by experiment (1 = mismatch)",
                    [search(Metric.SAMPLE_RATIO_MISMATCH, cw.Stats.MAXIMUM, period=EFFECT_PERIOD)],
                    width=8,
                ),
            ]
        )
        return rows

    def _health_widgets(self, r: MonitoredResources) -> list[list[cw.IWidget]]:
        sum_, p99 = cw.Stats.SUM, cw.Stats.percentile(99)
        period = FIVE_MINUTES
        rows: list[list[cw.IWidget]] = [
            [
                cw.TextWidget(
                    markdown="# feedbackloop: health\nEach alarm's description says what it means and what to "
                    "do; every alarm notifies the operator alerts topic.",
                    width=24,
                    height=2,
                )
            ],
            [cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24, height=4)],
        ]

        rows.append([_header("Ingestion")])
        rows.append(
            [
                _api_graph("Ingestion API (POST /events)", r.ingestion_api),
                _graph(
                    "Ingestion API latency (ms)",
                    [r.ingestion_api.metric_latency(statistic=s, period=period) for s in (cw.Stats.p(50), p99)],
                ),
                _graph(
                    "Events",
                    [
                        emf_metric(m, sum_)
                        for m in (
                            Metric.EVENTS_ACCEPTED,
                            Metric.EVENTS_REJECTED,
                            Metric.EVENTS_THROTTLED,
                            Metric.REQUESTS_REJECTED,
                        )
                    ],
                ),
            ]
        )
        rows.append(
            [
                _graph(
                    "Stream: oldest unread record (ms)",
                    [r.stream.metric_get_records_iterator_age_milliseconds(statistic=cw.Stats.MAXIMUM, period=period)],
                    annotations=[cw.HorizontalAnnotation(value=ITERATOR_AGE_LIMIT.to_milliseconds(), label="alarm")],
                ),
                _graph(
                    "Stream: provisioned throughput exceeded",
                    [
                        r.stream.metric_write_provisioned_throughput_exceeded(statistic=sum_, period=period),
                        r.stream.metric_read_provisioned_throughput_exceeded(statistic=sum_, period=period),
                    ],
                ),
                _graph(
                    "Cleaner failures queue: messages visible",
                    [
                        r.cleaner_failures.metric_approximate_number_of_messages_visible(
                            statistic=cw.Stats.MAXIMUM, period=period
                        )
                    ],
                ),
            ]
        )

        rows.append([_header("Cleaning")])
        rows.append(
            [
                _function_graph("Cleaner function", r.cleaner),
                _graph(
                    "Cleaner duration (ms)",
                    [
                        r.cleaner.metric_duration(statistic=s, period=period)
                        for s in (cw.Stats.p(50), p99, cw.Stats.MAXIMUM)
                    ],
                ),
                _graph(
                    "Records",
                    [
                        emf_metric(m, sum_)
                        for m in (
                            Metric.RECORDS_IN,
                            Metric.RECORDS_CLEAN,
                            Metric.RECORDS_QUARANTINED,
                            Metric.RECORDS_DUPLICATE,
                            Metric.RECORDS_IMPUTED,
                            Metric.RECORDS_FAST_PATH,
                        )
                    ],
                ),
            ]
        )
        rows.append(
            [
                _graph(
                    "Quarantined records by reason",
                    [search(Metric.RECORDS_QUARANTINED_BY_REASON, sum_)],
                    width=12,
                ),
                _graph(
                    "Conservation and retries",
                    [
                        emf_metric(Metric.CONSERVATION_GAP, cw.Stats.MAXIMUM),
                        emf_metric(Metric.BATCH_ITEM_FAILURES, sum_),
                        emf_metric(Metric.ONLINE_PROFILES_UPDATED, sum_),
                    ],
                    width=12,
                ),
            ]
        )

        rows.append([_header("Table jobs (Glue Python shell: no job metrics; failures alert through EventBridge)")])
        rule_name = self.glue_failures.rule_name
        rows.append(
            [
                _graph(
                    "Table job runs failed, timed out or errored",
                    [
                        cw.Metric(
                            namespace="AWS/Events",
                            metric_name=name,
                            dimensions_map={"RuleName": rule_name},
                            statistic=sum_,
                            period=HOUR,
                            label=label,
                        )
                        for name, label in (
                            ("TriggeredRules", "failed runs"),
                            ("FailedInvocations", "alerts not delivered"),
                        )
                    ],
                    width=12,
                ),
                _graph(
                    "Table jobs' Athena queries by final state",
                    [
                        cw.SearchExpression(
                            expression="SEARCH('{AWS/Athena,QueryState,QueryType,WorkGroup} "
                            f'WorkGroup="{r.athena_workgroup}" MetricName="TotalExecutionTime"\', '
                            f"'SampleCount', {int(HOUR.to_seconds())})",
                            label="",
                            period=HOUR,
                        )
                    ],
                    width=12,
                ),
            ]
        )

        rows.append([_header("Training")])
        rows.append(
            [
                _graph(
                    "Retraining executions",
                    [
                        r.retraining.metric_succeeded(statistic=sum_, period=HOUR),
                        r.retraining.metric_failed(statistic=sum_, period=HOUR),
                        r.retraining.metric_timed_out(statistic=sum_, period=HOUR),
                    ],
                ),
                _graph(
                    "Model gate",
                    [
                        emf_metric(m, sum_, period=HOUR)
                        for m in (Metric.MODEL_GATE_PASSED, Metric.MODEL_GATE_REJECTED, Metric.MODEL_PUBLISHED)
                    ],
                ),
                _graph(
                    "Candidate NDCG@10 (hold-out)",
                    [emf_metric(Metric.MODEL_CANDIDATE_NDCG, cw.Stats.MAXIMUM, period=HOUR)],
                ),
            ]
        )

        rows.append([_header("Adjustment: rules, drift, configuration")])
        rows.append(
            [
                _graph("Rules fired, by rule", [search(Metric.RULE_FIRED, sum_)]),
                _graph("Rules deferred, by rule", [search(Metric.RULE_DEFERRED, sum_)]),
                _graph("Drift detected, by stream", [search(Metric.DRIFT_DETECTED, sum_)]),
            ]
        )
        rows.append(
            [
                _graph(
                    "Actions",
                    [
                        emf_metric(m, sum_)
                        for m in (Metric.CONFIG_DEPLOYMENTS_STARTED, Metric.RETRAINING_STARTED, Metric.ALERTS_SENT)
                    ],
                ),
                _graph("Adjust errors and skipped runs",
                       [emf_metric(Metric.ADJUST_ERRORS, sum_), emf_metric(Metric.ADJUST_SKIPPED, sum_)]),
                _graph("Rule evaluations, by rule", [search(Metric.RULE_EVALUATIONS, sum_)]),
            ]
        )

        rows.append([_header("Serving")])
        rows.append(
            [
                _api_graph("Serving API", r.serving_api),
                _graph(
                    "Serving API latency (ms)",
                    [r.serving_api.metric_latency(statistic=s, period=period) for s in (cw.Stats.p(50), p99)],
                ),
                _function_graph("Serving function", r.serving),
            ]
        )
        rows.append(
            [
                _graph(
                    "Served",
                    [
                        emf_metric(m, sum_)
                        for m in (
                            Metric.RECOMMENDATIONS_SERVED,
                            Metric.RECOMMENDATIONS_FALLBACK,
                            Metric.CONFIG_SERVED,
                            Metric.PREFERENCES_CHANGED,
                        )
                    ],
                ),
                _graph(
                    "Serving function 5xx answers (a UI config deployment rolls back on them)",
                    [emf_metric(Metric.SERVING_ERRORS, sum_)],
                ),
                _graph(
                    "Erasures",
                    [emf_metric(m, sum_) for m in (Metric.ERASURES_REQUESTED, Metric.ERASURES_COMPLETED)],
                ),
            ]
        )
        return rows


# -- widgets ----------------------------------------------------------------------------------------------


def _by(metric: Metric, *, group_by: str, rolled_up: str) -> cw.MathExpression:
    """`metric` per value of `group_by`, over all values of the other engagement dimension."""
    return insights("AVG", metric, where={rolled_up: ROLLED_UP}, group_by=group_by, period=EFFECT_PERIOD)


def _header(title: str) -> cw.TextWidget:
    return cw.TextWidget(markdown=f"## {title}", width=24, height=1)


def _graph(
    title: str,
    metrics: Sequence[cw.IMetric],
    *,
    width: int = 8,
    annotations: Sequence[cw.HorizontalAnnotation] = (),
) -> cw.GraphWidget:
    return cw.GraphWidget(
        title=title, left=list(metrics), width=width, height=6, left_annotations=list(annotations) or None
    )


def _api_graph(title: str, api: apigw.RestApi) -> cw.GraphWidget:
    period = FIVE_MINUTES
    return _graph(
        f"{title}: requests and errors",
        [
            api.metric_count(statistic=cw.Stats.SUM, period=period),
            api.metric_client_error(statistic=cw.Stats.SUM, period=period),
            api.metric_server_error(statistic=cw.Stats.SUM, period=period),
        ],
    )


def _function_graph(title: str, function: lambda_.IFunction) -> cw.GraphWidget:
    period = FIVE_MINUTES
    return _graph(
        f"{title}: invocations, errors, throttles",
        [
            function.metric_invocations(statistic=cw.Stats.SUM, period=period),
            function.metric_errors(statistic=cw.Stats.SUM, period=period),
            function.metric_throttles(statistic=cw.Stats.SUM, period=period),
        ],
    )
