"""The AppConfig stand-in: a boto3 `appconfig` client, pointed at it by AWS_ENDPOINT_URL_APPCONFIG as the
AWS code would be, creates, deploys and watches a configuration the way it would in AWS; moto keeps the
applications, profiles, hosted versions and alarms. Time is a stepped clock, so no test waits."""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import boto3
import pytest
from botocore.exceptions import ClientError

from feedbackloop.local.appconfig import LocalAppConfig, growth_steps
from feedbackloop.local.environment import APPCONFIG_ENDPOINT_VARIABLE, MotoServer, aws_environment, config_text
from feedbackloop.names import METRICS_NAMESPACE, Metric
from feedbackloop.resources import UI_CONFIG, UI_CONFIG_ROLLOUT
from feedbackloop.uiconfig import SCHEMA_FILE, AgentConfigReader, default_document

pytestmark = pytest.mark.local

MINUTE = 60


class SteppedClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class UiProfile:
    application: str
    environment: str
    profile: str
    rollout: str
    all_at_once: str


@pytest.fixture(scope="module")
def moto_endpoint():
    server = MotoServer().start()
    yield server.endpoint
    server.stop()


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def make_standin(moto_endpoint, clock, monkeypatch):
    """A started stand-in on the test's clock, with boto3 pointed at it (appconfig) and at moto (the rest)."""
    for name, value in aws_environment(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    started = []

    def make(time_scale: float = 1.0) -> LocalAppConfig:
        server = LocalAppConfig(moto_endpoint, clock=clock, time_scale=time_scale).start()
        started.append(server)
        monkeypatch.setenv(APPCONFIG_ENDPOINT_VARIABLE, server.endpoint_url)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def standin(make_standin) -> LocalAppConfig:
    return make_standin()


@pytest.fixture
def appconfig(standin):
    client = boto3.Session().client("appconfig")  # no endpoint argument: the variable sends it to the stand-in
    assert client.meta.endpoint_url == standin.endpoint_url
    return client


def create_ui_profile(appconfig, monitors: list[dict[str, str]] | None = None) -> UiProfile:
    application = appconfig.create_application(Name=UI_CONFIG.application)["Id"]
    environment = appconfig.create_environment(ApplicationId=application, Name=UI_CONFIG.environment,
                                               Monitors=monitors or [])["Id"]
    profile = appconfig.create_configuration_profile(
        ApplicationId=application, Name=UI_CONFIG.profile, LocationUri="hosted", Type="AWS.Freeform",
        Validators=[{"Type": "JSON_SCHEMA", "Content": config_text(SCHEMA_FILE)}])["Id"]
    rollout = appconfig.create_deployment_strategy(
        Name="ui-rollout", GrowthType=UI_CONFIG_ROLLOUT.growth_type, GrowthFactor=UI_CONFIG_ROLLOUT.growth_factor,
        DeploymentDurationInMinutes=UI_CONFIG_ROLLOUT.duration_minutes,
        FinalBakeTimeInMinutes=UI_CONFIG_ROLLOUT.bake_minutes)["Id"]
    all_at_once = appconfig.create_deployment_strategy(Name="ui-first", GrowthFactor=100,
                                                       DeploymentDurationInMinutes=0, FinalBakeTimeInMinutes=0)["Id"]
    return UiProfile(application, environment, profile, rollout, all_at_once)


def publish(appconfig, ui: UiProfile, document: dict, strategy: str) -> dict:
    """What the rules function does: a new hosted version, deployed."""
    version = appconfig.create_hosted_configuration_version(
        ApplicationId=ui.application, ConfigurationProfileId=ui.profile, Content=json.dumps(document).encode(),
        ContentType="application/json")["VersionNumber"]
    return appconfig.start_deployment(ApplicationId=ui.application, EnvironmentId=ui.environment,
                                      DeploymentStrategyId=strategy, ConfigurationProfileId=ui.profile,
                                      ConfigurationVersion=str(version))


def deployment(appconfig, ui: UiProfile, number: int) -> dict:
    return appconfig.get_deployment(ApplicationId=ui.application, EnvironmentId=ui.environment,
                                    DeploymentNumber=number)


def environment_state(appconfig, ui: UiProfile) -> str:
    return appconfig.get_environment(ApplicationId=ui.application, EnvironmentId=ui.environment)["State"]


def agent_read(standin: LocalAppConfig, application: str, environment: str, profile: str) -> tuple[int, str, dict]:
    url = f"{standin.agent_url}/applications/{application}/environments/{environment}/configurations/{profile}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Configuration-Version"], json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, "", {}


