"""FeedbackLoopMonitoring: the dashboards ("effect" and "health"), the alarms, the operator alerts topic
and the rule that alerts on failed table jobs. It owns no data and runs no code of ours: it only reads
the names of what the other stacks deployed, so it deploys last and can be torn down on its own."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from cdk.components.cleaner import Cleaner
from cdk.components.cleaner_state import CleanerState
from cdk.components.event_stream import EventStream
from cdk.components.ingestion_api import IngestionApi
from cdk.components.monitoring import MonitoredResources, Monitoring
from cdk.components.retraining import Retraining
from cdk.components.serving_api import ServingApi
from cdk.components.table_jobs import TableJobs
from feedbackloop.resources import CLEANER_FAILURES


class FeedbackLoopMonitoring(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        event_stream: EventStream,
        cleaner_state: CleanerState,
        ingestion_api: IngestionApi,
        cleaner: Cleaner,
        table_jobs: TableJobs,
        retraining: Retraining,
        serving_api: ServingApi,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            resources=MonitoredResources(
                ingestion_api=ingestion_api.api,
                serving_api=serving_api.api,
                stream=event_stream.stream,
                cleaner=cleaner.function,
                cleaner_failures=cleaner_state.queues[CLEANER_FAILURES.key],
                serving=serving_api.function,
                glue_job_names={name: job.ref for name, job in table_jobs.jobs.items()},
                athena_workgroup=table_jobs.workgroup.ref,
                retraining=retraining.state_machine,
            ),
        )

        CfnOutput(self, "AlertsTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(self, "EffectDashboardName", value=self.monitoring.effect.dashboard_name)
        CfnOutput(self, "HealthDashboardName", value=self.monitoring.health.dashboard_name)
