"""The one Lambda construct every feedbackloop function uses.

All functions of a stack share one code asset (the project root filtered to `feedbackloop/` and
`lambdas/`) and the same three layers, so a handler runs against exactly the packages the local
runtime and the tests use.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version

from aws_cdk import Duration, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from cdk import nag
from cdk.project import ProjectLayout
from feedbackloop.names import METRICS_NAMESPACE, SERVICE

RUNTIME = lambda_.Runtime.PYTHON_3_12
# x86_64 because `make lambda-layer` builds the dependency layer for manylinux x86_64.
ARCHITECTURE = lambda_.Architecture.X86_64

# gitignore syntax, relative to the project root: everything but the two packages a handler imports.
# The shipped dataset, the local stand-in and the benchmarks never run in Lambda.
CODE_EXCLUDES = ["/*", "!/feedbackloop/", "!/lambdas/", "__pycache__/", "*.pyc",
                 "/feedbackloop/datasets/", "/feedbackloop/local/", "/feedbackloop/bench/"]

# AWS publishes its managed layers' ARNs as public SSM parameters in every region, so an
# environment-agnostic stack resolves the regional ARN at deploy time. The versions are the ones
# the lock file installs here, so Lambda runs what the tests ran.
POWERTOOLS_LAYER_PARAMETER = f"/aws/service/powertools/python/x86_64/python3.12/{version('aws-lambda-powertools')}"
SDK_FOR_PANDAS_LAYER_PARAMETER = f"/aws/service/aws-sdk-pandas/{version('awswrangler')}/py3.12/x86_64/layer-arn"


class LambdaPackaging(Construct):
    """Code asset and layers, created once per stack and shared by its functions."""

    ID = "LambdaPackaging"

    @classmethod
    def of(cls, scope: Construct, layout: ProjectLayout) -> LambdaPackaging:
        stack = Stack.of(scope)
        existing = stack.node.try_find_child(cls.ID)
        return existing if isinstance(existing, cls) else cls(stack, cls.ID, layout=layout)

    def __init__(self, scope: Construct, construct_id: str, *, layout: ProjectLayout) -> None:
        super().__init__(scope, construct_id)
        self.code = lambda_.Code.from_asset(str(layout.root), exclude=CODE_EXCLUDES, ignore_mode=IgnoreMode.GIT)
        # Lambda unpacks layers in order, later ones overwriting earlier files, so our pinned packages
        # (pydantic, which the Powertools layer also ships) must come last. With the recommended flag
        # @aws-cdk/aws-lambda:recognizeLayerVersion, CDK sorts a function's layers by construct path:
        # the numbered ids fix that order.
        powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "Layer1Powertools",
            ssm.StringParameter.value_for_string_parameter(self, POWERTOOLS_LAYER_PARAMETER),
        )
        sdk_for_pandas = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "Layer2SdkForPandas",
            ssm.StringParameter.value_for_string_parameter(self, SDK_FOR_PANDAS_LAYER_PARAMETER),
        )
        dependencies = lambda_.LayerVersion(
            self,
            "Layer3Dependencies",
            code=lambda_.Code.from_asset(str(layout.require_lambda_layer())),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="feedbackloop: the `lambda` dependency group (pydantic, fastjsonschema)",
        )
        self.layers: tuple[lambda_.ILayerVersion, ...] = (powertools, sdk_for_pandas, dependencies)


class PythonFunction(Construct):
    """A Python 3.12 function with X-Ray tracing, its own log group and a role with no managed policy."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        handler: str,
        description: str,
        environment: Mapping[str, str],
        memory_size: int,
        timeout: Duration,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
    ) -> None:
        super().__init__(scope, construct_id)
        packaging = LambdaPackaging.of(self, layout)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        # Our own role instead of AWSLambdaBasicExecutionRole: it may write to this log group only.
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=handler,
            code=packaging.code,
            layers=list(packaging.layers),
            description=description,
            memory_size=memory_size,
            timeout=timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role,
            environment={
                "POWERTOOLS_SERVICE_NAME": SERVICE,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                **environment,
            },
        )
        nag.acknowledge(
            self,
            "L1",
            "python3.12 is pinned on purpose: the dependency layer is built for it and the AWS-managed "
            "Powertools and SDK for pandas layers are selected for it; moving runtimes moves all three.",
        )
        nag.acknowledge(
            self,
            "IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords (active tracing) support no resource-level "
            "permissions; they are the only statement on '*'.",
        )
