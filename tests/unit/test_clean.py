"""clean_events: hand-checked cases for each cleaning rule."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from feedbackloop.cleaning.clean import DEVICES, HASH_BUCKETS, CleaningRules, clean_events, explicit_score
from feedbackloop.cleaning.decode import DECODED_SCHEMA, decode_batch
from feedbackloop.cleaning.stats import CleanerState, StreamStats
from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.names import QuarantineReason
from feedbackloop.schemas import registry

pytestmark = pytest.mark.unit

RULES = registry.event_type_rules()
NOW = datetime(2025, 6, 10, 12, 5, tzinfo=UTC)
DEFAULT = CleaningRules()


@pytest.fixture
def clean(make_record, make_event, received_at):
    """Clean events given as field overrides; returns (curated rows by event_id, quarantined by id, result)."""

    def run(*overrides, state=None, rules=DEFAULT):
        events = [make_event(**{"event_id": f"e{i}"} | o) for i, o in enumerate(overrides)]
        decoded = decode_batch([make_record(e, i) for i, e in enumerate(events)])
        assert decoded.rejected == [], decoded.rejected
        result = clean_events(decoded.valid, state or CleanerState(), NOW, rules)
        curated = {row["event_id"]: row for row in result.curated.to_pylist()}
        quarantined = {
            events[i]["event_id"]: reason
            for i, reason in zip(result.quarantined.record_index.tolist(), result.quarantined.reason, strict=True)
        }
        return curated, quarantined, result

    return run


def _stats(raw, kind: str = "implicit") -> StreamStats:
    raw = np.asarray(raw, dtype=float)
    return StreamStats.of(raw, np.log1p(raw) if kind == "implicit" else raw)


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- timestamps -------------------------------------------------------------------------------

def test_future_and_too_old_are_judged_against_arrival_at_their_boundaries(clean, received_at):
    skew, age = DEFAULT.max_clock_skew, DEFAULT.max_event_age
    tick = timedelta(microseconds=1)
    curated, quarantined, _ = clean(
        {"timestamp": _at(received_at + skew)},
        {"timestamp": _at(received_at + skew + tick)},
        {"timestamp": _at(received_at - age)},
        {"timestamp": _at(received_at - age - tick)},
        {"timestamp": _at(received_at)},
    )
    assert set(curated) == {"e0", "e2", "e4"}
    assert quarantined == {"e1": QuarantineReason.FUTURE.value, "e3": QuarantineReason.TOO_OLD.value}


def test_the_limits_come_from_the_rules(clean, received_at):
    rules = CleaningRules(max_event_age=timedelta(days=1), max_clock_skew=timedelta(0))
    curated, quarantined, _ = clean(
        {"timestamp": _at(received_at + timedelta(seconds=1))},
        {"timestamp": _at(received_at - timedelta(days=2))},
        {"timestamp": _at(received_at - timedelta(hours=23))},
        rules=rules,
    )
    assert set(curated) == {"e2"}
    assert quarantined == {"e0": "future", "e1": "too_old"}


@pytest.mark.parametrize(("timestamp", "reason"), [("0001-01-01T00:00:00Z", "too_old"),
                                                   ("9999-12-31T23:59:59Z", "future")])
def test_absurd_years_are_quarantined_not_fatal(clean, timestamp, reason):
    curated, quarantined, _ = clean({"timestamp": timestamp}, {})
    assert set(curated) == {"e1"}
    assert quarantined == {"e0": reason}


def test_the_detail_says_why(clean, received_at):
    _, _, result = clean({"timestamp": _at(received_at - timedelta(days=45))})
    assert result.quarantined.detail == ["timestamp is older than 30 days before its arrival"]


# --- imputation -------------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", [name for name, rule in RULES.items() if rule.impute])
def test_a_missing_value_takes_the_documented_fallback_while_cold(clean, event_type):
    curated, _, result = clean({"event_type": event_type, "value": None})
    row = curated["e0"]
    assert row["value"] == RULES[event_type].fallback
    assert row["value_imputed"] is True
    assert result.imputed == 1


def test_a_missing_value_takes_the_streams_median_once_warm(clean):
    stats = _stats(np.arange(10, 110))  # dwell seconds 10..109
    curated, _, result = clean({"event_type": "dwell", "value": None}, {"event_type": "dwell", "value": 42},
                               state=CleanerState(values={"dwell": stats}))
    assert curated["e0"]["value"] == stats.quantile(0.5)
    assert curated["e0"]["value"] == pytest.approx(59.5, rel=0.02)
    assert curated["e0"]["value_imputed"] is True
    assert curated["e1"]["value"] == 42
    assert curated["e1"]["value_imputed"] is False
    assert result.imputed == 1


def test_warm_means_at_least_min_samples(clean):
    rules = CleaningRules(min_samples=50)
    almost = CleanerState(values={"dwell": _stats(np.full(49, 100.0))})
    enough = CleanerState(values={"dwell": _stats(np.full(50, 100.0))})
    cold, _, _ = clean({"event_type": "dwell", "value": None}, state=almost, rules=rules)
    warm, _, _ = clean({"event_type": "dwell", "value": None}, state=enough, rules=rules)
    assert cold["e0"]["value"] == RULES["dwell"].fallback
    assert warm["e0"]["value"] == 100.0


def test_stats_of_another_type_do_not_warm_this_one(clean):
    state = CleanerState(values={"view": _stats(np.full(100, 9.0))})
    curated, _, _ = clean({"event_type": "click", "value": None}, state=state)
    assert curated["e0"]["value"] == RULES["click"].fallback


def test_a_missing_device_takes_the_mode_of_its_event_type(clean):
    state = CleanerState(devices={"click": {"desktop": 2, "tv": 9}, "view": {"mobile": 50}})
    curated, _, result = clean(
        {"event_type": "click", "context": {"page": "/a"}},
        {"event_type": "click", "context": {"device": "tablet"}},
        {"event_type": "rating", "context": {}},  # no mode known for ratings
        state=state,
    )
    assert (curated["e0"]["device"], curated["e0"]["device_imputed"]) == ("tv", True)
    assert (curated["e1"]["device"], curated["e1"]["device_imputed"]) == ("tablet", False)
    assert (curated["e2"]["device"], curated["e2"]["device_imputed"]) == (None, False)
    assert curated["e0"]["device_code"] == DEVICES.index("tv") + 1
    # an imputed device teaches the state nothing; an observed one does
    assert result.learned.devices == {"click": {"tablet": 1}}


def test_imputed_values_are_not_learned(clean):
    _, _, result = clean({"event_type": "click", "value": None}, {"event_type": "click", "value": 3},
                         {"event_type": "click", "value": 5})
    learned = result.learned.values["click"]
    assert learned.n == 2
    assert (learned.minimum, learned.maximum) == (3, 5)


# --- outliers ---------------------------------------------------------------------------------

def _zscore_state() -> tuple[CleanerState, StreamStats]:
    stats = _stats(np.expm1([5.0] * 30 + [7.0] * 30))  # on the log1p scale: mean 6, std ~1.008
    return CleanerState(values={"dwell": stats}), stats


def test_zscore_outliers_on_both_sides_of_the_threshold(clean):
    state, stats = _zscore_state()
    k = DEFAULT.zscore_threshold
    assert stats.mean == pytest.approx(6.0)
    at = {name: float(np.expm1(stats.mean + sign * k * stats.std * factor))
          for name, sign, factor in (("high_in", 1, 0.999), ("high_out", 1, 1.001),
                                     ("low_in", -1, 0.999), ("low_out", -1, 1.001))}
    curated, quarantined, result = clean(*({"event_type": "dwell", "value": v} for v in at.values()), state=state)
    assert set(curated) == {"e0", "e2"}
    assert quarantined == {"e1": "outlier", "e3": "outlier"}
    assert all("|z|" in d for d in result.quarantined.detail)


def test_no_zscore_filter_while_cold(clean):
    raw = np.expm1([5.0] * 30 + [7.0] * 30)
    state = CleanerState(values={"dwell": _stats(raw[:20])})
    curated, quarantined, _ = clean({"event_type": "dwell", "value": 86_400}, {"event_type": "dwell", "value": 0},
                                    state=state, rules=CleaningRules(min_samples=21))
    assert set(curated) == {"e0", "e1"}
    assert quarantined == {}


def _iqr_fences(stats: StreamStats, k: float) -> tuple[float, float]:
    q1, q3 = np.log1p(stats.quantile(0.25)), np.log1p(stats.quantile(0.75))
    return q1 - k * (q3 - q1), q3 + k * (q3 - q1)


def test_iqr_outliers_on_both_sides_of_the_fences(clean):
    stats = _stats(np.arange(1, 101))
    state = CleanerState(values={"purchase": stats})
    low, high = _iqr_fences(stats, DEFAULT.iqr_k)
    assert 0 < low < high < math.log1p(RULES["purchase"].max)
    values = [float(np.expm1(low * 1.01)), float(np.expm1(low * 0.99)),
              float(np.expm1(high * 0.999)), float(np.expm1(high * 1.001)), 0.0, 50.0]
    curated, quarantined, result = clean(*({"event_type": "purchase", "value": v} for v in values), state=state)
    assert set(curated) == {"e0", "e2", "e5"}
    assert quarantined == {"e1": "outlier", "e3": "outlier", "e4": "outlier"}
    assert all("IQR" in d for d in result.quarantined.detail)


@pytest.mark.parametrize(("event_type", "rule"), [("click", "iqr"), ("dwell", "zscore")])
def test_a_constant_stream_gives_no_scale_to_call_anything_an_outlier(clean, event_type, rule):
    assert RULES[event_type].outlier == rule
    state = CleanerState(values={event_type: _stats(np.full(500, 1.0))})  # clicks are almost always 1
    curated, quarantined, _ = clean(*({"event_type": event_type, "value": v} for v in (1.0, 2.0, 40.0)),
                                    state=state)
    assert set(curated) == {"e0", "e1", "e2"} and quarantined == {}
    assert all(row["value_zscore"] is None for row in curated.values())  # no scale, no z-score


def test_no_iqr_filter_while_cold(clean):
    state = CleanerState(values={"purchase": _stats(np.arange(1, 40))})
    curated, quarantined, _ = clean({"event_type": "purchase", "value": 1_000_000}, {"event_type": "purchase",
                                    "value": 0}, state=state, rules=CleaningRules(min_samples=40))
    assert set(curated) == {"e0", "e1"}
    assert quarantined == {}


def test_the_iqr_multiplier_comes_from_the_rules(clean):
    stats = _stats(np.arange(1, 101))
    state = CleanerState(values={"purchase": stats})
    _, strict_high = _iqr_fences(stats, 1.0)
    value = float(np.expm1(strict_high * 1.05))
    lenient, _, _ = clean({"event_type": "purchase", "value": value}, state=state)
    _, strict, _ = clean({"event_type": "purchase", "value": value}, state=state, rules=CleaningRules(iqr_k=1.0))
    assert set(lenient) == {"e0"}
    assert strict == {"e0": "outlier"}


@pytest.mark.parametrize("event_type", [name for name, rule in RULES.items() if rule.outlier == "none"])
def test_types_without_an_outlier_rule_keep_extreme_values(clean, event_type):
    rule = RULES[event_type]
    raw = np.full(200, rule.min + (rule.max - rule.min) / 2)
    state = CleanerState(values={event_type: _stats(raw, rule.kind)})
    curated, quarantined, _ = clean({"event_type": event_type, "value": rule.max},
                                    {"event_type": event_type, "value": rule.min}, state=state)
    assert set(curated) == {"e0", "e1"}
    assert quarantined == {}


def test_statistics_are_a_snapshot_taken_before_the_batch(clean):
    """A burst of large values cannot drag the fences along: each is judged by the same numbers."""
    stats = _stats(np.arange(1, 101))
    state = CleanerState(values={"purchase": stats})
    before = state.to_json()
    burst = [{"event_type": "purchase", "value": 5000.0}] * 100 + [{"event_type": "purchase", "value": 20.0}]
    curated, quarantined, result = clean(*burst, state=state)
    assert set(curated) == {"e100"}
    assert len(quarantined) == 100
    assert state.to_json() == before  # the caller's state is not touched
    assert result.learned.values["purchase"].n == 1  # only what passed is learned
    assert result.learned.values["purchase"].maximum == 20.0


def test_timestamp_quarantine_wins_over_the_outlier_check(clean, received_at):
    state = CleanerState(values={"purchase": _stats(np.arange(1, 101))})
    _, quarantined, _ = clean({"event_type": "purchase", "value": 1_000_000,
                               "timestamp": _at(received_at - timedelta(days=90))}, state=state)
    assert quarantined == {"e0": "too_old"}


# --- normalization ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("event_type", "value", "minmax", "score"),
    [("rating", 1, 0.0, -1.0), ("rating", 2, 0.25, -0.5), ("rating", 3, 0.5, 0.0), ("rating", 4, 0.75, 0.5),
     ("rating", 5, 1.0, 1.0), ("form_score", 0, 0.0, -1.0), ("form_score", 50, 0.5, 0.0),
     ("form_score", 75, 0.75, 0.5), ("nps", 10, 1.0, 1.0), ("nps", 8, 0.8, 1 / 3), ("nps", 7, 0.7, 0.0),
     ("nps", 6, 0.6, -1 / 7), ("nps", 0, 0.0, -1.0)],
)
def test_explicit_values_are_zero_at_the_neutral_point_and_scale_with_the_distance(clean, event_type, value, minmax,
                                                                                    score):
    """Neutral points (event_types.json): rating 3, form score 50, NPS 7 (where its passive band starts)."""
    curated, _, _ = clean({"event_type": event_type, "value": value})
    assert curated["e0"]["value_minmax"] == pytest.approx(minmax)
    assert curated["e0"]["feedback_score"] == pytest.approx(score)
    assert curated["e0"]["feedback_kind"] == "explicit"


def test_a_neutral_point_at_an_end_of_the_scale_leaves_one_side_only():
    rule = RULES["rating"].model_copy(update={"neutral": 5.0})
    assert explicit_score(np.array([1.0, 3.0, 5.0]), rule).tolist() == [-1.0, -0.5, 0.0]
    rule = RULES["rating"].model_copy(update={"neutral": 1.0, "polarity": -1})
    assert explicit_score(np.array([1.0, 3.0, 5.0]), rule).tolist() == [0.0, -0.5, -1.0]


def test_implicit_values_scale_on_a_log_range_while_cold(clean):
    curated, _, _ = clean({"event_type": "feature_use", "value": 0}, {"event_type": "feature_use", "value": 316},
                          {"event_type": "feature_use", "value": 100_000})
    assert curated["e0"]["value_minmax"] == 0.0
    assert curated["e1"]["value_minmax"] == pytest.approx(math.log1p(316) / math.log1p(100_000))
    assert curated["e2"]["value_minmax"] == 1.0
    for row in curated.values():
        assert row["feedback_score"] == row["value_minmax"]
        assert row["feedback_kind"] == "implicit"
        assert row["value_zscore"] is None  # no z-score without warm statistics


def test_a_view_is_an_exposure_with_no_preference_of_its_own(clean):
    curated, _, _ = clean({"event_type": "view", "value": 3}, {"event_type": "click", "value": 1})
    assert curated["e0"]["feedback_score"] == 0.0 and curated["e0"]["confidence"] == pytest.approx(0.1)
    assert curated["e1"]["feedback_score"] > 0


def test_cancel_is_negative_feedback(clean):
    curated, _, _ = clean({"event_type": "cancel", "value": 5}, {"event_type": "cancel", "value": 1_000_000},
                          {"event_type": "cancel", "value": None}, {"event_type": "purchase", "value": 5})
    assert -1 < curated["e0"]["feedback_score"] < 0
    assert curated["e1"]["feedback_score"] == -1.0
    assert curated["e2"]["feedback_score"] < 0  # imputed 1
    assert curated["e3"]["feedback_score"] == -curated["e0"]["feedback_score"]


def test_a_warm_implicit_range_tops_out_at_the_streams_upper_quantile(clean):
    stats = _stats(np.arange(1, 201))
    curated, _, _ = clean({"event_type": "purchase", "value": 150}, {"event_type": "purchase", "value": 250},
                          state=CleanerState(values={"purchase": stats}))
    top = math.log1p(stats.quantile(0.99))
    assert curated["e0"]["value_minmax"] == pytest.approx(math.log1p(150) / top)
    assert curated["e1"]["value_minmax"] == 1.0  # above the 99th percentile: clipped
    assert curated["e0"]["value_zscore"] == pytest.approx((math.log1p(150) - stats.mean) / stats.std)


def test_explicit_zscores_use_the_raw_scale(clean):
    stats = _stats(np.array([1, 2, 3, 4, 5] * 20, dtype=float), kind="explicit")
    curated, _, _ = clean({"event_type": "rating", "value": 5}, state=CleanerState(values={"rating": stats}))
    assert curated["e0"]["value_zscore"] == pytest.approx((5 - 3) / stats.std)


def test_confidence_weights_explicit_feedback_above_implicit(clean):
    types = list(RULES)
    curated, _, _ = clean(*({"event_type": t, "value": RULES[t].min} for t in types))
    confidence = {row["event_type"]: row["confidence"] for row in curated.values()}
    assert confidence == {t: RULES[t].weight for t in types}
    explicit = [c for t, c in confidence.items() if RULES[t].kind == "explicit"]
    implicit = [c for t, c in confidence.items() if RULES[t].kind == "implicit"]
    assert min(explicit) > max(implicit)


# --- categorical codes and layout -------------------------------------------------------------

def test_device_codes_follow_the_schemas_enum(clean):
    devices = [*DEVICES, None]
    curated, _, _ = clean(*({"context": {"device": d}} for d in devices))
    codes = [curated[f"e{i}"]["device_code"] for i in range(len(devices))]
    assert codes == [*range(1, len(DEVICES) + 1), 0]


def test_hash_codes_are_stable_and_bounded(clean):
    pages = ["/home", "/cart", "/home", None]
    first, _, _ = clean(*({"context": {"page": p, "segment": p}} for p in pages))
    again, _, _ = clean(*({"context": {"page": p}} for p in reversed(pages)))
    codes = [first[f"e{i}"]["page_code"] for i in range(4)]
    assert codes[0] == codes[2] != codes[1]
    assert codes[3] == 0
    assert [again[f"e{i}"]["page_code"] for i in range(4)] == codes[::-1]
    assert all(1 <= c <= HASH_BUCKETS for c in codes[:3])
    assert [first[f"e{i}"]["segment_code"] for i in range(4)] == codes
    # the same code in every process and release: models trained on it depend on that
    assert codes[0] == 270  # blake2b of the UTF-8 text, modulo HASH_BUCKETS, plus one


def test_the_partition_is_the_utc_date_of_the_event(clean, received_at):
    curated, _, _ = clean({"timestamp": "2025-06-10T01:30:00+02:00"}, {"timestamp": "2025-06-09T23:30:00-01:00"})
    assert curated["e0"][CURATED_EVENTS.partition.name] == "2025-06-09"
    assert curated["e1"][CURATED_EVENTS.partition.name] == "2025-06-10"


def test_curated_rows_carry_the_lake_schema_and_lineage(clean, received_at):
    curated, _, result = clean({}, {"event_type": "click", "value": None, "context": {}})
    assert result.curated.schema.names == [*CURATED_EVENTS.arrow_schema.names, "record_index",
                                           CURATED_EVENTS.partition.name]
    for field in CURATED_EVENTS.arrow_schema:
        assert result.curated.schema.field(field.name).type == field.type
    row = curated["e0"]
    assert row["processed_at"] == NOW
    assert row["received_at"] == received_at
    assert row["event_time"] == datetime(2025, 6, 10, 11, 59, tzinfo=UTC)
    assert row["record_index"] == 0
    assert (row["page"], row["country"], row["price"]) == ("/home", "DE", 9.5)


def test_an_empty_batch_cleans_to_nothing():
    result = clean_events(DECODED_SCHEMA.empty_table(), CleanerState(), NOW, DEFAULT)
    assert result.curated.num_rows == 0
    assert result.quarantined.reason == []
    assert result.imputed == 0


def test_cleaning_a_table_built_by_hand(received_at):
    """The decoder is not the only producer of the batch: any table of DECODED_SCHEMA works."""
    row = {name: None for name in DECODED_SCHEMA.names} | {
        "event_id": "x", "user_id": "u", "item_id": "i", "event_type": "view", "value": None,
        "timestamp": "2025-06-10T11:00:00Z", "schema_version": "1.0", "received_at": received_at,
        "event_time": datetime(2025, 6, 10, 11, tzinfo=UTC), "record_index": 7,
    }
    result = clean_events(pa.Table.from_pylist([row], schema=DECODED_SCHEMA), CleanerState(), NOW, DEFAULT)
    (curated,) = result.curated.to_pylist()
    assert (curated["value"], curated["value_imputed"], curated["record_index"]) == (1.0, True, 7)


def test_settled_rows_are_cleaned_as_if_absent(make_record, make_event, received_at):
    """The service marks duplicates as settled instead of copying the batch without them: the
    result must be that of the batch without them (verdicts, imputation, what is learned)."""
    overrides = [
        {"event_type": "click", "value": 3, "context": {"device": "tv"}},
        {"event_type": "click", "value": None, "context": {"device": None}},
        {"event_type": "click", "value": 900},  # an outlier once the state is warm
        {"event_type": "view", "value": 2, "context": {"device": "mobile"}},  # its type only settled
        {"event_type": "click", "value": 1, "timestamp": _at(received_at + timedelta(hours=1))},  # future
        {"event_type": "rating", "value": 5, "context": {"device": "desktop"}},
    ]
    events = [make_event(**{"event_id": f"e{i}"} | o) for i, o in enumerate(overrides)]
    batch = decode_batch([make_record(e, i) for i, e in enumerate(events)]).valid
    state = CleanerState(values={"click": _stats([1, 2, 3, 4, 5] * 20)}, devices={"click": {"tv": 2}})
    rules = CleaningRules(min_samples=10)
    settled = np.array([False, True, False, True, True, False])

    marked = clean_events(batch, state, NOW, rules, settled=settled)
    dropped = clean_events(batch.filter(pa.array(~settled)), state, NOW, rules)

    assert marked.curated.to_pylist() == dropped.curated.to_pylist()
    assert marked.quarantined.record_index.tolist() == dropped.quarantined.record_index.tolist() == [2]
    assert (marked.quarantined.reason, marked.quarantined.detail) == (dropped.quarantined.reason,
                                                                      dropped.quarantined.detail)
    assert marked.learned == dropped.learned
    assert "view" not in marked.learned.values
    assert marked.imputed == dropped.imputed
