"""FeedbackLoopData holds exactly what feedbackloop.resources lists, configured as the specs say."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from cdk.components.erasure_store import DEAD_LETTER_RETENTION, MAX_RECEIVE_COUNT
from cdk.components.lake import CATALOG_READ_ACTIONS, PARTITION_WRITE_ACTIONS
from cdk.components.raw_archive import DATA_PREFIX, ERROR_PREFIX
from cdk.naming import pascal_case
from feedbackloop.resources import (
    BUCKETS,
    CLEANER_LAKE_TABLES,
    ERASURE_REQUESTS,
    ERASURE_TABLE,
    EVENT_STREAM,
    GLUE_DATABASE,
    KEY_VALUE_TABLES,
    LAKE_TABLES,
    MODELLED_LAKE_TABLES,
    QUERY_RESULTS_BUCKET,
    QUEUES,
    RAW_BUCKET,
    RAW_ERROR_PREFIX,
    RAW_PREFIX,
)
from glue_jobs.build_tables import bookmark_key

pytestmark = pytest.mark.infra


def _only(template: Template, resource_type: str) -> tuple[str, dict[str, Any]]:
    (item,) = template.find_resources(resource_type).items()
    return item


def _key_id(data: Template) -> str:
    return _only(data, "AWS::KMS::Key")[0]


def _bucket_ids(data: Template) -> dict[str, str]:
    """Logical id of each zone bucket, by BucketSpec.key (through the stack's bucket name outputs)."""
    outputs = data.to_json()["Outputs"]
    return {spec.key: outputs[f"{pascal_case(spec.key)}BucketName"]["Value"]["Ref"] for spec in BUCKETS}


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
    keys = [(spec.partition_key, "HASH")] + ([(spec.sort_key, "RANGE")] if spec.sort_key is not None else [])
    data.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": name, "KeyType": kind} for name, kind in keys],
            "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS"},
            "TimeToLiveSpecification": ttl,
        },
    )


@pytest.mark.parametrize("spec", QUEUES, ids=lambda s: s.key)
def test_queue_follows_its_spec(data: Template, spec) -> None:
    # each spec's queue, and the erasure-requests queue's own dead-letter queue
    data.resource_count_is("AWS::SQS::Queue", len(QUEUES) + 1)
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


def test_every_queue_is_encrypted_with_the_key_refuses_plain_http_and_is_retained(data: Template) -> None:
    queues = data.find_resources("AWS::SQS::Queue")
    denied = {
        queue["Ref"]
        for policy in data.find_resources("AWS::SQS::QueuePolicy").values()
        if any(s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
               for s in policy["Properties"]["PolicyDocument"]["Statement"])
        for queue in policy["Properties"]["Queues"]
    }
    assert denied == set(queues)
    for queue in queues.values():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [_key_id(data), "Arn"]}
        assert queue["DeletionPolicy"] == "Retain"


def _erasure_queues(data: Template) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The erasure-requests queue (through its URL output), its dead-letter queue's id, and that queue."""
    queues = data.find_resources("AWS::SQS::Queue")
    queue = queues[data.to_json()["Outputs"][f"{pascal_case(ERASURE_REQUESTS.key)}QueueUrl"]["Value"]["Ref"]]
    dead_letter_id = queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    return queue, dead_letter_id, queues[dead_letter_id]


def test_erasure_requests_move_to_their_dead_letter_queue_after_bounded_retries(data: Template) -> None:
    queue, dead_letter_id, dead_letter = _erasure_queues(data)
    assert queue["Properties"]["MessageRetentionPeriod"] == ERASURE_REQUESTS.retention_days * 24 * 3600
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dead_letter_id, "Arn"]},
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    }
    assert 3 <= MAX_RECEIVE_COUNT <= 10
    # a failed user waits for an operator as long as SQS keeps anything, and goes nowhere further
    assert dead_letter["Properties"]["MessageRetentionPeriod"] == DEAD_LETTER_RETENTION.to_seconds() == 14 * 24 * 3600
    assert "RedrivePolicy" not in dead_letter["Properties"]
    # the erasure queue's dead-letter queue serves no other queue
    redriven = [q for q in data.find_resources("AWS::SQS::Queue").values()
                if "RedrivePolicy" in q["Properties"]]
    assert redriven == [queue]


def test_erasure_table_is_keyed_by_user_without_ttl_with_pitr_the_data_key_and_retained(data: Template) -> None:
    table_id = data.to_json()["Outputs"][f"{pascal_case(ERASURE_TABLE.key)}TableName"]["Value"]["Ref"]
    table = data.find_resources("AWS::DynamoDB::Table")[table_id]
    assert table["DeletionPolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": "user_id", "KeyType": "HASH"}]
    assert ERASURE_TABLE.partition_key == "user_id"
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert "TimeToLiveSpecification" not in properties  # the audit record of an erasure never expires
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {
        "KMSMasterKeyId": {"Fn::GetAtt": [_key_id(data), "Arn"]},
        "SSEEnabled": True,
        "SSEType": "KMS",
    }


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


