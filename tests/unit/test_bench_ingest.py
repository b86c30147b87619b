"""`feedbackloop bench ingest`: the cleaner and the baseline read the same batch and, in the headline
(deployed) entry, leave the same online profiles; an entry's ratio is that of its two values."""

from __future__ import annotations

import base64
import json

import pytest

from feedbackloop.bench.ingest import Warm, _Comparison, kinesis_batch, kinesis_batches, run_baseline, run_cleaner
from feedbackloop.online import UserProfile

pytestmark = pytest.mark.unit


def test_the_cleaner_and_the_baseline_take_the_same_batch():
    """Real events of the shipped data: the baseline writes every one; the cleaner every one but the
    repeats (the dataset has identical lines, so identical event ids) and what its rules quarantine."""
    event = kinesis_batch(300)
    assert len(event["Records"]) == 300
    written, cleaned = run_baseline(event).rows, run_cleaner(event).rows
    assert written == 300
    assert 250 <= cleaned < 300


def _without_repeats(event: dict) -> dict:
    """The batch without the dataset's identical lines (the cleaner drops a repeat, the baseline cannot
    tell it from a new event)."""
    seen, records = set(), []
    for record in event["Records"]:
        event_id = json.loads(base64.b64decode(record["kinesis"]["data"]))["event"]["event_id"]
        if event_id not in seen:
            seen.add(event_id)
            records.append(record)
    return {"Records": records}


def test_the_deployed_entry_warms_the_statistics_and_both_sides_merge_into_the_same_profiles():
    """Warm statistics and the profiles of the batch before: the cleaner's vectorized merge and the
    baseline's record-by-record one leave every user's items with the same masses and signals."""
    earlier, batch = kinesis_batches(400, 2)
    warm = Warm.after(earlier)
    assert warm.state.values["purchase"].n >= 50 and warm.profiles  # imputation and the fences are live
    batch = _without_repeats(batch)
    cleaner, baseline = run_cleaner(batch, warm), run_baseline(batch, warm)
    assert cleaner.detail["duplicates"] == 0 and not cleaner.detail["quarantined"]
    assert cleaner.detail["profiles_updated"] == baseline.detail["profiles_updated"] > 0
    assert cleaner.online.items.keys() == baseline.online.items.keys()
    compared = 0
    for user, stored in cleaner.online.items.items():
        ours = UserProfile.from_document(user, stored.get("doc"))
        theirs = UserProfile.from_document(user, baseline.online.items[user].get("doc"))
        assert set(ours.items) == set(theirs.items)
        for item in ours.items:
            a, b = ours.items[item], theirs.items[item]
            # the two ran a moment apart: every mass decayed over that moment (a relative 3e-7 a second)
            assert a.weight_mass == pytest.approx(b.weight_mass, rel=1e-5)
            assert a.score_mass == pytest.approx(b.score_mass, rel=1e-5, abs=1e-12)
            assert a.ignored_mass == pytest.approx(b.ignored_mass, rel=1e-5, abs=1e-12)
            assert (a.last_positive, a.last_negative, a.last_type, a.last_at) == (
                b.last_positive, b.last_negative, b.last_type, b.last_at)
            compared += 1
    assert compared > 300


def test_an_entry_has_the_contract_fields_and_the_ratio_of_its_values():
    comparison = _Comparison(records=600, cleaner_seconds=[0.1, 0.2, 0.3, 0.2],
                             baseline_seconds=[0.3, 0.6, 1.2, 0.6], cleaner={}, baseline={})
    entry = comparison.entry("ingest_cleaner_records_per_s", "powertools_batchprocessor_pydantic_merge_records_per_s")
    assert entry["value"] == 3000.0 and entry["baseline"]["value"] == 1000.0  # 600 over the medians
    assert entry["ratio"] == 3.0 and entry["better"] == "higher" and entry["unit"] == "records/s"
    assert entry["pair_ratio_median"] == 3.0  # the pairs: 3, 3, 4, 3
    assert set(entry["baseline"]) == {"name", "value"}
