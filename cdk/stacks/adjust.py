"""FeedbackLoopAdjust: the stateless adjust function and its 5-minute schedule. It reads what the other
stacks deployed (the lake through the table jobs' Athena workgroup, CloudWatch) and acts on them (the UI
config in AppConfig, the retraining workflow, the operators' alerts topic); what it keeps (its state item,
its decisions) and the permissions on that belong to the data stack. It deploys after all of them."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.components.adjust import Adjust
from cdk.components.adjust_store import AdjustStore
from cdk.components.lake import Lake
from cdk.components.table_jobs import TableJobs
from cdk.components.ui_config import UiConfig
from cdk.project import ProjectLayout


class FeedbackLoopAdjust(Stack):
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
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.adjust = Adjust(
            self,
            "Adjust",
            layout=layout,
            lake=lake,
            adjust_store=adjust_store,
            table_jobs=table_jobs,
            ui_config=ui_config,
            retraining=retraining,
            alerts=alerts,
        )

        CfnOutput(self, "FunctionName", value=self.adjust.function.function_name)
        CfnOutput(self, "ScheduleName", value=self.adjust.schedule.schedule_name)
