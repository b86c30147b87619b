"""The README's figures for the fuzzing and the soak are ones their committed results hold (`feedbackloop fuzz
--json docs/fuzz.json`, `feedbackloop bench soak --json docs/soak.json`), and those runs passed at the size the
issue asks for: 10,000 fuzzed requests over both documents with every check, and 10 minutes at 16 clients with
nothing lost, doubled or reset (and its memory after a reset, against the limit, recorded as measured)."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.unit

FUZZ_RESULTS, SOAK_RESULTS = "docs/fuzz.json", "docs/soak.json"
SECTION = "Fuzzing and soak"
# a number standing on its own (as tests/unit/test_benchmarks_doc.py reads the README)
_NUMBER = re.compile(r"(?<![\w.\-/])\d+(?:,\d{3})*(?:\.\d+)?")


def _numbers(text: str) -> set[float]:
    return {float(n.replace(",", "")) for n in _NUMBER.findall(text)}


def _held(value: object) -> set[float]:
    """Every number a results document holds, in its values and in its strings."""
    if isinstance(value, bool):
        return set()
    if isinstance(value, int | float):
        return {float(value)}
    if isinstance(value, str):
        return _numbers(value)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return set().union(*map(_held, items)) if items else set()


def _section(readme: str) -> str:
    start = readme.index(f"\n## {SECTION}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start + len(SECTION) + 5:end if end > 0 else None]


def test_every_figure_in_the_readme_section_is_in_a_results_file(request):
    root = request.config.rootpath
    held = set().union(*(_held(json.loads((root / path).read_text())) for path in (FUZZ_RESULTS, SOAK_RESULTS)))
    missing = sorted(_numbers(_section((root / "README.md").read_text())) - held)
    assert not missing, f"the README's {SECTION} section cites figures neither results file holds: {missing}"


def test_the_committed_fuzz_run_sent_every_check_at_full_size_and_found_nothing(request):
    run = json.loads((request.config.rootpath / FUZZ_RESULTS).read_text())
    assert run["requests"] >= 10_000 and run["by_phase"]["coverage"] > 0
    assert run["ok"] and run["problems"] == {} and run["function_errors"] == 0 and run["healthy_after"]
    assert run["commit"] and run["date"] and run["machine"]["cpus"]


def test_the_committed_soak_ran_ten_minutes_at_16_clients_and_lost_doubled_and_reset_nothing(request):
    """Its memory verdict is recorded as measured: the latest run ended above the limit (the README says so)."""
    run = json.loads((request.config.rootpath / SOAK_RESULTS).read_text())
    assert (run["minutes"], run["clients"]) == (10, 16)
    assert (run["lost"], run["doubled"], run["resets"]) == (0, 0, 0) and run["drained"]
    memory = run["memory_mb"]
    assert memory["limit"] == 1.2 and run["memory_ok"] == (memory["end"] <= memory["limit"] * memory["start"])
    assert run["ok"] == run["memory_ok"]  # everything else passed
    assert run["commit"] and run["date"] and run["machine"]["cpus"]
