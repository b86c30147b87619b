"""One run of the adjust function over in-memory ports and real SQL: the lake queries run in DuckDB
(transpiled from Trino as on the stand-in) over engagement, interaction and event rows built here.

Checked: a low-CTR segment gets its preferred categories highlighted in one new, valid config version;
nothing happens twice; a deployment in progress defers the change without moving the rule; a refused
document never deploys; retraining and alerts; a failing rule does not stop the others; drift on the
feedback scores and on a segment's CTR starts retraining, a stationary stream does not."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from feedbackloop.adjust.drift import FEEDBACK_SCORE, DriftMonitor, ctr_stream, impression_outcomes, thin
from feedbackloop.adjust.engine import (
    DEFERRED,
    Adjuster,
    DeployedConfig,
    DeploymentInProgressError,
    RetrainingRunningError,
    StoredState,
    decision_summary,
)
from feedbackloop.adjust.queries import LakeQueries, LakeTableNames
from feedbackloop.adjust.rules import Observation, Outcome, RuleSet, packaged_rules, parse_rules
from feedbackloop.lake import CURATED_EVENTS, ENGAGEMENT, INTERACTIONS, USER_DAILY
from feedbackloop.local.lake_reader import schema
from feedbackloop.local.sql_engine import to_duckdb
from feedbackloop.uiconfig import InvalidConfigError, default_document, validate

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TABLES = LakeTableNames(CURATED_EVENTS.name, INTERACTIONS.name, ENGAGEMENT.name, USER_DAILY.name)


# --- fakes of the ports -------------------------------------------------------------------------------------------

class Lake:
    """The three tables as lists of rows; queries run in DuckDB on the SQL the module builds."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {t.name: [] for t in (ENGAGEMENT, INTERACTIONS, CURATED_EVENTS,
                                                                             USER_DAILY)}
        self.fail: str | None = None

    def rows_of(self, sql: str) -> list[tuple]:
        if self.fail and self.fail in sql:
            raise RuntimeError("Athena is down")
        query, tables = to_duckdb(sql)
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        by_name = {t.name: t for t in (ENGAGEMENT, INTERACTIONS, CURATED_EVENTS, USER_DAILY)}
        for name in tables:
            table_schema = schema(by_name[name])
            rows = [{f.name: r.get(f.name) for f in table_schema} for r in self.tables[name]]
            con.register(name, pa.Table.from_pylist(rows, schema=table_schema))
        return con.sql(query).fetchall()

    def hour(self, start: datetime, scope: str, impressions: int, clicks: int, segment: str = "*",
             experiment: str = "*", variant: str = "*", **more: Any) -> None:
        self.tables[ENGAGEMENT.name].append({
            "event_date": f"{start:%Y-%m-%d}", "grain": "hour", "period_start": start, "scope": scope,
            "segment": segment, "experiment": experiment, "variant": variant, "impressions": impressions,
            "clicks": clicks, "ctr": clicks / impressions if impressions else None, "events": impressions + clicks,
            **more})

    def interaction(self, segment: str, category: str, score: float, at: datetime) -> None:
        self.tables[INTERACTIONS.name].append({
            "event_date": f"{at:%Y-%m-%d}", "segment": segment, "category": category, "feedback_score": score,
            "confidence": 1.0, "event_time": at})

    def scores(self, values: list[float] | np.ndarray, start: datetime, step: timedelta) -> None:
        for i, value in enumerate(values):
            at = start + i * step
            self.tables[CURATED_EVENTS.name].append({
                "event_date": f"{at:%Y-%m-%d}", "event_id": f"e{len(self.tables[CURATED_EVENTS.name])}",
                "event_type": "rating", "feedback_score": float(value), "processed_at": at, "event_time": at})


class Runner:
    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def rows(self, sql: str) -> list[tuple]:
        return self.lake.rows_of(sql)


