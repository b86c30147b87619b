"""The Lambda code asset holds every module the handlers import from the project: imported from the
asset alone (plus the dependency layer and the packages the runtime and managed layers provide), the
handlers load, and nothing of the local stand-in, the benchmarks or the dataset ships. Each function's size
and its imports against exactly its layers: test_infra_function_size.py."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra

def _top_level(layer: Path) -> set[str]:
    """The importable top-level names a layer's python/ folder holds (packages and single-file modules)."""
    return {p.name for p in (layer / "python").iterdir()
            if not p.name.startswith(".")  # uv's .lock
            and not p.name.endswith((".dist-info", ".libs")) and p.name not in {"bin", "__pycache__"}}


@pytest.fixture(scope="module")
def code_asset(synthesis) -> Path:
    (asset,) = [p for p in synthesis.outdir.glob("asset.*") if (p / "lambdas").is_dir()]
    return asset


def test_the_handlers_import_from_the_asset(code_asset):
    # -B: no bytecode written into the asset (its size is checked below); -S: no site-packages
    # processing, so the project's editable install is not on the path; the third-party packages come
    # from the venv, as the runtime and the layers provide them in Lambda
    # (the dependency layer itself is built for Python 3.12 and checked below)
    probe = (
        "import sys; sys.path[:0] = sys.argv[1:]\n"
        "import feedbackloop, lambdas.ingest.handler, lambdas.cleaner.handler, lambdas.retrain.handler\n"
        "import lambdas.serving.handler, lambdas.eraser.handler\n"
        "print(feedbackloop.__file__)\n"
    )
    paths = [str(code_asset), sysconfig.get_paths()["purelib"]]
    result = subprocess.run([sys.executable, "-S", "-B", "-c", probe, *paths], capture_output=True, text=True,
                            env={"POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(code_asset))


def test_the_dependency_layer_holds_the_lambda_group(layout):
    """What every handler imports beyond the runtime and its numpy, arrow or drift layer, Powertools
    included; not the AWS SDK, which the runtime provides."""
    installed = {p.name for p in (layout.lambda_layer_dir / "python").iterdir()}
    assert {"aws_lambda_powertools", "aws_xray_sdk", "fastjsonschema", "pybase64", "pydantic", "pydantic_core"
            } <= installed
    assert not installed & {"boto3", "botocore", "s3transfer", "urllib3"}
    assert any(p.name.endswith("cpython-312-x86_64-linux-gnu.so")
               for p in (layout.lambda_layer_dir / "python" / "pydantic_core").iterdir())
    # numpy and pyarrow come in the functions' own layers; training libraries stay out, or the layers
    # together pass the 200 MiB budget
    assert not installed & {"numpy", "pandas", "pyarrow", "scipy", "sklearn", "implicit", "sqlglot"}
    size = sum(p.stat().st_size for p in layout.lambda_layer_dir.rglob("*") if p.is_file())
    assert size < 30_000_000, f"dependency layer is {size / 1e6:.0f} MB"


def test_the_drift_layer_holds_the_lambda_drift_group_for_lambdas_platform(layout):
    layer = layout.lambda_drift_layer_dir / "python"
    installed = _top_level(layout.lambda_drift_layer_dir)
    assert {"river", "scipy", "numpy", "narwhals"} <= installed
    assert any(p.name.endswith("cpython-312-x86_64-linux-gnu.so") for p in (layer / "numpy" / "_core").iterdir())
    # the adjust function ships no pandas, pyarrow or awswrangler
    assert not installed & {"pandas", "pyarrow", "awswrangler", "sklearn"}
    # our two layers share no package, so their relative order cannot change what is imported
    assert not installed & _top_level(layout.lambda_layer_dir)


def test_only_what_lambda_runs_is_shipped(code_asset):
    shipped = {p.relative_to(code_asset).parts[0] for p in code_asset.iterdir()}
    assert shipped == {"feedbackloop", "lambdas"}
    for left_out in ("datasets", "local", "bench"):
        assert not (code_asset / "feedbackloop" / left_out).exists()
    assert sum(p.stat().st_size for p in code_asset.rglob("*") if p.is_file()) < 1_000_000
