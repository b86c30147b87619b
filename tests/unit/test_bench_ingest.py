"""`feedbackloop bench ingest`: the cleaner and the baseline read the same batch, and an entry's ratio is
that of its two values."""

from __future__ import annotations

import pytest

from feedbackloop.bench.ingest import _Comparison, kinesis_batch, run_baseline, run_cleaner

pytestmark = pytest.mark.unit


def test_the_cleaner_and_the_baseline_take_the_same_batch():
    """Real events of the shipped data: the baseline writes every one; the cleaner every one but the
    repeats (the dataset has identical lines, so identical event ids) and what its rules quarantine."""
    event = kinesis_batch(300)
    assert len(event["Records"]) == 300
    written, cleaned = run_baseline(event), run_cleaner(event)
    assert written == 300
    assert 250 <= cleaned < 300


def test_an_entry_has_the_contract_fields_and_the_ratio_of_its_values():
    comparison = _Comparison(records=600, cleaner_seconds=[0.1, 0.2, 0.3, 0.2],
                             baseline_seconds=[0.3, 0.6, 1.2, 0.6], cleaner_rows=590, baseline_rows=600)
    entry = comparison.entry("ingest_cleaner_records_per_s")
    assert entry["value"] == 3000.0 and entry["baseline"]["value"] == 1000.0  # 600 over the medians
    assert entry["ratio"] == 3.0 and entry["better"] == "higher" and entry["unit"] == "records/s"
    assert entry["pair_ratio_median"] == 3.0  # the pairs: 3, 3, 4, 3
    assert set(entry["baseline"]) == {"name", "value"}
