"""AppConfig on the stand-in: a control plane speaking AppConfig's REST-JSON API, and the agent that reads
what it deployed on the path the AppConfig Lambda extension serves on localhost:2772.

moto 5.2.5 implements applications, configuration profiles and hosted configuration versions, and none of
environments, deployment strategies, deployments or reads. `LocalAppConfig` answers those itself and relays
every other request to moto unchanged, so the boto3 `appconfig` client code that runs in AWS runs here with
its endpoint pointed at `endpoint_url` (botocore reads `AWS_ENDPOINT_URL_APPCONFIG`).

Deployments follow the stand-in's clock: `time_scale` stand-in seconds pass per real second, so a demo can
run a five-minute rollout and bake in seconds, and tests inject a clock they step. State advances on every
request to either server and on `tick()`; nothing runs in the background.

Where it is simpler than AWS, for one local reader:
- a deployment in progress is served from the moment it starts (AWS would place the one reader in the
  first growth step, so it sees the new version first); after a rollback or revert, the previous complete
  deployment of the profile is served again, and before any deployment the agent answers 404;
- hosted configurations only, deployed by version number (not label); JSON_SCHEMA validators run at
  StartDeployment, as in AWS (a LAMBDA validator is refused: moto cannot invoke functions);
- the environment's alarms are read from moto CloudWatch when a request comes in, so a rollback is dated
  when it is seen, and a deployment that completed before anyone looked is not rolled back.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import boto3
import fastjsonschema
from botocore.exceptions import ClientError

from feedbackloop.local.environment import REGION
from feedbackloop.local.http import LoopbackServer
from feedbackloop.uiconfig import validate

_AGENT_PATH = re.compile(r"/applications/([^/]+)/environments/([^/]+)/configurations/([^/?]+)")

IN_PROGRESS = frozenset({"DEPLOYING", "BAKING"})
_SERVED = IN_PROGRESS | {"COMPLETE"}

# AWS's predefined strategies ("Using predefined deployment strategies", AppConfig User Guide):
# id (= name), description, duration, growth type, growth factor, bake
_PREDEFINED_STRATEGIES = (
    ("AppConfig.AllAtOnce", "Quick", 0, "LINEAR", 100.0, 10),
    ("AppConfig.Linear50PercentEvery30Seconds", "Test/Demonstration", 1, "LINEAR", 50.0, 1),
    ("AppConfig.Canary10Percent20Minutes", "AWS Recommended", 20, "EXPONENTIAL", 10.0, 10),
    ("AppConfig.Linear20PercentEvery6Minutes", "AWS Recommended", 30, "LINEAR", 20.0, 30),
)
_MAX_MINUTES = 24 * 60
# headers of one hop (or that the stand-in's own server writes), never relayed
_NOT_RELAYED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date", "host"})


class ServedConfiguration(NamedTuple):
    version: str  # the hosted version number (the agent's Configuration-Version header)
    content: bytes
    content_type: str


class AppConfigError(Exception):
    """An AppConfig error response: boto3 raises ClientError with `code` as the error code."""

    def __init__(self, code: str, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.extra = code, status, message, extra


def _bad_request(message: str, **extra: Any) -> AppConfigError:
    return AppConfigError("BadRequestException", 400, message, **extra)


def _not_found(message: str) -> AppConfigError:
    return AppConfigError("ResourceNotFoundException", 404, message)


@dataclass
class _Environment:
    application_id: str
    application_name: str
    id: str
    name: str
    description: str | None
    monitors: list[dict[str, str]]
    deployments: list[_Deployment] = field(default_factory=list)  # by number, oldest first

    def state(self) -> str:
        if not self.deployments:
            return "READY_FOR_DEPLOYMENT"
        latest = self.deployments[-1].state
        return {"BAKING": "DEPLOYING", "COMPLETE": "READY_FOR_DEPLOYMENT"}.get(latest, latest)

    def to_json(self) -> dict[str, Any]:
        return _present({"ApplicationId": self.application_id, "Id": self.id, "Name": self.name,
                         "Description": self.description, "State": self.state(), "Monitors": self.monitors})


@dataclass
class _Deployment:
    application_id: str
    environment_id: str
    number: int
    strategy: dict[str, Any]
    profile: dict[str, Any]
    version: str
    version_label: str | None
    description: str | None
    content: bytes
    content_type: str
    started_at: float
    state: str = "DEPLOYING"
    percentage: float = 0.0
    completed_at: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    # what happens next if nothing intervenes: (at, event type, percentage, description), in time order
    schedule: list[tuple[float, str, float, str]] = field(default_factory=list)

    def record(self, event_type: str, triggered_by: str, description: str, at: float) -> None:
        self.events.append({"EventType": event_type, "TriggeredBy": triggered_by, "Description": description,
                            "OccurredAt": _iso(at)})

    def summary(self) -> dict[str, Any]:
        return _present({
            "DeploymentNumber": self.number,
            "ConfigurationProfileId": self.profile["Id"],
            "ConfigurationName": self.profile["Name"],
            "ConfigurationVersion": self.version,
            "DeploymentDurationInMinutes": self.strategy["DeploymentDurationInMinutes"],
            "GrowthType": self.strategy["GrowthType"],
            "GrowthFactor": self.strategy["GrowthFactor"],
            "FinalBakeTimeInMinutes": self.strategy["FinalBakeTimeInMinutes"],
            "State": self.state,
            "PercentageComplete": self.percentage,
            "StartedAt": _iso(self.started_at),
            "CompletedAt": _iso(self.completed_at) if self.completed_at is not None else None,
            "VersionLabel": self.version_label,
        })

    def to_json(self) -> dict[str, Any]:
        return self.summary() | _present({
            "ApplicationId": self.application_id,
            "EnvironmentId": self.environment_id,
            "DeploymentStrategyId": self.strategy["Id"],
            "ConfigurationLocationUri": self.profile.get("LocationUri"),
            "Description": self.description,
            "EventLog": list(reversed(self.events)),  # AWS lists the most recent first
        })


def growth_steps(growth_type: str, growth_factor: float) -> list[float]:
    """The percentages a deployment reaches, step by step: LINEAR adds the factor each step, EXPONENTIAL
    doubles it (G*2^N), both capped at 100."""
    steps, percentage = [], float(growth_factor)
    while True:
        steps.append(min(percentage, 100.0))
        if percentage >= 100:
            return steps
        percentage = percentage + growth_factor if growth_type == "LINEAR" else percentage * 2


def _schedule(strategy: dict[str, Any], started_at: float) -> tuple[float, list[tuple[float, str, float, str]]]:
    """The first step's percentage and the events after it. The steps are spread evenly over the
    deployment's duration, the first at its start (AWS: "a linear deployment that uses a growth factor of 20
    initially makes the configuration available to 20 percent of the targets. After 1/5th of the deployment
    time has passed, the system updates the percentage to 40 percent")."""
    duration = strategy["DeploymentDurationInMinutes"] * 60
    bake = strategy["FinalBakeTimeInMinutes"] * 60
    steps = growth_steps(strategy["GrowthType"], strategy["GrowthFactor"]) if duration else [100.0]
    interval = duration / len(steps)
    events = [(started_at + k * interval, "PERCENTAGE_UPDATED", p, f"Deployment percentage updated to {p:g}%")
              for k, p in enumerate(steps) if k]
    events.append((started_at + duration, "BAKE_TIME_STARTED", 100.0,
                   f"Deployment reached 100% of targets; watching the environment's alarms for "
                   f"{strategy['FinalBakeTimeInMinutes']} minutes"))
    events.append((started_at + duration + bake, "DEPLOYMENT_COMPLETED", 100.0, "Deployment completed"))
    return steps[0], events


