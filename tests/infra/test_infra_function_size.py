"""Every function's unzipped size, and its handler's imports against exactly its layers, from the synthesized
templates: our code and our layers measured from the cloud assembly's assets (the build output `make
lambda-layer` wrote), the AWS-managed layers' sizes (the AppConfig extension's) from the one table that pins
them with their versions (`cdk.components.function.MANAGED_LAYER_SIZES`). Every function must stay within
the 200 MiB budget."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdk.components.function import MANAGED_LAYER_SIZES, MIB, Layer
from cdk.components.ui_config import EXTENSION_VERSION
from cdk.layer_trim import trimmed

pytestmark = pytest.mark.infra

APPCONFIG_EXTENSION = "appconfig-extension"
# Lambda's limit on a function's code and layers together, unzipped: 262,144,000 bytes (250 MiB).
LAMBDA_UNZIPPED_LIMIT = 250 * MIB
# Ours: room under Lambda's limit for a dependency or a managed layer to grow without a failed deployment.
SIZE_BUDGET = 200 * MIB
# What Lambda's python3.12 runtime provides: boto3 and its dependencies (our layer leaves them out).
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
HEAVY = ("pandas", "pyarrow", "awswrangler")
# what a function with the arrow layer may load of them
ARROW = ("pyarrow",)


@dataclass(frozen=True)
class Function:
    stack: str
    logical_id: str
    handler: str
    layers: tuple[Layer | str, ...]
    code: Path
    own_layers: dict[Layer, Path]  # our layers' assets (their python/ folders inside)

    @property
    def module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    def unzipped_bytes(self) -> int:
        managed = sum(MANAGED_LAYER_SIZES[layer].unzipped_bytes for layer in self.layers
                      if layer in MANAGED_LAYER_SIZES)
        return _size(self.code) + managed + sum(_size(path) for path in self.own_layers.values())


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _top_level(layer: Path) -> set[str]:
    """The importable top-level names a layer's python/ folder holds (packages and single-file modules)."""
    return {p.name for p in (layer / "python").iterdir()
            if not p.name.startswith(".") and not p.name.endswith((".dist-info", ".libs"))
            and p.name not in {"bin", "__pycache__"}}


def _layer_of(entry: dict[str, Any], template: dict[str, Any]) -> Layer | str:
    if "Fn::FindInMap" in entry:
        return APPCONFIG_EXTENSION
    reference = entry["Ref"]
    assert reference not in template.get("Parameters", {}), f"a layer from a parameter (a managed one): {reference}"
    (layer,) = [layer for layer in Layer if layer.value in reference]
    return layer


def _asset(synthesis, resource: dict[str, Any]) -> Path:
    """The folder a function's code or a layer's content was zipped from: the assembly's asset.<hash>."""
    properties = resource["Properties"]
    key = (properties.get("Code") or properties["Content"])["S3Key"]
    key = key if isinstance(key, str) else key["Fn::Join"][1][-1]
    folder = synthesis.outdir / f"asset.{key.rsplit('/', 1)[-1].removesuffix('.zip')}"
    assert folder.is_dir(), folder
    return folder


@pytest.fixture(scope="module")
def functions(synthesis) -> list[Function]:
    found = []
    for path in sorted(synthesis.outdir.glob("*.template.json")):
        stack = path.name.removesuffix(".template.json")
        template = synthesis.template_json(stack)
        resources = template.get("Resources", {})
        for logical_id, resource in resources.items():
            properties = resource.get("Properties", {})
            if resource["Type"] != "AWS::Lambda::Function" or not str(properties.get("Handler", "")).startswith(
                    "lambdas."):
                continue
            layers = tuple(_layer_of(entry, template) for entry in properties.get("Layers", []))
            own = {layer: _asset(synthesis, resources[entry["Ref"]])
                   for layer, entry in zip(layers, properties.get("Layers", []), strict=True)
                   if isinstance(layer, Layer) and layer not in MANAGED_LAYER_SIZES}
            found.append(Function(stack, logical_id, properties["Handler"], layers, _asset(synthesis, resource), own))
    return found


def test_every_handler_is_found(functions):
    assert {f.module for f in functions} == {"lambdas.ingest.handler", "lambdas.cleaner.handler",
                                             "lambdas.serving.handler", "lambdas.eraser.handler",
                                             "lambdas.retrain.handler", "lambdas.adjust.handler"}


