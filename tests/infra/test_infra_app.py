"""The app entry point, its configuration, and the schema converter."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from aws_cdk import Stack
from aws_cdk import aws_apigateway as apigw

from cdk.app import STACKS, main
from cdk.json_schema import DRAFT_04, draft04_from_pydantic, to_api_gateway_schema
from cdk.project import LambdaLayerMissingError, ProjectLayout

pytestmark = pytest.mark.infra


def test_cdk_json_runs_the_app_with_the_venv_and_holds_no_account_data(layout: ProjectLayout) -> None:
    config = json.loads((layout.root / "cdk.json").read_text("utf-8"))
    assert config["app"] == ".venv/bin/python -m cdk.app"
    assert config["output"] == "cdk.out"
    context = json.dumps(config.get("context", {}))
    assert not re.search(r"\b\d{12}\b", context), "an account id in cdk.json"
    assert not any(key.startswith(("availability-zones:", "ssm:", "hosted-zone:")) for key in config["context"])


def test_the_app_synthesizes_exactly_the_listed_stacks(synthesis) -> None:
    """The nag and lint tests run over `STACKS`: a stack missing from it would go unchecked."""
    assert sorted(child.node.id for child in synthesis.app.node.children if isinstance(child, Stack)) == sorted(STACKS)


def test_missing_lambda_layer_fails_with_the_make_target(tmp_path: Path, layout: ProjectLayout) -> None:
    with pytest.raises(LambdaLayerMissingError, match="make lambda-layer"):
        ProjectLayout(tmp_path).require_lambda_layer()
    with pytest.raises(LambdaLayerMissingError, match="drift layer .* run `make lambda-layer` first"):
        ProjectLayout(tmp_path).require_lambda_drift_layer()


def test_app_without_lambda_layer_exits_with_the_make_target(
    tmp_path: Path, layout: ProjectLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(layout.root / "cdk.json", tmp_path / "cdk.json")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="run `make lambda-layer` first"):
        main()


def test_schema_converter_keeps_type_lists() -> None:
    schema = to_api_gateway_schema({"type": ["number", "null"], "minimum": 0})
    assert schema.type == [apigw.JsonSchemaType.NUMBER, apigw.JsonSchemaType.NULL]
    assert schema.minimum == 0


def test_schema_converter_refuses_keywords_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="'if'"):
        to_api_gateway_schema({"type": "object", "properties": {"x": {"if": {"type": "string"}}}})


def test_pydantic_schema_becomes_draft04_with_refs_inlined_and_bounds_as_flags() -> None:
    schema = {
        "$defs": {"Item": {"type": "object", "properties": {"kind": {"const": "a"}}, "required": ["kind"]}},
        "type": "object",
        "properties": {
            "item": {"$ref": "#/$defs/Item"},
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "const": {"type": "string"},  # a property may be named like a keyword
        },
    }
    assert draft04_from_pydantic(schema) == {
        "$schema": DRAFT_04,
        "type": "object",
        "properties": {
            "item": {"type": "object", "properties": {"kind": {"enum": ["a"]}}, "required": ["kind"]},
            "score": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
            "const": {"type": "string"},
        },
    }
    to_api_gateway_schema(draft04_from_pydantic(schema))  # every keyword has a model counterpart


def test_pydantic_conversion_refuses_what_draft04_cannot_say() -> None:
    recursive = {"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
                 "$ref": "#/$defs/Node"}
    with pytest.raises(ValueError, match="recursive"):
        draft04_from_pydantic(recursive)
    with pytest.raises(ValueError, match="no draft-04 equivalent"):
        draft04_from_pydantic({"type": "number", "minimum": 0, "exclusiveMinimum": 1})
