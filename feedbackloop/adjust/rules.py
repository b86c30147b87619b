"""Trigger rules: the versioned rule file, its validation, and the pure evaluation of one rule.

A rule watches one metric in one scope over a window. When the metric crosses its threshold (with
enough samples behind it, outside its cooldown, and re-armed by hysteresis since it last fired), the rule
acts: it changes UI config keys or flags, starts retraining, or alerts. The file is
`feedbackloop/config/rules.json`; its JSON Schema (`rules.schema.json`) is generated from the models here
and a test holds the two equal. CDK loads the file at synth and the adjust function at cold start, so an
invalid rule stops both, with a message that names the rule and the field.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feedbackloop.names import Metric

RULES_FILE, RULES_SCHEMA_FILE = "rules.json", "rules.schema.json"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ALL = "*"  # a scope's segment or variant: every one present in the data, each evaluated on its own
PREFERRED_CATEGORIES = "$preferred_categories"  # in a layout list: the segment's top categories now


class InvalidRulesError(ValueError):
    """A rule file that does not validate; the message names the rule and the field."""


class Comparator(StrEnum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    @property
    def test(self) -> Callable[[float, float], bool]:
        return {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[self.value]

    @property
    def below(self) -> bool:
        """The rule fires on low values (it re-arms once the value is back above threshold + hysteresis)."""
        return self in (Comparator.LT, Comparator.LE)


@dataclass(frozen=True)
class EngagementMetric:
    """A metric of the engagement layer: the weighted mean of `column` by `weight` over the window's
    hourly rows (sum(ctr x impressions) / sum(impressions) = clicks / impressions), or a plain sum when
    `weight` is None. `samples` is the column that says how much evidence the value rests on."""

    column: str
    weight: str | None
    samples: str


ENGAGEMENT_METRICS: dict[str, EngagementMetric] = {
    "ctr": EngagementMetric("ctr", "impressions", "impressions"),
    "conversion_rate": EngagementMetric("conversion_rate", "sessions", "sessions"),
    "bounce_rate": EngagementMetric("bounce_rate", "sessions", "sessions"),
    "avg_session_seconds": EngagementMetric("avg_session_seconds", "sessions", "sessions"),
    "rating_mean": EngagementMetric("rating_mean", "ratings", "ratings"),
    "nps": EngagementMetric("nps", "nps_responses", "nps_responses"),
    "mean_feedback_score": EngagementMetric("mean_feedback_score", "events", "events"),
    "events": EngagementMetric("events", None, "events"),
    "purchases": EngagementMetric("purchases", None, "events"),
    "clicks": EngagementMetric("clicks", None, "impressions"),
}
ENGAGEMENT_MINUTES = 60  # the engagement layer is hourly: an engagement window is whole hours


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricRef(_Model):
    source: Literal["engagement", "cloudwatch"]
    name: str = Field(description="engagement: a column of the engagement layer (ENGAGEMENT_METRICS); "
                                  "cloudwatch: a metric of feedbackloop.names.Metric")
    statistic: Literal["Sum", "Average", "Maximum", "Minimum"] = Field(
        default="Sum", description="cloudwatch only: the statistic over the window")

    @model_validator(mode="after")
    def _known(self) -> MetricRef:
        known = ENGAGEMENT_METRICS if self.source == "engagement" else {m.value for m in Metric}
        if self.name not in known:
            raise ValueError(f"unknown {self.source} metric {self.name!r}; one of {', '.join(sorted(known))}")
        return self


class Scope(_Model):
    kind: Literal["global", "segment", "variant"]
    segment: str = Field(default=ALL, pattern=r"^(\*|[A-Za-z0-9_.:-]{1,64})$")
    experiment: str | None = Field(default=None, pattern=NAME_PATTERN)
    variant: str = Field(default=ALL, pattern=r"^(\*|[A-Za-z0-9_.:-]{1,64})$")

    @model_validator(mode="after")
    def _consistent(self) -> Scope:
        if self.kind == "variant" and self.experiment is None:
            raise ValueError("a variant scope names its experiment")
        if self.kind != "variant" and (self.experiment is not None or self.variant != ALL):
            raise ValueError(f"experiment and variant belong to a variant scope, not {self.kind}")
        if self.kind != "segment" and self.segment != ALL:
            raise ValueError(f"segment belongs to a segment scope, not {self.kind}")
        return self


class LayoutChange(_Model):
    highlighted_categories: list[str] | None = Field(default=None, max_length=10)
    hidden_options: list[str] | None = Field(default=None, max_length=50)
    ordering: Literal["personalized", "popularity", "recency"] | None = None


class SetConfig(_Model):
    """Set flags and layout keys of the UI config, for the rule's segment (segment scope) or for
    everyone (global scope). `$preferred_categories` in a layout list stands for the segment's top
    categories by feedback over the window."""

    type: Literal["set_config"]
    flags: dict[Annotated[str, Field(pattern=NAME_PATTERN)], bool] = Field(default_factory=dict)
    layout: LayoutChange = Field(default_factory=LayoutChange)

    @model_validator(mode="after")
    def _changes_something(self) -> SetConfig:
        if not self.flags and not self.layout.model_dump(exclude_none=True):
            raise ValueError("set_config changes no flag and no layout key")
        return self


class StartRetraining(_Model):
    type: Literal["retrain"]


class Alert(_Model):
    type: Literal["alert"]
    message: str = Field(min_length=1, max_length=500)


Action = Annotated[SetConfig | StartRetraining | Alert, Field(discriminator="type")]


class Rule(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1, max_length=500)
    enabled: bool = True
    metric: MetricRef
    scope: Scope
    window_minutes: int = Field(ge=5, le=7 * 24 * 60)
    comparator: Comparator
    threshold: float
    min_samples: int = Field(ge=0, description="fewer samples in the window: no decision (insufficient_sample)")
    cooldown_minutes: int = Field(ge=0, description="after acting, the rule does not act again for this long")
    hysteresis: float = Field(ge=0, description="after acting, the metric must come back past threshold by "
                                                "this much before the rule can act again")
    action: Action

    @model_validator(mode="after")
    def _coherent(self) -> Rule:
        if self.metric.source == "engagement" and self.window_minutes % ENGAGEMENT_MINUTES:
            raise ValueError(f"window_minutes: the engagement layer is hourly; use a multiple of {ENGAGEMENT_MINUTES}")
        if self.metric.source == "cloudwatch" and self.scope.kind != "global":
            raise ValueError("scope: CloudWatch metrics are read with the global scope only")
        if isinstance(self.action, SetConfig) and self.scope.kind == "variant":
            raise ValueError("action: set_config targets the defaults (global) or a segment, not a variant")
        if (isinstance(self.action, SetConfig) and self.scope.kind == "global"
                and PREFERRED_CATEGORIES in (self.action.layout.highlighted_categories or [])):
            raise ValueError(f"action: {PREFERRED_CATEGORIES} needs a segment scope")
        return self


class DriftSettings(_Model):
    """ADWIN on the stream of feedback scores and on each segment's impression outcomes (CTR)."""

    enabled: bool = True
    delta: float = Field(default=0.002, gt=0, lt=1, description="ADWIN's confidence parameter")
    max_values_per_run: int = Field(default=20_000, ge=100, description="per stream: larger runs are thinned")
    min_impressions: int = Field(default=100, ge=0, description="a segment's hour with fewer is skipped")
    retrain: bool = Field(default=True, description="start retraining on drift")
    retrain_cooldown_minutes: int = Field(default=360, ge=0)


