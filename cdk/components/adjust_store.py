"""What the adjust function keeps: its decisions table (`resources.DECISIONS_TABLE`: partition `subject`,
"rule#<name>" or "drift#<stream>", sort `at`, TTL `expires_at`; ADR 0009), and its one item of the
cleaner's state table (rule states, drift watermarks, the pickled detectors).

As with the other stores, the permission is a managed policy that lives here, beside the data it opens,
and the adjust function in the stateless stack attaches it by ARN:
- `adjuster_policy`: read and conditionally replace items of the state table, batch-write decisions; it
  never reads, scans or deletes decisions (operators query them with the CLI's own credentials).
"""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.components.key_value import key_value_table
from feedbackloop.resources import DECISIONS_TABLE

# feedbackloop.adapters.control: DynamoAdjustState (GetItem, conditional PutItem), DynamoDecisionLog.write
# (boto3's batch_writer: BatchWriteItem only)
STATE_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem"]
DECISION_WRITE_ACTIONS = ["dynamodb:BatchWriteItem"]


class AdjustStore(Construct):
    """`table` (the decisions), `state_table` (the cleaner's, which holds the adjust item) and
    `adjuster_policy`."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, state_table: dynamodb.ITable) -> None:
        super().__init__(scope, construct_id)
        self.table: dynamodb.Table = key_value_table(self, DECISIONS_TABLE, key)
        self.state_table = state_table
        self.adjuster_policy = iam.ManagedPolicy(
            self,
            "AdjusterPolicy",
            description="feedbackloop: keep the adjust function's state item and record its decisions",
            statements=[
                iam.PolicyStatement(actions=STATE_ACTIONS, resources=[state_table.table_arn]),
                iam.PolicyStatement(actions=DECISION_WRITE_ACTIONS, resources=[self.table.table_arn]),
                # DynamoDB decrypts the table key with the caller's permission on every read and write
                iam.PolicyStatement(actions=["kms:Decrypt"], resources=[key.key_arn]),
            ],
        )
