"""The UI configuration in AppConfig (`resources.UI_CONFIG`): the application, its environment, a hosted
configuration profile whose JSON Schema validator is `feedbackloop/config/ui_config.schema.json`, the
first document (`ui_config.json`) as a hosted version, and its deployment to the environment.

The environment's monitor is the rollback alarm (`resources.CONFIG_ROLLBACK_ALARM`: the serving function's
errors): while a deployment rolls out or bakes, the alarm going off makes AppConfig roll it back. AppConfig
reads the alarm's state through a role of its own that may describe that one alarm.

Readers get the document through the AWS AppConfig Agent Lambda extension (`add_reader`): the extension
layer, the two AppConfig data-plane actions on exactly this profile, and a prefetch of it at cold start.
The handler asks the extension for the profile by name (`feedbackloop.uiconfig.AgentConfigReader`).

The schema and the document are read from the `feedbackloop.config` package, the files the serving
function's loader and the local runtime use: no copy. The document is checked against the schema here,
so a bad document fails at synth instead of at AppConfig's validator.
"""

from __future__ import annotations

import json
import re
from importlib import resources

from aws_cdk import Aws, CfnMapping, Duration, Names, Stack
from aws_cdk import aws_appconfig as appconfig
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk import nag
from cdk.components.monitoring import emf_metric
from cdk.deployment import Deployment
from feedbackloop import uiconfig
from feedbackloop.resources import CONFIG_ROLLBACK_ALARM, UI_CONFIG, UI_CONFIG_ROLLOUT, AlarmSpec, ConfigProfileSpec

READ_ACTIONS = ["appconfig:StartConfigurationSession", "appconfig:GetLatestConfiguration"]
# The control plane of a new version and its deployment (feedbackloop.adapters.control.AppConfigPublisher),
# each action with the resource types the Service Authorization Reference lists for it. These are the
# control-plane ARN formats (application/<id>/environment/<id>, .../configurationprofile/<id>,
# deploymentstrategy/<id>, and their deployment/<number> and hostedconfigurationversion/<number>), not
# the data plane's application/<id>/environment/<id>/configuration/<id> that READ_ACTIONS authorize on.
APPLICATION, ENVIRONMENT, PROFILE, STRATEGY, DEPLOYMENTS, VERSIONS = (
    "application", "environment", "profile", "strategy", "deployments", "versions"
)
DEPLOY_ACTIONS = {
    "appconfig:ListDeployments": (APPLICATION, ENVIRONMENT),
    "appconfig:GetDeployment": (APPLICATION, ENVIRONMENT, DEPLOYMENTS),
    "appconfig:GetHostedConfigurationVersion": (APPLICATION, PROFILE, VERSIONS),
    "appconfig:CreateHostedConfigurationVersion": (APPLICATION, PROFILE, VERSIONS),
    "appconfig:StartDeployment": (APPLICATION, ENVIRONMENT, PROFILE, STRATEGY, DEPLOYMENTS),
}

# The strategy is resources.UI_CONFIG_ROLLOUT: linear 20% every minute (five steps over five minutes), then
# five minutes of bake before the deployment completes. A changed document reaches a fifth of the readers
# first; while it rolls out and bakes, an operator can stop it, and the environment's rollback alarm going
# off makes AppConfig roll it back. AllAtOnce would only suit the very first document, which has nothing
# to roll back to; every later change of ui_config.json goes out through the same strategy, and the rules
# function can reuse it.

