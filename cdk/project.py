"""Where the app finds what it packages: the project root, the Lambda code and the dependency layers, and
the training scripts with the source bundle built from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class LambdaLayerMissingError(FileNotFoundError):
    """One of the project's Lambda dependency layers has not been built."""


@dataclass(frozen=True)
class ProjectLayout:
    """Paths of one checkout. `root` is where cdk.json lives (the CDK CLI runs the app from there)."""

    root: Path

    @property
    def lambda_layer_dir(self) -> Path:
        # `make lambda-layer` installs the `lambda` dependency group here, for the Lambda platform.
        return self.root / "build" / "lambda-layer"

    @property
    def lambda_drift_layer_dir(self) -> Path:
        # `make lambda-layer` also installs the `lambda-drift` group (river, scipy, numpy) here: the adjust
        # function's layer in place of the AWS SDK for pandas one.
        return self.root / "build" / "lambda-drift-layer"

    @property
    def lambda_serving_layer_dir(self) -> Path:
        # `make lambda-layer` also installs the `lambda-serving` group (numpy) here: the serving function's
        # layer in place of the AWS SDK for pandas one.
        return self.root / "build" / "lambda-serving-layer"

    @property
    def lambda_arrow_layer_dir(self) -> Path:
        # `make lambda-layer` also installs the `lambda-arrow` group (pyarrow, numpy; trimmed by
        # cdk/layer_trim.py) here: the cleaner's and the eraser's layer.
        return self.root / "build" / "lambda-arrow-layer"

    @property
    def sagemaker_dir(self) -> Path:
        """The training entry point and its requirements (a folder, not a package: see DESIGN.md)."""
        return self.root / "sagemaker"

    @property
    def core_package_dir(self) -> Path:
        return self.root / "feedbackloop"

    @property
    def sagemaker_source_bundle(self) -> Path:
        # Built at synth (SageMaker script mode wants a tar.gz, CDK folder assets are zips).
        return self.root / "build" / "sagemaker" / "sourcedir.tar.gz"

    def require_lambda_layer(self) -> Path:
        layer = self.lambda_layer_dir
        if not (layer / "python").is_dir():
            raise LambdaLayerMissingError(
                f"the Lambda dependency layer {layer}/python does not exist: run `make lambda-layer` first"
            )
        return layer

    def require_lambda_drift_layer(self) -> Path:
        layer = self.lambda_drift_layer_dir
        if not (layer / "python").is_dir():
            raise LambdaLayerMissingError(
                f"the Lambda drift layer {layer}/python does not exist: run `make lambda-layer` first"
            )
        return layer

    def require_lambda_serving_layer(self) -> Path:
        layer = self.lambda_serving_layer_dir
        if not (layer / "python").is_dir():
            raise LambdaLayerMissingError(
                f"the Lambda serving layer {layer}/python does not exist: run `make lambda-layer` first"
            )
        return layer

    def require_lambda_arrow_layer(self) -> Path:
        layer = self.lambda_arrow_layer_dir
        if not (layer / "python").is_dir():
            raise LambdaLayerMissingError(
                f"the Lambda arrow layer {layer}/python does not exist: run `make lambda-layer` first"
            )
        return layer

    def cdk_context(self) -> dict[str, Any]:
        """The context of cdk.json (feature flags). The CDK CLI passes it to the app; reading it here
        too gives `python -m cdk.app` and the tests the same flags, hence the same templates."""
        return dict(self._cdk_json().get("context", {}))

    @property
    def cdk_output_dir(self) -> Path:
        """Where `cdk synth` writes the cloud assembly (cdk.json "output")."""
        return self.root / self._cdk_json().get("output", "cdk.out")

    def _cdk_json(self) -> dict[str, Any]:
        return json.loads((self.root / "cdk.json").read_text("utf-8"))
