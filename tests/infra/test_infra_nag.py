"""cdk-nag (AwsSolutions) passes: every finding is fixed or acknowledged with a reason, and every
acknowledgement still matches a finding."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import App, Duration, Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks

from cdk import nag
from cdk.app import STACKS

pytestmark = pytest.mark.infra


def _open_findings(report: dict) -> list[str]:
    return [
        f"{plugin['pluginName']}: {violation['severity']} {violation['ruleName']} at {construct['constructPath']}"
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]


def test_no_unacknowledged_error_or_warning(synthesis) -> None:
    findings = _open_findings(synthesis.validation_report())
    assert not findings, "\n".join(findings)
    assert synthesis.error is None


def test_every_acknowledgement_gives_a_reason(synthesis) -> None:
    suppressed = [v for p in synthesis.validation_report()["pluginReports"] for v in p.get("suppressedViolations", [])]
    assert suppressed, "the report lists no acknowledged finding: is cdk-nag running?"
    vague = [v["acknowledgedId"] for v in suppressed if len(v.get("reason", "").split()) < 8]
    assert not vague, f"acknowledgements without a real reason: {vague}"


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_is_checked(synthesis, stack: str) -> None:
    """Each stack has at least one acknowledged finding in the report, so the plugin ran over it."""
    suppressed = [v for p in synthesis.validation_report()["pluginReports"] for v in p.get("suppressedViolations", [])]
    assert any(v["acknowledgedAt"].startswith(f"{stack}/") for v in suppressed)


def test_no_stale_acknowledgement(synthesis) -> None:
    """An acknowledgement that suppresses nothing hides the next real finding of the same id."""
    used = {
        (v["acknowledgedAt"], v["acknowledgedId"])
        for p in synthesis.validation_report()["pluginReports"]
        for v in p.get("suppressedViolations", [])
    }
    declared = {
        (construct.node.path, finding)
        for construct in synthesis.app.node.find_all()
        for entry in construct.node.metadata
        if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for finding in entry.data
    }
    assert declared - used == set()


@pytest.mark.parametrize("acknowledged", [False, True])
def test_an_unacknowledged_finding_fails_synthesis(tmp_path: Path, acknowledged: bool) -> None:
    app = App(outdir=str(tmp_path))
    queue = sqs.Queue(Stack(app, "Probe"), "Queue", enforce_ssl=True, retention_period=Duration.days(1))
    if acknowledged:
        nag.acknowledge(queue, "SQS3", "a probe queue that checks the acknowledgement id format cdk-nag expects")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    if acknowledged:
        app.synth()
    else:
        with pytest.raises(RuntimeError, match="ValidationFailed"):
            app.synth()
