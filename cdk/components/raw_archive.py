"""The raw archive: Firehose copies every stream record to the raw bucket, unchanged, as gzip JSON
lines (producers newline-terminate each record). It reads the stream independently of the cleaner,
so a cleaner bug never costs raw data, and replay reads this layout (see docs/adr/0003)."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk import nag
from feedbackloop.resources import RAW_ERROR_PREFIX, RAW_PREFIX, RAW_SUFFIX

# Hour partitions by arrival time; the local archiver writes the same keys.
DATA_PREFIX = RAW_PREFIX + "!{timestamp:yyyy}/!{timestamp:MM}/!{timestamp:dd}/!{timestamp:HH}/"
ERROR_PREFIX = RAW_ERROR_PREFIX + "!{firehose:error-output-type}/!{timestamp:yyyy}/!{timestamp:MM}/!{timestamp:dd}/"


class RawArchive(Construct):
    """Stream -> Firehose -> raw bucket: records under RAW_PREFIX by hour, failures under RAW_ERROR_PREFIX."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stream: kinesis.IStream,
        bucket: s3.IBucket,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        delivery_errors = logs.LogGroup(
            self,
            "DeliveryErrors",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # The destination role, with exactly what Firehose's S3 destination calls (its documented policy):
        # the L2's own grant would be bucket.grant_read_write, which can delete objects and set legal holds
        # and retention on the audit bucket. The L2 sees the role without policy updates, so its grants
        # (bucket, key, log group) land nowhere and these statements are the whole policy.
        destination_role = iam.Role(
            self,
            "DestinationRole",
            assumed_by=iam.ServicePrincipal(
                "firehose.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
            description="feedbackloop: Firehose writes the raw archive (put objects; never delete)",
        )
        for statement in destination_statements(bucket, key, delivery_errors):
            destination_role.add_to_policy(statement)
        self.destination_role = destination_role
        self.delivery_stream = firehose.DeliveryStream(
            self,
            "DeliveryStream",
            source=firehose.KinesisStreamSource(stream),
            destination=firehose.S3Bucket(
                bucket,
                data_output_prefix=DATA_PREFIX,
                error_output_prefix=ERROR_PREFIX,
                compression=firehose.Compression.GZIP,
                file_extension=RAW_SUFFIX,
                # Not on the latency path: fewer, larger objects are cheaper to list and replay.
                buffering_interval=Duration.seconds(300),
                buffering_size=Size.mebibytes(64),
                encryption_key=key,
                logging_config=firehose.EnableLogging(delivery_errors),
                role=destination_role.without_policy_updates(),
            ),
        )
        # Firehose checks its destination's permissions when the stream is created: the policy goes first.
        self.delivery_stream.node.add_dependency(destination_role)
        # The L2 adds a region -> CIDR mapping used only by Redshift/Splunk destinations; unused
        # here, it would be a lint warning (W7001) in the template.
        Stack.of(self).node.try_remove_child(_UNUSED_CIDR_MAPPING)
        nag.acknowledge(
            self.delivery_stream,
            "KDF1",
            "Firehose server-side encryption applies to Direct PUT sources only; this one reads a "
            "KMS-encrypted Kinesis stream and writes KMS-encrypted objects, so data is encrypted end to end.",
        )
        nag.acknowledge(
            destination_role,
            nag.wildcard_resource(self, bucket.arn_for_objects(RAW_PREFIX.split("/")[0] + "/*")),
            "Firehose names its objects (the hour prefix and a generated name): put and multipart-upload on "
            "the archive's own prefix of that one bucket.",
        )


_UNUSED_CIDR_MAPPING = "@aws-cdk--aws-kinesisfirehose.CidrBlocks"
# Firehose's S3 destination: what it calls on the bucket (AWS's documented destination policy, less
# nothing it needs) and on the objects of the archive's prefix (raw/: events and errors).
DESTINATION_BUCKET_ACTIONS = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
DESTINATION_OBJECT_ACTIONS = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
DESTINATION_KEY_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey"]  # SSE-KMS puts (multipart: decrypt too)
DESTINATION_LOG_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"]


def destination_statements(bucket: s3.IBucket, key: kms.IKey, log_group: logs.ILogGroup) -> list[iam.PolicyStatement]:
    archive = bucket.arn_for_objects(RAW_PREFIX.split("/")[0] + "/*")  # raw/events/ and raw/errors/
    return [
        iam.PolicyStatement(actions=DESTINATION_BUCKET_ACTIONS, resources=[bucket.bucket_arn]),
        iam.PolicyStatement(actions=DESTINATION_OBJECT_ACTIONS, resources=[archive]),
        iam.PolicyStatement(actions=DESTINATION_KEY_ACTIONS, resources=[key.key_arn]),
        iam.PolicyStatement(actions=DESTINATION_LOG_ACTIONS, resources=[log_group.log_group_arn]),
    ]
