"""FeedbackLoopData holds exactly what feedbackloop.resources lists, configured as the specs say."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from cdk.components.raw_archive import DATA_PREFIX, ERROR_PREFIX
from feedbackloop.resources import (
    BUCKETS,
    EVENT_STREAM,
    GLUE_DATABASE,
    KEY_VALUE_TABLES,
    LAKE_TABLES,
    QUEUES,
    RAW_BUCKET,
    RAW_ERROR_PREFIX,
    RAW_PREFIX,
)

pytestmark = pytest.mark.infra


def _only(template: Template, resource_type: str) -> tuple[str, dict[str, Any]]:
    (item,) = template.find_resources(resource_type).items()
    return item


def _key_id(data: Template) -> str:
    return _only(data, "AWS::KMS::Key")[0]


def _bucket_ids(data: Template) -> dict[str, str]:
    """Logical id of each zone bucket, by BucketSpec.key (through the stack's bucket name outputs)."""
    outputs = data.to_json()["Outputs"]
    return {spec.key: outputs[f"{spec.key.capitalize()}BucketName"]["Value"]["Ref"] for spec in BUCKETS}


def test_one_key_with_rotation(data: Template) -> None:
    data.resource_count_is("AWS::KMS::Key", 1)
    data.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_one_provisioned_stream_sized_by_the_spec_and_encrypted_with_the_key(data: Template) -> None:
    data.resource_count_is("AWS::Kinesis::Stream", 1)
    data.has_resource_properties(
        "AWS::Kinesis::Stream",
        {
            "ShardCount": EVENT_STREAM.shards,
            "RetentionPeriodHours": EVENT_STREAM.retention_hours,
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "StreamEncryption": {"EncryptionType": "KMS", "KeyId": {"Fn::GetAtt": [_key_id(data), "Arn"]}},
        },
    )


def test_one_bucket_per_spec_plus_the_access_log_bucket(data: Template) -> None:
    data.resource_count_is("AWS::S3::Bucket", len(BUCKETS) + 1)
    assert len(set(_bucket_ids(data).values())) == len(BUCKETS)


@pytest.mark.parametrize("spec", BUCKETS, ids=lambda s: s.key)
def test_zone_bucket_follows_its_spec(data: Template, spec) -> None:
    props = data.find_resources("AWS::S3::Bucket")[_bucket_ids(data)[spec.key]]["Properties"]
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": [_key_id(data), "Arn"]},
    }
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert ("VersioningConfiguration" in props) == (spec is RAW_BUCKET)
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule.get("ExpirationInDays") == spec.expire_days
    transitions = [(t["StorageClass"], t["TransitionInDays"]) for t in rule.get("Transitions", [])]
    expected = [("STANDARD_IA", spec.infrequent_access_days)] if spec.infrequent_access_days else []
    assert transitions == expected
    access_log_bucket = [b for b in data.find_resources("AWS::S3::Bucket") if b not in _bucket_ids(data).values()]
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": access_log_bucket[0]}


def test_every_bucket_denies_requests_without_tls(data: Template) -> None:
    denied = set()
    for policy in data.find_resources("AWS::S3::BucketPolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        if any(
            s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        ):
            denied.add(policy["Properties"]["Bucket"]["Ref"])
    assert denied == set(data.find_resources("AWS::S3::Bucket"))


@pytest.mark.parametrize("spec", KEY_VALUE_TABLES, ids=lambda s: s.key)
def test_key_value_table_follows_its_spec(data: Template, spec) -> None:
    data.resource_count_is("AWS::DynamoDB::Table", len(KEY_VALUE_TABLES))
    ttl = {"AttributeName": spec.ttl_attribute, "Enabled": True} if spec.ttl_attribute is not None else Match.absent()
    data.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": spec.partition_key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": spec.partition_key, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS"},
            "TimeToLiveSpecification": ttl,
        },
    )


