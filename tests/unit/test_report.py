"""The HTML report: every section is there with its plot or a clear 'nothing yet', it needs no network
(no script, no external reference), and what it shows is escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pandas as pd
import pytest

from feedbackloop.report import ReportData, models_frame, render

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 20, tzinfo=UTC)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.sources += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]


def _data(empty: bool = False) -> ReportData:
    hours = [T0 + timedelta(hours=h) for h in range(48)]
    engagement = pd.DataFrame([{"period_start": h, "variant": v, "impressions": 100, "clicks": c, "ctr": c / 100,
                                "sessions": 10} for h in hours for v, c in (("personalized", 12), ("popularity", 5))])
    quarantine = pd.DataFrame({"reason": ["duplicate", "schema_violation", "outlier"], "records": [500, 20, 3]})
    ranking = {"ranking": {"model": {"ndcg_at_10": 0.35}, "popularity": {"ndcg_at_10": 0.1}}}
    as_text = '{"ranking": {"model": {"ndcg_at_10": 0.3}, "popularity": {"ndcg_at_10": 0.1}}}'
    models = models_frame([{"version": "v1", "published_at": "2026-11-20T00:00:00+00:00", "metrics": as_text},
                           {"version": "v2", "published_at": "2026-11-21T00:00:00+00:00", "metrics": ranking}])
    decisions = pd.DataFrame([{"decided_at": T0 + timedelta(hours=12), "rule": "segment-ctr-low", "scope": "segment=s1",
                               "metric": "ctr", "value": 0.03, "samples": 500, "threshold": 0.05, "outcome": "fire",
                               "result": "version 2, deployment 2 <script>"}])
    drift = pd.DataFrame([{"detected_at": T0 + timedelta(hours=30), "stream": "ctr/s1", "mean_before": 0.12,
                           "mean_after": 0.04, "values_seen": 9000, "retraining": "adjust-1"}])
    if empty:
        engagement, quarantine, models, decisions, drift = (f.iloc[0:0] for f in
                                                            (engagement, quarantine, models, decisions, drift))
    return ReportData("the loop", T0, engagement, quarantine, models, decisions, drift, [("A/B", "ship <b>")])


def test_the_report_has_every_section_with_a_plot_and_no_external_reference():
    page = render(_data())
    parser = _Tags()
    parser.feed(page)
    assert parser.tags.count("svg") == 4 and "script" not in parser.tags and parser.sources == []
    for heading in ("Engagement over time", "Quarantine by reason", "Model metrics by published version",
                    "Rule decisions and drift events", "A/B"):
        assert heading in page
    assert "segment-ctr-low" in page and "ctr/s1" in page and "v2" in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "ship &lt;b&gt;" in page


def test_an_empty_loop_says_so_instead_of_failing():
    page = render(_data(empty=True))
    for text in ("no engagement yet", "nothing quarantined", "no model published", "no decisions recorded"):
        assert text in page
