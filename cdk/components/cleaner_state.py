"""What the cleaner keeps between batches: its two key-value tables (de-duplication and streaming
state) and its queue (where the stream's event source mapping parks failed batches). The model
registry belongs to the `ModelStore`, the user profiles to the `OnlineStore`."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk import nag
from cdk.components.key_value import key_value_table
from cdk.naming import pascal_case
from feedbackloop.resources import CLEANER_FAILURES, DEDUP_TABLE, STATE_TABLE, QueueSpec

CLEANER_TABLES = (DEDUP_TABLE, STATE_TABLE)
# Only the cleaner's own: every queue here is a dead-letter destination (see the SQS3 acknowledgement).
CLEANER_QUEUES = (CLEANER_FAILURES,)


class CleanerState(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.tables: dict[str, dynamodb.Table] = {spec.key: key_value_table(self, spec, key) for spec in CLEANER_TABLES}
        self.queues: dict[str, sqs.Queue] = {spec.key: self._queue(spec, key) for spec in CLEANER_QUEUES}

    def _queue(self, spec: QueueSpec, key: kms.IKey) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            f"{pascal_case(spec.key)}Queue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(spec.retention_days),
            # Each message names a failed stream batch (shard, sequence range): keep it past a teardown.
            removal_policy=RemovalPolicy.RETAIN,
        )
        nag.acknowledge(
            queue,
            "SQS3",
            "This queue is itself the dead-letter destination (the event source mapping's on-failure "
            "target); its messages are read by an operator or a replay, never by a consumer that could fail.",
        )
        return queue
