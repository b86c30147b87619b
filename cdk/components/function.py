"""The one Lambda construct every feedbackloop function uses.

All functions of a stack share one code asset (the project root filtered to `feedbackloop/` and
`lambdas/`) and their layers, so a handler runs against exactly the packages the local runtime and the
tests use. A function picks its layers by `LayerSet`, by what its imports need, all built from the lock
file: the cleaner and the eraser take the arrow layer (pyarrow and numpy, trimmed by `cdk/layer_trim.py`);
the adjust function the drift layer (river, scipy); serving, ingest and the workflow's Evaluate and Publish
import numpy and neither pandas nor pyarrow, so they take a numpy layer (about 54 MiB). No function takes
the AWS SDK for pandas layer (204 MiB unzipped in 3.17.1: above the 200 MiB budget on its own). Every
function takes our `lambda` group's layer, Powertools (with its tracer) included.
`tests/infra/test_infra_function_size.py` checks each function's unzipped size and that its layers hold
exactly what its handler imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from aws_cdk import Duration, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk import nag
from cdk.project import ProjectLayout
from feedbackloop.names import METRICS_NAMESPACE, Function

RUNTIME = lambda_.Runtime.PYTHON_3_12
# x86_64 because `make lambda-layer` builds the dependency layer for manylinux x86_64.
ARCHITECTURE = lambda_.Architecture.X86_64

# gitignore syntax, relative to the project root: everything but the two packages a handler imports.
# The shipped dataset, the local stand-in and the benchmarks never run in Lambda.
CODE_EXCLUDES = ["/*", "!/feedbackloop/", "!/lambdas/", "__pycache__/", "*.pyc",
                 "/feedbackloop/datasets/", "/feedbackloop/local/", "/feedbackloop/bench/"]

# (Powertools comes in our dependency layer, not its managed one: that layer carries every extra, 34 MiB
# where the tracer's take 6. The AWS SDK for pandas layer is no function's either: see the docstring.)


class Layer(StrEnum):
    """A layer a function may get, all ours, built by `make lambda-layer` from the lock file. Each value is
    the layer's construct id, numbered in the order Lambda must unpack the layers (see `LambdaPackaging`)."""

    DEPENDENCIES = "Layer3Dependencies"  # the `lambda` group: Powertools (tracer), pydantic, fastjsonschema, pybase64
    DRIFT = "Layer4Drift"  # the `lambda-drift` group: river, scipy, numpy
    NUMPY = "Layer5Numpy"  # the `lambda-serving` group: numpy
    ARROW = "Layer6Arrow"  # the `lambda-arrow` group: pyarrow, numpy (cdk/layer_trim.py leaves out what none loads)


MIB = 2**20


@dataclass(frozen=True)
class ManagedLayerSize:
    """What an AWS-managed layer adds to a function's unzipped size (Lambda's limit: 250 MiB for the code and
    every layer together). AWS publishes no unzipped sizes, so each is pinned here with its version and where
    the figure comes from; `tests/infra/test_infra_function_size.py` adds them to our measured code and layers,
    and fails when a pinned version is no longer the one deployed (re-measure, then re-pin)."""

    name: str
    version: str
    unzipped_bytes: int
    source: str


# The one place the managed layers' sizes are kept.
MANAGED_LAYER_SIZES = {
    "appconfig-extension": ManagedLayerSize(
        "AWS AppConfig Agent Lambda extension, x86-64", "2.0.17054.0", 30 * MIB,
        "not published (https://docs.aws.amazon.com/appconfig/latest/userguide/"
        "appconfig-integration-lambda-extensions-versions.html lists ARNs only): an upper estimate for one "
        "agent executable; measure with `aws lambda get-layer-version-by-arn` (Content.Location) and unzip",
    ),
}


class LayerSet(Enum):
    """The layers of one kind of function, in Lambda's order: the AWS-managed ones first, ours last."""

    # pyarrow and numpy, no pandas or awswrangler: the cleaner (decoding, Parquet) and the eraser (the lake's
    # objects through pyarrow's S3 file system)
    ARROW = (Layer.DEPENDENCIES, Layer.ARROW)
    # river and scipy, no pandas or pyarrow: the adjust function
    DRIFT = (Layer.DEPENDENCIES, Layer.DRIFT)
    # numpy and no pandas, pyarrow or awswrangler (the import test keeps it so): serving (ranking over the
    # model's arrays), ingest (the event schema's checks) and the workflow's Evaluate and Publish steps
    NUMPY = (Layer.DEPENDENCIES, Layer.NUMPY)