@dataclass
class Config:
    document: dict = field(default_factory=default_document)
    version: int = 1
    in_progress: bool = False
    refuse: bool = False
    published: list[dict] = field(default_factory=list)

    def current(self) -> DeployedConfig:
        if self.in_progress:
            raise DeploymentInProgressError("deployment 3 is BAKING")
        return DeployedConfig(copy.deepcopy(self.document), str(self.version))

    def publish(self, document: dict, based_on: str, description: str) -> DeployedConfig:
        if self.refuse:
            raise InvalidConfigError("the validator refused it")
        assert based_on == str(self.version)
        validate(document)
        self.version += 1
        self.document = copy.deepcopy(document)
        self.published.append(document)
        return DeployedConfig(document, str(self.version), len(self.published))


@dataclass
class Retraining:
    started: list[str] = field(default_factory=list)
    running: bool = False

    def start(self, reason: str, now: datetime) -> str:
        if self.running:
            raise RetrainingRunningError("execution-1")
        self.started.append(reason)
        return f"run-{len(self.started)}"


@dataclass
class Alerts:
    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, subject: str, message: str) -> None:
        self.sent.append((subject, message))


@dataclass
class CloudWatch:
    values: dict[str, float] = field(default_factory=dict)

    def observe(self, metric: str, statistic: str, start: datetime, end: datetime) -> Observation:
        return Observation(self.values.get(metric, 0.0), 1)


@dataclass
class State:
    stored: StoredState = field(default_factory=lambda: StoredState({}, {}, None, 0))

    def load(self) -> StoredState:
        return self.stored

    def save(self, state: StoredState) -> None:
        assert state.token == self.stored.token
        self.stored = StoredState(state.rules, state.drift, state.detectors, (state.token or 0) + 1)


@dataclass
class Log:
    records: list[dict] = field(default_factory=list)

    def write(self, records: list[dict]) -> None:
        self.records.extend(records)


@dataclass
class World:
    lake: Lake = field(default_factory=Lake)
    config: Config = field(default_factory=Config)
    retraining: Retraining = field(default_factory=Retraining)
    alerts: Alerts = field(default_factory=Alerts)
    cloudwatch: CloudWatch = field(default_factory=CloudWatch)
    state: State = field(default_factory=State)
    log: Log = field(default_factory=Log)

    def adjuster(self, rules: RuleSet | None = None) -> Adjuster:
        return Adjuster(rules or packaged_rules(), LakeQueries(Runner(self.lake), TABLES), self.cloudwatch,
                        self.config, self.retraining, self.alerts, self.state, self.log)


def _only(names: set[str], drift: bool = False) -> RuleSet:
    rules = packaged_rules()
    return rules.model_copy(update={"rules": [r for r in rules.rules if r.name in names],
                                    "drift": rules.drift.model_copy(update={"enabled": drift})})


def _segments(world: World, ctr: dict[str, float], hours: int = 3, impressions: int = 400) -> None:
    for h in range(1, hours + 1):
        for segment, rate in ctr.items():
            world.lake.hour(NOW - timedelta(hours=h), "segment", impressions, int(rate * impressions),
                            segment=segment)


@pytest.fixture
def world() -> World:
    return World()


# --- rules --------------------------------------------------------------------------------------------------------

