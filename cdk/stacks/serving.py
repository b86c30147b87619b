"""FeedbackLoopServing: everything stateless that serves one user: the serving API and its function, the
UI configuration it reads (AppConfig, with the alarm that rolls a deployment back), and the eraser that
completes a user's erasure in the lake.

The model it serves (the registry and the models bucket), the user profiles (the online store) and the
erasure audit and queue (the erasure store), with the permissions on them, belong to the data stack.

The eraser lives here, beside the API, because the two are one capability, the user's right to erasure
(`DELETE /users/{id}` records and queues the request, the eraser carries it out): they share the
message contract and deploy together. The queue between them is in the data stack, so requests still
pending survive a redeploy or a teardown of this stack.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from cdk.components.eraser import Eraser
from cdk.components.erasure_store import ErasureStore
from cdk.components.lake import Lake
from cdk.components.model_store import ModelStore
from cdk.components.online_store import OnlineStore
from cdk.components.serving_api import ServingApi
from cdk.components.ui_config import UiConfig
from cdk.project import ProjectLayout


class FeedbackLoopServing(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        lake: Lake,
        model_store: ModelStore,
        online_store: OnlineStore,
        erasure_store: ErasureStore,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.serving_api = api = ServingApi(
            self,
            "ServingApi",
            layout=layout,
            model_store=model_store,
            online_store=online_store,
            erasure_store=erasure_store,
        )
        self.ui_config = ui_config = UiConfig(self, "UiConfig")
        ui_config.add_reader(api.function)
        eraser = Eraser(self, "Eraser", layout=layout, lake=lake, erasure_store=erasure_store)

        CfnOutput(self, "ApiUrl", value=api.api.url)
        CfnOutput(self, "ApiKeyId", value=api.api_key.key_id)
        CfnOutput(self, "UiConfigApplicationId", value=ui_config.application.ref)
        CfnOutput(self, "UiConfigDeploymentStrategyId", value=ui_config.strategy.ref)
        CfnOutput(self, "UiConfigRollbackAlarmName", value=ui_config.rollback_alarm.alarm_name)
        CfnOutput(self, "EraserFunctionName", value=eraser.function.function_name)
