"""One synthesis per test session: every infra test reads the same cloud assembly."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Quiets the Node 20 end-of-life banner; must be set before the first aws_cdk import starts Node.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from cdk.app import (  # noqa: E402
    ADJUST_STACK,
    DATA_STACK,
    INGEST_STACK,
    MONITORING_STACK,
    SERVING_STACK,
    TABLES_STACK,
    TRAINING_STACK,
    build_app,
)
from cdk.project import ProjectLayout  # noqa: E402


@dataclass(frozen=True)
class Synthesis:
    app: App
    outdir: Path
    error: str | None  # why app.synth() failed (an unacknowledged finding), None when it passed

    def template_json(self, stack: str) -> dict[str, Any]:
        return json.loads((self.outdir / f"{stack}.template.json").read_text("utf-8"))

    def validation_report(self) -> dict[str, Any]:
        return json.loads((self.outdir / "validation-report.json").read_text("utf-8"))

    def producer_value(self, reference: Any) -> Any:
        """What a weak cross-stack reference ({"Fn::GetStackOutput": ...}) stands for in the producing
        stack, e.g. {"Ref": "LakeDatabase..."}; anything else is returned as it is."""
        if not (isinstance(reference, dict) and "Fn::GetStackOutput" in reference):
            return reference
        output = reference["Fn::GetStackOutput"]
        return self.template_json(output["StackName"])["Outputs"][output["OutputName"]]["Value"]

    def role_statements(self, stack: str, role_id: str) -> list[dict[str, Any]]:
        """Every statement a role of `stack` is allowed by: the stack's policies on it and the managed
        policies it attaches (which live beside what they open: the data stack's stores, the serving stack's
        UI config), with cross-stack references replaced by what they stand for in the producing stack."""
        resources = self.template_json(stack)["Resources"]
        statements = [
            s
            for r in resources.values()
            if r["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in r["Properties"]["Roles"]
            for s in r["Properties"]["PolicyDocument"]["Statement"]
        ]
        for arn in resources[role_id]["Properties"].get("ManagedPolicyArns", []):
            producer = arn["Fn::GetStackOutput"]["StackName"] if "Fn::GetStackOutput" in arn else DATA_STACK
            policy = self.template_json(producer)["Resources"][self.producer_value(arn)["Ref"]]
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
        return [self._resolved(s) for s in statements]

    def _resolved(self, node: Any) -> Any:
        if isinstance(node, dict) and "Fn::GetStackOutput" in node:
            return self.producer_value(node)
        if isinstance(node, dict):
            return {k: self._resolved(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self._resolved(v) for v in node]
        return node


@pytest.fixture(scope="session")
def layout(pytestconfig: pytest.Config) -> ProjectLayout:
    return ProjectLayout(root=pytestconfig.rootpath)


@pytest.fixture(scope="session")
def synthesis(layout: ProjectLayout, tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(layout, outdir=str(outdir))
    try:
        app.synth()
        error = None
    except RuntimeError as failure:  # templates and the validation report are written before it raises
        error = str(failure)
    return Synthesis(app=app, outdir=outdir, error=error)


@pytest.fixture(scope="session")
def data(synthesis: Synthesis) -> Template:
    return Template.from_json(synthesis.template_json(DATA_STACK))


@pytest.fixture(scope="session")
def ingest(synthesis: Synthesis) -> Template:
    return Template.from_json(synthesis.template_json(INGEST_STACK))


@pytest.fixture(scope="session")
def tables(synthesis: Synthesis) -> Template:
    return Template.from_json(synthesis.template_json(TABLES_STACK))


@pytest.fixture(scope="session")
def training(synthesis: Synthesis) -> Template:
    return Template.from_json(synthesis.template_json(TRAINING_STACK))


@pytest.fixture(scope="session")
def serving(synthesis: Synthesis) -> Template:
    return Template.from_json(synthesis.template_json(SERVING_STACK))


@pytest.fixture(scope="session")
def monitoring(synthesis: Synthesis) -> Template:
    return Template.from_json(synthesis.template_json(MONITORING_STACK))


@pytest.fixture(scope="session")
def adjust(synthesis: Synthesis) -> Template:
    return Template.from_json(synthesis.template_json(ADJUST_STACK))