class LambdaPackaging(Construct):
    """Code asset and layers, created once per stack and shared by its functions. A layer is created
    the first time a function of the stack asks for it, so a stack only carries the layers it uses."""

    ID = "LambdaPackaging"

    @classmethod
    def of(cls, scope: Construct, layout: ProjectLayout) -> LambdaPackaging:
        stack = Stack.of(scope)
        existing = stack.node.try_find_child(cls.ID)
        return existing if isinstance(existing, cls) else cls(stack, cls.ID, layout=layout)

    def __init__(self, scope: Construct, construct_id: str, *, layout: ProjectLayout) -> None:
        super().__init__(scope, construct_id)
        self.code = lambda_.Code.from_asset(str(layout.root), exclude=CODE_EXCLUDES, ignore_mode=IgnoreMode.GIT)
        self._layout = layout
        self._layers: dict[Layer, lambda_.ILayerVersion] = {}

    def layers(self, layer_set: LayerSet) -> list[lambda_.ILayerVersion]:
        """The layers of `layer_set`, in its order.

        Lambda unpacks layers in order, later ones overwriting earlier files (should two ever ship the
        same package, the later one wins). With the recommended flag
        @aws-cdk/aws-lambda:recognizeLayerVersion, CDK sorts a function's layers by construct path:
        the numbered ids fix that order, and every `LayerSet` lists its layers in it."""
        if list(layer_set.value) != sorted(layer_set.value, key=lambda layer: layer.value):
            raise ValueError(f"{layer_set}: layers out of their unpacking order")
        return [self._layer(layer) for layer in layer_set.value]

    def _layer(self, layer: Layer) -> lambda_.ILayerVersion:
        if layer in self._layers:
            return self._layers[layer]
        directory, description = {
            Layer.DEPENDENCIES: (
                self._layout.require_lambda_layer,
                "feedbackloop: the `lambda` dependency group (Powertools, pydantic, fastjsonschema)",
            ),
            Layer.DRIFT: (
                self._layout.require_lambda_drift_layer,
                "feedbackloop: the `lambda-drift` dependency group (river, scipy, numpy)",
            ),
            Layer.NUMPY: (
                self._layout.require_lambda_serving_layer,
                "feedbackloop: the `lambda-serving` dependency group (numpy)",
            ),
            Layer.ARROW: (
                self._layout.require_lambda_arrow_layer,
                "feedbackloop: the `lambda-arrow` dependency group (pyarrow, numpy), trimmed",
            ),
        }[layer]
        created = lambda_.LayerVersion(
            self,
            layer.value,
            code=lambda_.Code.from_asset(str(directory())),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description=description,
        )
        self._layers[layer] = created
        return created


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
        layers: LayerSet,
        reserved_concurrent_executions: int | None = None,
        unscoped_actions: Mapping[str, str] | None = None,
    ) -> None:
        """`unscoped_actions`: actions that support no resource-level permissions, each with why the
        function needs it; they are allowed on '*' and named in the one IAM5[Resource::*] acknowledgement."""
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
            layers=packaging.layers(layers),
            description=description,
            memory_size=memory_size,
            timeout=timeout,
            reserved_concurrent_executions=reserved_concurrent_executions,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role,
            environment={
                # the function's own name on its logs and traces (its metrics name the application: the
                # handlers pass names.SERVICE to Powertools' Metrics themselves)
                "POWERTOOLS_SERVICE_NAME": Function.of_handler(handler).value,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                **environment,
            },
        )
        nag.acknowledge(
            self,
            "L1",
            "python3.12 is pinned on purpose: our dependency layers are built for it (`make lambda-layer`); "
            "moving runtimes moves them all.",
        )
        if unscoped_actions:
            self.role.add_to_policy(iam.PolicyStatement(actions=sorted(unscoped_actions), resources=["*"]))
        nag.acknowledge(self, "IAM5[Resource::*]", _unscoped_reason(unscoped_actions or {}))


def _unscoped_reason(unscoped_actions: Mapping[str, str]) -> str:
    tracing = "X-Ray's PutTraceSegments and PutTelemetryRecords (active tracing)"
    if not unscoped_actions:
        return f"{tracing} support no resource-level permissions; they are the only statement on '*'."
    others = "; ".join(f"{action} ({why})" for action, why in sorted(unscoped_actions.items()))
    return f"{tracing}; {others}: these support no resource-level permissions and are the only actions on '*'."