def test_a_low_ctr_segment_gets_its_preferred_categories_highlighted_in_one_new_version(world):
    _segments(world, {"s0": 0.02, "s1": 0.12, "none": 0.01})
    for category, score in (("garden", 0.9), ("kitchen", 0.6), ("toys", 0.3), ("lamps", 0.1)):
        for _ in range(3):
            world.lake.interaction("s0", category, score, NOW - timedelta(days=1))
    world.lake.interaction("s0", "candles", -1.0, NOW - timedelta(days=1))  # negative: never preferred
    report = world.adjuster(_only({"segment-ctr-low"})).run(NOW)

    by_scope = {d.scope: d for d in report.decisions}
    assert set(by_scope) == {"segment=s0", "segment=s1"}  # events without a segment are not a segment
    assert by_scope["segment=s0"].outcome == Outcome.FIRE
    assert by_scope["segment=s0"].value == pytest.approx(0.02)
    assert by_scope["segment=s0"].samples == 1200
    assert by_scope["segment=s1"].outcome == Outcome.OK
    assert len(world.config.published) == 1
    layout = world.config.published[0]["segments"]["s0"]
    assert layout == {"flags": {"highlight_categories": True},
                      "layout": {"highlighted_categories": ["garden", "kitchen", "toys"]}}
    assert by_scope["segment=s0"].config_version == "2" and report.config.version == "2"
    assert world.log.records[0]["subject"] == "rule#segment-ctr-low"

    again = world.adjuster(_only({"segment-ctr-low"})).run(NOW + timedelta(minutes=5))
    assert {d.scope: d.outcome for d in again.decisions}["segment=s0"] == Outcome.HOLDING
    assert len(world.config.published) == 1  # no second deployment while the segment stays low


def test_rules_firing_in_one_run_share_one_version(world):
    _segments(world, {"s0": 0.02, "s1": 0.03})
    world.adjuster(_only({"segment-ctr-low"})).run(NOW)
    assert len(world.config.published) == 1
    assert set(world.config.published[0]["segments"]) == {"s0", "s1"}


def test_a_deployment_in_progress_defers_the_change_and_the_rule_acts_on_a_later_run(world):
    _segments(world, {"s0": 0.02})
    world.config.in_progress = True
    report = world.adjuster(_only({"segment-ctr-low"})).run(NOW)
    assert [d.outcome for d in report.decisions] == [DEFERRED]
    assert "BAKING" in report.decisions[0].result
    assert not world.config.published
    world.config.in_progress = False
    later = world.adjuster(_only({"segment-ctr-low"})).run(NOW + timedelta(minutes=5))
    assert [d.outcome for d in later.decisions] == [Outcome.FIRE]
    assert len(world.config.published) == 1


def test_a_document_the_validator_refuses_is_never_deployed(world):
    _segments(world, {"s0": 0.02})
    world.config.refuse = True
    report = world.adjuster(_only({"segment-ctr-low"})).run(NOW)
    assert report.decisions[0].outcome == DEFERRED and "refused" in report.decisions[0].result
    assert report.errors and not world.config.published and report.config is None


def test_an_unchanged_document_is_not_deployed_again(world):
    _segments(world, {"s0": 0.02})
    world.config.document["segments"]["s0"] = {"flags": {"highlight_categories": True},
                                               "layout": {"highlighted_categories": []}}
    report = world.adjuster(_only({"segment-ctr-low"})).run(NOW)
    assert report.decisions[0].outcome == Outcome.FIRE and report.decisions[0].result == "already in version 1"
    assert not world.config.published


def test_a_global_collapse_starts_retraining_once(world):
    for h in (1, 2):
        world.lake.hour(NOW - timedelta(hours=h), "global", 2000, 20)
    report = world.adjuster(_only({"global-ctr-collapse"})).run(NOW)
    assert report.retraining == "run-1" and len(world.retraining.started) == 1
    assert "global-ctr-collapse" in world.retraining.started[0]
    world.retraining.running = True
    world.state.stored = StoredState({}, {}, None, world.state.stored.token)  # forget: it fires again
    again = world.adjuster(_only({"global-ctr-collapse"})).run(NOW + timedelta(minutes=5))
    assert again.decisions[0].outcome == Outcome.FIRE and "already running" in again.decisions[0].result


def test_alerts_carry_the_rule_and_the_values_seen(world):
    world.cloudwatch.values["RecordsQuarantined"] = 5000
    report = world.adjuster(_only({"quarantine-spike"})).run(NOW)
    assert report.decisions[0].outcome == Outcome.FIRE
    (subject, message), = world.alerts.sent
    assert "quarantine-spike" in subject and "RecordsQuarantined = 5000" in message


