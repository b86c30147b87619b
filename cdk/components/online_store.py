"""The online store: one item per user (`resources.ONLINE_TABLE`, key `user_id`, TTL `expires_at`)
holding their recent feedback per item and their preferences, and who may touch it.

As with the Lake and the ModelStore, the permissions are managed policies that live here, beside the
data they open; the functions in the stateless stacks attach them by ARN:
- `cleaner_policy`: read profiles and fold new feedback into them (conditional UpdateItem on the
  profile's version, PutItem); it never deletes or scans;
- `server_policy`: read profiles, update a user's preferences, delete a profile (erasure); no scan.

Beside the profiles, `item_table` (`resources.ITEM_COUNTERS_TABLE`, key `item_id`) holds each item's
recent counts (ADR 0018): the cleaner may only UpdateItem there (its writes are ADDs, it never reads
them), serving may only read them.
"""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.components.key_value import key_value_table
from feedbackloop.resources import ITEM_COUNTERS_TABLE, ONLINE_TABLE

READ_ACTIONS = ["dynamodb:GetItem", "dynamodb:BatchGetItem"]
CLEANER_ACTIONS = [*READ_ACTIONS, "dynamodb:UpdateItem", "dynamodb:PutItem"]
SERVER_ACTIONS = [*READ_ACTIONS, "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
ITEM_CLEANER_ACTIONS = ["dynamodb:UpdateItem"]
ITEM_SERVER_ACTIONS = ["dynamodb:BatchGetItem"]


class OnlineStore(Construct):
    """`table` and the two managed policies of the module docstring."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.table: dynamodb.Table = key_value_table(self, ONLINE_TABLE, key)
        self.item_table: dynamodb.Table = key_value_table(self, ITEM_COUNTERS_TABLE, key)
        self.cleaner_policy = self._policy(
            "CleanerPolicy", "fold new feedback into user profiles (read, conditional update) and add to item "
            "counters", CLEANER_ACTIONS, ITEM_CLEANER_ACTIONS, key
        )
        self.server_policy = self._policy(
            "ServerPolicy", "read user profiles and item counters, set preferences, erase a profile",
            SERVER_ACTIONS, ITEM_SERVER_ACTIONS, key
        )

    def _policy(self, construct_id: str, purpose: str, actions: list[str], item_actions: list[str],
                key: kms.IKey) -> iam.ManagedPolicy:
        return iam.ManagedPolicy(
            self,
            construct_id,
            description=f"feedbackloop: {purpose}",
            statements=[
                iam.PolicyStatement(actions=actions, resources=[self.table.table_arn]),
                iam.PolicyStatement(actions=item_actions, resources=[self.item_table.table_arn]),
                # DynamoDB decrypts the table key with the caller's permission on every read and write
                iam.PolicyStatement(actions=["kms:Decrypt"], resources=[key.key_arn]),
            ],
        )
