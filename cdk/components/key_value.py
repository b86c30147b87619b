"""A key-value DynamoDB table as a `resources.KeyValueTableSpec` describes it. The cleaner's state, the
model registry and the online store are built by this one function, so every table of the system has
the same settings: on demand, point-in-time recovery, the data key, retained on stack deletion."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.naming import pascal_case
from feedbackloop.resources import KeyValueTableSpec


def key_value_table(scope: Construct, spec: KeyValueTableSpec, key: kms.IKey) -> dynamodb.Table:
    """The table of `spec` under `scope`, with the construct id `<Key>Table`."""
    return dynamodb.Table(
        scope,
        f"{pascal_case(spec.key)}Table",
        partition_key=dynamodb.Attribute(name=spec.partition_key, type=dynamodb.AttributeType.STRING),
        sort_key=None if spec.sort_key is None
        else dynamodb.Attribute(name=spec.sort_key, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        time_to_live_attribute=spec.ttl_attribute,
        removal_policy=RemovalPolicy.RETAIN,  # the default, said out loud: data outlives the stack
    )