def popularity_first() -> dict:
    document = copy.deepcopy(default_document())
    document["defaults"]["layout"]["ordering"] = "popularity"
    return document


def test_growth_steps_follow_the_strategy():
    assert growth_steps("LINEAR", 20) == [20, 40, 60, 80, 100]
    assert growth_steps("EXPONENTIAL", 10) == [10, 20, 40, 80, 100]


def test_the_agent_answers_404_before_any_deployment(standin, appconfig):
    ui = create_ui_profile(appconfig)
    assert agent_read(standin, UI_CONFIG.application, UI_CONFIG.environment, UI_CONFIG.profile)[0] == 404
    assert environment_state(appconfig, ui) == "READY_FOR_DEPLOYMENT"
    assert appconfig.list_deployments(ApplicationId=ui.application, EnvironmentId=ui.environment)["Items"] == []


def test_a_rollout_deploys_bakes_and_completes_and_the_agent_serves_it(standin, appconfig, clock):
    ui = create_ui_profile(appconfig)
    publish(appconfig, ui, default_document(), ui.all_at_once)
    assert deployment(appconfig, ui, 1)["State"] == "COMPLETE"
    reader = AgentConfigReader(standin.agent_url, UI_CONFIG.application, UI_CONFIG.environment, UI_CONFIG.profile,
                               ttl_seconds=0)
    assert reader.get()["defaults"]["layout"]["ordering"] == "personalized" and reader.version == "1"

    started = publish(appconfig, ui, popularity_first(), ui.rollout)
    assert (started["DeploymentNumber"], started["State"], started["PercentageComplete"]) == (2, "DEPLOYING", 20)
    assert environment_state(appconfig, ui) == "DEPLOYING"
    # the one local reader is in the first step: it reads the new version from the start
    assert reader.get()["defaults"]["layout"]["ordering"] == "popularity" and reader.version == "2"
    seen = []
    for _ in range(10):
        clock.advance(MINUTE)
        now = deployment(appconfig, ui, 2)
        seen.append((now["State"], now["PercentageComplete"]))
    assert seen == [("DEPLOYING", 40), ("DEPLOYING", 60), ("DEPLOYING", 80), ("DEPLOYING", 100), ("BAKING", 100),
                    ("BAKING", 100), ("BAKING", 100), ("BAKING", 100), ("BAKING", 100), ("COMPLETE", 100)]
    assert [e["EventType"] for e in now["EventLog"]] == [
        "DEPLOYMENT_COMPLETED", "BAKE_TIME_STARTED", *["PERCENTAGE_UPDATED"] * 4, "DEPLOYMENT_STARTED"]
    assert (now["CompletedAt"] - now["StartedAt"]).total_seconds() == pytest.approx(10 * MINUTE, abs=0.01)
    assert environment_state(appconfig, ui) == "READY_FOR_DEPLOYMENT"
    assert [d["DeploymentNumber"] for d in appconfig.list_deployments(
        ApplicationId=ui.application, EnvironmentId=ui.environment)["Items"]] == [2, 1]
    # ids work on the agent path as well as names; the hosted version itself is moto's
    assert agent_read(standin, ui.application, ui.environment, ui.profile)[1] == "2"
    hosted = appconfig.get_hosted_configuration_version(ApplicationId=ui.application,
                                                        ConfigurationProfileId=ui.profile, VersionNumber=2)
    assert json.loads(hosted["Content"].read()) == popularity_first() and "Description" not in hosted


def test_an_invalid_document_is_refused_at_deployment_and_never_served(standin, appconfig):
    ui = create_ui_profile(appconfig)
    publish(appconfig, ui, default_document(), ui.all_at_once)
    invalid = copy.deepcopy(default_document())
    invalid["defaults"]["layout"]["ordering"] = "random"
    with pytest.raises(ClientError) as refused:
        publish(appconfig, ui, invalid, ui.all_at_once)  # the hosted version is created; the deployment is not
    error = refused.value.response
    assert error["Error"]["Code"] == "BadRequestException" and error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "data.defaults.layout.ordering" in error["Error"]["Message"]
    assert error["Reason"] == "InvalidConfiguration"
    assert appconfig.get_hosted_configuration_version(ApplicationId=ui.application, ConfigurationProfileId=ui.profile,
                                                      VersionNumber=2)["VersionNumber"] == 2
    with pytest.raises(ClientError, match="BadRequestException"):
        appconfig.validate_configuration(ApplicationId=ui.application, ConfigurationProfileId=ui.profile,
                                         ConfigurationVersion="2")
    assert len(appconfig.list_deployments(ApplicationId=ui.application, EnvironmentId=ui.environment)["Items"]) == 1
    assert agent_read(standin, UI_CONFIG.application, UI_CONFIG.environment, UI_CONFIG.profile)[1] == "1"


