"""Streaming statistics: exact merges, bounded quantile error, lossless JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedbackloop.cleaning.stats import GAMMA, CleanerState, StreamStats

pytestmark = pytest.mark.unit

#: the bucket (g^(k-1), g^k] is represented by 2 g^k / (g + 1): no value of it is further than this
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)

RAW = st.one_of(
    st.just(0.0),
    st.floats(min_value=0, max_value=1e9, allow_subnormal=False),
    st.integers(0, 1000).map(float),
)
SAMPLES = st.lists(RAW, max_size=200).map(lambda values: np.array(values, dtype=float))


def _of(raw: np.ndarray) -> StreamStats:
    return StreamStats.of(raw, np.log1p(raw))


@settings(max_examples=150, deadline=None)
@given(a=SAMPLES, b=SAMPLES)
def test_merging_two_samples_equals_the_statistics_of_their_union(a, b):
    merged = _of(a).merge(_of(b))
    union = _of(np.concatenate([a, b]))
    assert merged.n == union.n == a.size + b.size
    assert merged.zeros == union.zeros
    assert merged.buckets == union.buckets
    assert merged.minimum == union.minimum
    assert merged.maximum == union.maximum
    assert merged.mean == pytest.approx(union.mean, rel=1e-9, abs=1e-12)
    assert merged.m2 == pytest.approx(union.m2, rel=1e-7, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(parts=st.lists(SAMPLES, min_size=1, max_size=6))
def test_merging_many_parts_in_any_grouping_agrees(parts):
    left = StreamStats()
    for part in parts:
        left = left.merge(_of(part))
    right = StreamStats()
    for part in reversed(parts):
        right = _of(part).merge(right)
    union = _of(np.concatenate(parts))
    for merged in (left, right):
        assert (merged.n, merged.zeros, merged.buckets) == (union.n, union.zeros, union.buckets)
        assert merged.mean == pytest.approx(union.mean, rel=1e-9, abs=1e-12)
        assert merged.m2 == pytest.approx(union.m2, rel=1e-7, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(raw=SAMPLES.filter(lambda values: values.size > 0), q=st.floats(0, 1))
def test_quantiles_are_within_the_bucket_error_of_the_sample_quantile(raw, q):
    """Within the bucket's relative error of the order statistic at rank q (n - 1), allowing either
    neighbour when that rank is a whole number only up to rounding."""
    got = _of(raw).quantile(q)
    lower = np.quantile(raw, q, method="lower")
    higher = np.quantile(raw, q, method="higher")
    assert lower * (1 - RELATIVE_ERROR) - 1e-12 <= got <= higher * (1 + RELATIVE_ERROR) + 1e-12
    assert raw.min() <= got <= raw.max()


@settings(max_examples=100, deadline=None)
@given(raw=SAMPLES.filter(lambda values: values.size > 0))
def test_the_median_of_a_merged_state_matches_numpy_within_two_percent(raw):
    half = raw.size // 2
    merged = _of(raw[:half]).merge(_of(raw[half:]))
    median = merged.quantile(0.5)
    assert np.quantile(raw, 0.5, method="lower") * (1 - 0.02) <= median
    assert median <= np.quantile(raw, 0.5, method="higher") * (1 + 0.02)


def test_quantiles_of_a_known_sample():
    raw = np.arange(1, 1001, dtype=float)
    stats = _of(raw)
    for q, exact in ((0.0, 1), (0.25, 250.75), (0.5, 500.5), (0.99, 990.01), (1.0, 1000)):
        assert stats.quantile(q) == pytest.approx(exact, rel=0.02)
    assert stats.quantile(0.0) == 1.0  # clamped to the observed range


def test_zeros_are_counted_apart_from_the_log_buckets():
    stats = _of(np.array([0.0, 0.0, 0.0, 5.0]))
    assert stats.zeros == 3
    assert sum(stats.buckets.values()) == 1
    assert stats.quantile(0.5) == 0.0
    assert stats.quantile(1.0) == 5.0


def test_a_constant_sample_has_no_spread():
    stats = _of(np.full(60, 7.0))
    assert stats.quantile(0.25) == stats.quantile(0.75) == 7.0
    assert stats.std == pytest.approx(0.0, abs=1e-12)


def test_moments_are_those_of_the_transformed_values():
    raw = np.array([1.0, 10.0, 100.0, 1000.0])
    stats = _of(raw)
    assert stats.mean == pytest.approx(np.log1p(raw).mean())
    assert stats.std == pytest.approx(np.log1p(raw).std(ddof=1))
    assert (stats.minimum, stats.maximum) == (1.0, 1000.0)


def test_std_needs_two_samples():
    assert StreamStats().std == 0.0
    assert _of(np.array([3.0])).std == 0.0


def test_an_empty_sample_has_no_quantile():
    with pytest.raises(ValueError, match="no samples"):
        StreamStats().quantile(0.5)
    assert _of(np.array([])) == StreamStats()


def test_merging_with_nothing_changes_nothing():
    stats = _of(np.array([1.0, 2.0, 3.0]))
    assert stats.merge(StreamStats()) == stats
    assert StreamStats().merge(stats) == stats


@settings(max_examples=100, deadline=None)
@given(raw=SAMPLES)
def test_json_round_trip_is_lossless(raw):
    stats = _of(raw)
    assert StreamStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats


def test_the_json_of_an_empty_state_is_plain_json():
    doc = StreamStats().to_json()
    assert doc["min"] is None and doc["max"] is None
    json.dumps(doc, allow_nan=False)  # no Infinity literals for DynamoDB or other readers
    restored = StreamStats.from_json(doc)
    assert (restored.minimum, restored.maximum) == (math.inf, -math.inf)


def test_cleaner_state_merges_values_and_device_counts():
    a = CleanerState(values={"click": _of(np.array([1.0, 2.0]))}, devices={"click": {"mobile": 2}})
    b = CleanerState(
        values={"click": _of(np.array([3.0])), "dwell": _of(np.array([30.0]))},
        devices={"click": {"mobile": 1, "tv": 4}, "view": {"desktop": 1}},
    )
    merged = a.merge(b)
    assert merged.values["click"].n == 3
    assert merged.values["dwell"].n == 1
    assert merged.devices == {"click": {"mobile": 3, "tv": 4}, "view": {"desktop": 1}}
    # the operands are left alone
    assert a.devices == {"click": {"mobile": 2}}
    assert a.values["click"].n == 2


def test_the_device_mode_breaks_ties_alphabetically():
    state = CleanerState(devices={"click": {"tv": 3, "mobile": 3, "desktop": 1}})
    assert state.device_mode("click") == "mobile"
    assert state.device_mode("view") is None
    assert CleanerState(devices={"view": {}}).device_mode("view") is None


def test_cleaner_state_json_round_trip():
    state = CleanerState(
        values={"click": _of(np.array([0.0, 1.0, 2.5])), "view": StreamStats()},
        devices={"click": {"mobile": 2, "tv": 1}},
    )
    assert CleanerState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert CleanerState.from_json({}) == CleanerState()