def _managed_policy(data: Template, construct_id: str) -> list[dict[str, Any]]:
    """The statements of the Lake's managed policy `construct_id`."""
    (policy,) = [
        p for logical_id, p in data.find_resources("AWS::IAM::ManagedPolicy").items()
        if logical_id.startswith(f"Lake{construct_id}")
    ]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _table_objects(data: Template, tables) -> list[dict[str, Any]]:
    """The object ARNs of these tables as the template writes them: <bucket ARN>/<table prefix>*."""
    return [
        {"Fn::Join": ["", [{"Fn::GetAtt": [_bucket_ids(data)[t.bucket_key], "Arn"]}, f"/{t.prefix}*"]]}
        for t in tables
    ]


def _table_names(resources: list[Any]) -> set[str]:
    """The lake table names among Glue table ARNs (.../table/<database>/<name>)."""
    rendered = [json.dumps(r) for r in resources]
    return {t.name for t in LAKE_TABLES if any(f'"/{t.name}"' in r for r in rendered)}


def _statements_with(statements: list[dict[str, Any]], actions: list[str]) -> list[dict[str, Any]]:
    return [s for s in statements if set(actions) & set(_listed(s["Action"]))]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _same(resources: list[Any], expected: list[Any]) -> bool:
    """The same resources in any order (CDK sorts and merges statements)."""
    return sorted(map(json.dumps, resources)) == sorted(map(json.dumps, expected))


def test_lake_has_one_managed_policy_per_writer_and_one_for_readers(data: Template) -> None:
    policies = data.find_resources("AWS::IAM::ManagedPolicy")
    assert len([p for p in policies if p.startswith("Lake")]) == 3
    # the model store's four: trainer, evaluator, publisher (tests/infra/test_infra_training_stack.py) and
    # server; the online store's two: cleaner and server; the erasure store's two: requester and eraser
    # (tests/infra/test_infra_serving_stack.py); the adjust store's one (tests/infra/test_infra_adjust_stack.py)
    assert len([p for p in policies if p.startswith("ModelStore")]) == 4
    assert len([p for p in policies if p.startswith("OnlineStore")]) == 2
    assert len([p for p in policies if p.startswith("ErasureStore")]) == 2
    assert len([p for p in policies if p.startswith("AdjustStore")]) == 1
    assert len(policies) == 12


def test_writer_policy_opens_the_cleaners_tables_only(data: Template) -> None:
    statements = _managed_policy(data, "WriterPolicy")
    (glue_statement,) = [s for s in statements if any(a.startswith("glue:") for a in _listed(s["Action"]))]
    assert _table_names(glue_statement["Resource"]) == {t.name for t in CLEANER_LAKE_TABLES}
    assert len(glue_statement["Resource"]) == 2 + len(CLEANER_LAKE_TABLES)  # catalog, database, each table
    (objects,) = _statements_with(statements, ["s3:PutObject"])
    assert _same(_listed(objects["Resource"]), _table_objects(data, CLEANER_LAKE_TABLES))


def test_builder_policy_writes_the_modelled_tables_only(data: Template) -> None:
    statements = _managed_policy(data, "BuilderPolicy")
    results = {"Fn::Join": ["", [{"Fn::GetAtt": [_bucket_ids(data)[QUERY_RESULTS_BUCKET.key], "Arn"]}, "/*"]]}
    bookmark_actions = ["s3:GetObject", "s3:PutObject"]
    writable = [
        r for s in _statements_with(statements, ["s3:PutObject", "s3:DeleteObject"])
        if sorted(_listed(s["Action"])) != bookmark_actions for r in _listed(s["Resource"])
    ]
    assert _same(writable, [*_table_objects(data, MODELLED_LAKE_TABLES), results])
    (partitions,) = _statements_with(statements, PARTITION_WRITE_ACTIONS)
    assert _table_names(partitions["Resource"]) == {t.name for t in MODELLED_LAKE_TABLES}
    # and each table's bookmark, outside every table location: exactly those objects, read and written
    (bookmarks,) = [s for s in statements if sorted(_listed(s["Action"])) == bookmark_actions]
    assert _same(_listed(bookmarks["Resource"]), [
        {"Fn::Join": ["", [{"Fn::GetAtt": [_bucket_ids(data)[t.bucket_key], "Arn"]},
                           f"/{bookmark_key(t.prefix, t.name)}"]]} for t in MODELLED_LAKE_TABLES])
    assert not any(bookmark_key(t.prefix, t.name).startswith(u.prefix) for t in MODELLED_LAKE_TABLES
                   for u in LAKE_TABLES)


def test_builder_policy_reads_the_curated_bucket_tables(data: Template) -> None:
    statements = _managed_policy(data, "BuilderPolicy")
    curated = [t for t in LAKE_TABLES if t.bucket_key == MODELLED_LAKE_TABLES[0].bucket_key]
    assert {t.bucket_key for t in MODELLED_LAKE_TABLES} == {curated[0].bucket_key}
    (reads,) = [s for s in statements if _listed(s["Action"]) == ["s3:GetObject"]]
    assert _same(_listed(reads["Resource"]), _table_objects(data, curated))
    (catalog,) = _statements_with(statements, CATALOG_READ_ACTIONS)
    assert _table_names(catalog["Resource"]) == {t.name for t in curated}
    assert not _table_names(catalog["Resource"]) & {t.name for t in CLEANER_LAKE_TABLES if t not in curated}


