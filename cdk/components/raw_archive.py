"""The raw archive: Firehose copies every stream record to the raw bucket, unchanged, as gzip JSON
lines (producers newline-terminate each record). It reads the stream independently of the cleaner,
so a cleaner bug never costs raw data, and replay reads this layout (see docs/adr/0003)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Size, Stack
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
            ),
        )
        # The L2 adds a region -> CIDR mapping used only by Redshift/Splunk destinations; unused
        # here, it would be a lint warning (W7001) in the template.
        Stack.of(self).node.try_remove_child(_UNUSED_CIDR_MAPPING)
        nag.acknowledge(
            self.delivery_stream,
            "KDF1",
            "Firehose server-side encryption applies to Direct PUT sources only; this one reads a "
            "KMS-encrypted Kinesis stream and writes KMS-encrypted objects, so data is encrypted end to end.",
        )
        nag.acknowledge_all(
            self.delivery_stream,
            [
                *(f"IAM5[Action::{a}]" for a in _GRANT_WILDCARD_ACTIONS),
                nag.wildcard_resource(self, bucket.arn_for_objects("*")),
            ],
            "Firehose's destination role is granted read-write on the raw bucket and its key by the L2 "
            "(bucket.grant_read_write): wildcards over that one bucket's objects and that one key only.",
        )


_UNUSED_CIDR_MAPPING = "@aws-cdk--aws-kinesisfirehose.CidrBlocks"
# What Bucket.grant_read_write and Key.grant_encrypt_decrypt write as action wildcards.
_GRANT_WILDCARD_ACTIONS = (
    "s3:Abort*",
    "s3:DeleteObject*",
    "s3:GetBucket*",
    "s3:GetObject*",
    "s3:List*",
    "kms:GenerateDataKey*",
    "kms:ReEncrypt*",
)
