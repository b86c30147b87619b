"""A deployment's choices from context (cdk/deployment.py): a stage prefixes every stack and every name
that must be unique in an account, so two stages share one; the account-level API Gateway logging role
and reserved concurrency are opt-in; alert subscribers come from context. The staged app (every option
on) passes cdk-nag and cfn-lint as the default one does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from cdk.app import SERVING_STACK, STACKS, build_app
from cdk.deployment import Deployment, DeploymentContextError
from feedbackloop.settings import ServingSettings

pytestmark = pytest.mark.infra

STAGE = "dev"
CONTEXT = {
    "stage": STAGE,
    "api_gateway_logging_role": "true",
    "alert_email": "ops@example.org,oncall@example.org",
    "alert_https": "https://hooks.example.org/sns",
    "alert_slack": "T0123ABCD/C0456EFGH",
    "adjust_reserved_concurrency": "1",
}
# properties that name a resource in an account-wide (or region-wide) namespace
NAME_PROPERTIES = ("Name", "DashboardName", "LogGroupName", "ConfigurationName", "WorkGroupName")
# names scoped inside a parent that carries the stage already (an AppConfig application, a REST API)
SCOPED = {"AWS::AppConfig::Environment", "AWS::AppConfig::ConfigurationProfile", "AWS::ApiGateway::Stage"}


class Staged:
    def __init__(self, outdir, error: str | None) -> None:
        self.outdir, self.error = outdir, error

    def template(self, stack: str) -> dict[str, Any]:
        return json.loads((self.outdir / f"{STAGE}-{stack}.template.json").read_text("utf-8"))

    def resources(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(stack, r) for stack in STACKS for r in self.template(stack)["Resources"].values() if r["Type"] == kind]


@pytest.fixture(scope="module")
def staged(layout, tmp_path_factory) -> Staged:
    outdir = tmp_path_factory.mktemp("cdk.out.dev")
    app = build_app(layout, outdir=str(outdir), context=CONTEXT)
    try:
        app.synth()
        error = None
    except RuntimeError as failure:
        error = str(failure)
    return Staged(outdir, error)


def test_every_stack_carries_the_stage(staged) -> None:
    manifest = json.loads((staged.outdir / "manifest.json").read_text("utf-8"))
    stacks = {a["properties"].get("stackName", name) for name, a in manifest["artifacts"].items()
              if a["type"] == "aws:cloudformation:stack"}
    assert stacks == {f"{STAGE}-{s}" for s in STACKS}


def test_every_account_wide_name_carries_the_stage(staged) -> None:
    names = []
    for stack in STACKS:
        for resource in staged.template(stack)["Resources"].values():
            if resource["Type"] in SCOPED:
                continue
            properties = resource.get("Properties", {})
            for prop in NAME_PROPERTIES:
                if isinstance(properties.get(prop), str):
                    names.append((resource["Type"], properties[prop]))
            database = properties.get("DatabaseInput", {}).get("Name")
            if database is not None:
                names.append((resource["Type"], database))
    assert len(names) >= 8
    assert [n for n in names if STAGE not in n[1].lower()] == []
    assert ("AWS::Glue::Database", f"{STAGE}_feedbackloop") in names
    assert ("AWS::AppConfig::Application", f"feedbackloop-{STAGE}") in names


def test_serving_reads_the_staged_appconfig_application(staged) -> None:
    (function,) = [r for s, r in staged.resources("AWS::Lambda::Function") if s == SERVING_STACK
                   and r["Properties"]["Handler"] == "lambdas.serving.handler.lambda_handler"]
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables[ServingSettings.env_name("appconfig_application")] == f"feedbackloop-{STAGE}"


def test_the_account_logging_role_only_on_request(staged, synthesis) -> None:
    assert [s for s, _ in staged.resources("AWS::ApiGateway::Account")] == ["FeedbackLoopIngest"]
    manifest = json.loads((staged.outdir / "manifest.json").read_text("utf-8"))
    assert f"{STAGE}-FeedbackLoopIngest" in manifest["artifacts"][f"{STAGE}-{SERVING_STACK}"]["dependencies"]
    assert not [r for s in STACKS for r in synthesis.template_json(s)["Resources"].values()
                if r["Type"] == "AWS::ApiGateway::Account"]


def test_alerts_reach_the_subscribers_of_the_context(staged, synthesis) -> None:
    subscriptions = [(r["Properties"]["Protocol"], r["Properties"]["Endpoint"])
                     for _, r in staged.resources("AWS::SNS::Subscription")]
    expected = [("email", "ops@example.org"), ("email", "oncall@example.org"), ("https", "https://hooks.example.org/sns")]
    assert sorted(subscriptions) == sorted(expected * 2)  # the operators' topic and the model alerts topic
    slack = staged.resources("AWS::Chatbot::SlackChannelConfiguration")
    assert len(slack) == 2
    assert {r["Properties"]["SlackChannelId"] for _, r in slack} == {"C0456EFGH"}
    assert all(len(r["Properties"]["SnsTopicArns"]) == 1 for _, r in slack)
    assert not [r for s in STACKS for r in synthesis.template_json(s)["Resources"].values()
                if r["Type"] in ("AWS::SNS::Subscription", "AWS::Chatbot::SlackChannelConfiguration")]


def test_reserved_concurrency_only_on_request(staged) -> None:
    (adjust,) = [r for _, r in staged.resources("AWS::Lambda::Function")
                 if r["Properties"]["Handler"] == "lambdas.adjust.handler.lambda_handler"]
    assert adjust["Properties"]["ReservedConcurrentExecutions"] == 1


def test_the_staged_app_passes_cdk_nag(staged) -> None:
    report = json.loads((staged.outdir / "validation-report.json").read_text("utf-8"))
    open_findings = [v["ruleName"] for p in report["pluginReports"] for v in p["violations"]]
    assert open_findings == [] and staged.error is None


@pytest.mark.parametrize("stack", STACKS)
def test_the_staged_templates_pass_cfn_lint(staged, stack: str) -> None:
    matches = lint(json.dumps(staged.template(stack)),
                   config=ManualArgs(ignore_checks=["W3005"], regions=["us-east-1"]))
    assert not matches, "\n".join(f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches)


@pytest.mark.parametrize("context, key", [
    ({"stage": "Dev"}, "stage"), ({"stage": "dev-1"}, "stage"), ({"stage": "a" * 13}, "stage"),
    ({"alert_email": "ops@example.org,not-an-address"}, "alert_email"),
    ({"alert_https": "http://hooks.example.org"}, "alert_https"),
    ({"alert_slack": "T0123"}, "alert_slack"),
    ({"api_gateway_logging_role": "maybe"}, "api_gateway_logging_role"),
    ({"adjust_reserved_concurrency": "0"}, "adjust_reserved_concurrency"),
    ({"adjust_reserved_concurrency": "many"}, "adjust_reserved_concurrency"),
])
def test_a_bad_context_value_stops_synth_naming_the_key(context, key) -> None:
    with pytest.raises(DeploymentContextError, match=key):
        Deployment.from_context(context)


def test_no_stage_keeps_the_unprefixed_names() -> None:
    default = Deployment.from_context({})
    assert (default.stack_id("FeedbackLoopData"), default.glue_database, default.appconfig_application) == (
        "FeedbackLoopData", "feedbackloop", "feedbackloop")
    assert not default.api_gateway_logging_role and default.adjust_reserved_concurrency is None
