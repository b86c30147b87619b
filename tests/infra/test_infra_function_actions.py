"""Least privilege, function by function: every action a function's role is allowed, read from the
synthesized templates (its stack's policies and the managed policies it attaches), is exactly the set in
the allow-list kept beside the handler that makes the calls (`lambdas/<package>/iam_actions.json`, each
action with the call that needs it). A grant nobody calls fails here, and so does a call nobody granted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdk.app import STACKS

pytestmark = pytest.mark.infra

ALLOW_LIST = "iam_actions.json"


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    allowed: set[str] = set()
    for statement in statements:
        if statement.get("Effect", "Allow") != "Allow":
            continue
        action = statement["Action"]
        allowed.update([action] if isinstance(action, str) else action)
    return allowed


def functions(synthesis) -> dict[str, set[str]]:
    """handler ("lambdas.adjust.handler.lambda_handler") -> every action its role is allowed."""
    found: dict[str, set[str]] = {}
    for stack in STACKS:
        resources = synthesis.template_json(stack)["Resources"]
        for resource in resources.values():
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            handler = resource["Properties"].get("Handler", "")
            if not handler.startswith("lambdas."):
                continue  # CDK's own (log retention, bucket notifications): none in these stacks today
            role = resource["Properties"]["Role"]["Fn::GetAtt"][0]
            assert handler not in found, f"{handler} is deployed twice"
            found[handler] = _actions(synthesis.role_statements(stack, role))
    return found


def allow_list(root: Path, handler: str) -> dict[str, str]:
    package, _, function = handler.rpartition(".")
    path = root.joinpath(*package.split(".")[:-1], ALLOW_LIST)  # lambdas/<package>/iam_actions.json
    document = json.loads(path.read_text("utf-8"))
    return document[function]  # "_comment" aside


def test_every_function_is_allowed_exactly_what_its_calls_need(synthesis, layout) -> None:
    deployed = functions(synthesis)
    assert {h.split(".")[1] for h in deployed} == {"adjust", "cleaner", "eraser", "ingest", "retrain", "serving"}
    problems = []
    for handler, actions in sorted(deployed.items()):
        expected = allow_list(layout.root, handler)
        assert all(len(why.split()) >= 3 for why in expected.values()), f"{handler}: say which call needs each"
        if extra := actions - set(expected):
            problems.append(f"{handler} is allowed what it never calls: {sorted(extra)}")
        if missing := set(expected) - actions:
            problems.append(f"{handler} calls what it is not allowed: {sorted(missing)}")
    assert not problems, "\n".join(problems)


def test_no_function_may_encrypt_or_re_encrypt_with_a_key(synthesis) -> None:
    # services encrypt with our keys on our behalf (GenerateDataKey, Decrypt); no function calls Encrypt
    for handler, actions in functions(synthesis).items():
        assert not {"kms:Encrypt", "kms:ReEncrypt*", "kms:ReEncryptFrom", "kms:ReEncryptTo"} & actions, handler


def test_a_missing_grant_or_an_unused_one_is_reported(synthesis, layout, tmp_path) -> None:
    # the comparison can fail: take one function's list, drop one action and add another
    handler = "lambdas.adjust.handler.lambda_handler"
    expected = allow_list(layout.root, handler)
    actions = functions(synthesis)[handler]
    assert actions == set(expected)
    dropped = sorted(expected)[0]
    assert (actions - (set(expected) - {dropped})) == {dropped}
    assert (set(expected) | {"s3:DeleteObject"}) - actions == {"s3:DeleteObject"}
