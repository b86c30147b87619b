"""cfn-lint accepts every synthesized template."""

from __future__ import annotations

import json

import pytest
from cfnlint.api import ManualArgs, lint

from cdk.app import STACKS

pytestmark = pytest.mark.infra

# W3005 (a DependsOn already implied by a Ref/GetAtt) is emitted by CDK itself for Lambda roles.
IGNORED_CHECKS = ["W3005"]


@pytest.mark.parametrize("stack", STACKS)
def test_template_passes_cfn_lint(synthesis, stack: str) -> None:
    template = json.dumps(synthesis.template_json(stack))
    matches = lint(template, config=ManualArgs(ignore_checks=IGNORED_CHECKS, regions=["us-east-1", "eu-west-1"]))
    assert not matches, "\n".join(f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches)
