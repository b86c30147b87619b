"""`feedbackloop bench all`: one JSON of the same shape as each benchmark's, and the Markdown table the
README shows, with the machine it ran on."""

from __future__ import annotations

import io
import json

import pytest

from feedbackloop.bench import BENCHMARKS, machine, markdown_table, run_suite
from feedbackloop.cli import build_parser

pytestmark = pytest.mark.unit


def test_the_markdown_table_has_every_benchmark_and_the_machine():
    document = {"machine": machine(), "benchmarks": [
        {"suite": "serve", "name": "p99 latency", "unit": "ms", "value": 3.8, "better": "lower", "ratio": 3.44,
         "baseline": {"name": "full sort", "value": 13.06}},
        {"suite": "ingest", "name": "records/s", "unit": "records/s", "value": 256_000.0, "better": "higher",
         "ratio": 2.8, "baseline": {"name": "pydantic", "value": 91_000.0}}]}
    table = markdown_table(document)
    assert f"{machine()['cpus']} CPUs" in table
    assert "| serve | p99 latency | 3.8000 | full sort: 13.0600 | 3.44x | ms | lower |" in table
    assert "| ingest | records/s | 256,000.0 | pydantic: 91,000.0 | 2.80x | records/s | higher |" in table


def test_the_suite_merges_what_each_benchmark_wrote(tmp_path):
    out = io.StringIO()
    assert run_suite(str(tmp_path / "bench.json"), str(tmp_path / "bench.md"), out, names=()) == 0
    assert json.loads((tmp_path / "bench.json").read_text())["benchmarks"] == []
    report = (tmp_path / "bench.md").read_text()
    assert report.startswith("# Benchmarks") and "- commit: " in report and "- date: " in report


def test_all_is_a_choice_beside_every_benchmark():
    assert build_parser().parse_args(["bench", "all", "--json", "x.json"]).name == "all"
    for name in BENCHMARKS:
        assert build_parser().parse_args(["bench", name, "--json", "x.json"]).name == name
