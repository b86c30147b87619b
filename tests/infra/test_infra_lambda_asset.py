"""The Lambda code asset holds every module the handlers import from the project: imported from the
asset alone (plus the dependency layer and the packages the runtime and managed layers provide), the
handlers load, and nothing of the local stand-in, the benchmarks or the dataset ships."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def code_asset(synthesis) -> Path:
    (asset,) = [p for p in synthesis.outdir.glob("asset.*") if (p / "lambdas").is_dir()]
    return asset


def test_the_handlers_import_from_the_asset(code_asset):
    # -S: no site-packages processing, so the project's editable install is not on the path; the
    # third-party packages come from the venv, as the runtime and the layers provide them in Lambda
    # (the dependency layer itself is built for Python 3.12 and checked below)
    probe = (
        "import sys; sys.path[:0] = sys.argv[1:]\n"
        "import feedbackloop, lambdas.ingest.handler, lambdas.cleaner.handler, lambdas.retrain.handler\n"
        "import lambdas.serving.handler, lambdas.eraser.handler\n"
        "print(feedbackloop.__file__)\n"
    )
    paths = [str(code_asset), sysconfig.get_paths()["purelib"]]
    result = subprocess.run([sys.executable, "-S", "-c", probe, *paths], capture_output=True, text=True,
                            env={"POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(code_asset))


def test_the_dependency_layer_holds_the_lambda_group(layout):
    """What the handlers import beyond the runtime, Powertools and SDK for pandas layers."""
    installed = {p.name for p in (layout.lambda_layer_dir / "python").iterdir()}
    assert {"fastjsonschema", "pybase64", "pydantic", "pydantic_core"} <= installed
    assert any(p.name.endswith("cpython-312-x86_64-linux-gnu.so")
               for p in (layout.lambda_layer_dir / "python" / "pydantic_core").iterdir())
    # the managed SDK for pandas layer brings numpy, pandas and pyarrow; training libraries stay out,
    # or the layers together pass Lambda's 250 MB unzipped limit
    assert not installed & {"numpy", "pandas", "pyarrow", "scipy", "sklearn", "implicit", "sqlglot"}
    size = sum(p.stat().st_size for p in layout.lambda_layer_dir.rglob("*") if p.is_file())
    assert size < 30_000_000, f"dependency layer is {size / 1e6:.0f} MB"


def test_only_what_lambda_runs_is_shipped(code_asset):
    shipped = {p.relative_to(code_asset).parts[0] for p in code_asset.iterdir()}
    assert shipped == {"feedbackloop", "lambdas"}
    for left_out in ("datasets", "local", "bench"):
        assert not (code_asset / "feedbackloop" / left_out).exists()
    assert sum(p.stat().st_size for p in code_asset.rglob("*") if p.is_file()) < 1_000_000
