"""The cleaner: a Lambda on the event stream that validates, de-duplicates, imputes and normalizes
each batch, writes curated and quarantined Parquet, registers partitions, and reports per-record
failures so only the failed tail of a batch is retried; and folds each user's clean feedback into
their profile in the online store."""

from __future__ import annotations

import jsii
from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.components.function import LayerSet, PythonFunction
from cdk.components.lake import Lake
from cdk.components.online_store import OnlineStore
from cdk.project import ProjectLayout
from feedbackloop.lake import CURATED_EVENTS, QUARANTINE
from feedbackloop.resources import CLEANER_FAILURES, DEDUP_TABLE, STATE_TABLE
from feedbackloop.settings import CleanerSettings

DEDUP_ACTIONS = ["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"]
STATE_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem"]


@jsii.implements(lambda_.IEventSourceDlq)
class _FailedBatchesTo:
    """The event source mapping's on-failure destination, without `SqsDlq`'s grant (grant_send_messages:
    kms:Encrypt and kms:ReEncrypt* on the queue's key besides what sending needs); the cleaner's role gets
    exactly SendMessage and the key's data-key actions instead."""

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(self, _target: lambda_.IEventSourceMapping, _handler: lambda_.IFunction) -> lambda_.DlqDestinationConfig:
        return lambda_.DlqDestinationConfig(destination=self._queue.queue_arn)


class Cleaner(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        stream: kinesis.IStream,
        lake: Lake,
        tables: dict[str, dynamodb.ITable],
        queues: dict[str, sqs.IQueue],
        online_store: OnlineStore,
    ) -> None:
        super().__init__(scope, construct_id)
        curated: s3.IBucket = lake.buckets[CURATED_EVENTS.bucket_key]
        quarantine: s3.IBucket = lake.buckets[QUARANTINE.bucket_key]
        dedup, state = tables[DEDUP_TABLE.key], tables[STATE_TABLE.key]
        settings = CleanerSettings(
            curated_bucket=curated.bucket_name,
            quarantine_bucket=quarantine.bucket_name,
            dedup_table=dedup.table_name,
            state_table=state.table_name,
            glue_database=lake.database_name,
            online_table=online_store.table.table_name,
            item_counters_table=online_store.item_table.table_name,
        )
        cleaner = PythonFunction(
            self,
            "Cleaner",
            layout=layout,
            handler="lambdas.cleaner.handler.lambda_handler",
            description="Kinesis -> curated/quarantine Parquet, Glue partitions, streaming statistics",
            environment=settings.to_env(),
            memory_size=1024,
            timeout=Duration.seconds(120),
            layers=LayerSet.ARROW,
        )
        self.function = cleaner.function
        cleaner.role.add_managed_policy(lake.writer_policy)
        cleaner.role.add_managed_policy(online_store.cleaner_policy)
        # exactly the calls of feedbackloop.adapters.aws: DynamoDedupStore (BatchGetItem; boto3's
        # batch_writer: BatchWriteItem) and DynamoStateStore (GetItem, conditional PutItem); no Scan, Query or
        # DeleteItem. DynamoDB decrypts with the table key on the caller's permission.
        cleaner.role.add_to_policy(iam.PolicyStatement(actions=DEDUP_ACTIONS, resources=[dedup.table_arn]))
        cleaner.role.add_to_policy(iam.PolicyStatement(actions=STATE_ACTIONS, resources=[state.table_arn]))
        if dedup.encryption_key is not None:
            cleaner.role.add_to_policy(iam.PolicyStatement(actions=["kms:Decrypt"],
                                                           resources=[dedup.encryption_key.key_arn]))

        self.function.add_event_source(
            sources.KinesisEventSource(
                stream,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=1000,
                max_batching_window=Duration.seconds(1),
                parallelization_factor=2,
                # A failing batch is halved until the bad records are isolated, each half retried at
                # most 3 times; the handler also reports per-record failures so good records move on.
                bisect_batch_on_error=True,
                retry_attempts=3,
                report_batch_item_failures=True,
                max_record_age=Duration.days(1),
                on_failure=_FailedBatchesTo(queues[CLEANER_FAILURES.key]),
            )
        )
        failures = queues[CLEANER_FAILURES.key]
        cleaner.role.add_to_policy(iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[failures.queue_arn]))
        if failures.encryption_master_key is not None:
            cleaner.role.add_to_policy(iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"],
                                                           resources=[failures.encryption_master_key.key_arn]))
