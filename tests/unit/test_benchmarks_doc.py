"""The README cites only benchmark figures that the committed results file holds: every number in its
Benchmarks section (and in the drift paragraph) appears in docs/benchmarks.md, and that report is the one
`make bench` renders from docs/benchmarks.json, the JSON beside it."""

from __future__ import annotations

import json
import re

import pytest

from feedbackloop.bench import BENCHMARKS, RESULTS_JSON, RESULTS_MARKDOWN, markdown_report

pytestmark = pytest.mark.unit

# a number standing on its own: not the 99 of p99, the 10 of ndcg_at_10 or the 7 of Python 3.11.7
_NUMBER = re.compile(r"(?<![\w.\-/])\d+(?:,\d{3})*(?:\.\d+)?")


def numbers(text: str) -> set[float]:
    return {float(n.replace(",", "")) for n in _NUMBER.findall(text)}


def _section(readme: str, title: str) -> str:
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end > 0 else None]


def _drift_paragraph(readme: str) -> str:
    start = readme.index("`feedbackloop bench drift`")
    return readme[start:readme.index("\n\n", start)]


def test_the_number_finder_keeps_figures_and_skips_names():
    assert numbers("p99 3.80 ms, 263,547.3 records/s; ndcg_at_10 at 1.22x; Python 3.11.7 on 2 CPUs") == {
        3.80, 263547.3, 1.22, 3.11, 2}


def test_every_figure_in_the_readme_benchmarks_is_in_the_results_file(request):
    root = request.config.rootpath
    readme = (root / "README.md").read_text()
    report = numbers((root / RESULTS_MARKDOWN).read_text())
    for name, text in (("Benchmarks", _section(readme, "Benchmarks")), ("drift", _drift_paragraph(readme))):
        missing = sorted(numbers(text) - report)
        assert not missing, f"the README's {name} text cites figures {RESULTS_MARKDOWN} does not hold: {missing}"


def test_the_report_is_rendered_from_the_json_beside_it(request):
    root = request.config.rootpath
    document = json.loads((root / RESULTS_JSON).read_text())
    assert (root / RESULTS_MARKDOWN).read_text() == markdown_report(document), "run: make bench"
    # every benchmark of one run; one left out is named with the reason (the report says so)
    suites, missing = {b["suite"] for b in document["benchmarks"]}, set(document.get("missing", {}))
    assert suites | missing == set(BENCHMARKS) and not suites & missing
    assert document["commit"] and document["date"] and document["machine"]["cpus"]
