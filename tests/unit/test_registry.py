"""The event contract: every field's rule, the per event type rules and the batch model."""

from __future__ import annotations

import fastjsonschema
import pytest

from feedbackloop.schemas import registry

pytestmark = pytest.mark.unit

RULES = registry.event_type_rules()
REQUIRED = registry.event_schema()["required"]


def _error(event: object) -> registry.SchemaError:
    error = registry.validate_event(event)
    assert error is not None, f"accepted {event!r}"
    return error


def test_a_complete_event_is_valid(make_event):
    assert registry.validate_event(make_event()) is None


def test_a_minimal_implicit_event_is_valid(make_event):
    assert registry.validate_event(make_event(event_type="click", drop=("value", "context"))) is None


@pytest.mark.parametrize("name", [f for f in REQUIRED if f != "schema_version"])
def test_a_missing_required_field_is_named(make_event, name):
    error = _error(make_event(drop=(name,)))
    assert error.field == name
    assert "must contain" in error.reason


def test_a_missing_schema_version_is_named(make_event):
    assert _error(make_event(drop=("schema_version",))) == registry.SchemaError("schema_version", "is required")


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("event_id", 123, "must be string"),
        ("event_id", None, "must be string"),
        ("user_id", ["u"], "must be string"),
        ("item_id", {"id": 1}, "must be string"),
        ("event_type", 3, "must be string"),
        ("value", "4", "must be number or null"),
        ("value", True, "must be number or null"),
        ("value", [4], "must be number or null"),
        ("timestamp", 1_749_556_740, "must be string"),
        ("context", "mobile", "must be object"),
        ("context", None, "must be object"),
        ("context", [], "must be object"),
    ],
)
def test_a_wrong_type_is_named(make_event, name, value, reason):
    error = _error(make_event(**{name: value}))
    assert error.field == name
    assert reason in error.reason


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("device", 3, "must be string or null"),
        ("device", "watch", "must be one of"),
        ("price", "9.5", "must be number or null"),
        ("price", -0.01, "bigger than or equal to 0"),
        ("price", 10_000_000.01, "smaller than or equal to 10000000"),
        ("page", 7, "must be string or null"),
        ("page", "p" * 257, "shorter than or equal to 256"),
        ("session_id", "s" * 129, "shorter than or equal to 128"),
        ("variant", "v" * 65, "shorter than or equal to 64"),
    ],
)
def test_a_bad_context_field_is_named_with_its_path(make_event, name, value, reason):
    event = make_event()
    event["context"][name] = value
    error = _error(event)
    assert error.field == f"context.{name}"
    assert reason in error.reason


def test_context_fields_may_be_null_or_absent(make_event):
    event = make_event()
    event["context"] = dict.fromkeys(event["context"])
    assert registry.validate_event(event) is None
    assert registry.validate_event(make_event(context={})) is None


def test_an_unknown_event_type_is_refused(make_event):
    error = _error(make_event(event_type="like"))
    assert error.field == "event_type"
    assert "must be one of" in error.reason


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("event_id", ""),
        ("event_id", "-starts-with-a-dash"),
        ("event_id", "has space"),
        ("event_id", "e" * 65),
        ("event_id", "evt-1\n"),  # a trailing newline must not slip past `$`
        ("event_id", "évt"),
        ("user_id", "user/1"),
        ("user_id", "u" * 129),
        ("item_id", "item?1"),
        ("item_id", "_item"),
        ("timestamp", "2025-06-10T11:59:00"),  # no zone
        ("timestamp", "2025-06-10 11:59:00Z"),
        ("timestamp", "2025-06-10t11:59:00Z"),
        ("timestamp", "2025-06-10T11:59:00.1234567891Z"),  # ten fraction digits
        ("timestamp", "2025-06-10T11:59:00+0200"),
        ("timestamp", "2025-06-10T11:59:00Z\n"),
        ("schema_version", "1"),
        ("schema_version", "1.x"),
        ("schema_version", "v1.0"),
        ("schema_version", "1.0.0"),
    ],
)
def test_a_string_breaking_its_pattern_or_length_is_refused(make_event, name, value):
    assert _error(make_event(**{name: value})).field == name


@pytest.mark.parametrize(
    "value",
    ["user@example.com", "a", "A0_.:@-", "u" * 128],
)
def test_user_ids_may_hold_email_like_characters(make_event, value):
    assert registry.validate_event(make_event(user_id=value)) is None