def test_reader_policy_reads_the_curated_bucket_tables_and_writes_only_query_results(data: Template) -> None:
    statements = _managed_policy(data, "ReaderPolicy")
    curated = [t for t in LAKE_TABLES if t.bucket_key == MODELLED_LAKE_TABLES[0].bucket_key]
    results = {"Fn::Join": ["", [{"Fn::GetAtt": [_bucket_ids(data)[QUERY_RESULTS_BUCKET.key], "Arn"]}, "/*"]]}
    (reads,) = [s for s in statements if _listed(s["Action"]) == ["s3:GetObject"]]
    assert _same(_listed(reads["Resource"]), _table_objects(data, curated))
    writable = [r for s in _statements_with(statements, ["s3:PutObject"]) for r in _listed(s["Resource"])]
    assert writable == [results]
    actions = {a for s in statements for a in _listed(s["Action"])}
    assert not {a for a in actions if "Delete" in a} | (actions & set(PARTITION_WRITE_ACTIONS))
    (catalog,) = _statements_with(statements, CATALOG_READ_ACTIONS)
    assert sorted(_listed(catalog["Action"])) == sorted(CATALOG_READ_ACTIONS)
    assert _table_names(catalog["Resource"]) == {t.name for t in curated}
    assert len(catalog["Resource"]) == 2 + len(curated)  # catalog, database, each table
    (key,) = _statements_with(statements, ["kms:Decrypt"])
    assert (sorted(_listed(key["Action"])), key["Resource"]) == (
        ["kms:Decrypt", "kms:GenerateDataKey"], {"Fn::GetAtt": [_key_id(data), "Arn"]}
    )


def _erasure_policy(data: Template, construct_id: str) -> list[dict[str, Any]]:
    """The statements of the ErasureStore's managed policy `construct_id`."""
    (policy,) = [
        p for logical_id, p in data.find_resources("AWS::IAM::ManagedPolicy").items()
        if logical_id.startswith(f"ErasureStore{construct_id}")
    ]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def test_eraser_policy_rewrites_every_lake_table_and_the_raw_archive_and_deletes_old_raw_versions_only(
        data: Template) -> None:
    statements = _erasure_policy(data, "EraserPolicy")
    raw = [{"Fn::Join": ["", [{"Fn::GetAtt": [_bucket_ids(data)[RAW_BUCKET.key], "Arn"]}, f"/{prefix}*"]]}
           for prefix in (RAW_PREFIX, RAW_ERROR_PREFIX)]
    (objects,) = _statements_with(statements, ["s3:PutObject"])
    assert _same(_listed(objects["Resource"]), [*_table_objects(data, LAKE_TABLES), *raw])
    assert sorted(_listed(objects["Action"])) == ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    actions = {a for s in statements for a in _listed(s["Action"])}
    assert not {a for a in actions if a.endswith("*")}
    assert {a for a in actions if "Delete" in a} == {"s3:DeleteObjectVersion"}
    (versions,) = _statements_with(statements, ["s3:DeleteObjectVersion"])
    assert _same(_listed(versions["Resource"]), raw)
    # each bucket is listed under the eraser's folders only (pyarrow lists a folder with it as the prefix)
    folders = [(t.bucket_key, t.prefix) for t in LAKE_TABLES] + [(RAW_BUCKET.key, p)
                                                                  for p in (RAW_PREFIX, RAW_ERROR_PREFIX)]
    expected = {_bucket_ids(data)[key]: sorted(f"{p}*" for k, p in folders if k == key) for key, _ in folders}
    listed = {
        s["Resource"]["Fn::GetAtt"][0]: sorted(s["Condition"]["StringLike"]["s3:prefix"])
        for s in _statements_with(statements, ["s3:ListBucket"])
    }
    assert listed == expected


def test_requester_policy_records_and_queues_an_erasure_only(data: Template) -> None:
    statements = _erasure_policy(data, "RequesterPolicy")
    queue_id = data.to_json()["Outputs"][f"{pascal_case(ERASURE_REQUESTS.key)}QueueUrl"]["Value"]["Ref"]
    (sqs,) = [s for s in statements if any(a.startswith("sqs:") for a in _listed(s["Action"]))]
    assert (sqs["Action"], sqs["Resource"]) == ("sqs:SendMessage", {"Fn::GetAtt": [queue_id, "Arn"]})
    # the data key encrypts messages only through SQS
    (generate,) = _statements_with(statements, ["kms:GenerateDataKey"])
    assert json.dumps(generate["Condition"]["StringEquals"]["kms:ViaService"]).startswith('{"Fn::Join": ["", ["sqs.')
