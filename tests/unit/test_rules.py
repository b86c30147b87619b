"""Trigger rules: the shipped file validates and matches its schema; invalid rules are refused naming the
rule and the field; a rule fires exactly at its threshold, never inside its cooldown, and re-arms only
past its hysteresis band (property-based)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedbackloop.adjust.rules import (
    RULES_FILE,
    RULES_SCHEMA_FILE,
    Comparator,
    InvalidRulesError,
    Observation,
    Outcome,
    Rule,
    RuleState,
    after,
    evaluate,
    packaged_rules,
    parse_rules,
    rules_json_schema,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _file() -> dict:
    return json.loads(resources.files("feedbackloop.config").joinpath(RULES_FILE).read_text())


def _rule(**changes) -> Rule:
    base = {
        "name": "r", "description": "test rule", "metric": {"source": "engagement", "name": "ctr"},
        "scope": {"kind": "global"}, "window_minutes": 60, "comparator": "<", "threshold": 0.05,
        "min_samples": 10, "cooldown_minutes": 60, "hysteresis": 0.01, "action": {"type": "retrain"},
    }
    return Rule.model_validate(base | changes)


def test_the_shipped_rules_validate_and_the_schema_file_is_current():
    assert {r.name for r in packaged_rules().rules} >= {"segment-ctr-low", "global-ctr-collapse"}
    shipped = json.loads(resources.files("feedbackloop.config").joinpath(RULES_SCHEMA_FILE).read_text())
    assert shipped == rules_json_schema(), "regenerate with `feedbackloop rules schema --output ...`"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda r: r[0].update(window_minutes=3), "rule 'segment-ctr-low' (rules[0]), field window_minutes"),
    (lambda r: r[0].update(window_minutes=90), "field window_minutes: the engagement layer is hourly"),
    (lambda r: r[1].update(action={"type": "set_config"}), "rule 'global-ctr-collapse' (rules[1]), field action: "
                                                            "set_config changes no flag"),
    (lambda r: r[1].update(action={"type": "explode"}), "rule 'global-ctr-collapse' (rules[1]), field action"),
    (lambda r: r[0]["action"]["flags"].update({"Bad Flag": True}), "field action.flags.Bad Flag"),
    (lambda r: r[2].update(scope={"kind": "variant"}), "field scope: a variant scope names its experiment"),
    (lambda r: r[3]["metric"].update(name="NoSuchMetric"), "field metric: unknown cloudwatch metric"),
    (lambda r: r[3].update(scope={"kind": "segment"}), "CloudWatch metrics are read with the global scope only"),
    (lambda r: r[2].update(action={"type": "set_config", "flags": {"x": True}}), "not a variant"),
    (lambda r: r[1].update(comparator="=="), "field comparator"),
    (lambda r: r[1].update(threshold="low"), "field threshold"),
    (lambda r: r[1].update(cooldown_minutes=-1), "field cooldown_minutes"),
    (lambda r: r[1].pop("min_samples"), "field min_samples: Field required"),
    (lambda r: r[1].update(surprise=1), "field surprise: Extra inputs are not permitted"),
    (lambda r: r[1].update(name=r[0]["name"]), "rule names must be unique: segment-ctr-low"),
    (lambda r: r[0].update(scope={"kind": "global"}), "$preferred_categories needs a segment scope"),
])
def test_invalid_rules_are_refused_naming_the_rule_and_the_field(change, expected):
    document = copy.deepcopy(_file())
    change(document["rules"])
    with pytest.raises(InvalidRulesError) as refused:
        parse_rules(document)
    assert expected in str(refused.value)


def test_a_file_of_the_wrong_shape_is_refused():
    with pytest.raises(InvalidRulesError, match="version"):
        parse_rules({"rules": []})
    with pytest.raises(InvalidRulesError, match="the file"):
        parse_rules([1, 2])


@settings(max_examples=300, deadline=None)
@given(comparator=st.sampled_from(list(Comparator)),
       threshold=st.floats(-1e6, 1e6, allow_nan=False),
       offset=st.one_of(st.just(0.0), st.floats(-10, 10, allow_nan=False)))
def test_a_rule_fires_exactly_when_its_comparison_holds(comparator, threshold, offset):
    rule = _rule(comparator=comparator.value, threshold=threshold)
    value = threshold + offset
    outcome = evaluate(rule, Observation(value, 10), RuleState(), NOW)
    holds = {"<": value < threshold, "<=": value <= threshold, ">": value > threshold, ">=": value >= threshold}
    assert (outcome is Outcome.FIRE) == holds[comparator.value]
    assert outcome in (Outcome.FIRE, Outcome.OK)


def test_at_the_threshold_strict_comparators_do_not_fire_and_inclusive_ones_do():
    for comparator, fires in (("<", False), ("<=", True), (">", False), (">=", True)):
        outcome = evaluate(_rule(comparator=comparator), Observation(0.05, 10), RuleState(), NOW)
        assert (outcome is Outcome.FIRE) is fires, comparator


@settings(max_examples=200, deadline=None)
@given(cooldown=st.integers(0, 10_000), elapsed=st.integers(0, 20_000))
def test_a_rule_never_fires_inside_its_cooldown(cooldown, elapsed):
    rule = _rule(cooldown_minutes=cooldown)
    fired = after(Outcome.FIRE, RuleState(), NOW)
    rearmed = after(evaluate(rule, Observation(0.5, 10), fired, NOW), fired, NOW)  # back to normal: re-armed
    assert rearmed.armed
    at = NOW + timedelta(minutes=elapsed)
    outcome = evaluate(rule, Observation(0.0, 10), rearmed, at)
    assert outcome is (Outcome.FIRE if elapsed >= cooldown else Outcome.COOLDOWN)


@settings(max_examples=200, deadline=None)
@given(value=st.floats(0.0, 0.2, allow_nan=False))
def test_after_firing_a_rule_re_arms_only_past_its_hysteresis(value):
    rule = _rule(threshold=0.05, hysteresis=0.01)
    fired = after(Outcome.FIRE, RuleState(), NOW)
    outcome = evaluate(rule, Observation(value, 10), fired, NOW + timedelta(days=1))
    if value < 0.05:
        assert outcome is Outcome.HOLDING  # still low: no second action, whatever the cooldown
    elif value < 0.06:
        assert outcome is Outcome.HOLDING  # back above the threshold but inside the band: no flapping
    else:
        assert outcome is Outcome.CLEARED
        assert after(outcome, fired, NOW).armed


def test_hysteresis_mirrors_for_rules_that_fire_on_high_values():
    rule = _rule(comparator=">", threshold=100, hysteresis=20)
    fired = after(Outcome.FIRE, RuleState(), NOW)
    assert evaluate(rule, Observation(90, 10), fired, NOW) is Outcome.HOLDING
    assert evaluate(rule, Observation(80, 10), fired, NOW) is Outcome.CLEARED


def test_too_few_samples_no_data_and_disabled_rules_decide_nothing():
    rule = _rule(min_samples=100)
    assert evaluate(rule, Observation(0.0, 99), RuleState(), NOW) is Outcome.INSUFFICIENT_SAMPLE
    assert evaluate(rule, Observation(0.0, 100), RuleState(), NOW) is Outcome.FIRE
    assert evaluate(rule, Observation(None, 0), RuleState(), NOW) is Outcome.NO_DATA
    assert evaluate(_rule(enabled=False), Observation(0.0, 100), RuleState(), NOW) is Outcome.DISABLED


def test_rule_state_round_trips_through_json():
    state = RuleState(False, NOW)
    assert RuleState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert RuleState.from_json({}) == RuleState()