@pytest.mark.parametrize(
    "timestamp",
    [
        "2025-06-10T11:59:00Z",
        "2025-06-10T11:59:00.5Z",
        "2025-06-10T11:59:00.123456789Z",
        "2025-06-10T13:59:00+02:00",
        "2025-06-10T06:29:00-05:30",
        "2024-02-29T00:00:00Z",
    ],
)
def test_rfc3339_timestamps_are_accepted(make_event, timestamp):
    assert registry.validate_event(make_event(timestamp=timestamp)) is None


@pytest.mark.parametrize(
    "timestamp",
    [
        "2025-02-29T00:00:00Z",  # not a leap year
        "2025-04-31T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-06-10T24:00:00Z",
        "2025-06-10T11:60:00Z",
        "2025-06-10T11:59:00+24:00",
        "2025-06-10T11:59:00+02:60",
    ],
)
def test_impossible_dates_and_times_are_refused(make_event, timestamp):
    error = _error(make_event(timestamp=timestamp))
    assert error == registry.SchemaError("timestamp", "timestamp must be date-time")


def test_an_extra_property_is_named(make_event):
    assert _error(make_event(rating=5)) == registry.SchemaError("rating", "must not contain {'rating'} properties")


def test_an_extra_context_property_is_named(make_event):
    event = make_event()
    event["context"]["browser"] = "firefox"
    assert _error(event).field == "context.browser"


@pytest.mark.parametrize("event_type", list(RULES))
def test_values_at_the_bounds_of_each_event_type_are_accepted(make_event, event_type):
    rule = RULES[event_type]
    for value in (rule.min, rule.max, (rule.min + rule.max) // 2):
        assert registry.validate_event(make_event(event_type=event_type, value=value)) is None


@pytest.mark.parametrize("event_type", list(RULES))
def test_values_outside_the_range_of_each_event_type_are_refused(make_event, event_type):
    rule = RULES[event_type]
    above = _error(make_event(event_type=event_type, value=rule.max + 0.5))
    assert above.field == "value"
    assert f"between {rule.min:g} and {rule.max:g}" in above.reason
    below = _error(make_event(event_type=event_type, value=rule.min - 0.5))
    assert below.field == "value"


@pytest.mark.parametrize("event_type", [name for name, rule in RULES.items() if rule.kind == "explicit"])
def test_explicit_events_need_a_value(make_event, event_type):
    for event in (make_event(event_type=event_type, drop=("value",)), make_event(event_type=event_type, value=None)):
        assert _error(event) == registry.SchemaError("value", f"is required for {event_type} events")


@pytest.mark.parametrize("event_type", [name for name, rule in RULES.items() if rule.kind == "implicit"])
def test_implicit_events_may_omit_their_value(make_event, event_type):
    assert registry.validate_event(make_event(event_type=event_type, value=None)) is None
    assert registry.validate_event(make_event(event_type=event_type, drop=("value",))) is None


def test_every_explicit_type_states_a_neutral_point_inside_its_scale():
    explicit = {name: rule.neutral for name, rule in RULES.items() if rule.kind == "explicit"}
    assert explicit == {"rating": 3, "form_score": 50, "nps": 7}
    assert all(rule.neutral is None for rule in RULES.values() if rule.kind == "implicit")


_SCALE = {"kind": "explicit", "min": 1, "max": 5, "impute": False, "outlier": "none", "weight": 1.0, "polarity": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [({}, "an explicit type must state its scale's neutral point"),
     ({"neutral": 6}, r"neutral \(6\) must lie in \[1, 5\]"),
     ({"neutral": 0.5}, r"neutral \(0.5\) must lie in \[1, 5\]"),
     ({"neutral": 3, "min": 5}, r"min \(5\) must be below max \(5\)"),
     ({"neutral": 3, "kind": "implicit"}, "only explicit types have a neutral point")],
)
def test_an_inconsistent_scale_is_refused_with_its_reason(change, message):
    with pytest.raises(ValueError, match=message):
        registry.EventTypeRule.model_validate(_SCALE | change)


@pytest.mark.parametrize("neutral", [1, 3, 5])
def test_a_neutral_point_may_sit_anywhere_on_the_scale_ends_included(neutral):
    assert registry.EventTypeRule.model_validate(_SCALE | {"neutral": neutral}).neutral == neutral


@pytest.mark.parametrize("value", [7.5, 0.1, 9.999])
def test_nps_must_be_a_whole_number(make_event, value):
    assert _error(make_event(event_type="nps", value=value)) == registry.SchemaError(
        "value", "must be a whole number for nps"
    )


@pytest.mark.parametrize("value", [0, 7, 7.0, 10])
def test_whole_nps_values_are_accepted_as_int_or_float(make_event, value):
    assert registry.validate_event(make_event(event_type="nps", value=value)) is None


def test_non_integer_values_are_fine_where_the_type_allows_them(make_event):
    assert registry.validate_event(make_event(event_type="rating", value=3.5)) is None
    assert registry.validate_event(make_event(event_type="dwell", value=12.25)) is None


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.42"])
def test_any_minor_of_a_known_major_is_accepted(make_event, version):
    assert registry.validate_event(make_event(schema_version=version)) is None


@pytest.mark.parametrize("version", ["2.0", "0.9", "17.3"])
def test_an_unknown_major_is_reported_as_such(make_event, version):
    error = _error(make_event(schema_version=version))
    assert error.field == "schema_version"
    assert registry.is_unknown_version(error)


@pytest.mark.parametrize("version", [1.0, 1, None, "1", "one.zero"])
def test_a_malformed_version_is_not_an_unknown_version(make_event, version):
    error = _error(make_event(schema_version=version))
    assert error.field == "schema_version"
    assert not registry.is_unknown_version(error)


@pytest.mark.parametrize("event", [[], "event", 42, None])
def test_an_event_must_be_an_object(event):
    assert _error(event) == registry.SchemaError("$", "an event must be a JSON object")


@pytest.mark.parametrize("name", ["session_id", "page", "experiment", "country"])
@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "\ud83d"])
def test_lone_surrogates_are_refused(make_event, name, text):
    """A JSON escape like "\\ud800" decodes to a string that has no UTF-8 form: nothing downstream can
    store it, so the contract refuses it (it used to crash the ingest API and the cleaner)."""
    event = make_event()
    event["context"][name] = text
    error = _error(event)
    assert error.field == f"context.{name}"
    assert "surrogate" in error.reason


