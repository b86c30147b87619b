"""Acknowledging cdk-nag findings, one finding and one reason at a time.

cdk-nag 3 runs as a CDK policy-validation plugin. An acknowledgement goes through CDK's own
`Validations.of(scope).acknowledge`, so the finding moves to `suppressedViolations` in the cloud
assembly's validation report together with its reason, instead of disappearing.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

PACK = "AwsSolutions"


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Accept `finding` (e.g. "L1" or "IAM5[Resource::*]") on `scope` and everything below it."""
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{PACK}::{PACK}-{finding}", reason=reason))


def acknowledge_all(scope: IConstruct, findings: list[str], reason: str) -> None:
    """The same reason for several findings (cdk-nag 3 has no prefix matching: each one is listed)."""
    for finding in findings:
        acknowledge(scope, finding, reason)


def wildcard_resource(scope: IConstruct, arn: str) -> str:
    """The IAM5 finding cdk-nag reports for a wildcard resource such as `bucket.arn_for_objects("*")`,
    e.g. `IAM5[Resource::<LakeRawBucketDA76DCB0.Arn>/*]`. `arn` must belong to `scope`'s stack."""
    return f"IAM5[Resource::{_flatten(Stack.of(scope).resolve(arn))}]"


def _flatten(node: Any) -> str:
    # The same rendering as cdk-nag's utils/flatten-cfn-reference.js.
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict) and "Fn::Join" in node:
        delimiter, items = node["Fn::Join"]
        return delimiter.join(_flatten(item) for item in items)
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        resource, attribute = node["Fn::GetAtt"]
        return f"<{_flatten(resource)}.{_flatten(attribute)}>"
    if isinstance(node, dict) and "Ref" in node:
        return f"<{_flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))