class RuleSet(_Model):
    schema_file: str | None = Field(default=None, alias="$schema", description="for editors: the JSON Schema")
    version: Literal[1] = Field(description="the rule file format; the rules themselves are versioned in git")
    rules: list[Rule]
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)}")
        return self


def parse_rules(document: Any) -> RuleSet:
    """The rule set, or InvalidRulesError naming each failing rule and field."""
    try:
        return RuleSet.model_validate(document)
    except ValidationError as error:
        raise InvalidRulesError("; ".join(_describe(document, e) for e in error.errors())) from None


def _describe(document: Any, error: dict[str, Any]) -> str:
    location = [str(p) for p in error["loc"]]
    # a discriminated union puts the action's type in the path (action.set_config.flags): leave it out
    location = [p for i, p in enumerate(location) if not (i and location[i - 1] == "action" and p in _ACTION_TYPES)]
    message = error["msg"].removeprefix("Value error, ")
    if len(location) >= 2 and location[0] == "rules" and location[1].isdigit():
        index = int(location[1])
        rules = document.get("rules") if isinstance(document, dict) else None
        rule = rules[index] if isinstance(rules, list) and index < len(rules) else None
        name = rule.get("name") if isinstance(rule, dict) else None
        field = ".".join(location[2:])
        if not field and ": " in message:  # a check across fields names the field it blames first
            field, message = message.split(": ", 1)
        return f"rule {name!r} (rules[{index}]), field {field or '(the rule)'}: {message}"
    return f"{'.'.join(location) or '(the file)'}: {message}"