def test_astral_characters_are_fine(make_event):
    event = make_event()
    event["context"]["page"] = "/caf\u00e9/\U0001f600" * 10
    assert registry.validate_event(event) is None


@pytest.mark.parametrize(
    ("version", "major"),
    [("1.0", 1), ("12.3", 12), ("1", None), ("1.0.0", None), (1.0, None), (None, None), ("", None),
     ("1.0\n", None), ("\u0661.0", None)],
)
def test_major_of(version, major):
    assert registry.major_of(version) == major


@pytest.mark.parametrize("version", ["\u0662.0", "2.0\n"])
def test_a_version_that_only_looks_like_another_major_is_malformed(make_event, version):
    assert not registry.is_unknown_version(_error(make_event(schema_version=version)))


def test_only_major_1_is_known():
    assert registry.known_majors() == (1,)
    with pytest.raises(KeyError):
        registry.event_schema(2)


def test_every_event_type_of_the_schema_has_rules_and_no_more():
    assert set(registry.event_schema()["properties"]["event_type"]["enum"]) == set(RULES)


def test_implicit_types_are_imputable_and_explicit_ones_are_not():
    for name, rule in RULES.items():
        assert rule.impute == (rule.kind == "implicit"), name
        assert (rule.fallback is not None) == rule.impute, name
        assert rule.min <= (rule.fallback if rule.fallback is not None else rule.min) <= rule.max, name


def test_the_batch_schema_wraps_the_event_schema():
    schema = registry.batch_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert schema["required"] == ["events"]
    assert schema["additionalProperties"] is False
    events = schema["properties"]["events"]
    assert (events["type"], events["minItems"], events["maxItems"]) == ("array", 1, registry.MAX_BATCH_EVENTS)
    item = events["items"]
    assert "$schema" not in item and "title" not in item
    expected = {k: v for k, v in registry.event_schema().items() if k not in ("$schema", "title")}
    assert item == expected
    # a fresh copy: callers may edit it without touching the registry's schema
    item["properties"].clear()
    assert registry.event_schema()["properties"]


@pytest.mark.parametrize(("count", "valid"), [(0, False), (1, True), (500, True), (501, False)])
def test_the_batch_schema_bounds_the_batch_size(make_event, count, valid):
    validate = fastjsonschema.compile(registry.batch_schema())
    body = {"events": [make_event(event_id=f"e{i}") for i in range(count)]}
    if valid:
        validate(body)
    else:
        with pytest.raises(fastjsonschema.JsonSchemaValueException):
            validate(body)


def test_the_batch_schema_refuses_extra_keys_and_bad_events(make_event):
    validate = fastjsonschema.compile(registry.batch_schema())
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate({"events": [make_event()], "extra": 1})
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate({"events": [make_event(event_type="like")]})