def test_a_second_deployment_while_one_runs_is_a_conflict(standin, appconfig, clock):
    ui = create_ui_profile(appconfig)
    publish(appconfig, ui, default_document(), ui.rollout)
    clock.advance(7 * MINUTE)  # baking still counts as running
    with pytest.raises(ClientError) as refused:
        publish(appconfig, ui, popularity_first(), ui.all_at_once)
    assert refused.value.response["Error"]["Code"] == "ConflictException"
    clock.advance(3 * MINUTE)  # complete: the next one may start
    assert publish(appconfig, ui, popularity_first(), ui.all_at_once)["DeploymentNumber"] == 2


def test_an_alarm_during_the_bake_rolls_back_to_the_previous_version(make_standin, clock):
    fast = make_standin(time_scale=60)  # a stand-in minute per real second
    appconfig = boto3.Session().client("appconfig")
    cloudwatch = boto3.Session().client("cloudwatch")  # moto, by AWS_ENDPOINT_URL
    cloudwatch.put_metric_alarm(AlarmName="standin-rollback", Namespace=METRICS_NAMESPACE,
                                MetricName=Metric.SERVING_ERRORS, Statistic="Sum", Period=60, EvaluationPeriods=1,
                                Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold")
    alarm_arn = cloudwatch.describe_alarms(AlarmNames=["standin-rollback"])["MetricAlarms"][0]["AlarmArn"]
    ui = create_ui_profile(appconfig, monitors=[{"AlarmArn": alarm_arn}])
    publish(appconfig, ui, default_document(), ui.all_at_once)
    publish(appconfig, ui, popularity_first(), ui.rollout)
    clock.advance(6)  # six stand-in minutes: baking, the alarm has no data yet
    assert deployment(appconfig, ui, 2)["State"] == "BAKING"
    assert agent_read(fast, UI_CONFIG.application, UI_CONFIG.environment, UI_CONFIG.profile)[1] == "2"

    cloudwatch.set_alarm_state(AlarmName="standin-rollback", StateValue="ALARM", StateReason="serving 5xx")
    rolled_back = deployment(appconfig, ui, 2)
    assert rolled_back["State"] == "ROLLED_BACK" and environment_state(appconfig, ui) == "ROLLED_BACK"
    started, completed = rolled_back["EventLog"][1], rolled_back["EventLog"][0]
    assert (started["EventType"], started["TriggeredBy"]) == ("ROLLBACK_STARTED", "CLOUDWATCH_ALARM")
    assert alarm_arn in started["Description"] and completed["EventType"] == "ROLLBACK_COMPLETED"
    assert agent_read(fast, UI_CONFIG.application, UI_CONFIG.environment, UI_CONFIG.profile)[1:] == (
        "1", default_document())
    clock.advance(10)  # a rolled-back deployment stays rolled back
    assert deployment(appconfig, ui, 2)["State"] == "ROLLED_BACK"


def test_stop_deployment_rolls_back(standin, appconfig, clock):
    ui = create_ui_profile(appconfig)
    publish(appconfig, ui, default_document(), ui.all_at_once)
    publish(appconfig, ui, popularity_first(), ui.rollout)
    clock.advance(2 * MINUTE)
    stopped = appconfig.stop_deployment(ApplicationId=ui.application, EnvironmentId=ui.environment,
                                        DeploymentNumber=2)
    assert stopped["State"] == "ROLLED_BACK" and stopped["PercentageComplete"] == 60
    assert stopped["EventLog"][1]["TriggeredBy"] == "USER"
    assert agent_read(standin, UI_CONFIG.application, UI_CONFIG.environment, UI_CONFIG.profile)[1] == "1"
    with pytest.raises(ClientError, match="BadRequestException"):  # a complete one needs AllowRevert
        appconfig.stop_deployment(ApplicationId=ui.application, EnvironmentId=ui.environment, DeploymentNumber=1)
    with pytest.raises(ClientError) as missing:
        appconfig.get_deployment(ApplicationId=ui.application, EnvironmentId=ui.environment, DeploymentNumber=9)
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
