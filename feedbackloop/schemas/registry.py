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
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal

import fastjsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

CURRENT_MAJOR = 1
CURRENT_VERSION = "1.3"  # 1.1 added context.category; 1.2 context.request_id, position, propensity; 1.3 ranker
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
# (fractions beyond microseconds truncated; an offset's minute 60, which fromisoformat would take, is
# left out); other years, leap seconds and impossible dates take the exact path below, which reads the
# shape as pandas' ISO 8601 parser does (tests/unit/test_parse_instant.py compares the two; pandas is
# not shipped to the functions, so this module must not need it)
_PLAIN_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d(\.\d{1,9})?(Z|[+-]\d\d:[0-5]\d)")
_PLAIN_YEARS = range(1700, 2200)  # well inside what pandas holds in nanoseconds (1677-2262)
# the RFC 3339 shape the event schema admits (ASCII digits, upper-case T and Z), read field by field
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
                      r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))", re.ASCII)
# what pandas holds: microseconds for up to six fraction digits (years 0 to 9999 and a little beyond),
# nanoseconds for more, in an int64 whose least value is its missing marker
_NS_RANGE = (-(2**63) + 1, 2**63 - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_RANGE = (-62135596800 * 10**6, 253402300799 * 10**6 + 999999)  # 0001-01-01 .. 9999-12-31 23:59:59.999999


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date, year 0 included (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _month_days(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _exact_instant(text: str) -> datetime | None:
    """The instant as pandas' ISO 8601 parser reads it (no leap second, no hour 24, no offset of 24 hours
    or more, the proleptic calendar from year 0), held as pandas holds it: up to six fraction digits in
    microseconds, more in nanoseconds (so within 1677-2262); None outside years 1 to 9999 in UTC."""
    shape = _RFC3339.fullmatch(text)
    if shape is None:
        return None
    year, month, day, hour, minute, second = (int(shape.group(i)) for i in range(1, 7))
    fraction, sign, offset_hours, offset_minutes = shape.group(7, 8, 9, 10)
    if not (1 <= month <= 12 and 1 <= day <= _month_days(year, month) and hour <= 23 and minute <= 59
            and second <= 59):
        return None
    offset = 0
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return None
        offset = (int(offset_hours) * 3600 + int(offset_minutes) * 60) * (1 if sign == "+" else -1)
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    fraction = fraction or ""
    nanoseconds = seconds * 10**9 + int(fraction.ljust(9, "0"))
    if len(fraction) > 6 and not _NS_RANGE[0] <= nanoseconds <= _NS_RANGE[1]:
        return None
    microseconds = nanoseconds // 1000
    if not _US_RANGE[0] <= microseconds <= _US_RANGE[1]:
        return None
    return _EPOCH + timedelta(microseconds=microseconds)


def parse_instant(text: str) -> datetime | None:
    """An RFC 3339 date-time as a UTC datetime truncated to microseconds (what the lake keeps), or
    None when it names no real instant between years 1 and 9999 that pandas could hold either. Only the
    RFC 3339 shape the event schema admits is read (the ingest API stamps `received_at` in it too)."""
    if _PLAIN_INSTANT.fullmatch(text):
        try:
            parsed = datetime.fromisoformat(text).astimezone(UTC)
        except (ValueError, OverflowError):  # February 30th, hour 24: the exact path says what it makes of it
            parsed = None
        if parsed is not None and parsed.year in _PLAIN_YEARS:
            return parsed
    return _exact_instant(text)


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
