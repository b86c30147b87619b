"""The adjust function (ADR 0009): every 5 minutes EventBridge Scheduler invokes it; it evaluates the trigger
rules (`feedbackloop/config/rules.json`) over the engagement layer (Athena) and CloudWatch, runs the ADWIN
drift detectors, and acts: a new UI config version deployed through AppConfig, a retraining run, an alert
on the operators' topic. Its state is one item of the cleaner's state table; every decision goes to the
decisions table.

Packaging: the drift detectors need river, which pulls scipy and numpy. With the AWS SDK for pandas layer
as well the function would pass Lambda's 250 MB unzipped, and it imports no pandas, pyarrow or
awswrangler (its adapters are plain boto3, `feedbackloop.adapters.control`), so it gets the drift layer
instead (`LayerSet.DRIFT`: Powertools, our `lambda` group, our `lambda-drift` group).

One run at a time: each run takes a lease (an item of the state table, conditional PutItem, expiring a
minute after the function's timeout) and a run that finds it taken does nothing; the state item is saved
conditionally as well. Reserved concurrency is opt-in (`-c adjust_reserved_concurrency=1`): a new account's
concurrency quota of 10 cannot spare any. The timeout is the schedule's period.

The rule file is validated here, at synth, with the parser the function uses: a rule that would fail at
cold start stops `cdk synth` instead, with the error naming the rule and the field.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk import nag
from cdk.components.adjust_store import AdjustStore
from cdk.components.function import LayerSet, PythonFunction
from cdk.components.lake import Lake
from cdk.components.schedules import scheduler_role
from cdk.components.table_jobs import TableJobs
from cdk.components.ui_config import UiConfig
from cdk.deployment import Deployment
from cdk.project import ProjectLayout
from feedbackloop.adjust import rules as adjust_rules
from feedbackloop.lake import CURATED_EVENTS, ENGAGEMENT, INTERACTIONS, USER_DAILY
from feedbackloop.settings import AdjustSettings

HANDLER = "lambdas.adjust.handler.lambda_handler"
RATE = Duration.minutes(5)
TIMEOUT = RATE  # a run ends before the next one is due
MEMORY_SIZE = 1024
# The handler's event (see its docstring): the scheduled time, so a retried invocation evaluates the same
# window and names the same retraining execution.
SCHEDULED_TIME = "scheduled_time"
# Scheduler hands the event to Lambda asynchronously; should that fail, it retries until the next run is
# due, which covers the same rule windows: an older event is dropped rather than evaluated late.
SCHEDULE_RETRY_ATTEMPTS = 3
SCHEDULE_MAX_EVENT_AGE = RATE
# Lambda's own queue of those events (a run waiting for the one before it, or retried after an error):
# an event older than this is stale, later runs have evaluated its window.
INVOKE_MAX_EVENT_AGE = Duration.minutes(15)


def validated_rules() -> adjust_rules.RuleSet:
    """The packaged rule set, parsed as the function parses it at cold start; InvalidRulesError (naming the
    rule and the field) stops synth."""
    return adjust_rules.packaged_rules()


class Adjust(Construct):
    """`function`, `schedule`, and `rules` (the rule set validated at synth)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        lake: Lake,
        adjust_store: AdjustStore,
        table_jobs: TableJobs,
        ui_config: UiConfig,
        retraining: sfn.IStateMachine,
        alerts: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        self.rules = validated_rules()
        settings = AdjustSettings(
            engine="aws",
            state_table=adjust_store.state_table.table_name,
            decisions_table=adjust_store.table.table_name,
            glue_database=lake.database_name,
            athena_workgroup=table_jobs.workgroup.ref,
            events_table=CURATED_EVENTS.name,
            interactions_table=INTERACTIONS.name,
            engagement_table=ENGAGEMENT.name,
            user_daily_table=USER_DAILY.name,
            appconfig_application_id=ui_config.application.ref,
            appconfig_environment_id=ui_config.environment.ref,
            appconfig_profile_id=ui_config.profile.ref,
            appconfig_strategy_id=ui_config.strategy.ref,
            state_machine_arn=retraining.state_machine_arn,
            alerts_topic_arn=alerts.topic_arn,
        )
        adjust = PythonFunction(
            self,
            "Adjust",
            layout=layout,
            handler=HANDLER,
            description="feedbackloop adjust: trigger rules and drift detectors -> UI config, retraining, alerts",
            environment=settings.to_env(),
            memory_size=MEMORY_SIZE,
            timeout=TIMEOUT,
            layers=LayerSet.DRIFT,
            # opt-in (see cdk/deployment.py): one run at a time comes from the lease
            reserved_concurrent_executions=Deployment.of(self).adjust_reserved_concurrency,
            unscoped_actions={
                "cloudwatch:GetMetricStatistics": "the rules' metrics, read from the project's namespace",
            },
        )
        self.function = function = adjust.function
        function.configure_async_invoke(max_event_age=INVOKE_MAX_EVENT_AGE)

        # the state item and the decisions; the lake through Athena in the table jobs' workgroup
        adjust.role.add_managed_policy(adjust_store.adjuster_policy)
        adjust.role.add_managed_policy(lake.reader_policy)
        table_jobs.grant_query(function)
        # the actions
        adjust.role.add_managed_policy(ui_config.deployer_policy)
        retraining.grant_start_execution(function)
        retraining.grant(function, "states:ListExecutions")
        alerts.grant_publish(function)
        nag.acknowledge(
            adjust.role,
            "IAM5[Action::kms:GenerateDataKey*]",
            "Written by the alerts topic's grant_publish on the topic's own key (SNS encrypts what it "
            "publishes): a wildcard action on that one key ARN.",
        )

        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description="feedbackloop: evaluate the trigger rules and drift detectors every 5 minutes",
            schedule=scheduler.ScheduleExpression.rate(RATE),
            time_window=scheduler.TimeWindow.off(),  # on the period: the rule windows end at the scheduled time
            target=_InvokeExactly(
                function,
                role=scheduler_role(self, "ScheduleRole", description="feedbackloop: invoke the adjust function"),
                input=scheduler.ScheduleTargetInput.from_object(
                    {SCHEDULED_TIME: scheduler.ContextAttribute.scheduled_time}
                ),
                retry_attempts=SCHEDULE_RETRY_ATTEMPTS,
                max_event_age=SCHEDULE_MAX_EVENT_AGE,
            ),
        )


class _InvokeExactly(scheduler_targets.LambdaInvoke):
    """LambdaInvoke whose role may invoke the function itself only: the target's default grant
    (`grant_invoke`) adds every version and alias of it (`<function ARN>:*`)."""

    def __init__(self, function: lambda_.IFunction, **props: object) -> None:
        super().__init__(function, **props)
        self._function = function

    def _add_target_action_to_role(self, role) -> None:  # noqa: ANN001 (jsii's IRole)
        self._function.grant_invoke_latest_version(role)