def test_the_managed_layers_pinned_are_the_ones_deployed():
    """A pinned size is for one version: moving a version fails here until its size is measured and re-pinned."""
    assert set(MANAGED_LAYER_SIZES) == {APPCONFIG_EXTENSION}
    assert MANAGED_LAYER_SIZES[APPCONFIG_EXTENSION].version == EXTENSION_VERSION
    assert all(size.source and size.unzipped_bytes > 0 for size in MANAGED_LAYER_SIZES.values())


def test_every_function_fits_lambdas_limit_and_reports_its_size(functions, capsys):
    with capsys.disabled():
        print()
        for f in sorted(functions, key=lambda f: -f.unzipped_bytes()):
            layers = ", ".join(str(layer.value if isinstance(layer, Layer) else layer) for layer in f.layers)
            print(f"  {f.unzipped_bytes() / MIB:6.1f} MiB  {f.handler}  ({layers})")
    for f in functions:
        assert f.unzipped_bytes() < LAMBDA_UNZIPPED_LIMIT, f"{f.handler}: {f.unzipped_bytes() / MIB:.0f} MiB"


MODULES = ["lambdas.serving.handler", "lambdas.adjust.handler", "lambdas.ingest.handler", "lambdas.cleaner.handler",
           "lambdas.eraser.handler", "lambdas.retrain.handler"]


@pytest.mark.parametrize("module", MODULES)
def test_a_function_stays_within_the_200_mib_budget(functions, module):
    found = [f for f in functions if f.module == module]
    assert found
    for f in found:
        assert f.unzipped_bytes() <= SIZE_BUDGET, f"{f.handler}: {f.unzipped_bytes() / MIB:.0f} MiB"


def test_serving_carries_numpy_only(functions):
    (serving,) = [f for f in functions if f.module == "lambdas.serving.handler"]
    assert serving.layers == (Layer.DEPENDENCIES, Layer.NUMPY, APPCONFIG_EXTENSION)
    assert _top_level(serving.own_layers[Layer.NUMPY]) == {"numpy"}


@pytest.mark.parametrize("module", ["lambdas.ingest.handler", "lambdas.retrain.handler"])
def test_ingest_and_the_workflow_steps_carry_numpy_only(functions, module):
    """The schema's checks and timestamps (ingest), a model archive's metrics and the registry (Evaluate,
    Publish) need neither pandas nor pyarrow: the numpy layer, as serving has."""
    found = [f for f in functions if f.module == module]
    assert found
    assert all(f.layers == (Layer.DEPENDENCIES, Layer.NUMPY) for f in found)


@pytest.mark.parametrize("module", ["lambdas.cleaner.handler", "lambdas.eraser.handler"])
def test_the_cleaner_and_the_eraser_carry_the_trimmed_arrow_layer(functions, module):
    (function,) = [f for f in functions if f.module == module]
    assert function.layers == (Layer.DEPENDENCIES, Layer.ARROW)
    layer = function.own_layers[Layer.ARROW]
    assert _top_level(layer) == {"numpy", "pyarrow"}
    assert not trimmed(layer / "python" / "pyarrow"), "cdk/layer_trim.py did not run on the layer"


_SONAME = re.compile(rb"lib(?:arrow|parquet)[a-z_]*\.so\.[0-9]+")


def test_every_library_the_arrow_layer_loads_is_in_it(functions):
    """Each shared object left in the trimmed pyarrow names the Arrow libraries it needs (their sonames, in
    its dynamic string table); every one must be there. Over-reading a name only makes this stricter."""
    (cleaner,) = [f for f in functions if f.module == "lambdas.cleaner.handler"]
    package = cleaner.own_layers[Layer.ARROW] / "python" / "pyarrow"
    objects = [p for p in package.iterdir() if ".so" in p.name]
    present = {p.name for p in objects}
    needed = {name.decode() for p in objects for name in _SONAME.findall(p.read_bytes())}
    assert any(n.startswith("libarrow.so.") for n in needed) and any(n.startswith("libparquet.so.") for n in needed)
    assert needed <= present, sorted(needed - present)


