"""The table and drift benchmarks at a smoke test's size: each runs end to end, writes its JSON, and
what it reports reconciles (the closed loop's and the demo's harnesses are tested with them)."""

from __future__ import annotations

import io
import json

import pytest

from feedbackloop.bench import drift, tables

pytestmark = pytest.mark.unit


def test_the_tables_bench_reconciles_the_rows_it_cleaned_wrote_and_read(tmp_path):
    out = tmp_path / "tables.json"
    assert tables.run(str(out), io.StringIO(), lines=2_000, copies=2) == 0
    result = json.loads(out.read_text())
    cleaned, events = result["cleaned"], result["events"]
    # every line the cleaner took is clean, a duplicate or quarantined, and the clean ones are the 1x lake
    assert cleaned["records"] == 2_000
    assert cleaned["records"] == cleaned["clean"] + cleaned.get("duplicates", 0) + sum(
        n for name, n in cleaned.items() if name.startswith("quarantined_"))
    assert events["1x"] == cleaned["clean"] and events["10x"] == 2 * events["1x"]
    assert result["curated_rows_read"] == events  # what the table jobs read back is what was written
    assert {b["name"] for b in result["benchmarks"]} == {
        "tables_build_seconds_10x_data", "tables_build_events_per_s_10x_data", "tables_incremental_new_day_seconds"}
    for entry in result["benchmarks"]:
        assert entry["value"] > 0 and entry["baseline"]["value"] > 0
        assert entry["ratio"] == pytest.approx(entry["value"] / entry["baseline"]["value"], rel=0.02)


def test_the_drift_bench_finds_each_change_after_its_point_and_counts_false_alarms(tmp_path):
    out = tmp_path / "drift.json"
    assert drift.run(str(out), io.StringIO(), seeds=3, runs=2, stationary=3_000, pre=3_000, post=6_000) == 0
    result = json.loads(out.read_text())
    assert set(result["scenarios"]) == {s.name for s in drift.SCENARIOS}
    for scenario in result["scenarios"].values():
        for detector in ("adwin", "page_hinkley"):
            found = scenario[detector]
            assert found["runs"] == 3 and found["missed"] <= 3
            assert found["missed"] == 3 or found["median"] >= 1  # a delay counts values after the change
    # the large shift is found by ADWIN in every seed, faster than the small one
    big, small = (result["scenarios"][f"feedback_score_0.5_to_0.{d}"]["adwin"] for d in (3, 4))
    assert big["missed"] == 0 and big["median"] < small["median"]
    assert set(result["stationary"]) == {"feedback_score", "ctr"}
    entries = {b["name"]: b for b in result["benchmarks"]}
    assert entries["drift_false_alarms_ctr_stationary"]["value"] == result["stationary"]["ctr"]["adwin"]


def test_detections_are_reported_where_they_happen():
    """A stream that jumps far is flagged shortly after the jump by both detectors, never before it."""
    import numpy as np

    values = np.r_[np.zeros(2_000), np.ones(500)]
    for detect in drift.DETECTORS.values():
        found = detect(values)
        assert found and 2_000 < found[0] <= 2_100