def test_too_few_impressions_decide_nothing(world):
    _segments(world, {"s0": 0.0}, hours=1, impressions=100)  # 100 < min_samples 200
    report = world.adjuster(_only({"segment-ctr-low"})).run(NOW)
    assert [d.outcome for d in report.decisions] == [Outcome.INSUFFICIENT_SAMPLE]


def test_a_failing_rule_is_reported_and_the_others_still_run(world):
    world.lake.fail = "scope = 'segment'"
    world.cloudwatch.values["RecordsQuarantined"] = 5000
    report = world.adjuster(_only({"segment-ctr-low", "quarantine-spike"})).run(NOW)
    assert [d.rule for d in report.decisions] == ["quarantine-spike"]
    assert report.errors == ["rule segment-ctr-low: Athena is down"]
    assert decision_summary(report)["errors"] == report.errors


def test_a_variant_scope_reads_each_arm_of_its_experiment(world):
    for variant, rate in (("personalized", 0.05), ("popularity", 0.002)):
        for h in range(1, 7):
            world.lake.hour(NOW - timedelta(hours=h), "variant", 0, 0, experiment="ranking", variant=variant,
                            sessions=200, conversion_rate=rate)
    world.lake.hour(NOW - timedelta(hours=1), "variant", 0, 0, experiment="other", variant="x", sessions=900,
                    conversion_rate=0.0)
    report = world.adjuster(_only({"variant-conversion-low"})).run(NOW)
    outcomes = {d.scope: (d.outcome, d.samples) for d in report.decisions}
    assert outcomes == {"variant=ranking/personalized": (Outcome.OK, 1200),
                        "variant=ranking/popularity": (Outcome.FIRE, 1200)}


def test_only_hours_inside_the_window_count(world):
    world.lake.hour(NOW - timedelta(hours=4), "segment", 5000, 0, segment="s0")  # outside the 3-hour window
    world.lake.hour(NOW - timedelta(hours=1), "segment", 400, 40, segment="s0")
    report = world.adjuster(_only({"segment-ctr-low"})).run(NOW)
    assert report.decisions[0].value == pytest.approx(0.1) and report.decisions[0].outcome == Outcome.OK


# --- drift --------------------------------------------------------------------------------------------------------

def test_a_shift_in_feedback_scores_is_detected_and_starts_retraining(world):
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(0.5, 0.1, 3000), rng.normal(0.2, 0.1, 3000)]).clip(-1, 1)
    world.lake.scores(values[:3000], NOW - timedelta(hours=2), timedelta(seconds=1))
    first = world.adjuster(_only(set(), drift=True)).run(NOW - timedelta(minutes=30))
    assert not first.drift and first.retraining is None
    world.lake.scores(values[3000:], NOW - timedelta(minutes=25), timedelta(milliseconds=100))
    second = world.adjuster(_only(set(), drift=True)).run(NOW)
    assert [e.stream for e in second.drift][:1] == [FEEDBACK_SCORE]
    assert second.drift[0].mean_after < second.drift[0].mean_before
    assert second.retraining == "run-1" and "drift in feedback_score" in world.retraining.started[0]
    assert any(r["subject"] == "drift#feedback_score" for r in world.log.records)
    # the watermark moved: a third run reads nothing new and finds nothing
    assert not world.adjuster(_only(set(), drift=True)).run(NOW + timedelta(minutes=5)).drift


def test_a_drop_in_one_segments_ctr_is_detected_on_that_segment_only(world):
    for h in range(24, 0, -1):
        start = NOW - timedelta(hours=h)
        world.lake.hour(start, "segment", 500, 60 if h > 6 else 15, segment="s0")
        world.lake.hour(start, "segment", 500, 60, segment="s1")
    report = world.adjuster(_only(set(), drift=True)).run(NOW)
    assert {e.stream for e in report.drift} == {ctr_stream("s0")}
    assert report.retraining == "run-1"