# The AWS AppConfig Agent Lambda extension for x86-64 functions (any runtime, here python3.12), version
# 2.0.17054.0 of 2026-05-14, by region: the "x86-64 platform" table of the AWS AppConfig User Guide,
# "Understanding available versions of the AWS AppConfig Agent Lambda extension"
# (https://docs.aws.amazon.com/appconfig/latest/userguide/appconfig-integration-lambda-extensions-versions.html).
# The publishing account of each region agrees with aws-cdk-lib's own (older) table, which an infra test
# checks. AWS keeps supporting the versions that page lists; update by copying its newest table.
EXTENSION_VERSION = "2.0.17054.0"
EXTENSION_LAYERS = {
    "us-east-1": "arn:aws:lambda:us-east-1:027255383542:layer:AWS-AppConfig-Extension:321",
    "us-east-2": "arn:aws:lambda:us-east-2:728743619870:layer:AWS-AppConfig-Extension:277",
    "us-west-1": "arn:aws:lambda:us-west-1:958113053741:layer:AWS-AppConfig-Extension:395",
    "us-west-2": "arn:aws:lambda:us-west-2:359756378197:layer:AWS-AppConfig-Extension:373",
    "ca-central-1": "arn:aws:lambda:ca-central-1:039592058896:layer:AWS-AppConfig-Extension:262",
    "ca-west-1": "arn:aws:lambda:ca-west-1:436199621743:layer:AWS-AppConfig-Extension:172",
    "eu-central-1": "arn:aws:lambda:eu-central-1:066940009817:layer:AWS-AppConfig-Extension:295",
    "eu-central-2": "arn:aws:lambda:eu-central-2:758369105281:layer:AWS-AppConfig-Extension:220",
    "eu-west-1": "arn:aws:lambda:eu-west-1:434848589818:layer:AWS-AppConfig-Extension:303",
    "eu-west-2": "arn:aws:lambda:eu-west-2:282860088358:layer:AWS-AppConfig-Extension:242",
    "eu-west-3": "arn:aws:lambda:eu-west-3:493207061005:layer:AWS-AppConfig-Extension:273",
    "eu-north-1": "arn:aws:lambda:eu-north-1:646970417810:layer:AWS-AppConfig-Extension:367",
    "eu-south-1": "arn:aws:lambda:eu-south-1:203683718741:layer:AWS-AppConfig-Extension:249",
    "eu-south-2": "arn:aws:lambda:eu-south-2:586093569114:layer:AWS-AppConfig-Extension:214",
    "cn-north-1": "arn:aws-cn:lambda:cn-north-1:615057806174:layer:AWS-AppConfig-Extension:243",
    "cn-northwest-1": "arn:aws-cn:lambda:cn-northwest-1:615084187847:layer:AWS-AppConfig-Extension:241",
    "ap-east-1": "arn:aws:lambda:ap-east-1:630222743974:layer:AWS-AppConfig-Extension:254",
    "ap-east-2": "arn:aws:lambda:ap-east-2:730335625313:layer:AWS-AppConfig-Extension:147",
    "ap-northeast-1": "arn:aws:lambda:ap-northeast-1:980059726660:layer:AWS-AppConfig-Extension:272",
    "ap-northeast-2": "arn:aws:lambda:ap-northeast-2:826293736237:layer:AWS-AppConfig-Extension:273",
    "ap-northeast-3": "arn:aws:lambda:ap-northeast-3:706869817123:layer:AWS-AppConfig-Extension:272",
    "ap-southeast-1": "arn:aws:lambda:ap-southeast-1:421114256042:layer:AWS-AppConfig-Extension:258",
    "ap-southeast-2": "arn:aws:lambda:ap-southeast-2:080788657173:layer:AWS-AppConfig-Extension:313",
    "ap-southeast-3": "arn:aws:lambda:ap-southeast-3:418787028745:layer:AWS-AppConfig-Extension:256",
    "ap-southeast-4": "arn:aws:lambda:ap-southeast-4:307021474294:layer:AWS-AppConfig-Extension:188",
    "ap-southeast-5": "arn:aws:lambda:ap-southeast-5:631746059939:layer:AWS-AppConfig-Extension:161",
    "ap-southeast-6": "arn:aws:lambda:ap-southeast-6:381491832265:layer:AWS-AppConfig-Extension:97",
    "ap-southeast-7": "arn:aws:lambda:ap-southeast-7:851725616657:layer:AWS-AppConfig-Extension:134",
    "ap-south-1": "arn:aws:lambda:ap-south-1:554480029851:layer:AWS-AppConfig-Extension:290",
    "ap-south-2": "arn:aws:lambda:ap-south-2:489524808438:layer:AWS-AppConfig-Extension:217",
    "sa-east-1": "arn:aws:lambda:sa-east-1:000010852771:layer:AWS-AppConfig-Extension:327",
    "mx-central-1": "arn:aws:lambda:mx-central-1:891376990304:layer:AWS-AppConfig-Extension:142",
    "af-south-1": "arn:aws:lambda:af-south-1:574348263942:layer:AWS-AppConfig-Extension:260",
    "il-central-1": "arn:aws:lambda:il-central-1:895787185223:layer:AWS-AppConfig-Extension:188",
    "me-central-1": "arn:aws:lambda:me-central-1:662846165436:layer:AWS-AppConfig-Extension:212",
    "me-south-1": "arn:aws:lambda:me-south-1:559955524753:layer:AWS-AppConfig-Extension:254",
    "us-gov-east-1": "arn:aws-us-gov:lambda:us-gov-east-1:946561847325:layer:AWS-AppConfig-Extension:219",
    "us-gov-west-1": "arn:aws-us-gov:lambda:us-gov-west-1:946746059096:layer:AWS-AppConfig-Extension:220",
}
LAYER_ARN = "LayerArn"  # the mapping's second-level key
# The extension fetches these profiles before the function's init, so a cold start finds them cached.
PREFETCH_VARIABLE = "AWS_APPCONFIG_EXTENSION_PREFETCH_LIST"


