"""FeedbackLoopServing: the stateless serving API and its function. The model it serves (the registry and
the models bucket) and the user profiles it reads and writes (the online store), with the permissions
on them, belong to the data stack."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from cdk.components.model_store import ModelStore
from cdk.components.online_store import OnlineStore
from cdk.components.serving_api import ServingApi
from cdk.project import ProjectLayout


class FeedbackLoopServing(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        model_store: ModelStore,
        online_store: OnlineStore,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        api = ServingApi(self, "ServingApi", layout=layout, model_store=model_store, online_store=online_store)

        CfnOutput(self, "ApiUrl", value=api.api.url)
        CfnOutput(self, "ApiKeyId", value=api.api_key.key_id)