def test_retraining_on_drift_waits_for_its_cooldown(world):
    for h in range(24, 0, -1):
        world.lake.hour(NOW - timedelta(hours=h), "segment", 500, 60 if h > 6 else 15, segment="s0")
    world.adjuster(_only(set(), drift=True)).run(NOW)
    world.lake.hour(NOW, "segment", 500, 60, segment="s0")  # recovers: another change, an hour later
    later = world.adjuster(_only(set(), drift=True)).run(NOW + timedelta(hours=2))
    assert later.drift and later.retraining is None and len(world.retraining.started) == 1


def test_a_stationary_stream_raises_no_drift(world):
    rng = np.random.default_rng(11)
    world.lake.scores(rng.normal(0.4, 0.2, 6000).clip(-1, 1), NOW - timedelta(hours=3), timedelta(seconds=1))
    for h in range(24, 0, -1):
        world.lake.hour(NOW - timedelta(hours=h), "segment", 500, int(rng.binomial(500, 0.1)), segment="s0")
    report = world.adjuster(_only(set(), drift=True)).run(NOW)
    assert report.drift == [] and report.retraining is None


def test_detectors_survive_the_state_store():
    monitor = DriftMonitor(0.002)
    rng = np.random.default_rng(3)
    assert not monitor.update("s", rng.normal(0.5, 0.05, 2000), NOW)
    restored = DriftMonitor.from_bytes(monitor.to_bytes(), 0.002)
    assert restored.update("s", rng.normal(0.0, 0.05, 500), NOW)  # the old regime was remembered
    assert DriftMonitor.from_bytes(monitor.to_bytes(), 0.01).detectors == {}  # new sensitivity: start over


def test_impression_outcomes_and_thinning_keep_counts_and_order():
    outcomes = impression_outcomes(100, 7, "seed")
    assert outcomes.sum() == 7 and len(outcomes) == 100
    assert np.array_equal(outcomes, impression_outcomes(100, 7, "seed"))
    assert len(impression_outcomes(3, 5, "x")) == 5  # clicks without views still count as impressions
    values = np.arange(1000.0)
    kept = thin(values, 100, "seed")
    assert len(kept) == 100 and np.all(np.diff(kept) > 0)
    assert thin(values[:10], 100, "seed") is not None and len(thin(values[:10], 100, "seed")) == 10


def test_invalid_rules_stop_the_run_before_it_starts():
    with pytest.raises(ValueError, match="rules"):
        parse_rules({"version": 1, "rules": [{"name": "x"}]})


@pytest.mark.parametrize(("before", "after", "within"), [
    (lambda r, n: r.normal(0.5, 0.2, n), lambda r, n: r.normal(0.3, 0.2, n), 200),  # feedback scores
    (lambda r, n: (r.random(n) < 0.10) * 1.0, lambda r, n: (r.random(n) < 0.05) * 1.0, 2_000),  # CTR halves
])
def test_adwin_finds_a_known_change_point_quickly_and_no_change_in_a_stationary_stream(before, after, within):
    delays, false_alarms = [], 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        events = DriftMonitor(0.002).update("s", np.concatenate([before(rng, 10_000), after(rng, within)]), NOW)
        false_alarms += sum(e.values_seen <= 10_000 for e in events)
        delays.append(min((e.values_seen - 10_000 for e in events if e.values_seen > 10_000), default=None))
        false_alarms += len(DriftMonitor(0.002).update("s", before(rng, 20_000), NOW))
    assert None not in delays, "a change was missed"
    assert false_alarms == 0


def test_a_drop_in_everyones_ctr_is_detected_on_the_global_stream(world):
    for h in range(24, 0, -1):
        world.lake.hour(NOW - timedelta(hours=h), "global", 1000, 120 if h > 6 else 40)
    report = world.adjuster(_only(set(), drift=True)).run(NOW)
    assert {e.stream for e in report.drift} == {ctr_stream("*")}


