"""What the EventBridge Scheduler schedules of the system share: the role a schedule's target runs as."""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct


def scheduler_role(scope: Construct, construct_id: str, *, description: str) -> iam.Role:
    """A role only EventBridge Scheduler may assume, and only for schedules of this account's default
    schedule group (the confused-deputy conditions AWS documents for Scheduler). It holds nothing: the
    schedule's target grants it the one action it performs."""
    default_group = Stack.of(scope).format_arn(
        service="scheduler",
        resource="schedule-group",
        resource_name="default",
        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
    )
    return iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal(
            "scheduler.amazonaws.com",
            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID, "aws:SourceArn": default_group}},
        ),
        description=description,
    )
