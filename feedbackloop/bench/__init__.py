"""`feedbackloop bench NAME --json FILE`: each benchmark runs its baseline in the same process, prints
a table and writes JSON of one shape: {"benchmarks": [{"name", "unit", "value", "baseline":
{"name", "value"}, "ratio", "better"}], "protocol": ..., ...}; an entry with no honest baseline has
"baseline" and "ratio" null.

`feedbackloop bench all` (`make bench`) runs every one and writes docs/benchmarks.json and, rendered from
it alone, docs/benchmarks.md: the machine, the date, the commit, every entry with its baseline and ratio,
and each benchmark's protocol and details. Both are committed; the README cites only figures found there.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

# every benchmark, in the order `feedbackloop bench all` (`make bench`) runs them
BENCHMARKS = ("ingest", "tables", "model", "serve", "freshness", "drift", "loop")
RESULTS_JSON, RESULTS_MARKDOWN = "docs/benchmarks.json", "docs/benchmarks.md"


def machine() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "system": platform.system()}


def machine_details() -> dict:
    """machine() with what else a reader needs to weigh the figures: the CPU model, the memory, and how
    busy the machine was (the load average when the suite started)."""
    details = machine()
    with suppress(OSError, StopIteration, ValueError, IndexError):
        details["cpu_model"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                                    .splitlines() if line.startswith("model name"))
    with suppress(OSError, StopIteration, ValueError, IndexError):
        kilobytes = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal"))
        details["memory_gb"] = round(kilobytes / 1024**2, 1)
    if hasattr(os, "getloadavg"):
        details["load_average_1m"] = round(os.getloadavg()[0], 2)
    return details


def commit() -> str:
    """The commit the suite ran at, marked when the working tree differed from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


def write_results(path: str, benchmarks: list[dict], console: TextIO, **extra) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    document = {"benchmarks": benchmarks, "peak_memory_mb": round(peak_mb, 1), "machine": machine(), **extra}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2))
    width = max(len(b["name"]) for b in benchmarks)
    console.write(f"{'benchmark':<{width}}  {'value':>12}  {'baseline':>12}  {'ratio':>7}  unit\n")
    for b in benchmarks:
        if b["baseline"] is None:  # a figure with no honest baseline
            console.write(f"{b['name']:<{width}}  {_number(b['value']):>12}  {'none':>12}  {'':>7}  {b['unit']} "
                          f"({b['better']} is better)\n")
            continue
        console.write(f"{b['name']:<{width}}  {_number(b['value']):>12}  {_number(b['baseline']['value']):>12}  "
                      f"{_ratio(b['ratio']):>7}  {b['unit']} ({b['better']} is better; baseline "
                      f"{b['baseline']['name']})\n")
    console.write(f"peak memory {peak_mb:,.0f} MB; written to {path}\n")


def _ratio(ratio: float | None) -> str:
    return "none" if ratio is None or ratio != ratio else f"{ratio:.2f}x"  # NaN: a baseline of 0


def _number(value: float) -> str:
    """Large values with thousands separators, small ones (scores, seconds) with four digits."""
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"


def run_suite(json_path: str, markdown_path: str, console: TextIO, names: tuple[str, ...] = BENCHMARKS) -> int:
    """Every benchmark, each in a process of its own (its own peak memory, no warm caches from the one
    before), merged into one JSON document of the same shape, and the Markdown report rendered from it."""
    started = datetime.now(UTC)
    document: dict[str, Any] = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(),
                                "machine": machine_details()}
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
    document["minutes"] = round((datetime.now(UTC) - started).total_seconds() / 60, 1)
    document |= merged(results)
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(document, indent=2) + "\n")
    Path(markdown_path).write_text(markdown_report(document))
    console.write(f"\n{markdown_table(document)}\nwritten to {json_path} and {markdown_path}\n")
    return 0


def merged(results: dict[str, dict]) -> dict:
    """Each benchmark's JSON (by name) as the suite's entries (each with its suite) and runs."""
    return {"benchmarks": [b | {"suite": name} for name, result in results.items() for b in result["benchmarks"]],
            "runs": {name: {k: v for k, v in result.items() if k not in ("benchmarks", "machine")}
                     for name, result in results.items()}}


def markdown_table(document: dict) -> str:
    """The suite's entries, one row each, as the README shows them."""
    m = document["machine"]
    lines = [f"Machine: {m['cpus']} CPUs, {m['machine']}, {m['system']}, Python {m['python']}.", "",
             "| suite | benchmark | value | baseline (same run) | ratio | unit | better |",
             "|---|---|---:|---|---:|---|---|"]
    for b in document["benchmarks"]:
        baseline = "none" if b["baseline"] is None else f"{b['baseline']['name']}: {_number(b['baseline']['value'])}"
        lines.append(f"| {b['suite']} | {b['name']} | {_number(b['value'])} | {baseline} | {_ratio(b['ratio'])} | "
                     f"{b['unit']} | {b['better']} |")
    return "\n".join(lines) + "\n"


def markdown_report(document: dict) -> str:
    """docs/benchmarks.md: rendered from the suite's JSON and nothing else, so that a figure in it is one
    the JSON beside it holds."""
    m = document["machine"]
    lines = ["# Benchmarks", "",
             f"Written by `make bench` (`feedbackloop bench all`) from `{RESULTS_JSON}`, its results file; do not "
             "edit by hand. Every benchmark runs in a process of its own, its baseline in the same process on the "
             "same input; a ratio is value / baseline.", "",
             f"- date: {document.get('date', 'unknown')}",
             f"- commit: {document.get('commit', 'unknown')}",
             f"- machine: {m['cpus']} CPUs ({m.get('cpu_model', 'unknown model')}), "
             f"{m.get('memory_gb', '?')} GB, {m['machine']}, {m['system']}, Python {m['python']}",
             f"- load average when the suite started: {m.get('load_average_1m', 'unknown')} "
             "(the machine is shared: absolute figures drift with it, ratios much less)"]
    if "minutes" in document:
        lines.append(f"- the suite took {document['minutes']} minutes")
    if document.get("note"):
        lines.append(f"- note: {document['note']}")
    for name, why in document.get("missing", {}).items():
        lines.append(f"- not in this run: `{name}` ({why})")
    lines += ["", "## Every entry", "", markdown_table(document)]
    for name, run in document.get("runs", {}).items():
        lines += [f"## {name}", ""]
        protocol = run.get("protocol")
        if protocol is not None:
            lines += ["Protocol:", "", *_rendered(protocol), ""]
        details = {k: v for k, v in run.items() if k != "protocol"}
        if details:
            lines += ["Details:", "", *_rendered(details), ""]
    return "\n".join(lines).rstrip() + "\n"


def _rendered(value: Any, depth: int = 0) -> list[str]:
    """A JSON value as a Markdown list (nested dicts as nested items)."""
    indent = "  " * depth
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item and not _flat(item):
                lines += [f"{indent}- {key}:", *_rendered(item, depth + 1)]
            else:
                lines.append(f"{indent}- {key}: {_scalar(item)}")
        return lines
    if isinstance(value, list) and not _flat(value):
        return [line for item in value for line in _rendered(item, depth)]
    return [f"{indent}- {_scalar(value)}"]


def _flat(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, dict | list) for v in value)


def _scalar(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "none"
    if isinstance(value, float):
        return _number(value) if abs(value) >= 100 else f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


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
    if name == "drift":
        from feedbackloop.bench.drift import run

        return run(json_path, console)
    raise ValueError(name)
