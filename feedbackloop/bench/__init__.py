"""`feedbackloop bench NAME --json FILE`: each benchmark runs its baseline in the same process, prints
a table and writes JSON of one shape: {"benchmarks": [{"name", "unit", "value", "baseline":
{"name", "value"}, "ratio", "better"}], ...}."""

from __future__ import annotations

import json
import os
import platform
import resource
from pathlib import Path
from typing import TextIO


def machine() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "system": platform.system()}


def write_results(path: str, benchmarks: list[dict], console: TextIO, **extra) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    document = {"benchmarks": benchmarks, "peak_memory_mb": round(peak_mb, 1), "machine": machine(), **extra}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2))
    width = max(len(b["name"]) for b in benchmarks)
    console.write(f"{'benchmark':<{width}}  {'value':>12}  {'baseline':>12}  {'ratio':>7}  unit\n")
    for b in benchmarks:
        console.write(f"{b['name']:<{width}}  {_number(b['value']):>12}  {_number(b['baseline']['value']):>12}  "
                      f"{b['ratio']:>6.2f}x  {b['unit']} ({b['better']} is better; baseline {b['baseline']['name']})\n")
    console.write(f"peak memory {peak_mb:,.0f} MB; written to {path}\n")


def _number(value: float) -> str:
    """Large values with thousands separators, small ones (scores, seconds) with four digits."""
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"


def run_benchmark(name: str, json_path: str, console: TextIO) -> int:
    if name == "ingest":
        from feedbackloop.bench.ingest import run

        return run(json_path, console)
    if name == "tables":
        from feedbackloop.bench.tables import run

        return run(json_path, console)
    if name == "model":
        from feedbackloop.bench.model import run

        return run(json_path, console)
    if name == "serve":
        from feedbackloop.bench.serve import run

        return run(json_path, console)
    if name == "freshness":
        from feedbackloop.bench.freshness import run

        return run(json_path, console)
    raise ValueError(name)
