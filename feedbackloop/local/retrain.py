"""The retraining workflow on the embedded stand-in: the state machine's steps, in its order, in process.

BuildTables runs the table jobs on DuckDB; Train runs `sagemaker/train.py` as a process with the SM_*
contract on the channels SageMaker would download, and uploads model.tar.gz where SageMaker puts it;
Evaluate, Gate and Publish call the same functions as the workflow's Lambdas, against the local S3 and
DynamoDB.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from pyarrow import fs

from feedbackloop import retraining
from feedbackloop.adapters.aws import DynamoModelRegistry, S3Artifacts
from feedbackloop.lake import TRAINING_CHANNELS
from feedbackloop.local.environment import physical_name
from feedbackloop.local.lake_reader import LakeLocation
from feedbackloop.local.sql_engine import local_engine
from feedbackloop.models.contract import HALF_LIFE_DAYS
from feedbackloop.models.training import TrainingParams
from feedbackloop.resources import CANDIDATES_PREFIX, MODELS_BUCKET, PUBLISHED_PREFIX, REGISTRY_TABLE
from glue_jobs.build_tables import JOB_NAMES, run_job

# The local stand-in's training budget: the defaults and one random draw per source (the nightly job in
# AWS takes TrainingParams' tuning_minutes), so a retraining in the demo takes seconds, not minutes.
LOCAL_TRAINING = TrainingParams(tuning_minutes=0.0, max_trees=100)
# `make demo`'s budget, smaller again: a retraining runs five times in the demo, each on the same 2 cores
# as the whole loop (the model it trains is scored on its hold-out table all the same)
DEMO_TRAINING = replace(LOCAL_TRAINING, candidates=20)


def describe(params: TrainingParams) -> str:
    """The training budget in a line, for the output of the runs that use it."""
    return (f"{params.tuning_minutes:g} minutes of tuning, {params.candidates} candidates per source, "
            f"{params.label_windows} label window{'s' if params.label_windows != 1 else ''}, at most "
            f"{params.max_trees} trees")

TRAINING_SCRIPT = Path("sagemaker/train.py")  # relative to the project root, where the CLI runs


class TrainingFailedError(RuntimeError):
    """The training process exited with an error (SageMaker would mark the job Failed)."""


@dataclass
class RetrainingRun:
    version: str
    steps: list[str] = field(default_factory=list)  # the states taken, in order
    evaluation: dict[str, Any] | None = None
    published: dict[str, Any] | None = None
    alert: str | None = None


def run_retraining(endpoint: str, session: boto3.Session, params: TrainingParams, margin: float,
                   version: str | None = None, say: Callable[[str], None] = print,
                   script: Path = TRAINING_SCRIPT) -> RetrainingRun:
    run = RetrainingRun(version or datetime.now(UTC).strftime("local-%Y%m%dT%H%M%S%fZ"))
    models = physical_name(MODELS_BUCKET.key)
    registry = DynamoModelRegistry(session, physical_name(REGISTRY_TABLE.key))
    artifacts = S3Artifacts(session)
    candidate_url = f"s3://{models}/{CANDIDATES_PREFIX}{run.version}/output/{retraining.MODEL_ARCHIVE}"

    def build_tables() -> None:
        engine = local_engine(endpoint, session)
        for name in JOB_NAMES:
            built = run_job(name, engine, settle=timedelta(0), half_life_days=HALF_LIFE_DAYS)
            say(f"    {name}: " + ", ".join(f"{r.table} {r.rows:,} rows" if not r.skipped else
                                             f"{r.table} {r.skipped}" for r in built))

    def train() -> None:
        if not script.is_file():
            raise TrainingFailedError(f"no training script at {script.resolve()}: run from the project root")
        with tempfile.TemporaryDirectory(prefix="feedbackloop-train-") as folder:
            channels = _download_channels(endpoint, Path(folder))
            published = registry.current()
            if published is not None:  # the Train step's `current` channel: scored on the same hold-out
                channels["current"] = Path(folder) / "current"
                channels["current"].mkdir()
                (channels["current"] / retraining.MODEL_ARCHIVE).write_bytes(artifacts.read(published["artifact"]))
            model_dir = Path(folder) / "model"
            # one thread each: on the stand-in the training shares its machine with the whole loop, where
            # OpenMP's idle threads spin (LightGBM, k-means) and burn CPU the rest of the loop needs
            environ = os.environ | {"SM_MODEL_DIR": str(model_dir), "OPENBLAS_NUM_THREADS": "1",
                                    "OMP_NUM_THREADS": "1",
                                    **{f"SM_CHANNEL_{k.upper()}": str(v) for k, v in channels.items()}}
            arguments = [f"--{k}={v}" for k, v in asdict(params).items()] + [f"--version={run.version}"]
            result = subprocess.run([sys.executable, str(script), *arguments], env=environ, capture_output=True,
                                    text=True, check=False)
            if result.returncode:
                raise TrainingFailedError(f"training exited with {result.returncode}: {result.stderr[-2000:]}")
            bucket, key = candidate_url.removeprefix("s3://").split("/", 1)
            session.client("s3").put_object(Bucket=bucket, Key=key, Body=_tar_gz(model_dir))
        say(f"    candidate {run.version} -> {candidate_url}")

    def evaluate() -> None:
        run.evaluation = retraining.evaluate(candidate_url, artifacts, registry, margin)

    def gate() -> None:
        decision = run.evaluation["decision"]
        say(f"    {'publish' if decision['publish'] else 'keep the current model'}: {decision['reason']}")

    def publish() -> None:
        run.published = retraining.publish(run.evaluation, artifacts, registry, f"s3://{models}/{PUBLISHED_PREFIX}")
        say(f"    published {run.published['version']} -> {run.published['artifact']}")

    steps = {retraining.BUILD_TABLES: build_tables, retraining.TRAIN: train, retraining.EVALUATE: evaluate,
             retraining.GATE: gate, retraining.PUBLISH: publish}
    assert tuple(steps) == retraining.STEPS, "the local runner must follow the state machine's steps"
    for name, step in steps.items():
        if name == retraining.PUBLISH and not run.evaluation["decision"]["publish"]:
            run.alert = run.evaluation["decision"]["reason"]
            say(f"  {retraining.KEPT_CURRENT} (alert raised: {run.alert})")
            run.steps.append(retraining.KEPT_CURRENT)
            break
        say(f"  {name}")
        step()
        run.steps.append(name)
    return run


def _download_channels(endpoint: str, folder: Path) -> dict[str, Path]:
    """What SageMaker's File mode does: copy each channel's S3 prefix to local disk."""
    location = LakeLocation.local_s3(endpoint)
    paths = {}
    for name, table in TRAINING_CHANNELS.items():
        target = folder / name
        target.mkdir(parents=True)
        source = location.folder(table)
        if location.filesystem.get_file_info(source).type != fs.FileType.NotFound:
            fs.copy_files(source, str(target), source_filesystem=location.filesystem,
                          destination_filesystem=fs.LocalFileSystem())
        paths[name] = target
    return paths


def _tar_gz(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()