def test_each_run_reports_the_last_hours_engagement_by_segment_and_arm(world):
    hour = NOW - timedelta(hours=1)
    world.lake.hour(hour, "global", 1000, 80, sessions=100, conversion_rate=0.2)
    world.lake.hour(hour, "segment", 400, 40, segment="s1")
    world.lake.hour(hour, "segment", 100, 1, segment="none")  # no segment: not a segment
    world.lake.hour(hour, "variant", 500, 60, experiment="ranking", variant="personalized")
    world.lake.hour(NOW - timedelta(hours=2), "global", 1000, 10)  # an older hour: not this run's
    report = world.adjuster(_only(set())).run(NOW)
    ctr = {(e.segment, e.variant): e.value for e in report.effects if e.name == "Ctr"}
    assert ctr == {("*", "*"): 0.08, ("s1", "*"): 0.1, ("*", "ranking/personalized"): 0.12}
    assert {(e.name, e.value) for e in report.effects if e.segment == "*" and e.variant == "*"} >= {
        ("ConversionRate", 0.2)}


def test_a_broken_split_is_flagged_as_a_sample_ratio_mismatch(world):
    at = NOW - timedelta(hours=3)
    for i in range(600):
        arm = "personalized" if i < 400 else "popularity"  # 2:1 where the config says 1:1
        world.lake.tables[INTERACTIONS.name].append({"event_date": f"{at:%Y-%m-%d}", "event_time": at,
                                                     "user_id": f"u{i}", "experiment": "ranking", "variant": arm})
    report = world.adjuster(_only(set())).run(NOW)
    assert report.srm["ranking"]["mismatch"] and report.srm["ranking"]["p_value"] < 1e-6
    assert [e.value for e in report.effects if e.name == "SampleRatioMismatch"] == [1.0]


def test_feedback_signal_quality_is_the_correlation_of_feedback_with_coming_back(world):
    day = (NOW - timedelta(days=2)).replace(hour=0)
    rng = np.random.default_rng(5)
    for i in range(200):
        score = float(rng.uniform(-1, 1))
        world.lake.tables[USER_DAILY.name].append({"event_date": f"{day:%Y-%m-%d}", "user_id": f"u{i}",
                                                   "explicit_events": 1, "explicit_score_sum": score})
        if score > 0:  # the satisfied come back, and half of them buy
            world.lake.tables[USER_DAILY.name].append({"event_date": f"{day + timedelta(days=1):%Y-%m-%d}",
                                                       "user_id": f"u{i}", "purchases": i % 2})
    report = world.adjuster(_only(set())).run(NOW)
    values = {e.name: e.value for e in report.effects}
    assert values["FeedbackRetentionCorrelation"] > 0.8 and 0.3 < values["FeedbackConversionCorrelation"] < 0.8


def test_a_failing_action_is_recorded_and_the_other_decisions_still_stand(world):
    class BrokenAlerts:
        def send(self, subject: str, message: str) -> None:
            raise ConnectionError("SNS is unreachable")

    world.alerts = BrokenAlerts()
    world.cloudwatch.values["RecordsQuarantined"] = 5000
    for h in (1, 2):
        world.lake.hour(NOW - timedelta(hours=h), "global", 2000, 20)
    report = world.adjuster(_only({"quarantine-spike", "global-ctr-collapse"})).run(NOW)
    outcomes = {d.rule: (d.outcome, d.result) for d in report.decisions}
    assert outcomes["quarantine-spike"] == (DEFERRED, "failed: SNS is unreachable")
    assert outcomes["global-ctr-collapse"][0] == Outcome.FIRE and report.retraining == "run-1"
    assert report.errors == ["rule quarantine-spike action failed: SNS is unreachable"]
    assert len(world.log.records) == 2  # both decisions recorded; the alert rule acts again next run
    assert "global" not in world.state.stored.rules["quarantine-spike"]  # its state did not move: still armed
