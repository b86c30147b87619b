"""The feedback event schema registry.

`feedback_event/<major>.json` is the contract for a major version; `feedback_event/event_types.json`
adds the per event type rules that JSON Schema draft-04 (what API Gateway models accept) cannot
express. API Gateway's request model, the ingest Lambda, the cleaner and the tests all read these
files through this module.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

import fastjsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

CURRENT_MAJOR = 1
CURRENT_VERSION = "1.2"  # 1.1 added context.category; 1.2 context.request_id, position, propensity
MAX_BATCH_EVENTS = 500
MAX_EVENT_BYTES = 8 * 1024
MAX_BODY_BYTES = 1024 * 1024

_VERSION = re.compile(r"([0-9]+)\.([0-9]+)")  # fullmatch: `$` and `\d` would admit "1.0\n" and other digits


class EventTypeRule(BaseModel):
    """How the cleaner treats one event type (see event_types.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["explicit", "implicit"]
    min: float
    max: float
    # explicit types only: the value that says neither like nor dislike (feedback score 0)
    neutral: float | None = None
    impute: bool
    fallback: float | None = None
    outlier: Literal["none", "zscore", "iqr"]
    weight: float = Field(gt=0, le=1)
    polarity: Literal[-1, 0, 1]  # 0: an exposure, no preference by itself
    integer: bool = False

    @model_validator(mode="after")
    def _scale_is_consistent(self) -> EventTypeRule:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min:g}) must be below max ({self.max:g})")
        if self.kind == "explicit":
            if self.neutral is None:
                raise ValueError("an explicit type must state its scale's neutral point")
            if not self.min <= self.neutral <= self.max:
                raise ValueError(f"neutral ({self.neutral:g}) must lie in [{self.min:g}, {self.max:g}]")
        elif self.neutral is not None:
            raise ValueError("only explicit types have a neutral point (an implicit signal starts at 0)")
        return self


@dataclass(frozen=True)
class SchemaError:
    """A record that does not satisfy the contract: which field, and why."""

    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def _read(name: str) -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("feedback_event", name).read_text("utf-8"))


@cache
def event_schema(major: int = CURRENT_MAJOR) -> dict[str, Any]:
    """The JSON Schema of one major version (KeyError for a major this build does not know)."""
    try:
        return _read(f"{major}.json")
    except FileNotFoundError:
        raise KeyError(major) from None


@cache
def known_majors() -> tuple[int, ...]:
    folder = resources.files(__package__).joinpath("feedback_event")
    return tuple(sorted(int(p.name[:-5]) for p in folder.iterdir() if p.name[:-5].isdigit()))


@cache
def event_type_rules() -> dict[str, EventTypeRule]:
    rules = _read("event_types.json")["event_types"]
    return {name: EventTypeRule.model_validate(rule) for name, rule in rules.items()}


def batch_schema(major: int = CURRENT_MAJOR) -> dict[str, Any]:
    """The body of `POST /events`: `{"events": [1..500 events]}` (API Gateway's request model)."""
    event = copy.deepcopy(event_schema(major))
    draft = event.pop("$schema")
    event.pop("title", None)
    return {
        "$schema": draft,
        "title": "FeedbackEventBatch",
        "type": "object",
        "additionalProperties": False,
        "required": ["events"],
        "properties": {
            "events": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_EVENTS, "items": event}
        },
    }


def major_of(version: object) -> int | None:
    """The major of a `MAJOR.MINOR` string, or None when it is not one."""
    if not isinstance(version, str):
        return None
    match = _VERSION.fullmatch(version)
    return int(match.group(1)) if match else None


@cache
def _compiled(major: int):
    return fastjsonschema.compile(event_schema(major))


def _field_of(error: fastjsonschema.JsonSchemaValueException) -> str:
    path = [str(p) for p in (error.path or [])][1:]  # drop the leading "data"
    if error.rule == "required":
        # fastjsonschema names the missing property only in its message
        missing = re.search(r"must contain \[(.*?)\] properties", error.message)
        if missing:
            path.append(missing.group(1).split(",")[0].strip(" '\""))
    elif error.rule == "additionalProperties":
        extra = re.search(r"must not contain \{(.*?)\} properties", error.message)
        if extra:  # a set's text: name the first in sorted order, the same on every run
            path.append(sorted(name.strip(" '\"") for name in extra.group(1).split(","))[0])
    return ".".join(path) or "$"