@lru_cache(maxsize=32)
def _json_schema_check(schema: str) -> Callable[[Any], Any]:
    try:
        return fastjsonschema.compile(json.loads(schema))
    except (ValueError, fastjsonschema.JsonSchemaDefinitionException) as error:
        raise _bad_request(f"The profile's JSON_SCHEMA validator is not a usable JSON Schema: {error}") from None


def run_validators(validators: list[dict[str, str]], content: bytes) -> None:
    """What AppConfig does at StartDeployment and ValidateConfiguration: every validator of the profile
    on the version's content; BadRequestException (Reason InvalidConfiguration) naming the failure."""
    for validator in validators:
        if validator.get("Type") != "JSON_SCHEMA":
            raise _bad_request(f"{validator.get('Type')} validators cannot run on the local stand-in (moto does "
                               "not invoke Lambda functions); use JSON_SCHEMA")
        check = _json_schema_check(validator["Content"])
        try:
            check(json.loads(content))
        except ValueError as error:  # not JSON (JsonSchemaValueException is a ValueError too)
            failure = error if isinstance(error, fastjsonschema.JsonSchemaValueException) else None
            message = failure.message if failure else f"the content is not JSON: {error}"
            detail = _present({"Type": "JSON_SCHEMA", "Reason": message,
                               "Location": failure.name if failure else None,
                               "Constraint": failure.rule if failure else None,
                               "Value": json.dumps(failure.value, default=str)[:1024] if failure else None})
            raise _bad_request(f"The configuration failed JSON_SCHEMA validation: {message}",
                               Reason="InvalidConfiguration", Details={"InvalidConfiguration": [detail]}) from None


