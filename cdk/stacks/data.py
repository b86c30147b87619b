"""FeedbackLoopData: everything that holds data (the stream, the lake, the cleaner's state, the model
registry, the online store of user profiles, the erasure audit and its queue, the adjust function's
decisions), and the raw archive that copies the stream into it.

Nothing here runs our code, so it changes rarely; the compute stack can be destroyed and redeployed
without touching a byte of data or pausing the archive.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.components.adjust_store import AdjustStore
from cdk.components.cleaner_state import CleanerState
from cdk.components.erasure_store import ErasureStore
from cdk.components.event_stream import EventStream
from cdk.components.lake import Lake
from cdk.components.model_store import ModelStore
from cdk.components.online_store import OnlineStore
from cdk.components.raw_archive import RawArchive
from cdk.naming import pascal_case
from feedbackloop.resources import (
    DECISIONS_TABLE,
    ERASURE_REQUESTS,
    ERASURE_TABLE,
    ITEM_COUNTERS_TABLE,
    ONLINE_TABLE,
    RAW_BUCKET,
    REGISTRY_TABLE,
    STATE_TABLE,
)


class FeedbackLoopData(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # One customer-managed key for the stream, lake objects, tables and queue: reading any
        # feedback data at rest needs a grant on this key as well.
        self.key = kms.Key(
            self,
            "DataKey",
            enable_key_rotation=True,
            description="feedbackloop data at rest (stream to lake)",
        )
        self.event_stream = EventStream(self, "EventStream", key=self.key)
        self.lake = Lake(self, "Lake", key=self.key)
        self.cleaner_state = CleanerState(self, "CleanerState", key=self.key)
        self.model_store = ModelStore(self, "ModelStore", lake=self.lake, key=self.key)
        self.online_store = OnlineStore(self, "OnlineStore", key=self.key)
        self.erasure_store = ErasureStore(self, "ErasureStore", lake=self.lake, key=self.key)
        self.adjust_store = AdjustStore(
            self, "AdjustStore", key=self.key, state_table=self.cleaner_state.tables[STATE_TABLE.key]
        )
        RawArchive(
            self,
            "RawArchive",
            stream=self.event_stream.stream,
            bucket=self.lake.buckets[RAW_BUCKET.key],
            key=self.key,
        )

        CfnOutput(self, "StreamName", value=self.event_stream.stream.stream_name)
        for key, bucket in self.lake.buckets.items():
            CfnOutput(self, f"{pascal_case(key)}BucketName", value=bucket.bucket_name)
        CfnOutput(self, "GlueDatabase", value=self.lake.database_name)
        # what `feedbackloop replay` needs beside the buckets (CleanerSettings)
        for key, table in self.cleaner_state.tables.items():
            CfnOutput(self, f"{pascal_case(key)}TableName", value=table.table_name)
        CfnOutput(self, f"{pascal_case(REGISTRY_TABLE.key)}TableName", value=self.model_store.registry.table_name)
        CfnOutput(self, f"{pascal_case(ONLINE_TABLE.key)}TableName", value=self.online_store.table.table_name)
        CfnOutput(self, f"{pascal_case(ITEM_COUNTERS_TABLE.key)}TableName",
                  value=self.online_store.item_table.table_name)
        CfnOutput(self, f"{pascal_case(ERASURE_TABLE.key)}TableName", value=self.erasure_store.table.table_name)
        CfnOutput(self, f"{pascal_case(ERASURE_REQUESTS.key)}QueueUrl", value=self.erasure_store.queue.queue_url)
        CfnOutput(self, f"{pascal_case(DECISIONS_TABLE.key)}TableName", value=self.adjust_store.table.table_name)
