"""`feedbackloop bench NAME --json FILE`: each benchmark runs its baseline in the same process, prints
a table and writes JSON of one shape: {"benchmarks": [{"name", "unit", "value", "baseline":
{"name", "value"}, "ratio", "better"}], ...}."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

# every benchmark, in the order `feedbackloop bench all` (`make bench`) runs them
BENCHMARKS = ("ingest", "tables", "model", "serve", "freshness", "loop")


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


def run_suite(json_path: str, markdown_path: str, console: TextIO, names: tuple[str, ...] = BENCHMARKS) -> int:
    """Every benchmark, each in a process of its own (its own peak memory, no warm caches from the one
    before), merged into one JSON document of the same shape and a Markdown table."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="feedbackloop-bench-") as folder:
        for name in names:
            console.write(f"\n== bench {name}\n")
            console.flush()
            target = Path(folder) / f"{name}.json"
            status = subprocess.run([sys.executable, "-m", "feedbackloop.cli", "bench", name, "--json", str(target)],
                                    stdout=console if hasattr(console, "fileno") else None, check=False).returncode
            if status:
                console.write(f"bench {name} failed with exit status {status}\n")
                return status
            results[name] = json.loads(target.read_text())
    benchmarks = [b | {"suite": name} for name, document in results.items() for b in document["benchmarks"]]
    details = {name: {k: v for k, v in document.items() if k not in ("benchmarks", "machine")}
               for name, document in results.items()}
    document = {"benchmarks": benchmarks, "machine": machine(), "runs": details}
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(document, indent=2))
    Path(markdown_path).write_text(markdown_table(document))
    console.write(f"\n{markdown_table(document)}\nwritten to {json_path} and {markdown_path}\n")
    return 0


def markdown_table(document: dict) -> str:
    """The suite's results as the README shows them."""
    m = document["machine"]
    lines = [f"Machine: {m['cpus']} CPUs, {m['machine']}, {m['system']}, Python {m['python']}.", "",
             "| suite | benchmark | value | baseline (same run) | ratio | unit | better |",
             "|---|---|---:|---|---:|---|---|"]
    for b in document["benchmarks"]:
        lines.append(f"| {b['suite']} | {b['name']} | {_number(b['value'])} | {b['baseline']['name']}: "
                     f"{_number(b['baseline']['value'])} | {b['ratio']:.2f}x | {b['unit']} | {b['better']} |")
    return "\n".join(lines) + "\n"


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
    if name == "loop":
        from feedbackloop.bench.loop import run

        return run(json_path, console)
    raise ValueError(name)