_ACTION_TYPES = ("set_config", "retrain", "alert")


@cache
def packaged_rules() -> RuleSet:
    """The rule file shipped in `feedbackloop.config`."""
    return parse_rules(json.loads(resources.files("feedbackloop.config").joinpath(RULES_FILE).read_text()))


def rules_json_schema() -> dict[str, Any]:
    """What `rules.schema.json` holds (regenerate with `feedbackloop rules schema --output ...`)."""
    return RuleSet.model_json_schema() | {"$schema": "https://json-schema.org/draft/2020-12/schema"}


# --- evaluation --------------------------------------------------------------------------------------------------

class Outcome(StrEnum):
    FIRE = "fire"  # acts now
    COOLDOWN = "cooldown"  # would act, but acted less than cooldown_minutes ago
    HOLDING = "holding"  # acted, and has not come back past threshold + hysteresis since
    CLEARED = "cleared"  # came back past threshold + hysteresis: armed again
    OK = "ok"  # condition not met
    INSUFFICIENT_SAMPLE = "insufficient_sample"
    NO_DATA = "no_data"
    DISABLED = "disabled"


@dataclass(frozen=True)
class RuleState:
    """What a rule remembers between runs, per scope."""

    armed: bool = True  # False from acting until the metric comes back past threshold + hysteresis
    last_fired_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"armed": self.armed,
                "last_fired_at": None if self.last_fired_at is None else self.last_fired_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleState:
        fired = data.get("last_fired_at")
        return cls(bool(data.get("armed", True)), None if fired is None else datetime.fromisoformat(fired))


@dataclass(frozen=True)
class Observation:
    value: float | None
    samples: int


def evaluate(rule: Rule, observation: Observation, state: RuleState, now: datetime) -> Outcome:
    """What the rule does with this observation. The caller moves the state on with `after` once the
    action has really happened (a deferred action leaves the state as it was)."""
    if not rule.enabled:
        return Outcome.DISABLED
    if observation.value is None:
        return Outcome.NO_DATA
    if observation.samples < rule.min_samples:
        return Outcome.INSUFFICIENT_SAMPLE
    if rule.comparator.test(observation.value, rule.threshold):
        if not state.armed:
            return Outcome.HOLDING
        if state.last_fired_at is not None and now < state.last_fired_at + timedelta(minutes=rule.cooldown_minutes):
            return Outcome.COOLDOWN
        return Outcome.FIRE
    if not state.armed:
        rearm = rule.threshold + rule.hysteresis if rule.comparator.below else rule.threshold - rule.hysteresis
        past = observation.value >= rearm if rule.comparator.below else observation.value <= rearm
        return Outcome.CLEARED if past else Outcome.HOLDING
    return Outcome.OK


def after(outcome: Outcome, state: RuleState, now: datetime) -> RuleState:
    """The state once `outcome` has taken effect."""
    if outcome is Outcome.FIRE:
        return RuleState(armed=False, last_fired_at=now)
    if outcome is Outcome.CLEARED:
        return RuleState(armed=True, last_fired_at=state.last_fired_at)
    return state
