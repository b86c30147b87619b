"""Who hears an alert topic: the subscribers a deployment names in context (`cdk/deployment.py`):
e-mail addresses, HTTPS endpoints, and a Slack channel through AWS Chatbot. Both topics (the operators'
alerts, the retraining workflow's model alerts) get the same subscribers."""

from __future__ import annotations

from aws_cdk import Names
from aws_cdk import aws_chatbot as chatbot
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cdk.deployment import Deployment


def subscribe_alerts(scope: Construct, topic: sns.Topic) -> None:
    """Subscribe everyone the deployment names to `topic` (constructs under `scope`)."""
    deployment = Deployment.of(scope)
    for address in deployment.alert_email:
        topic.add_subscription(subscriptions.EmailSubscription(address))
    for url in deployment.alert_https:
        topic.add_subscription(subscriptions.UrlSubscription(url, protocol=sns.SubscriptionProtocol.HTTPS))
    if deployment.alert_slack is not None:
        workspace, channel = deployment.alert_slack
        chatbot.SlackChannelConfiguration(
            scope,
            "AlertsToSlack",
            # unique per account: the construct path carries the stage's stack name
            slack_channel_configuration_name=Names.unique_resource_name(scope, max_length=128, separator="-"),
            slack_workspace_id=workspace,
            slack_channel_id=channel,
            notification_topics=[topic],
            # the channel reads alerts; it runs no commands against the account
            guardrail_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("ReadOnlyAccess")],
        )