def rollback_alarm(scope: Construct, construct_id: str, spec: AlarmSpec) -> cw.Alarm:
    """The alarm of `spec` on our metric as Powertools emits it (namespace, name, `service` dimension)."""
    return cw.Alarm(
        scope,
        construct_id,
        metric=emf_metric(spec.metric, spec.statistic, period=Duration.seconds(spec.period_seconds)),
        threshold=spec.threshold,
        evaluation_periods=spec.evaluation_periods,
        # "GreaterThanOrEqualToThreshold" (CloudFormation's spelling) -> GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        comparison_operator=cw.ComparisonOperator[re.sub(r"(?<!^)(?=[A-Z])", "_", spec.comparison).upper()],
        # no errors emitted in a minute is no error: the alarm (and a deployment) stays OK
        treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        alarm_description=f"feedbackloop {spec.key}: {spec.purpose}",
    )


def config_file(name: str) -> str:
    """A file of the `feedbackloop.config` package, as it is."""
    return resources.files("feedbackloop.config").joinpath(name).read_text("utf-8")


class UiConfig(Construct):
    """`application`, `environment`, `profile`, `version`, `strategy`, `deployment` (CloudFormation
    resources), the environment's monitor (`rollback_alarm`, and `monitor_role` that AppConfig assumes to
    read it), `deployer_policy` for a function that deploys new versions, and `add_reader` for a function
    that reads the profile through the extension."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ConfigProfileSpec = UI_CONFIG,
        rollback: AlarmSpec = CONFIG_ROLLBACK_ALARM,
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        document = config_file(uiconfig.DEFAULT_FILE)
        uiconfig.validate(json.loads(document))  # raises InvalidConfigError: synth stops here

        self.application = appconfig.CfnApplication(
            self, "Application", name=Deployment.of(self).appconfig_application,
            description="feedbackloop: per-user UI configuration"
        )
        self.rollback_alarm = rollback_alarm(self, "RollbackAlarm", rollback)
        # The policy is inline, so the role is complete before the environment (and its first deployment)
        # is created: a separate AWS::IAM::Policy could land after AppConfig first reads the alarm.
        self.monitor_role = iam.Role(
            self,
            "MonitorRole",
            assumed_by=iam.ServicePrincipal("appconfig.amazonaws.com"),
            description="feedbackloop: AppConfig reads the UI config environment's rollback alarm",
            inline_policies={
                "DescribeRollbackAlarm": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            actions=["cloudwatch:DescribeAlarms"], resources=[self.rollback_alarm.alarm_arn]
                        )
                    ]
                )
            },
        )
        self.environment = appconfig.CfnEnvironment(
            self,
            "Environment",
            application_id=self.application.ref,
            name=spec.environment,
            description="feedbackloop: what the serving API reads",
            monitors=[
                appconfig.CfnEnvironment.MonitorsProperty(
                    alarm_arn=self.rollback_alarm.alarm_arn, alarm_role_arn=self.monitor_role.role_arn
                )
            ],
        )
        self.profile = appconfig.CfnConfigurationProfile(
            self,
            "Profile",
            application_id=self.application.ref,
            name=spec.profile,
            location_uri="hosted",
            type="AWS.Freeform",
            description="flags and layout by default and per segment, and experiment variants",
            # AppConfig refuses a version the schema refuses, before it can be deployed
            validators=[
                appconfig.CfnConfigurationProfile.ValidatorsProperty(
                    type="JSON_SCHEMA", content=config_file(uiconfig.SCHEMA_FILE)
                )
            ],
        )
        self.version = appconfig.CfnHostedConfigurationVersion(
            self,
            "Version",
            application_id=self.application.ref,
            configuration_profile_id=self.profile.ref,
            content=document,
            content_type="application/json",
            description=f"feedbackloop/config/{uiconfig.DEFAULT_FILE}",
        )
        rollout = UI_CONFIG_ROLLOUT
        self.strategy = appconfig.CfnDeploymentStrategy(
            self,
            "Strategy",
            # AppConfig needs a name; one unique to this construct's path, like CDK's generated names
            name=Names.unique_resource_name(self, max_length=64, separator="-"),
            description=f"linear {rollout.growth_factor}% every minute, then a {rollout.bake_minutes}-minute bake",
            growth_type=rollout.growth_type,
            growth_factor=rollout.growth_factor,
            deployment_duration_in_minutes=rollout.duration_minutes,
            final_bake_time_in_minutes=rollout.bake_minutes,
            replicate_to="NONE",
        )
        self.deployment = appconfig.CfnDeployment(
            self,
            "Deployment",
            application_id=self.application.ref,
            environment_id=self.environment.ref,
            configuration_profile_id=self.profile.ref,
            configuration_version=self.version.ref,  # the version number
            deployment_strategy_id=self.strategy.ref,
            description=f"feedbackloop/config/{uiconfig.DEFAULT_FILE}",
        )
        self.deployer_policy = self._deployer_policy()
        layers = CfnMapping(
            self, "ExtensionLayers", mapping={region: {LAYER_ARN: arn} for region, arn in EXTENSION_LAYERS.items()}
        )
        self.extension_layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "ExtensionLayer", layers.find_in_map(Aws.REGION, LAYER_ARN)
        )

    def _deployer_policy(self) -> iam.ManagedPolicy:
        """Read the deployed version, create a hosted version of the profile and deploy it to the
        environment with the strategy, as `AppConfigPublisher` does; nothing on other profiles or
        environments. A managed policy beside what it opens (as the data stack's stores do): the adjust
        function attaches it by ARN."""
        stack = Stack.of(self)
        environment = f"{self.application.ref}/environment/{self.environment.ref}"
        profile = f"{self.application.ref}/configurationprofile/{self.profile.ref}"
        arns = {
            name: stack.format_arn(service="appconfig", resource="application", resource_name=resource_name)
            for name, resource_name in (
                (APPLICATION, self.application.ref),
                (ENVIRONMENT, environment),
                (PROFILE, profile),
                (DEPLOYMENTS, f"{environment}/deployment/*"),
                (VERSIONS, f"{profile}/hostedconfigurationversion/*"),
            )
        }
        arns[STRATEGY] = stack.format_arn(service="appconfig", resource="deploymentstrategy",
                                          resource_name=self.strategy.ref)
        policy = iam.ManagedPolicy(
            self,
            "DeployerPolicy",
            description="feedbackloop: deploy a new version of the UI configuration (this profile, environment "
            "and strategy only)",
            statements=[
                iam.PolicyStatement(actions=[action], resources=[arns[kind] for kind in kinds])
                for action, kinds in DEPLOY_ACTIONS.items()
            ],
        )
        nag.acknowledge_all(
            policy,
            [nag.wildcard_resource(self, arns[kind]) for kind in (DEPLOYMENTS, VERSIONS)],
            "AppConfig numbers deployments and hosted configuration versions as it creates them; the "
            "wildcards are the deployments of the UI config environment and the versions of its profile only.",
        )
        return policy

    @property
    def profile_arn(self) -> str:
        """The profile in this environment: the resource both data-plane actions authorize on."""
        return Stack.of(self).format_arn(
            service="appconfig",
            resource="application",
            resource_name=f"{self.application.ref}/environment/{self.environment.ref}"
            f"/configuration/{self.profile.ref}",
        )

    @property
    def agent_path(self) -> str:
        """The extension's HTTP path of the profile (names, as the handler asks for them)."""
        spec = self.spec
        return f"/applications/{spec.application}/environments/{spec.environment}/configurations/{spec.profile}"

    def add_reader(self, function: lambda_.Function) -> None:
        """The extension layer, read access to exactly this profile, and its prefetch at cold start."""
        function.add_layers(self.extension_layer)
        function.add_environment(PREFETCH_VARIABLE, self.agent_path)
        iam.Grant.add_to_principal(grantee=function, actions=READ_ACTIONS, resource_arns=[self.profile_arn])
