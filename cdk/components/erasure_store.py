"""What erasing a user needs to keep: the erasure table (`resources.ERASURE_TABLE`, the audit: one record
per user with what was requested, what was rewritten and when it completed), the erasure-requests queue
(`resources.ERASURE_REQUESTS`) between the serving API and the eraser function, with its dead-letter
queue, and who may touch them and the data the eraser rewrites.

As with the Lake, the ModelStore and the OnlineStore, the permissions are managed policies that live
here, beside the data they open; the functions in the serving stack attach them by ARN:
- `requester_policy`, for the serving function: record a request and read its status (GetItem, PutItem
  on the erasure table), queue it (SendMessage); nothing that receives or deletes messages;
- `eraser_policy`, for the eraser function: list, read and rewrite the objects of every lake table
  (`resources.LAKE_TABLES`) and of the raw archive (`resources.RAW_PREFIX` and `RAW_ERROR_PREFIX`), delete
  the noncurrent versions of the raw objects it rewrote, and complete the audit record. Nothing that
  deletes a current object, and nothing of the models bucket or the model registry.
  (Receiving from the queue is the SQS event source's own grant, in the serving stack.)
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk import nag
from cdk.components.key_value import key_value_table
from cdk.components.lake import Lake
from cdk.naming import pascal_case
from feedbackloop.resources import (
    ERASURE_REQUESTS,
    ERASURE_TABLE,
    LAKE_TABLES,
    RAW_BUCKET,
    RAW_ERROR_PREFIX,
    RAW_PREFIX,
)

# A pass (up to 10 users) reads the lake's Parquet footers and the raw days of its users (gzip JSON has
# no statistics to skip by), so the eraser gets Lambda's longest timeout. A received message stays
# hidden six times as long, as AWS advises for SQS event sources (time for the invocation and for
# Lambda's retries of a throttled one), so a second eraser never starts on a user the first is still
# erasing.
ERASER_TIMEOUT = Duration.minutes(15)
VISIBILITY_TIMEOUT = Duration.minutes(6 * 15)
# A user whose erasure failed this many times moves to the dead-letter queue, for an operator: each
# attempt is a full pass, and a pass that fails five times will not pass on the sixth.
MAX_RECEIVE_COUNT = 5
# The SQS maximum. A standard queue keeps a message's first enqueue time when it moves to the dead-letter
# queue, so the dead-letter queue cannot keep it longer than this either.
DEAD_LETTER_RETENTION = Duration.days(14)

# Object reads, and object writes of a (possibly multipart) upload: the rewrite replaces an object in
# place. Nothing that deletes or retags.
_S3_REWRITE = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]


class ErasureStore(Construct):
    """`table`, `queue`, `dead_letter_queue` and the two managed policies of the module docstring."""

    def __init__(self, scope: Construct, construct_id: str, *, lake: Lake, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.table: dynamodb.Table = key_value_table(self, ERASURE_TABLE, key)
        self.dead_letter_queue = self._queue(
            f"{pascal_case(ERASURE_REQUESTS.key)}DeadLetterQueue", key, retention_period=DEAD_LETTER_RETENTION,
            fifo=ERASURE_REQUESTS.fifo,  # a FIFO queue's dead-letter queue is FIFO too
        )
        self.queue = self._queue(
            f"{pascal_case(ERASURE_REQUESTS.key)}Queue",
            key,
            retention_period=Duration.days(ERASURE_REQUESTS.retention_days),
            visibility_timeout=VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT),
            fifo=ERASURE_REQUESTS.fifo,
        )
        self.requester_policy = iam.ManagedPolicy(
            self,
            "RequesterPolicy",
            description="feedbackloop: request a user's erasure (audit record, queue) and read its status",
            statements=[
                iam.PolicyStatement(actions=["dynamodb:GetItem", "dynamodb:PutItem"], resources=[self.table.table_arn]),
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.queue.queue_arn]),
                # the table and the queue are encrypted with the data key: DynamoDB decrypts the table key
                # with the caller's permission, SQS asks for a data key to encrypt the message
                iam.PolicyStatement(actions=["kms:Decrypt"], resources=[key.key_arn]),
                iam.PolicyStatement(
                    actions=["kms:GenerateDataKey"],
                    resources=[key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"sqs.{Aws.REGION}.amazonaws.com"}},
                ),
            ],
        )
        self.eraser_policy = self._eraser_policy(lake, key)

    def _queue(self, construct_id: str, key: kms.IKey, **options: object) -> sqs.Queue:
        return sqs.Queue(
            self,
            construct_id,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            # A message is a user's pending erasure, a legal obligation: it outlives a stack teardown.
            removal_policy=RemovalPolicy.RETAIN,
            **options,
        )

    def _eraser_policy(self, lake: Lake, key: kms.IKey) -> iam.ManagedPolicy:
        raw: s3.IBucket = lake.buckets[RAW_BUCKET.key]
        # (bucket, prefix) of every folder the eraser rewrites: each lake table's, then the raw archive's
        raw_folders = [(raw, RAW_PREFIX), (raw, RAW_ERROR_PREFIX)]
        folders = [(lake.buckets[t.bucket_key], t.prefix) for t in LAKE_TABLES] + raw_folders
        objects = [bucket.arn_for_objects(f"{prefix}*") for bucket, prefix in folders]
        raw_objects = [raw.arn_for_objects(f"{prefix}*") for _, prefix in raw_folders]
        buckets = {bucket.node.path: bucket for bucket, _ in folders}
        policy = iam.ManagedPolicy(
            self,
            "EraserPolicy",
            description="feedbackloop: erase a user from the lake and the raw archive (rewrite the objects "
            "that hold them) and complete the audit record",
            statements=[
                iam.PolicyStatement(actions=_S3_REWRITE, resources=objects),
                # pyarrow lists each folder recursively (ListObjectsV2 with the folder as prefix); the
                # condition keeps the listing to those folders
                *(
                    iam.PolicyStatement(
                        actions=["s3:ListBucket"],
                        resources=[bucket.bucket_arn],
                        conditions={
                            "StringLike": {"s3:prefix": [f"{p}*" for b, p in folders if b is bucket]}
                        },
                    )
                    for _, bucket in sorted(buckets.items())
                ),
                # SSE-KMS: Decrypt reads an object (and completes a multipart upload) and the table,
                # GenerateDataKey writes an object
                iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[key.key_arn]),
                iam.PolicyStatement(actions=["dynamodb:GetItem", "dynamodb:PutItem"], resources=[self.table.table_arn]),
                # the raw bucket is versioned: the versions a rewrite left behind still hold the user, so the
                # eraser lists an object's versions and deletes the noncurrent ones (S3NoncurrentVersions);
                # it never deletes a current object
                iam.PolicyStatement(
                    actions=["s3:ListBucketVersions"],
                    resources=[raw.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{p}*" for _, p in raw_folders]}},
                ),
                iam.PolicyStatement(actions=["s3:DeleteObjectVersion"], resources=raw_objects),
            ],
        )
        nag.acknowledge_all(
            policy,
            [nag.wildcard_resource(self, arn) for arn in objects],
            "Object-level S3 actions need an object ARN; each wildcard covers the prefix of one lake table or of "
            "the raw archive, the folders a user's rows and records are written to, and nothing else.",
        )
        return policy

