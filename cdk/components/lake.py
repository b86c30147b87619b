"""The lake: one bucket per `resources.BUCKETS` zone, their access logs, and the Glue catalog of
`resources.LAKE_TABLES`.

Zone buckets use SSE-KMS with the data key (and S3 Bucket Keys, which cut KMS requests to about one
per object batch): every reader of lake data then needs an explicit `kms:Decrypt` grant, which is the
point. The access-log bucket uses SSE-S3 because S3 server access logging cannot deliver to a
bucket whose default encryption is SSE-KMS.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, Duration, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk import nag
from feedbackloop.lake import Column, LakeTable
from feedbackloop.resources import BUCKETS, GLUE_DATABASE, LAKE_TABLES, RAW_BUCKET, BucketSpec

ACCESS_LOG_DAYS = 90
RAW_NONCURRENT_VERSION_DAYS = 30

_SLASH = ArnFormat.SLASH_RESOURCE_NAME
_PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
_PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
_PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

# What a writer needs to append to a partitioned table (and nothing that changes a schema).
CATALOG_WRITE_ACTIONS = [
    "glue:GetDatabase",
    "glue:GetTable",
    "glue:GetPartitions",
    "glue:CreatePartition",
    "glue:BatchCreatePartition",
]


class Lake(Construct):
    """Zone buckets by `BucketSpec.key`, the Glue database and tables, and `writer_policy`, the
    managed policy that lets a writer (the cleaner) append to the lake tables."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(ACCESS_LOG_DAYS))],
        )
        self.buckets: dict[str, s3.Bucket] = {spec.key: self._zone_bucket(spec, key) for spec in BUCKETS}

        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=Aws.ACCOUNT_ID,
            # Glue needs a physical name; the shared constant is the one the local runtime uses too.
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=GLUE_DATABASE, description="feedbackloop lake: curated and quarantined feedback events"
            ),
        )
        self.tables = {table.name: self._table(table) for table in LAKE_TABLES}
        self.writer_policy = self._writer_policy(key)

    @property
    def database_name(self) -> str:
        return self.database.ref

    def _writer_policy(self, key: kms.IKey) -> iam.ManagedPolicy:
        """Append to the lake tables: their objects, their data key, their partitions. It lives here,
        beside the data it opens, so consumers in other stacks attach it by ARN and their own
        templates carry no statements on this stack's resources."""
        stack = Stack.of(self)
        buckets = [self.buckets[zone] for zone in sorted({t.bucket_key for t in LAKE_TABLES})]
        objects = [b.arn_for_objects("*") for b in buckets]
        catalog = [
            stack.format_arn(service="glue", resource="catalog", arn_format=ArnFormat.NO_RESOURCE_NAME),
            stack.format_arn(service="glue", resource="database", resource_name=self.database_name, arn_format=_SLASH),
            *(
                stack.format_arn(
                    service="glue",
                    resource="table",
                    resource_name=f"{self.database_name}/{t.name}",
                    arn_format=_SLASH,
                )
                for t in LAKE_TABLES
            ),
        ]
        policy = iam.ManagedPolicy(
            self,
            "WriterPolicy",
            description="feedbackloop: write the lake tables (objects, data key, Glue partitions)",
            statements=[
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                    resources=objects,
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket", "s3:GetBucketLocation"],
                    resources=[b.bucket_arn for b in buckets],
                ),
                # SSE-KMS: GenerateDataKey writes an object, Decrypt reads it or completes a multipart upload.
                iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]),
                iam.PolicyStatement(actions=CATALOG_WRITE_ACTIONS, resources=catalog),
            ],
        )
        nag.acknowledge_all(
            policy,
            [nag.wildcard_resource(self, arn) for arn in objects],
            "Object-level S3 actions need an object ARN; the wildcard covers the objects of the buckets "
            "that hold the lake tables, and nothing else.",
        )
        return policy

    def _zone_bucket(self, spec: BucketSpec, key: kms.IKey) -> s3.Bucket:
        transitions = []
        if spec.infrequent_access_days is not None:
            transitions.append(
                s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=Duration.days(spec.infrequent_access_days),
                )
            )
        versioned = spec is RAW_BUCKET  # the audit and replay copy: an overwrite or delete must be undoable
        rule = s3.LifecycleRule(
            id=f"{spec.key}-zone",
            abort_incomplete_multipart_upload_after=Duration.days(7),
            expiration=Duration.days(spec.expire_days) if spec.expire_days is not None else None,
            transitions=transitions or None,
            noncurrent_version_expiration=Duration.days(RAW_NONCURRENT_VERSION_DAYS) if versioned else None,
        )
        return s3.Bucket(
            self,
            f"{spec.key.capitalize()}Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{spec.key}/",
            lifecycle_rules=[rule],
        )

    def _table(self, table: LakeTable) -> glue.CfnTable:
        bucket = self.buckets[table.bucket_key]
        return glue.CfnTable(
            self,
            f"Table{table.name}",
            catalog_id=Aws.ACCOUNT_ID,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=table.name,
                description=table.description,
                table_type="EXTERNAL_TABLE",
                parameters={"classification": "parquet", "EXTERNAL": "TRUE"},
                partition_keys=[_column(table.partition)],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[_column(c) for c in table.columns],
                    location=f"s3://{bucket.bucket_name}/{table.prefix}",
                    input_format=_PARQUET_INPUT,
                    output_format=_PARQUET_OUTPUT,
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library=_PARQUET_SERDE, parameters={"serialization.format": "1"}
                    ),
                ),
            ),
        )


def _column(column: Column) -> glue.CfnTable.ColumnProperty:
    return glue.CfnTable.ColumnProperty(name=column.name, type=column.glue_type, comment=column.comment)
