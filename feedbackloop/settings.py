"""Typed settings of the handlers, validated once at cold start.

CDK writes them as environment variables with `to_env`; the handlers read them with `from_env`;
the local runtime builds the same models. A bad or missing setting fails at start with a message
that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "FEEDBACKLOOP_"


class SettingsError(ValueError):
    """A setting is missing or invalid."""


class _Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{ENV_PREFIX}{field.upper()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        values = {f: environ[cls.env_name(f)] for f in cls.model_fields if cls.env_name(f) in environ}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{cls.env_name(str(e['loc'][0])) if e['loc'] else 'settings'}: {e['msg']}" for e in error.errors()
            )
            raise SettingsError(f"invalid {cls.__name__}: {problems}") from None

    def to_env(self) -> dict[str, str]:
        return {self.env_name(k): str(v) for k, v in self.model_dump().items() if v is not None}


class IngestSettings(_Settings):
    stream_name: str = Field(min_length=1)


#: a batch's Parquet objects the cleaner writes at once, as deployed
LAKE_WRITE_THREADS = 8


class CleanerSettings(_Settings):
    curated_bucket: str = Field(min_length=1)
    quarantine_bucket: str = Field(min_length=1)
    dedup_table: str = Field(min_length=1)
    state_table: str = Field(min_length=1)
    glue_database: str = Field(min_length=1)
    online_table: str | None = Field(default=None, min_length=1,
                                     description="the online store; unset: no online profiles are kept")
    item_counters_table: str | None = Field(default=None, min_length=1,
                                            description="recent counts per item; unset: none are kept")
    # timestamp sanity, measured against when the API received the event
    max_event_age_days: float = Field(default=30, gt=0)
    max_clock_skew_seconds: float = Field(default=300, ge=0)
    # outlier filters and streaming statistics
    min_samples: int = Field(default=50, ge=1, description="samples before stats drive filters")
    zscore_threshold: float = Field(default=4.0, gt=0)
    iqr_k: float = Field(default=3.0, gt=0)
    write_threads: int = Field(default=LAKE_WRITE_THREADS, ge=1, le=32,
                               description="a batch's Parquet objects written at once: each S3 PUT waits on the "
                                           "network")


class ReplaySettings(_Settings):
    raw_bucket: str = Field(min_length=1)


class RetrainSettings(_Settings):
    """The retraining workflow's Evaluate and Publish steps."""

    models_bucket: str = Field(min_length=1)
    registry_table: str = Field(min_length=1)
    # relative improvement of hold-out NDCG@10 a candidate needs over the published model
    gate_margin: float = Field(default=0.01, ge=0, le=1)


class ServingSettings(_Settings):
    """The serving Lambda."""

    registry_table: str = Field(min_length=1)
    online_table: str = Field(min_length=1)
    item_counters_table: str | None = Field(default=None, min_length=1,
                                            description="recent counts per item; unset: rankings ignore them")
    # each item's counters are read at most this often per container (item_counters.CachedCounts); 0: every
    # request reads its candidates' counters
    item_counters_ttl_seconds: float = Field(default=10, ge=0)
    model_refresh_seconds: float = Field(default=60, ge=0)
    # ranking rules: items never recommended (comma-separated ids), and whether to leave out every item
    # the user already has (off for repeat-purchase catalogues)
    blocked_items: frozenset[str] = frozenset()
    exclude_consumed: bool = False
    # the UI configuration, read through the AppConfig agent (the Lambda extension listens on 2772)
    appconfig_agent_url: str = "http://localhost:2772"
    appconfig_ttl_seconds: float = Field(default=30, ge=0)
    # the AppConfig application's name when the stage prefixes it (cdk/deployment.py); None: the
    # unprefixed `resources.UI_CONFIG.application` (not imported here: resources pulls pyarrow, which the
    # adjust function, also reading these settings, does not ship)
    appconfig_application: str | None = Field(default=None, min_length=1)
    # erasure: the audit table and the queue the eraser function reads
    erasure_table: str | None = Field(default=None, min_length=1)
    erasure_queue_url: str | None = Field(default=None, min_length=1)

    @field_validator("blocked_items", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return frozenset(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value

    def to_env(self) -> dict[str, str]:
        return super().to_env() | {self.env_name("blocked_items"): ",".join(sorted(self.blocked_items))}


class EraserSettings(_Settings):
    """The eraser function: where the user's data lives."""

    erasure_table: str = Field(min_length=1)
    curated_bucket: str = Field(min_length=1)
    quarantine_bucket: str = Field(min_length=1)
    raw_bucket: str = Field(min_length=1)


class AdjustSettings(_Settings):
    """The adjust function (rules and drift, ADR 0009). `engine` local: the stand-in's DuckDB instead of
    Athena and its in-process retraining runner instead of Step Functions (moto runs neither)."""

    engine: Literal["aws", "local"] = "aws"
    state_table: str = Field(min_length=1)
    decisions_table: str = Field(min_length=1)
    decisions_ttl_days: int = Field(default=400, ge=1, description="how long decisions stay queryable")
    # the lake, through Athena: the database, the workgroup, and the Glue names of the tables it reads
    glue_database: str = Field(min_length=1)
    athena_workgroup: str | None = Field(default=None, min_length=1)
    events_table: str = Field(min_length=1)
    interactions_table: str = Field(min_length=1)
    engagement_table: str = Field(min_length=1)
    user_daily_table: str = Field(min_length=1)
    # the UI configuration's control plane (ids, as AppConfig's API takes them)
    appconfig_application_id: str = Field(min_length=1)
    appconfig_environment_id: str = Field(min_length=1)
    appconfig_profile_id: str = Field(min_length=1)
    appconfig_strategy_id: str = Field(min_length=1)
    # what the actions start and notify
    state_machine_arn: str | None = Field(default=None, min_length=1)
    alerts_topic_arn: str = Field(min_length=1)
    local_gate_margin: float = Field(default=RetrainSettings.model_fields["gate_margin"].default, ge=0, le=1,
                                     description="engine local: the retraining gate's margin")

    @model_validator(mode="after")
    def _aws_needs_athena_and_step_functions(self) -> Self:
        if self.engine == "aws" and not (self.athena_workgroup and self.state_machine_arn):
            raise ValueError("athena_workgroup and state_machine_arn are required unless engine is local")
        return self
