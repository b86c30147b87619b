"""What the cleaner keeps between batches: the key-value tables of `resources.KEY_VALUE_TABLES` and
the queues of `resources.QUEUES` (where the stream's event source mapping parks failed batches)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk import nag
from cdk.naming import pascal_case
from feedbackloop.resources import KEY_VALUE_TABLES, QUEUES, KeyValueTableSpec, QueueSpec


class CleanerState(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.tables: dict[str, dynamodb.Table] = {spec.key: self._table(spec, key) for spec in KEY_VALUE_TABLES}
        self.queues: dict[str, sqs.Queue] = {spec.key: self._queue(spec, key) for spec in QUEUES}

    def _table(self, spec: KeyValueTableSpec, key: kms.IKey) -> dynamodb.Table:
        return dynamodb.Table(
            self,
            f"{pascal_case(spec.key)}Table",
            partition_key=dynamodb.Attribute(name=spec.partition_key, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            time_to_live_attribute=spec.ttl_attribute,
        )

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
