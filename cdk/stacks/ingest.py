"""FeedbackLoopIngest: the stateless half of stream to lake, everything that runs our code (the
ingestion API and its function, the cleaner and its event source mapping)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from cdk.components.cleaner import Cleaner
from cdk.components.cleaner_state import CleanerState
from cdk.components.event_stream import EventStream
from cdk.components.ingestion_api import IngestionApi
from cdk.components.lake import Lake
from cdk.components.online_store import OnlineStore
from cdk.project import ProjectLayout


class FeedbackLoopIngest(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        event_stream: EventStream,
        lake: Lake,
        cleaner_state: CleanerState,
        online_store: OnlineStore,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.ingestion_api = api = IngestionApi(self, "IngestionApi", layout=layout, stream=event_stream.stream)
        self.cleaner = Cleaner(
            self,
            "Cleaner",
            layout=layout,
            stream=event_stream.stream,
            lake=lake,
            tables=dict(cleaner_state.tables),
            queues=dict(cleaner_state.queues),
            online_store=online_store,
        )

        CfnOutput(self, "ApiUrl", value=api.api.url_for_path("/events"))
        CfnOutput(self, "ApiKeyId", value=api.api_key.key_id)
