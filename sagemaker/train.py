"""SageMaker script-mode training entry point: the feedback models of one version.

Runs unchanged in SageMaker's scikit-learn container (its source bundle carries the `feedbackloop`
package and requirements.txt) and locally as a process with the same SM_* environment.

Channels: `feedback` (the feedback_daily table, Parquet by event_date) and, optional, `users` (the
user_features table; the latest snapshot is used). Output in SM_MODEL_DIR: model.npz and metrics.json.
Hyperparameters arrive as arguments (SageMaker passes them as `--name value`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from feedbackloop.models.training import TrainingParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for spec in fields(TrainingParams):
        parser.add_argument(f"--{spec.name}", type=type(spec.default), default=spec.default)
    parser.add_argument("--version", default=None, help="the model version (default: a UTC timestamp)")
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--feedback", default=os.environ.get("SM_CHANNEL_FEEDBACK"))
    parser.add_argument("--users", default=os.environ.get("SM_CHANNEL_USERS"))
    parser.add_argument("--current", default=os.environ.get("SM_CHANNEL_CURRENT"),
                        help="the published model's folder (its model.tar.gz), scored on the same hold-out")
    args, _ = parser.parse_known_args(argv)
    if not args.feedback:
        parser.error("no feedback channel (SM_CHANNEL_FEEDBACK or --feedback)")
    return args


def read_table(folder: str, partition: str):
    """A Parquet table laid out by hive partitions, with its partition column."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    dataset = ds.dataset(folder, format="parquet",
                         partitioning=ds.partitioning(pa.schema([(partition, pa.string())]), flavor="hive"))
    return dataset.to_table().to_pandas()


def main(argv: list[str] | None = None) -> int:
    from feedbackloop.models.training import TrainingParams, save, train

    args = parse_args(argv)
    params = TrainingParams(**{f.name: getattr(args, f.name) for f in fields(TrainingParams)})
    daily = read_table(args.feedback, "event_date")
    users = None
    if args.users and Path(args.users).exists() and any(Path(args.users).rglob("*.parquet")):
        snapshots = read_table(args.users, "as_of_date")
        users = snapshots[snapshots["as_of_date"] == snapshots["as_of_date"].max()]
    version = args.version or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    archives = sorted(Path(args.current).rglob("*.tar.gz")) if args.current and Path(args.current).exists() else []
    model = train(daily, users, params, version, current=archives[0].read_bytes() if archives else None)
    save(model, Path(args.model_dir))
    # one line per number, in the shape SageMaker's metric definitions match: `name=value;`
    for scope, values in model.metrics.get("ranking", {}).items():
        for name, value in values.items():
            print(f"{scope}_{name}={value};")
    print(json.dumps({"version": version, "data": model.data}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
