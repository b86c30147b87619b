"""The lake: one bucket per `resources.BUCKETS` zone, their access logs, the Glue catalog of
`resources.LAKE_TABLES`, one managed policy per writer of those tables, and one for read-only Athena
queries over them.

Zone buckets use SSE-KMS with the data key (and S3 Bucket Keys, which cut KMS requests to about one
per object batch): every reader of lake data then needs an explicit `kms:Decrypt` grant, which is the
point. The access-log bucket uses SSE-S3 because S3 server access logging cannot deliver to a
bucket whose default encryption is SSE-KMS.

The writer policies live here, beside the data they open: a consumer in another stack attaches one by
ARN, so its template carries no statement on this stack's objects (whose wildcard ARNs would reach it
as cross-stack outputs), and who may write which table is decided in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import ArnFormat, Aws, Duration, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk import nag
from cdk.deployment import Deployment
from cdk.naming import pascal_case
from feedbackloop.lake import Column, LakeTable
from feedbackloop.resources import (
    BUCKETS,
    CLEANER_LAKE_TABLES,
    LAKE_TABLES,
    MODELLED_LAKE_TABLES,
    QUERY_RESULTS_BUCKET,
    RAW_BUCKET,
    BucketSpec,
)
from glue_jobs.build_tables import bookmark_key

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
# What the table builder needs to read the catalog (Athena plans its queries with these) ...
CATALOG_READ_ACTIONS = [
    "glue:GetDatabase",
    "glue:GetTable",
    "glue:GetTables",
    "glue:GetPartition",
    "glue:GetPartitions",
]
# ... and to replace whole partitions of the tables it builds (never a schema change).
PARTITION_WRITE_ACTIONS = [
    "glue:BatchCreatePartition",
    "glue:CreatePartition",
    "glue:BatchDeletePartition",
    "glue:DeletePartition",
    "glue:UpdatePartition",
]


class Lake(Construct):
    """Zone buckets by `BucketSpec.key`, the Glue database and tables, and three managed policies:
    `writer_policy` lets the cleaner append to its tables (`resources.CLEANER_LAKE_TABLES`);
    `builder_policy` lets the table jobs read those and rebuild the modelled tables
    (`resources.MODELLED_LAKE_TABLES`) through Athena, whose results go to the query-results bucket;
    `reader_policy` lets a function query the same tables through Athena and change nothing but results."""

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
            # Glue needs a physical name: the shared constant (the local runtime's too), prefixed by the stage
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=Deployment.of(self).glue_database,
                description="feedbackloop lake: curated and quarantined feedback events, and the tables modelled "
                "from them",
            ),
        )
        self.tables = {table.name: self._table(table) for table in LAKE_TABLES}
        self.writer_policy = self._writer_policy(key)
        self.builder_policy = self._builder_policy(key)
        self.reader_policy = self._reader_policy(key)

    @property
    def database_name(self) -> str:
        return self.database.ref

    def _writer_policy(self, key: kms.IKey) -> iam.ManagedPolicy:
        """Append to the cleaner's tables: their objects, their data key, their partitions."""
        tables = CLEANER_LAKE_TABLES
        objects = self._objects(tables)
        policy = iam.ManagedPolicy(
            self,
            "WriterPolicy",
            description="feedbackloop: write the cleaner's lake tables (objects, data key, Glue partitions)",
            statements=[
                iam.PolicyStatement(
                    # S3Lake: put_object, and head_object (GetObject) on a retried batch; it never deletes
                    actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=objects,
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket", "s3:GetBucketLocation"],
                    resources=[b.bucket_arn for b in self._buckets_of(tables)],
                ),
                # SSE-KMS: GenerateDataKey writes an object, Decrypt reads it or completes a multipart upload.
                iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]),
                iam.PolicyStatement(actions=CATALOG_WRITE_ACTIONS, resources=self._catalog(tables)),
            ],
        )
        nag.acknowledge_all(
            policy,
            [nag.wildcard_resource(self, arn) for arn in objects],
            "Object-level S3 actions need an object ARN; each wildcard covers the prefix of one of the "
            "cleaner's tables (its partitions and their objects), and nothing else.",
        )
        return policy

    def _builder_policy(self, key: kms.IKey) -> iam.ManagedPolicy:
        """Rebuild the modelled tables with Athena: read every table in their bucket (the cleaner's
        curated events and the modelled tables themselves), replace objects and partitions of the
        modelled tables only, and keep Athena's results in the query-results bucket."""
        modelled = MODELLED_LAKE_TABLES
        sources = self._queryable()
        results = self.buckets[QUERY_RESULTS_BUCKET.key]
        readable, writable, scratch = self._objects(sources), self._objects(modelled), results.arn_for_objects("*")
        policy = iam.ManagedPolicy(
            self,
            "BuilderPolicy",
            description="feedbackloop: rebuild the modelled lake tables (objects, data key, Glue partitions, "
            "Athena results)",
            statements=[
                iam.PolicyStatement(actions=["s3:GetObject"], resources=readable),
                # whole partitions are replaced: old objects deleted, new ones written by Athena's INSERT INTO
                iam.PolicyStatement(
                    actions=["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"], resources=writable
                ),
                # each table's bookmark, kept outside every table location (readers would take it for data)
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[self.buckets[t.bucket_key].arn_for_objects(bookmark_key(t.prefix, t.name))
                               for t in modelled],
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket", "s3:GetBucketLocation"],
                    resources=[b.bucket_arn for b in self._buckets_of(sources)],
                ),
                *self._query_results_statements(key),
                iam.PolicyStatement(actions=CATALOG_READ_ACTIONS, resources=self._catalog(sources)),
                iam.PolicyStatement(actions=PARTITION_WRITE_ACTIONS, resources=self._catalog(modelled)),
            ],
        )
        nag.acknowledge_all(
            policy,
            [nag.wildcard_resource(self, arn) for arn in (*readable, *writable, scratch)],
            "Object-level S3 actions need an object ARN; each wildcard covers the prefix of one lake table "
            "(reads: the curated bucket's tables; writes: the modelled tables only) or the objects of the "
            "query-results bucket that holds nothing but Athena's results of the table jobs.",
        )
        return policy

    def _reader_policy(self, key: kms.IKey) -> iam.ManagedPolicy:
        """Query the tables the table jobs read (the curated bucket's) through Athena: read their objects
        and catalog entries, keep Athena's results in the query-results bucket; write no table."""
        sources = self._queryable()
        readable = self._objects(sources)
        scratch = self.buckets[QUERY_RESULTS_BUCKET.key].arn_for_objects("*")
        policy = iam.ManagedPolicy(
            self,
            "ReaderPolicy",
            description="feedbackloop: query the curated lake tables through Athena, read-only (objects, data "
            "key, Glue catalog, Athena results)",
            statements=[
                iam.PolicyStatement(actions=["s3:GetObject"], resources=readable),
                iam.PolicyStatement(
                    actions=["s3:ListBucket", "s3:GetBucketLocation"],
                    resources=[b.bucket_arn for b in self._buckets_of(sources)],
                ),
                *self._query_results_statements(key),
                iam.PolicyStatement(actions=CATALOG_READ_ACTIONS, resources=self._catalog(sources)),
            ],
        )
        nag.acknowledge_all(
            policy,
            [nag.wildcard_resource(self, arn) for arn in (*readable, scratch)],
            "Object-level S3 actions need an object ARN; each wildcard covers the prefix of one table of the "
            "curated bucket (read only) or the objects of the query-results bucket, which holds nothing but "
            "Athena's results.",
        )
        return policy

    def _queryable(self) -> tuple[LakeTable, ...]:
        """What Athena queries read: the modelled tables are built from the tables that share their bucket
        (ADR 0006: the curated events), and the modelled tables themselves."""
        return tuple(t for t in LAKE_TABLES if t.bucket_key in {m.bucket_key for m in MODELLED_LAKE_TABLES})

    def _query_results_statements(self, key: kms.IKey) -> list[iam.PolicyStatement]:
        """What Athena needs of a workgroup's result location, and the data key: SSE-KMS on the lake
        objects and on Athena's results (the workgroup enforces the data key)."""
        results = self.buckets[QUERY_RESULTS_BUCKET.key]
        return [
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                resources=[results.arn_for_objects("*")],
            ),
            iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
                resources=[results.bucket_arn],
            ),
            iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]),
        ]

    def _buckets_of(self, tables: Iterable[LakeTable]) -> list[s3.Bucket]:
        return [self.buckets[zone] for zone in sorted({t.bucket_key for t in tables})]

    def _objects(self, tables: Iterable[LakeTable]) -> list[str]:
        """The objects of these tables: everything under each table's prefix."""
        return [self.buckets[t.bucket_key].arn_for_objects(f"{t.prefix}*") for t in tables]

    def _catalog(self, tables: Iterable[LakeTable]) -> list[str]:
        """Glue authorizes a table action on the catalog, the database and the table together."""
        stack = Stack.of(self)
        return [
            stack.format_arn(service="glue", resource="catalog", arn_format=ArnFormat.NO_RESOURCE_NAME),
            stack.format_arn(service="glue", resource="database", resource_name=self.database_name, arn_format=_SLASH),
            *(
                stack.format_arn(
                    service="glue", resource="table", resource_name=f"{self.database_name}/{t.name}", arn_format=_SLASH
                )
                for t in tables
            ),
        ]

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
            f"{pascal_case(spec.key)}Bucket",
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