def integers_as_written(event: object, major: int = CURRENT_MAJOR) -> object:
    """The event with an integral float in an integer-typed field (`"position": 71.0`) written as the
    integer: JSON Schema from draft 6 on, and OpenAPI clients with it, count 71.0 as an integer; the
    event schema's draft 4 does not, so ingest writes it as 71 before it checks and forwards the event."""
    if not isinstance(event, dict):
        return event
    properties = event_schema(major)["properties"]

    def fixed(values: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for name, value in values.items():
            spec = schema.get(name, {})
            types = spec.get("type", [])
            if isinstance(value, float) and value.is_integer() and "integer" in (
                    types if isinstance(types, list) else [types]):
                out[name] = int(value)
            elif isinstance(value, dict) and "properties" in spec:
                out[name] = fixed(value, spec["properties"])
        return out

    return fixed(event, properties)


def validate_event(event: object) -> SchemaError | None:
    """Check one decoded event against its major's schema and its event type's rules."""
    if not isinstance(event, dict):
        return SchemaError("$", "an event must be a JSON object")
    version = event.get("schema_version")
    major = major_of(version)
    if major is None:
        if "schema_version" not in event:
            return SchemaError("schema_version", "is required")
        return SchemaError("schema_version", "must be a MAJOR.MINOR string such as '1.0'")
    if major not in known_majors():
        return SchemaError("schema_version", f"unknown major version {major}; known: {list(known_majors())}")
    try:
        _compiled(major)(event)
    except fastjsonschema.JsonSchemaValueException as error:
        reason = error.message.removeprefix("data.").removeprefix("data ")
        return SchemaError(_field_of(error), reason)
    unencodable = _unencodable_field(event)
    if unencodable is not None:
        return SchemaError(unencodable, "must be valid Unicode text (it holds a lone surrogate escape)")
    if parse_instant(event["timestamp"]) is None:  # the format admits leap seconds and year 0000
        return SchemaError("timestamp", "is not a real instant between years 1 and 9999")
    return check_event_type_rules(event)


# the common shape of an RFC 3339 date-time, which datetime.fromisoformat reads exactly as pandas does
# (fractions beyond microseconds truncated); anything else (lower-case letters, leap seconds, far
# years) goes to pandas, the reference, at about 20 times the cost
_PLAIN_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
_PLAIN_YEARS = range(1700, 2200)  # well inside what pandas holds in nanoseconds (1677-2262)


def parse_instant(text: str) -> datetime | None:
    """An RFC 3339 date-time as a UTC datetime truncated to microseconds (what the lake keeps), or
    None when it names no real instant that Python and pandas can both hold."""
    if _PLAIN_INSTANT.fullmatch(text):
        try:
            parsed = datetime.fromisoformat(text).astimezone(UTC)
        except (ValueError, OverflowError):  # February 30th, hour 24: pandas says what it makes of it
            parsed = None
        if parsed is not None and parsed.year in _PLAIN_YEARS:
            return parsed
    import pandas as pd  # here: the adjust function reads the event type rules and ships no pandas

    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if pd.isna(parsed) or not 1 <= parsed.year <= 9999:
        return None
    return parsed.floor("us").to_pydatetime()


def _unencodable_field(event: dict[str, Any]) -> str | None:
    """The first string with no UTF-8 form: JSON escapes such as "\\ud800" decode to one, and neither the
    stream nor Parquet can store it."""
    fields = list(event.items()) + [(f"context.{k}", v) for k, v in (event.get("context") or {}).items()]
    for name, value in fields:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return name
    return None


def check_event_type_rules(event: dict[str, Any]) -> SchemaError | None:
    """The per event type value rules of event_types.json (JSON Schema draft-04 cannot say these)."""
    rule = event_type_rules()[event["event_type"]]
    value = event.get("value")
    if value is None:
        if not rule.impute:
            return SchemaError("value", f"is required for {event['event_type']} events")
        return None
    if not rule.min <= value <= rule.max:
        return SchemaError("value", f"must be between {rule.min:g} and {rule.max:g} for {event['event_type']}")
    if rule.integer and value != int(value):
        return SchemaError("value", f"must be a whole number for {event['event_type']}")
    return None


def is_unknown_version(error: SchemaError | None) -> bool:
    return error is not None and error.field == "schema_version" and error.reason.startswith("unknown major")
