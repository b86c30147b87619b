"""What one deployment chooses at `cdk deploy` time, from CDK context (`-c key=value` or cdk.json):

- `stage` (e.g. `-c stage=dev`): prefixes every stack (`dev-FeedbackLoopData`, ...) and so every name CDK
  generates from a construct path (functions, tables, buckets, the REST APIs, the Athena workgroup, the Glue
  jobs and security configuration, the dashboards), and the physical names we choose ourselves (the Glue
  database `dev_feedbackloop`, the AppConfig application `feedbackloop-dev`). Two stages, or two teams, share
  an account and region without a collision. Without it the names are the unprefixed ones.
- `api_gateway_logging_role=true`: create the account-level API Gateway CloudWatch role
  (`AWS::ApiGateway::Account`, a singleton per account and region, which replaces a role already set). Off
  by default: an account that already has one keeps it. API stages log to CloudWatch, which needs that role
  set once per account and region: pass this for the first deployment of a fresh account only.
- `alert_email=a@x.org,b@y.org`: e-mail subscribers of both alert topics (each confirms by mail).
- `alert_https=https://hooks.example.com/sns`: HTTPS subscribers (an endpoint that confirms the SNS
  subscription: an incident tool's SNS integration, or a chat bridge).
- `alert_slack=<workspace id>/<channel id>`: the topics into a Slack channel through AWS Chatbot (the
  workspace authorized once in the Chatbot console).
- `adjust_reserved_concurrency=N`: reserve concurrency for the adjust function. Off by default: a new account's
  Lambda quota of 10 cannot spare any (unreserved concurrency must stay at 10 or more); the adjust function
  runs one at a time through its lease either way.

Values are checked once, here, and a bad one stops synth with a message naming the key.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from constructs import IConstruct
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from feedbackloop.resources import UI_CONFIG, glue_database, stack_name

# letters and digits: it goes into Glue names (lowercase, underscores) and stack names (hyphens) alike
STAGE_PATTERN = r"^[a-z][a-z0-9]{0,11}$"
CONTEXT_KEYS = ("stage", "api_gateway_logging_role", "alert_email", "alert_https", "alert_slack",
                "adjust_reserved_concurrency")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")


class DeploymentContextError(ValueError):
    """A context value of the deployment (`-c key=value`) is invalid; the message names the key."""


def _items(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v).strip() for v in value)


class Deployment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Annotated[str, Field(pattern=STAGE_PATTERN)] | None = None
    api_gateway_logging_role: bool = False
    alert_email: tuple[str, ...] = ()
    alert_https: tuple[str, ...] = ()
    alert_slack: tuple[str, str] | None = None  # (workspace id, channel id)
    adjust_reserved_concurrency: Annotated[int, Field(ge=1, le=10)] | None = None

    @field_validator("alert_email", "alert_https", mode="before")
    @classmethod
    def _split(cls, value: Any) -> tuple[str, ...]:
        return _items(value)

    @field_validator("alert_email")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if not _EMAIL.match(address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    @field_validator("alert_https")
    @classmethod
    def _https(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith("https://"):
                raise ValueError(f"{url!r}: SNS delivers alerts over HTTPS only")
        return value

    @field_validator("alert_slack", mode="before")
    @classmethod
    def _slack(cls, value: Any) -> tuple[str, str] | None:
        if value is None or value == "":
            return None
        parts = tuple(str(value).split("/")) if isinstance(value, str) else tuple(value)
        if len(parts) != 2 or not all(parts):
            raise ValueError("give it as <Slack workspace id>/<channel id>")
        return parts  # type: ignore[return-value]

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> Deployment:
        """The deployment from CDK context; `-c` values arrive as strings ("true", "1")."""
        values = {key: context[key] for key in CONTEXT_KEYS if context.get(key) not in (None, "")}
        if isinstance(values.get("api_gateway_logging_role"), str):
            flag = values["api_gateway_logging_role"].lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise DeploymentContextError(f"api_gateway_logging_role: {flag!r} is not true or false")
            values["api_gateway_logging_role"] = flag in ("true", "1", "yes")
        try:
            return cls(**values)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
            raise DeploymentContextError(f"invalid deployment context (-c key=value): {problems}") from None

    @classmethod
    def of(cls, scope: IConstruct) -> Deployment:
        """The deployment of the app `scope` belongs to (its context, checked again: cheap and pure)."""
        keys = {key: scope.node.try_get_context(key) for key in CONTEXT_KEYS}
        return cls.from_context({k: v for k, v in keys.items() if v is not None})

    def stack_id(self, base: str) -> str:
        """The stack's construct id and so its name: `dev-FeedbackLoopData` with a stage."""
        return stack_name(base, self.stage)

    @property
    def glue_database(self) -> str:
        return glue_database(self.stage)

    @property
    def appconfig_application(self) -> str:
        return f"{UI_CONFIG.application}-{self.stage}" if self.stage else UI_CONFIG.application