@dataclass
class _Request:
    params: dict[str, str]
    query: dict[str, str]
    headers: Any
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise _bad_request("The request body is not JSON") from None


class LocalAppConfig(LoopbackServer):
    """The AppConfig control plane at `endpoint_url` (moto behind it), and its `agent` at `agent_url`.

    `moto_endpoint`: the moto server holding applications, profiles, hosted versions and alarms.
    `time_scale`: stand-in seconds per real second. `clock`: real seconds (injected by tests to step time).
    """

    def __init__(self, moto_endpoint: str, *, time_scale: float = 1.0, clock: Callable[[], float] = time.time,
                 region: str = REGION, port: int = 0, agent_port: int = 0) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.moto_endpoint = moto_endpoint.rstrip("/")
        self.time_scale = time_scale
        self._clock = clock
        self._origin = clock()
        self._lock = threading.RLock()
        self._environments: dict[str, _Environment] = {}
        self._strategies: dict[str, dict[str, Any]] = {
            id_: {"Id": id_, "Name": id_, "Description": description, "DeploymentDurationInMinutes": duration,
                  "GrowthType": growth_type, "GrowthFactor": factor, "FinalBakeTimeInMinutes": bake,
                  "ReplicateTo": "NONE"}
            for id_, description, duration, growth_type, factor, bake in _PREDEFINED_STRATEGIES
        }
        moto = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=region)
        self._moto_appconfig = moto.client("appconfig", endpoint_url=self.moto_endpoint)
        self._cloudwatch = moto.client("cloudwatch", endpoint_url=self.moto_endpoint)
        self.agent = LocalAppConfigAgent(agent_port, source=self.served)
        super().__init__("appconfig", port)

    @property
    def endpoint_url(self) -> str:
        return self.url

    @property
    def agent_url(self) -> str:
        return self.agent.url

    def start(self) -> LocalAppConfig:
        self.agent.start()
        return super().start()

    def stop(self) -> None:
        agent = threading.Thread(target=self.agent.stop)  # each shutdown waits out a poll interval: overlap them
        agent.start()
        super().stop()
        agent.join()

    def now(self) -> float:
        """Stand-in time, in epoch seconds: real time at construction, then `time_scale` times as fast."""
        return self._origin + (self._clock() - self._origin) * self.time_scale

    def tick(self) -> None:
        """Bring every deployment up to now: steps, bake, completion, and rollback on an alarm."""
        with self._lock:
            now = self.now()
            for environment in self._environments.values():
                for deployment in environment.deployments:
                    if deployment.state in IN_PROGRESS:
                        self._advance(environment, deployment, now)

    def served(self, application: str, environment: str, profile: str) -> ServedConfiguration | None:
        """What the agent answers for a profile (names or ids): the deployment in progress, else the
        latest complete one; None before any."""
        with self._lock:
            self.tick()
            for env in self._environments.values():
                if application not in (env.application_id, env.application_name) or environment not in (env.id,
                                                                                                       env.name):
                    continue
                for deployment in reversed(env.deployments):
                    if profile in (deployment.profile["Id"], deployment.profile["Name"]) \
                            and deployment.state in _SERVED:
                        return ServedConfiguration(deployment.version, deployment.content, deployment.content_type)
        return None

    # -- deployments over time

    def _advance(self, environment: _Environment, deployment: _Deployment, now: float) -> None:
        while deployment.schedule and deployment.schedule[0][0] <= now:
            at, event_type, percentage, description = deployment.schedule.pop(0)
            deployment.percentage = percentage
            if event_type == "BAKE_TIME_STARTED":
                deployment.state = "BAKING"
            elif event_type == "DEPLOYMENT_COMPLETED":
                deployment.state, deployment.completed_at = "COMPLETE", at
            deployment.record(event_type, "APPCONFIG", description, at)
        if deployment.state in IN_PROGRESS and (alarm := self._alarm_firing(environment)):
            self._roll_back(deployment, now, "CLOUDWATCH_ALARM", f"Rollback initiated by CloudWatch Alarm: {alarm}")

    def _alarm_firing(self, environment: _Environment) -> str | None:
        """The ARN of a monitor alarm in ALARM state, if any (read from moto CloudWatch)."""
        if not environment.monitors:
            return None
        arns = {m["AlarmArn"].split(":alarm:", 1)[-1]: m["AlarmArn"] for m in environment.monitors}
        alarms = self._cloudwatch.describe_alarms(AlarmNames=list(arns))
        for alarm in alarms.get("MetricAlarms", []) + alarms.get("CompositeAlarms", []):
            if alarm["StateValue"] == "ALARM":
                return arns.get(alarm["AlarmName"], alarm["AlarmArn"])
        return None

    @staticmethod
    def _roll_back(deployment: _Deployment, now: float, triggered_by: str, description: str) -> None:
        deployment.schedule.clear()
        deployment.state = "ROLLED_BACK"
        deployment.record("ROLLBACK_STARTED", triggered_by, description, now)
        deployment.record("ROLLBACK_COMPLETED", "APPCONFIG", "Rollback completed", now)

    # -- the API

    def _environment(self, application_id: str, environment_id: str) -> _Environment:
        environment = self._environments.get(environment_id)
        if environment is None or environment.application_id != application_id:
            raise _not_found(f"Environment {environment_id} of application {application_id} not found")
        return environment

    def _strategy(self, strategy_id: str) -> dict[str, Any]:
        if strategy_id not in self._strategies:
            raise _not_found(f"Deployment strategy {strategy_id} not found")
        return self._strategies[strategy_id]

    def _from_moto(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            return getattr(self._moto_appconfig, operation)(**params)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            status = 404 if code == "ResourceNotFoundException" else error.response["ResponseMetadata"][
                "HTTPStatusCode"]
            raise AppConfigError(code, status, error.response["Error"].get("Message", code)) from None

    def _create_environment(self, request: _Request) -> tuple[int, dict[str, Any]]:
        body = request.json()
        if not body.get("Name"):
            raise _bad_request("Name is required")
        monitors = body.get("Monitors") or []
        if any(not m.get("AlarmArn") for m in monitors):
            raise _bad_request("Every monitor needs an AlarmArn")
        application = self._from_moto("get_application", ApplicationId=request.params["app"])
        environment = _Environment(application["Id"], application["Name"], _new_id(), body["Name"],
                                   body.get("Description"), [_present(m) for m in monitors])
        self._environments[environment.id] = environment
        return 201, environment.to_json()

    def _list_environments(self, request: _Request) -> tuple[int, dict[str, Any]]:
        application = self._from_moto("get_application", ApplicationId=request.params["app"])
        items = [e.to_json() for e in self._environments.values() if e.application_id == application["Id"]]
        return 200, _page(items, request.query)

    def _get_environment(self, request: _Request) -> tuple[int, dict[str, Any]]:
        return 200, self._environment(request.params["app"], request.params["env"]).to_json()

    def _create_deployment_strategy(self, request: _Request) -> tuple[int, dict[str, Any]]:
        body = request.json()
        duration, factor = body.get("DeploymentDurationInMinutes"), body.get("GrowthFactor")
        bake, growth_type = body.get("FinalBakeTimeInMinutes", 0), body.get("GrowthType", "LINEAR")
        if not body.get("Name") or duration is None or factor is None:
            raise _bad_request("Name, DeploymentDurationInMinutes and GrowthFactor are required")
        if not (0 <= duration <= _MAX_MINUTES and 0 <= bake <= _MAX_MINUTES):
            raise _bad_request(f"DeploymentDurationInMinutes and FinalBakeTimeInMinutes must be 0 to {_MAX_MINUTES}")
        if not 1 <= factor <= 100:
            raise _bad_request("GrowthFactor must be 1 to 100")
        if growth_type not in ("LINEAR", "EXPONENTIAL"):
            raise _bad_request("GrowthType must be LINEAR or EXPONENTIAL")
        strategy = _present({"Id": _new_id(), "Name": body["Name"], "Description": body.get("Description"),
                             "DeploymentDurationInMinutes": duration, "GrowthType": growth_type,
                             "GrowthFactor": float(factor), "FinalBakeTimeInMinutes": bake,
                             "ReplicateTo": body.get("ReplicateTo", "NONE")})
        self._strategies[strategy["Id"]] = strategy
        return 201, strategy

    def _list_deployment_strategies(self, request: _Request) -> tuple[int, dict[str, Any]]:
        return 200, _page(list(self._strategies.values()), request.query)

    def _get_deployment_strategy(self, request: _Request) -> tuple[int, dict[str, Any]]:
        return 200, self._strategy(request.params["strategy"])

    def _hosted_version(self, application_id: str, profile: dict[str, Any], version: str) -> dict[str, Any]:
        if profile.get("LocationUri") != "hosted":
            raise _bad_request("The local stand-in deploys hosted configurations only")
        if not version.isdigit():
            raise _bad_request(f"ConfigurationVersion {version!r}: the local stand-in deploys by version number")
        return self._from_moto("get_hosted_configuration_version", ApplicationId=application_id,
                               ConfigurationProfileId=profile["Id"], VersionNumber=int(version))

    def _start_deployment(self, request: _Request) -> tuple[int, dict[str, Any]]:
        environment = self._environment(request.params["app"], request.params["env"])
        body = request.json()
        missing = [k for k in ("DeploymentStrategyId", "ConfigurationProfileId", "ConfigurationVersion")
                   if not body.get(k)]
        if missing:
            raise _bad_request(f"{', '.join(missing)} required")
        strategy = self._strategy(body["DeploymentStrategyId"])
        running = [d for d in environment.deployments if d.state in IN_PROGRESS]
        if running:  # AWS: "You can only deploy one configuration at a time to an environment"
            raise AppConfigError("ConflictException", 409,
                                 f"Deployment {running[0].number} is {running[0].state} in environment "
                                 f"{environment.id}: one deployment at a time per environment")
        profile = self._from_moto("get_configuration_profile", ApplicationId=environment.application_id,
                                  ConfigurationProfileId=body["ConfigurationProfileId"])
        hosted = self._hosted_version(environment.application_id, profile, body["ConfigurationVersion"])
        content = hosted["Content"].read()
        run_validators(profile.get("Validators") or [], content)
        now = self.now()
        deployment = _Deployment(
            environment.application_id, environment.id, len(environment.deployments) + 1, dict(strategy),
            {k: profile.get(k) for k in ("Id", "Name", "LocationUri")}, str(hosted["VersionNumber"]),
            hosted.get("VersionLabel"), body.get("Description"), content,
            hosted.get("ContentType") or "application/octet-stream", now)
        deployment.percentage, deployment.schedule = _schedule(strategy, now)
        deployment.record("DEPLOYMENT_STARTED", "USER", "Deployment started", now)
        environment.deployments.append(deployment)
        return 201, deployment.to_json()

    def _deployment(self, request: _Request) -> tuple[_Environment, _Deployment]:
        environment = self._environment(request.params["app"], request.params["env"])
        number = request.params["number"]
        if not number.isdigit() or not 1 <= int(number) <= len(environment.deployments):
            raise _not_found(f"Deployment {number} of environment {environment.id} not found")
        return environment, environment.deployments[int(number) - 1]

    def _list_deployments(self, request: _Request) -> tuple[int, dict[str, Any]]:
        environment = self._environment(request.params["app"], request.params["env"])
        return 200, _page([d.summary() for d in reversed(environment.deployments)], request.query)

    def _get_deployment(self, request: _Request) -> tuple[int, dict[str, Any]]:
        return 200, self._deployment(request)[1].to_json()

    def _stop_deployment(self, request: _Request) -> tuple[int, dict[str, Any]]:
        _, deployment = self._deployment(request)
        allow_revert = (request.headers.get("Allow-Revert") or "").lower() == "true"
        now = self.now()
        if deployment.state in IN_PROGRESS:
            self._roll_back(deployment, now, "USER", "Rollback initiated by user")
        elif deployment.state == "COMPLETE" and allow_revert:
            deployment.state = "REVERTED"
            deployment.record("REVERT_COMPLETED", "USER", "Revert completed", now)
        else:
            raise _bad_request(f"Deployment {deployment.number} is {deployment.state}: only a deployment in "
                               "progress can be stopped (a complete one reverted with AllowRevert)")
        return 202, deployment.to_json()

    def _validate_configuration(self, request: _Request) -> tuple[int, None]:
        version = request.query.get("configuration_version", "")
        profile = self._from_moto("get_configuration_profile", ApplicationId=request.params["app"],
                                  ConfigurationProfileId=request.params["profile"])
        hosted = self._hosted_version(request.params["app"], profile, version)
        run_validators(profile.get("Validators") or [], hosted["Content"].read())
        return 204, None

    _ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
        (method, re.compile(pattern), name) for method, pattern, name in (
            ("POST", r"/applications/(?P<app>[^/]+)/environments", "_create_environment"),
            ("GET", r"/applications/(?P<app>[^/]+)/environments", "_list_environments"),
            ("GET", r"/applications/(?P<app>[^/]+)/environments/(?P<env>[^/]+)", "_get_environment"),
            ("POST", r"/applications/(?P<app>[^/]+)/environments/(?P<env>[^/]+)/deployments", "_start_deployment"),
            ("GET", r"/applications/(?P<app>[^/]+)/environments/(?P<env>[^/]+)/deployments", "_list_deployments"),
            ("GET", r"/applications/(?P<app>[^/]+)/environments/(?P<env>[^/]+)/deployments/(?P<number>[^/]+)",
             "_get_deployment"),
            ("DELETE", r"/applications/(?P<app>[^/]+)/environments/(?P<env>[^/]+)/deployments/(?P<number>[^/]+)",
             "_stop_deployment"),
            ("POST", r"/deploymentstrategies", "_create_deployment_strategy"),
            ("GET", r"/deploymentstrategies", "_list_deployment_strategies"),
            ("GET", r"/deploymentstrategies/(?P<strategy>[^/]+)", "_get_deployment_strategy"),
            ("POST", r"/applications/(?P<app>[^/]+)/configurationprofiles/(?P<profile>[^/]+)/validators",
             "_validate_configuration"),
        )
    )
    # everything under these is the stand-in's: an operation it lacks is refused, not passed to moto
    _OWNED = re.compile(r"/applications/[^/]+/environments(/.*)?|/deploye?mentstrategies(/.*)?")

    def respond(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """One API request: (status, headers, body)."""
        parts = urlsplit(target)
        try:
            self.tick()
            for route_method, pattern, name in self._ROUTES:
                match = pattern.fullmatch(parts.path)
                if match and route_method == method:
                    request = _Request({k: unquote(v) for k, v in match.groupdict().items()},
                                       dict(parse_qsl(parts.query)), headers, body)
                    with self._lock:
                        status, result = getattr(self, name)(request)
                    payload = json.dumps(result).encode() if result is not None else b""
                    return status, [("Content-Type", "application/json"), *_request_id()], payload
            if self._OWNED.fullmatch(parts.path):
                raise _bad_request(f"{method} {parts.path} is not implemented by the local AppConfig stand-in")
            return self._forward(method, target, headers, body)
        except AppConfigError as error:
            return _error(error)
        except Exception as error:  # the client sees it as AWS's InternalServerException
            return _error(AppConfigError("InternalServerException", 500, f"{type(error).__name__}: {error}"))

    def _forward(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, list[tuple[str, str]],
                                                                                     bytes]:
        """moto's own answer, relayed, with two of its slips mended: absent header members written as the
        text "None", and ResourceNotFoundException sent as 400 where AWS sends 404."""
        moto = urlsplit(self.moto_endpoint)
        connection = http.client.HTTPConnection(moto.hostname, moto.port, timeout=30)
        try:
            connection.request(method, target, body=body or None,
                               headers={k: v for k, v in headers.items() if k.lower() not in _NOT_RELAYED})
            response = connection.getresponse()
            payload = response.read()
            relayed = [(k, v) for k, v in response.getheaders()
                       if k.lower() not in _NOT_RELAYED and not (k.lower() in ("description", "versionlabel")
                                                                and v == "None")]
            status = response.status
            if status == 400 and response.getheader("x-amzn-ErrorType") == "ResourceNotFoundException":
                status = 404
            return status, relayed, payload
        finally:
            connection.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = plane.respond(self.command, self.path, self.headers, body)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

        return Handler


class LocalAppConfigAgent(LoopbackServer):
    """GET /applications/{application}/environments/{environment}/configurations/{profile} (names or ids):
    200 with the served version's content, Content-Type and Configuration-Version; 404 when nothing is
    deployed. `source` says what is served (a `LocalAppConfig`'s deployments); without one, `deploy()`
    makes a document live at once (for tests of the reader alone)."""

    def __init__(self, port: int = 0,
                 source: Callable[[str, str, str], ServedConfiguration | None] | None = None) -> None:
        self._deployed: dict[tuple[str, str, str], ServedConfiguration] = {}
        self._lock = threading.Lock()
        self._source = source or self._deployed_version
        super().__init__("appconfig-agent", port)

    def deploy(self, application: str, environment: str, profile: str, document: dict[str, Any]) -> int:
        """Make a validated document the deployed version at once; return its version number."""
        validate(document)
        with self._lock:
            previous = self._deployed.get((application, environment, profile))
            version = int(previous.version) + 1 if previous else 1
            self._deployed[(application, environment, profile)] = ServedConfiguration(
                str(version), json.dumps(document).encode(), "application/json")
        return version

    def _deployed_version(self, application: str, environment: str, profile: str) -> ServedConfiguration | None:
        with self._lock:
            return self._deployed.get((application, environment, profile))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                match = _AGENT_PATH.fullmatch(self.path.split("?")[0])
                try:
                    found = agent._source(*(unquote(g) for g in match.groups())) if match else None
                except Exception:  # the control plane could not bring its deployments up to date
                    found, status = None, 500
                else:
                    status = 404
                if found is None:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", found.content_type)
                self.send_header("Configuration-Version", found.version)
                self.send_header("Content-Length", str(len(found.content)))
                self.end_headers()
                self.wfile.write(found.content)

        return Handler


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id() -> str:
    return secrets.token_hex(4)[:7]  # AppConfig ids: [a-z0-9]{4,7}


def _request_id() -> list[tuple[str, str]]:
    return [("x-amzn-RequestId", str(uuid.uuid4()))]


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    try:
        start, size = int(query.get("next_token") or 0), int(query.get("max_results") or 50)
    except ValueError:
        raise _bad_request("NextToken and MaxResults must be numbers") from None
    page = {"Items": items[start:start + size]}
    if start + size < len(items):
        page["NextToken"] = str(start + size)
    return page


def _error(error: AppConfigError) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"Message": error.message, **error.extra}).encode()
    return error.status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", error.code),
                          *_request_id()], body
