"""Measurements for `docs/capacity.md`: training time against interactions, serving memory against catalogue size.

Not a benchmark against a peer (nothing else does this work): each figure is a measurement of our own code,
each in a fresh process so its peak resident memory is its own. The machine is shared (2 cores, other work
running at once): wall-clock figures are inflated and noisy, so training also reports its CPU seconds
(every thread's), the figure that carries over to another machine. `python -m feedbackloop.bench.capacity
--json docs/capacity.json` runs them all and writes the results file the document cites.

- training: the shipped Online Retail invoice lines through the real cleaner and the table jobs' steps
  (`interactions`, `feedback_daily`, `user_daily`, `user_features` on DuckDB), then the training job's
  `train` (`feedbackloop.models.training`, what `sagemaker/train.py` runs) with the local settings
  (`LOCAL_TRAINING`: no tuning, at most 100 trees). At scale s the feedback_daily and user_features rows are
  replicated s times, copy c's user ids suffixed `~c`: s times the users, the same items and days, the same
  per-user behaviour (the cleaner and the table jobs are not rerun at 10x; they are linear in events and
  measured by `feedbackloop bench ingest` and `bench tables`).
- serving memory: a published model of n items in the ranking core's shape (64 float32 factors, the
  item-item neighbours the training job keeps, `NEIGHBORS_KEPT` per item, popularity, trending, two segments,
  item features, 100 re-ranker trees) as a model.tar.gz; a fresh process loads it the way the serving
  function does (`ServingModel.from_archive` on the archive's bytes) and ranks one user; its load time,
  resident memory before and after, its peak, and the arrays' bytes. Baselines, each in its own process on
  the same archive: the load path before the one-pass read (`two-pass`: the archive decompressed twice, the
  arrays read through `np.load`), for the load time; and the in-memory one before that, for the peak.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

TRAINING_SCALES = (1, 10)
CATALOGUE_SIZES = (10_000, 100_000, 1_000_000)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    """This process's peak resident memory since its exec (VmHWM: getrusage's maxrss would count what the
    parent held when it forked)."""
    return _status_mb("VmHWM")


# --- training ------------------------------------------------------------------------------------

def shipped_tables() -> tuple:
    """feedback_daily and the latest user_features snapshot of the shipped data, built as the lake builds them."""
    import pandas as pd

    from feedbackloop.bench.model import built_tables
    from feedbackloop.bench.tables import clean_events
    from feedbackloop.datasets import online_retail
    from feedbackloop.lake import FEEDBACK_DAILY, USER_FEATURES

    frame = online_retail.load()
    arrival = datetime(2011, 12, 10, tzinfo=UTC)  # the day after the data's last invoice
    curated, _ = clean_events(online_retail.to_events(frame), arrival)
    daily, snapshots = built_tables(curated, arrival, ("interactions", "feedback_daily", "user_daily", "user_features"),
                                    (FEEDBACK_DAILY, USER_FEATURES))
    users = snapshots[snapshots["as_of_date"] == snapshots["as_of_date"].max()]
    return pd.DataFrame(daily), pd.DataFrame(users), len(frame)


def cached_tables(folder: Path | None) -> tuple:
    """`shipped_tables`, kept in `folder` (Parquet) when one is given, so each scale does not rebuild them."""
    import pandas as pd

    if folder is None:
        return shipped_tables()
    daily_path, users_path, lines_path = folder / "feedback_daily.parquet", folder / "user_features.parquet", \
        folder / "lines.json"
    if not lines_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        daily, users, lines = shipped_tables()
        daily.to_parquet(daily_path)
        users.to_parquet(users_path)
        lines_path.write_text(json.dumps(lines))
    return pd.read_parquet(daily_path), pd.read_parquet(users_path), json.loads(lines_path.read_text())


def replicated(frame, scale: int):
    import pandas as pd

    if scale == 1:
        return frame
    return pd.concat([frame.assign(user_id=frame["user_id"].astype(str) + f"~{c}") if c else frame
                      for c in range(scale)], ignore_index=True)


def measure_training(scale: int, tables: Path | None = None) -> dict:
    from feedbackloop.local.retrain import LOCAL_TRAINING
    from feedbackloop.models.training import train

    begun = time.perf_counter()
    daily, users, lines = cached_tables(tables)
    prepare_seconds = time.perf_counter() - begun
    daily, users = replicated(daily, scale), replicated(users, scale)
    begun, cpu = time.perf_counter(), time.process_time()
    model = train(daily, users, LOCAL_TRAINING, "capacity")
    seconds, cpu_seconds = time.perf_counter() - begun, time.process_time() - cpu
    return {"scale": scale, "invoice_lines": lines * scale, "feedback_daily_rows": len(daily),
            "users": int(daily["user_id"].nunique()), "items": int(daily["item_id"].nunique()),
            "segments": model.metrics.get("segments", {}).get("k"),
            "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu_seconds, 1),
            "fit_seconds_holdout": round(model.metrics.get("fit_seconds_holdout", float("nan")), 1),
            "prepare_seconds": round(prepare_seconds, 1), "peak_rss_mb": round(_peak_mb()),
            "params": {"tuning_minutes": LOCAL_TRAINING.tuning_minutes, "max_trees": LOCAL_TRAINING.max_trees}}


# --- serving memory ------------------------------------------------------------------------------

def model_archive(items: int, path: Path, seed: int = 0) -> int:
    """A published model of `items` items (see the module's docstring) written to `path`; the arrays' bytes."""
    import numpy as np

    from feedbackloop.bench.serve import FACTORS, model_arrays
    from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
    from feedbackloop.models.pipeline import NEIGHBORS_KEPT
    from feedbackloop.ranking import ARRAY_PREFIX, neighbor_indices

    rng = np.random.default_rng(seed)
    arrays = model_arrays(min(items, 1_000), FACTORS, seed)  # the trees and the scalars; sized arrays below
    kept = min(NEIGHBORS_KEPT, items)
    arrays |= {ARRAY_PREFIX + k: v for k, v in {
        "item_ids": np.array([f"item-{i}" for i in range(items)]),
        "item_factors": rng.normal(0, 0.1, (items, FACTORS)).astype(np.float32),
        # CSR straight away: `kept` neighbours a row, as `pipeline.neighbors_of` publishes them
        "neighbors_indptr": np.arange(0, items * kept + 1, kept, dtype=np.int64),
        "neighbors_indices": neighbor_indices(rng.integers(0, items, items * kept), items),
        "neighbors_data": rng.random(items * kept),
        "popularity": rng.zipf(1.5, items).astype(np.float64), "trending": rng.zipf(1.5, items).astype(np.float64),
        "segment_popularity": rng.random((2, items)),
        "item_features": rng.random((items, arrays[ARRAY_PREFIX + "item_features"].shape[1])),
        # the catalogue's codes (the ranker's category and price-band priors), as the shipped data has them
        "item_category": rng.integers(0, 40, items, dtype=np.int64),
        "item_price_band": rng.integers(0, 5, items, dtype=np.int64),
    }.items()}
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    metrics = json.dumps({"version": f"capacity-{items}", "params": {}}).encode()
    with tarfile.open(path, mode="w:gz", compresslevel=1) as tar:
        for name, data in ((MODEL_FILE, npz.getvalue()), (METRICS_FILE, metrics)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return sum(a.nbytes for a in arrays.values())


def _from_archive_in_memory(archive: bytes):
    """The baseline: the load path before model.npz was spooled to a file (its bytes read into memory,
    the arrays read from those), otherwise `ServingModel.from_archive`."""
    import numpy as np

    from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
    from feedbackloop.serving import ServingModel

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        arrays = np.load(io.BytesIO(tar.extractfile(MODEL_FILE).read()))
        document = json.loads(tar.extractfile(METRICS_FILE).read())
        return ServingModel({name: arrays[name] for name in arrays.files}, document)


def _from_archive_two_pass(archive: bytes):
    """The load-time baseline: `ServingModel.from_archive` before it read the archive in one pass (metrics.json
    and model.npz looked up by name, which decompresses the archive twice; the arrays read by `np.load` from
    the spooled file)."""
    import shutil

    import numpy as np

    from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
    from feedbackloop.serving import ServingModel

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        document = json.loads(tar.extractfile(METRICS_FILE).read())
        with tempfile.TemporaryFile(prefix="model-", suffix=".npz") as spool:
            shutil.copyfileobj(tar.extractfile(MODEL_FILE), spool, 1 << 20)
            spool.seek(0)
            with np.load(spool) as npz:
                arrays = {name: npz[name] for name in npz.files}
    return ServingModel(arrays, document)


# ServingModel.from_archive; the load-time baseline (the load path before it); the memory baseline (before that)
LOAD_PATHS = ("one-pass", "two-pass", "in-memory")


def measure_serving_memory(archive: Path, load_path: str = LOAD_PATHS[0]) -> dict:

    from feedbackloop.online import ProfileItems, UserProfile
    from feedbackloop.serving import ServingModel, recommend

    load = {"one-pass": ServingModel.from_archive, "two-pass": _from_archive_two_pass,
            "in-memory": _from_archive_in_memory}[load_path]
    before = _rss_mb()
    data = archive.read_bytes()
    begun, cpu = time.perf_counter(), time.process_time()
    model = load(data)
    load_seconds, load_cpu_seconds = time.perf_counter() - begun, time.process_time() - cpu
    del data
    loaded, peak_loading = _rss_mb(), _peak_mb()
    now = time.time()
    # a profile as serving reads it from the online store (a document: no pyarrow, as in the function)
    item_ids = list(model.item_index)[:50]
    n = len(item_ids)
    profile = UserProfile("u", ProfileItems(item_ids, [1.0] * n, [1.0] * n, [now - 3600] * n, [None] * n,
                                            ["purchase"] * n, [now - 3600] * n), now)
    begun = time.perf_counter()
    recommend(model, "u", profile, now)
    first_ms = (time.perf_counter() - begun) * 1000
    return {"rss_before_mb": round(before), "rss_loaded_mb": round(loaded), "model_mb": round(loaded - before),
            "peak_rss_loading_mb": round(peak_loading), "peak_rss_mb": round(_peak_mb()),
            "load_seconds": round(load_seconds, 2), "load_cpu_seconds": round(load_cpu_seconds, 2),
            "first_request_ms": round(first_ms, 1),
            "archive_mb": round(archive.stat().st_size / 2**20), "load_path": load_path}


# --- the run -------------------------------------------------------------------------------------

def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "feedbackloop.bench.capacity", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="docs/capacity.json")
    parser.add_argument("--training-scale", type=int, help="(one measurement, in this process)")
    parser.add_argument("--serving-archive", help="(one measurement, in this process)")
    parser.add_argument("--load-path", choices=LOAD_PATHS, default=LOAD_PATHS[0], help="(with --serving-archive)")
    parser.add_argument("--tables", help="a folder to keep the shipped data's feedback_daily and user_features in "
                                         "between the scales (built on first use)")
    parser.add_argument("--scales", default=",".join(map(str, TRAINING_SCALES)))
    parser.add_argument("--items", default=",".join(map(str, CATALOGUE_SIZES)))
    args = parser.parse_args(argv)
    if args.training_scale:
        print(json.dumps(measure_training(args.training_scale, Path(args.tables) if args.tables else None)))
        return 0
    if args.serving_archive:
        print(json.dumps(measure_serving_memory(Path(args.serving_archive), args.load_path)))
        return 0
    results: dict = {"machine": "2 shared cores, 23 GB, other agents working at once: timings are noisy",
                     "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "training": [], "serving": []}
    tables = ("--tables", args.tables) if args.tables else ()
    for scale in (int(s) for s in args.scales.split(",") if s):
        results["training"].append(_child("--training-scale", str(scale), *tables))
        print(json.dumps(results["training"][-1]), flush=True)
    for items in (int(n) for n in args.items.split(",") if n):
        with tempfile.TemporaryDirectory(prefix="feedbackloop-capacity-") as folder:
            archive = Path(folder) / "model.tar.gz"
            array_bytes = model_archive(items, archive)
            figures = {"items": items, "array_mb": round(array_bytes / 2**20)} | _child("--serving-archive",
                                                                                       str(archive))
            # the baselines, each in its own process (a peak is a process's): the load path before this one
            # (load time), and the in-memory one before that (memory)
            for name in LOAD_PATHS[1:]:
                figures[f"baseline_{name.replace('-', '_')}"] = _child("--serving-archive", str(archive),
                                                                       "--load-path", name)
            before, in_memory = figures["baseline_two_pass"], figures["baseline_in_memory"]
            figures["load_ratio_to_two_pass"] = round(figures["load_seconds"] / before["load_seconds"], 2)
            figures["load_cpu_ratio_to_two_pass"] = round(figures["load_cpu_seconds"] / before["load_cpu_seconds"], 2)
            figures["peak_ratio_to_baseline"] = round(figures["peak_rss_loading_mb"]
                                                      / in_memory["peak_rss_loading_mb"], 2)
        results["serving"].append(figures)
        print(f"{items:>9,} items: load {figures['load_seconds']} s, {figures['load_cpu_seconds']} CPU s (the "
              f"two-pass load before: {before['load_seconds']} s, {before['load_cpu_seconds']} CPU s, "
              f"x{figures['load_ratio_to_two_pass']}), peak while loading "
              f"{figures['peak_rss_loading_mb']:,} MiB (two-pass {before['peak_rss_loading_mb']:,}, in-memory "
              f"{in_memory['peak_rss_loading_mb']:,} MiB, x{figures['peak_ratio_to_baseline']}), loaded "
              f"{figures['rss_loaded_mb']:,} MiB", flush=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
