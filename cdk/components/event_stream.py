"""The event stream every accepted feedback event goes through."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk import nag
from feedbackloop.resources import EVENT_STREAM


class EventStream(Construct):
    """Kinesis Data Stream sized by `resources.EVENT_STREAM`, encrypted with the customer-managed key."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        # Provisioned: the shard count is the capacity plan (and the cleaner's concurrency is
        # shards x parallelization factor); on-demand would hide both.
        self.stream = kinesis.Stream(
            self,
            "Stream",
            stream_mode=kinesis.StreamMode.PROVISIONED,
            shard_count=EVENT_STREAM.shards,
            retention_period=Duration.hours(EVENT_STREAM.retention_hours),
            encryption=kinesis.StreamEncryption.KMS,
            encryption_key=key,
        )
        nag.acknowledge(
            self.stream,
            "KDS3",
            "A customer-managed key instead of aws/kinesis on purpose: one rotated key guards the stream "
            "and the lake, and every reader needs an explicit grant on it.",
        )
