"""The eraser: a Lambda on the erasure-requests queue that, for each user, rewrites every lake and
raw-archive object that holds them, then completes their audit record (`lambdas/eraser/handler.py`).

Up to 10 users per invocation (the FIFO event source's largest batch), combined into one pass over the lake
(`feedbackloop.lake_erasure.erase_users`): repeated requests for a user are one, and a user already erased since
the request is skipped. A failed pass reports every user of the batch for a retry. What it may read and rewrite is the
ErasureStore's `eraser_policy`, in the data stack.
"""

from __future__ import annotations

from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.components.erasure_store import ERASER_TIMEOUT, ErasureStore
from cdk.components.function import LayerSet, PythonFunction
from cdk.components.lake import Lake
from cdk.project import ProjectLayout
from feedbackloop.resources import CURATED_BUCKET, QUARANTINE_BUCKET, RAW_BUCKET
from feedbackloop.settings import EraserSettings

ERASURE_BATCH = 10  # SQS FIFO event sources take at most 10 messages a batch

# The queue is FIFO with one message group, so Lambda hands out one erasure at a time: two passes never
# rewrite the same object at once (the later write would restore the other's rows).


class Eraser(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        lake: Lake,
        erasure_store: ErasureStore,
    ) -> None:
        super().__init__(scope, construct_id)
        bucket: dict[str, s3.IBucket] = lake.buckets
        settings = EraserSettings(
            erasure_table=erasure_store.table.table_name,
            curated_bucket=bucket[CURATED_BUCKET.key].bucket_name,
            quarantine_bucket=bucket[QUARANTINE_BUCKET.key].bucket_name,
            raw_bucket=bucket[RAW_BUCKET.key].bucket_name,
        )
        eraser = PythonFunction(
            self,
            "Eraser",
            layout=layout,
            handler="lambdas.eraser.handler.lambda_handler",
            description="erasure requests -> every lake and raw-archive object that holds the user, rewritten",
            environment=settings.to_env(),
            # pyarrow holds one object (a Parquet file, a gzip JSON archive) decoded in memory at a time
            memory_size=2048,
            timeout=ERASER_TIMEOUT,
            layers=LayerSet.ARROW,
        )
        self.function = eraser.function
        eraser.role.add_managed_policy(erasure_store.eraser_policy)
        # The event source grants the role ReceiveMessage, DeleteMessage, ChangeMessageVisibility,
        # GetQueueAttributes and GetQueueUrl on the queue, and kms:Decrypt on its key.
        self.function.add_event_source(
            sources.SqsEventSource(
                erasure_store.queue,
                batch_size=ERASURE_BATCH,
                report_batch_item_failures=True,
            )
        )