@pytest.mark.parametrize("spec", QUEUES, ids=lambda s: s.key)
def test_queue_follows_its_spec(data: Template, spec) -> None:
    data.resource_count_is("AWS::SQS::Queue", len(QUEUES))
    data.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "MessageRetentionPeriod": spec.retention_days * 24 * 3600,
            "KmsMasterKeyId": {"Fn::GetAtt": [_key_id(data), "Arn"]},
        },
    )
    data.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )


def test_glue_database_is_the_shared_name(data: Template) -> None:
    data.resource_count_is("AWS::Glue::Database", 1)
    data.has_resource_properties("AWS::Glue::Database", {"DatabaseInput": {"Name": GLUE_DATABASE}})


@pytest.mark.parametrize("table", LAKE_TABLES, ids=lambda t: t.name)
def test_glue_table_matches_the_lake_schema(data: Template, table) -> None:
    data.resource_count_is("AWS::Glue::Table", len(LAKE_TABLES))
    database = _only(data, "AWS::Glue::Database")[0]
    data.has_resource_properties(
        "AWS::Glue::Table",
        {
            "DatabaseName": {"Ref": database},
            "TableInput": {
                "Name": table.name,
                "TableType": "EXTERNAL_TABLE",
                "PartitionKeys": [
                    {
                        "Name": table.partition.name,
                        "Type": table.partition.glue_type,
                        "Comment": table.partition.comment,
                    }
                ],
                "StorageDescriptor": {
                    # in order: Parquet readers resolve columns by name, but humans read the catalog
                    "Columns": [{"Name": c.name, "Type": c.glue_type, "Comment": c.comment} for c in table.columns],
                    "Location": {
                        "Fn::Join": [
                            "",
                            ["s3://", {"Ref": _bucket_ids(data)[table.bucket_key]}, f"/{table.prefix}"],
                        ]
                    },
                    "SerdeInfo": {
                        "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                    },
                },
            },
        },
    )


def test_raw_archive_copies_the_stream_to_the_raw_bucket_as_gzip(data: Template) -> None:
    assert DATA_PREFIX.startswith(RAW_PREFIX) and ERROR_PREFIX.startswith(RAW_ERROR_PREFIX)
    data.resource_count_is("AWS::KinesisFirehose::DeliveryStream", 1)
    data.has_resource_properties(
        "AWS::KinesisFirehose::DeliveryStream",
        {
            "DeliveryStreamType": "KinesisStreamAsSource",
            "KinesisStreamSourceConfiguration": {
                "KinesisStreamARN": {"Fn::GetAtt": [_only(data, "AWS::Kinesis::Stream")[0], "Arn"]}
            },
            "ExtendedS3DestinationConfiguration": {
                "BucketARN": {"Fn::GetAtt": [_bucket_ids(data)[RAW_BUCKET.key], "Arn"]},
                "Prefix": DATA_PREFIX,
                "ErrorOutputPrefix": ERROR_PREFIX,
                "CompressionFormat": "GZIP",
                "EncryptionConfiguration": {"KMSEncryptionConfig": {"AWSKMSKeyARN": Match.any_value()}},
            },
        },
    )


def test_outputs_name_the_stream_and_every_bucket(data: Template) -> None:
    outputs = data.to_json()["Outputs"]
    assert outputs["StreamName"]["Value"] == {"Ref": _only(data, "AWS::Kinesis::Stream")[0]}
    assert set(_bucket_ids(data)) == {spec.key for spec in BUCKETS}


def test_lake_writer_policy_opens_the_lake_tables_only(data: Template) -> None:
    (policy,) = data.find_resources("AWS::IAM::ManagedPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    glue = [s for s in statements if any(a.startswith("glue:") for a in s["Action"])]
    (glue_statement,) = glue
    resources = json.dumps(glue_statement["Resource"])
    assert all(f"/{table.name}" in resources for table in LAKE_TABLES)
    assert len(glue_statement["Resource"]) == 2 + len(LAKE_TABLES)  # catalog, database, each table
    objects = [s for s in statements if "s3:PutObject" in s["Action"]]
    zone_ids = {_bucket_ids(data)[table.bucket_key] for table in LAKE_TABLES}
    assert {r["Fn::Join"][1][0]["Fn::GetAtt"][0] for r in objects[0]["Resource"]} == zone_ids