def _probe_site(function: Function, tmp_path: Path) -> list[str]:
    """Import paths holding what Lambda gives the function: its code asset, and the runtime's and its layers'
    top-level packages taken from this venv (the layers are built for Python 3.12); pyarrow less what
    cdk/layer_trim.py leaves out of the arrow layer."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    site = tmp_path / function.logical_id
    site.mkdir()
    names = set(RUNTIME_PACKAGES)
    for path in function.own_layers.values():
        names |= _top_level(path)
    for name in sorted(names):
        if name == "pyarrow":
            (site / name).mkdir()
            left_out = set(trimmed(purelib / name))
            for entry in sorted((purelib / name).iterdir()):
                if entry not in left_out:
                    (site / name / entry.name).symlink_to(entry)
        else:
            (site / name).symlink_to(purelib / name)
    return [str(function.code), str(site)]


PROBE = (
    "import json, sys; sys.path[:0] = sys.argv[1:]\n"
    "import importlib; importlib.import_module({module!r})\n"
    "{work}\n"
    "print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))\n"
)
# After the import, the work of a function that once imported pandas only when it ran: the exact timestamp
# path (ingest; the cleaner's column fallback) and the gate's off-policy refusal (Evaluate)
WORK = {
    "lambdas.ingest.handler": (
        "from feedbackloop.schemas.registry import parse_instant\n"
        "assert parse_instant('1500-06-01T12:00:00.5Z') and parse_instant('2026-02-30T00:00:00Z') is None"),
    "lambdas.retrain.handler": (
        "from feedbackloop.retraining import decide\n"
        "dr = lambda v: {'dr': {'value': v}}\n"
        "off = {'rounds': 9, 'estimator': 'dr', 'candidate': dr(0.1), 'current': dr(0.2)}\n"
        "assert not decide({'ranking': {'model': {'ndcg_at_10': 0.3}}, 'off_policy': off}, None, 0.05).publish"),
    # a batch whose timestamp column Arrow cannot cast (the per-string fallback), then written as Parquet
    "lambdas.cleaner.handler": (
        "import json; from datetime import UTC, datetime; import pyarrow as pa, pyarrow.parquet as pq\n"
        "from feedbackloop.cleaning.decode import SourceRecord, decode_batch\n"
        "event = lambda i, t: {'event_id': f'e{i}', 'user_id': 'u', 'item_id': 'i', 'event_type': 'click',"
        " 'timestamp': t, 'schema_version': '1.2', 'context': {}}\n"
        "line = lambda i, t: (json.dumps({'received_at': '2026-12-07T10:00:00+00:00', 'event': event(i, t)},"
        " separators=(',', ':')) + '\\n').encode()\n"
        "times = ['2026-12-07T09:00:00Z', '1500-01-01T00:00:00.5Z', '2026-02-30T00:00:00Z']\n"
        "batch = decode_batch([SourceRecord(line(i, t), f's:{i}', datetime.now(UTC)) for i, t in enumerate(times)])\n"
        "assert (batch.valid.num_rows, len(batch.rejected), batch.fast_rows) == (2, 1, 1)\n"
        "pq.write_table(batch.valid, pa.BufferOutputStream(), compression='snappy')"),
    # an erasure pass over a (local) lake, and the S3 file system it takes in Lambda
    "lambdas.eraser.handler": (
        "import tempfile; from pyarrow import fs; from feedbackloop.lake_erasure import erase_users\n"
        "from feedbackloop.wiring import lake_filesystem\n"
        "folder = tempfile.mkdtemp(); assert set(erase_users(fs.LocalFileSystem(), lambda t: folder, folder, ['u']))"
        " == {'u'}\n"
        "assert isinstance(lake_filesystem({'AWS_REGION': 'us-east-1'}), fs.S3FileSystem)"),
}


@pytest.mark.parametrize("module", MODULES)
def test_a_handler_imports_with_exactly_its_layers(functions, module, tmp_path):
    """Imported with -S (no site processing: the editable install is off the path) from only what Lambda gives
    the function, the handler loads and does its work; none of pandas or awswrangler is loaded, nor pyarrow
    without the arrow layer; and each of our layers gives the handler at least one package it imports (none
    is dead weight)."""
    function = next(f for f in functions if f.module == module)
    result = subprocess.run([sys.executable, "-S", "-B", "-c", PROBE.format(module=module, work=WORK.get(module, "")),
                             *_probe_site(function, tmp_path)], capture_output=True, text=True, timeout=180,
                            env={"POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"})
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = set(__import__("json").loads(result.stdout.strip().splitlines()[-1]))
    allowed = set(ARROW) if Layer.ARROW in function.layers else set()
    assert not loaded & (set(HEAVY) - allowed), sorted(loaded & set(HEAVY))
    for layer, path in function.own_layers.items():
        used = {name.removesuffix(".py") for name in _top_level(path)} & loaded
        assert used, f"{module}: nothing imported from {layer.value}"
