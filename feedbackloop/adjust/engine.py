"""One run of the adjust function: evaluate every rule in every scope, act, run the drift detectors,
record every decision. Pure orchestration over small ports; the handler and the local runtime wire
the adapters (AWS: Athena, CloudWatch, AppConfig, Step Functions, SNS, DynamoDB).

Config changes of one run go out as one new configuration version and one deployment (AppConfig runs
one deployment per environment at a time). While a deployment is still rolling out or baking, the
rules that want a change are `deferred`: their state does not move, so they act on a later run.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from feedbackloop.adjust.drift import FEEDBACK_SCORE, DriftEvent, DriftMonitor, ctr_stream, impression_outcomes, thin
from feedbackloop.adjust.queries import LakeQueries
from feedbackloop.adjust.rules import (
    ALL,
    PREFERRED_CATEGORIES,
    Alert,
    Observation,
    Outcome,
    Rule,
    RuleSet,
    RuleState,
    SetConfig,
    StartRetraining,
    after,
    evaluate,
)
from feedbackloop.experiments.stats import sample_ratio_mismatch
from feedbackloop.names import Metric
from feedbackloop.uiconfig import InvalidConfigError, validate

logger = logging.getLogger(__name__)

FIRST_RUN_LOOKBACK = timedelta(hours=24)  # how far back drift reads when it has no watermark yet
SIGNAL_HORIZON_DAYS = 1  # feedback signal quality: does a user's feedback predict their next day
MIN_SIGNAL_USERS = 30  # fewer users with explicit feedback that day: no correlation reported
SRM_WINDOW = timedelta(hours=24)
MIN_SRM_USERS = 100
# engagement-layer columns -> the metrics the effect dashboard charts (names.py)
EFFECT_METRICS = {"ctr": Metric.CTR, "conversion_rate": Metric.CONVERSION_RATE,
                  "avg_session_seconds": Metric.AVG_SESSION_SECONDS, "bounce_rate": Metric.BOUNCE_RATE,
                  "rating_mean": Metric.RATING_MEAN, "nps": Metric.NPS}
DEFERRED = "deferred"  # a decision whose action could not happen yet (the outcome it records)


class DeploymentInProgressError(RuntimeError):
    """The environment is still rolling out or baking an earlier deployment."""


class RetrainingRunningError(RuntimeError):
    """A retraining run is already in progress."""


@dataclass(frozen=True)
class DeployedConfig:
    document: dict[str, Any]
    version: str  # the hosted configuration version
    deployment: int | None = None


class ConfigPublisher(Protocol):
    def current(self) -> DeployedConfig:
        """The configuration the environment runs; DeploymentInProgressError while one rolls out."""

    def publish(self, document: dict[str, Any], based_on: str, description: str) -> DeployedConfig:
        """A new hosted version (refused by the profile's validator if invalid) and its deployment."""


class RetrainingStarter(Protocol):
    def start(self, reason: str, now: datetime) -> str:
        """Start the retraining workflow; its run's id. RetrainingRunningError if one is running."""


class Alerter(Protocol):
    def send(self, subject: str, message: str) -> None: ...


class CloudWatchReader(Protocol):
    def observe(self, metric: str, statistic: str, start: datetime, end: datetime) -> Observation: ...


@dataclass(frozen=True)
class StoredState:
    rules: dict[str, Any]  # rule name -> scope -> RuleState JSON
    drift: dict[str, Any]  # the drift readers' watermarks and the last drift-started retraining
    detectors: bytes | None  # DriftMonitor.to_bytes
    token: Any = None  # the store's version, for the conditional save


class AdjustState(Protocol):
    def load(self) -> StoredState: ...

    def save(self, state: StoredState) -> None:
        """Store it, only if nothing else saved since it was loaded (else a RuntimeError)."""


class DecisionLog(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None: ...


class RunLease(Protocol):
    """One adjust run at a time without reserved concurrency (which a new account's concurrency quota of 10
    cannot spare): a run takes the lease before it reads any state and gives it back when it ends. A run
    that dies holding it (a timeout, a crash) blocks the next ones only until the lease expires."""

    def acquire(self, holder: str, now: datetime, expires: datetime) -> bool:
        """True and the lease is `holder`'s until `expires`, unless another holder's lease is still
        unexpired at `now` (then False and nothing changes)."""

    def release(self, holder: str) -> None:
        """Give the lease back, if `holder` still holds it (an expired lease taken over is left alone)."""


# A lease outlives any run (the function's timeout is the schedule's 5 minutes): a run that dies holding
# it delays the next by at most this long.
LEASE_DURATION = timedelta(minutes=6)
SKIPPED = "skipped"  # the summary's note for a run that found the lease taken


@dataclass(frozen=True)
class Decision:
    decided_at: datetime
    run_id: str
    rule: str
    scope: str
    metric: str
    value: float | None
    samples: int
    comparator: str
    threshold: float
    outcome: str  # an Outcome, or DEFERRED
    action: str | None = None  # set_config, retrain, alert: when the rule fired (or would have)
    result: str | None = None  # what the action did: the config version, the run id, ...
    config_version: str | None = None

    def record(self) -> dict[str, Any]:
        return {"subject": f"rule#{self.rule}", "at": f"{self.decided_at.isoformat()}#{self.scope}", "kind": "rule",
                **asdict(self) | {"decided_at": self.decided_at.isoformat()}}


@dataclass(frozen=True)
class EffectMetric:
    """A number for the effect dashboard: `segment` and `variant` are ALL ('*') when rolled up."""

    name: Metric
    value: float
    segment: str = ALL
    variant: str = ALL
    experiment: str | None = None


@dataclass
class RunReport:
    run_id: str
    now: datetime
    decisions: list[Decision] = field(default_factory=list)
    drift: list[DriftEvent] = field(default_factory=list)
    config: DeployedConfig | None = None  # deployed by this run
    retraining: str | None = None  # started by this run
    effects: list[EffectMetric] = field(default_factory=list)
    srm: dict[str, dict[str, Any]] = field(default_factory=dict)  # experiment -> counts, p-value, mismatch
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the run did nothing (the lease was taken)

    def fired(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == Outcome.FIRE]


@dataclass
class Adjuster:
    rules: RuleSet
    lake: LakeQueries
    cloudwatch: CloudWatchReader
    config: ConfigPublisher
    retraining: RetrainingStarter
    alerts: Alerter
    state: AdjustState
    log: DecisionLog
    new_run_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12]
    lease: RunLease | None = None  # None: the caller guarantees one run at a time (the tests, one process)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # the lease's time: real, not the scheduled

    def run(self, now: datetime) -> RunReport:
        """Evaluate, act, record. With a lease another run holds, nothing is read or done: the report
        says `skipped` (the window comes back on the next run, which reads its own window)."""
        report = RunReport(self.new_run_id(), now)
        if self.lease is None:
            return self._run(report)
        started = self.clock()
        if not self.lease.acquire(report.run_id, started, started + LEASE_DURATION):
            report.skipped = "another adjust run holds the lease"
            return report
        try:
            return self._run(report)
        finally:
            self.lease.release(report.run_id)

    def _run(self, report: RunReport) -> RunReport:
        now = report.now
        stored = self.state.load()
        states = {name: {scope: RuleState.from_json(s) for scope, s in by_scope.items()}
                  for name, by_scope in stored.rules.items()}

        pending: list[tuple[Rule, str, Observation, Outcome]] = []
        for rule in self.rules.rules:
            try:
                observations = self._observe(rule, now)
            except Exception as error:  # one broken rule must not stop the others
                logger.exception("rule %s failed to evaluate", rule.name)
                report.errors.append(f"rule {rule.name}: {error}")
                continue
            for scope, observation in sorted(observations.items()):
                state = states.get(rule.name, {}).get(scope, RuleState())
                pending.append((rule, scope, observation, evaluate(rule, observation, state, now)))

        results = self._act(pending, now, report)
        for (rule, scope, observation, _), (final, action, result, version) in zip(pending, results, strict=True):
            state = states.setdefault(rule.name, {}).get(scope, RuleState())
            if final != DEFERRED:
                states[rule.name][scope] = after(Outcome(final), state, now)
            report.decisions.append(Decision(now, report.run_id, rule.name, scope, rule.metric.name,
                                             observation.value, observation.samples, rule.comparator.value,
                                             rule.threshold, final, action, result, version))

        monitor = DriftMonitor.from_bytes(stored.detectors, self.rules.drift.delta)
        drift_state = stored.drift
        if self.rules.drift.enabled:
            try:
                drift_state = self._drift(monitor, drift_state, now, report)
            except Exception as error:
                logger.exception("drift detection failed")
                report.errors.append(f"drift: {error}")

        try:
            self._effects(now, report)
        except Exception as error:
            logger.exception("effect metrics failed")
            report.errors.append(f"effects: {error}")

        saved = {name: {scope: s.to_json() for scope, s in by_scope.items()} for name, by_scope in states.items()}
        self.state.save(StoredState(saved, drift_state, monitor.to_bytes(), stored.token))
        self.log.write([d.record() for d in report.decisions] + [_drift_record(e, report) for e in report.drift])
        return report

    def _observe(self, rule: Rule, now: datetime) -> dict[str, Observation]:
        start = now - timedelta(minutes=rule.window_minutes)
        if rule.metric.source == "cloudwatch":
            return {"global": self.cloudwatch.observe(rule.metric.name, rule.metric.statistic, start, now)}
        return self.lake.engagement(rule.metric.name, rule.scope, start, now)

    def _act(self, pending: list[tuple[Rule, str, Observation, Outcome]], now: datetime,
             report: RunReport) -> list[tuple[str, str | None, str | None, str | None]]:
        """(outcome, action, result, config version) per pending decision, acting on those that fire."""
        results: list[tuple[str, str | None, str | None, str | None]] = [
            (outcome.value, None, None, None) for _, _, _, outcome in pending]
        firing = [i for i, (_, _, _, outcome) in enumerate(pending) if outcome is Outcome.FIRE]
        config_changes = [i for i in firing if isinstance(pending[i][0].action, SetConfig)]
        if config_changes:
            try:
                applied = self._apply_config(pending, config_changes, now, report)
            except Exception as error:  # AppConfig or the lake failed: retried by a later run, recorded now
                logger.exception("config change failed")
                report.errors.append(f"config change failed: {error}")
                applied = {i: (DEFERRED, "set_config", f"failed: {error}", None) for i in config_changes}
            for i, outcome in applied.items():
                results[i] = outcome
        for i in firing:
            rule, scope, observation, _ = pending[i]
            try:
                results[i] = self._act_one(rule, scope, observation, now, report) or results[i]
            except Exception as error:  # one failed action must not lose the run's other decisions
                logger.exception("action of rule %s failed", rule.name)
                report.errors.append(f"rule {rule.name} action failed: {error}")
                results[i] = (DEFERRED, rule.action.type, f"failed: {error}", None)
        return results

    def _act_one(self, rule: Rule, scope: str, observation: Observation, now: datetime,
                 report: RunReport) -> tuple[str, str | None, str | None, str | None] | None:
        """Retraining and alert actions (config changes are applied together, above)."""
        if isinstance(rule.action, StartRetraining):
            return self._retrain(f"rule {rule.name} ({scope}): {rule.metric.name} = {observation.value:.4g} "
                                 f"{rule.comparator.value} {rule.threshold}", now, report)
        if isinstance(rule.action, Alert):
            self.alerts.send(f"feedbackloop: rule {rule.name} fired ({scope})",
                             f"{rule.action.message}\n\n{rule.description}\n{rule.metric.name} = "
                             f"{observation.value:.6g} over {rule.window_minutes} min ({observation.samples} "
                             f"samples); threshold {rule.comparator.value} {rule.threshold}")
            return Outcome.FIRE.value, "alert", "alert sent", None
        return None

    def _apply_config(self, pending, indices: list[int], now: datetime,
                      report: RunReport) -> dict[int, tuple[str, str | None, str | None, str | None]]:
        try:
            current = self.config.current()
        except DeploymentInProgressError as error:
            return {i: (DEFERRED, "set_config", str(error), None) for i in indices}
        document = copy.deepcopy(current.document)
        for i in indices:
            rule, scope, _, _ = pending[i]
            segment = scope.split("=", 1)[1] if scope.startswith("segment=") else None
            _change(document, rule.action, segment, lambda s: self.lake.preferred_categories(s, now))
        if document == current.document:
            return {i: (Outcome.FIRE.value, "set_config", f"already in version {current.version}", current.version)
                    for i in indices}
        names = ", ".join(sorted({pending[i][0].name for i in indices}))
        try:
            validate(document)
            deployed = self.config.publish(document, current.version, f"adjust run {report.run_id}: {names}")
        except DeploymentInProgressError as error:
            return {i: (DEFERRED, "set_config", str(error), None) for i in indices}
        except InvalidConfigError as error:  # the rule's change would break the document: never deployed
            report.errors.append(f"config change refused: {error}")
            return {i: (DEFERRED, "set_config", f"refused: {error}", None) for i in indices}
        report.config = deployed
        result = f"version {deployed.version}, deployment {deployed.deployment}"
        return {i: (Outcome.FIRE.value, "set_config", result, deployed.version) for i in indices}

    def _retrain(self, reason: str, now: datetime, report: RunReport) -> tuple[str, str, str, None]:
        if report.retraining is not None:
            return Outcome.FIRE.value, "retrain", f"started by this run: {report.retraining}", None
        try:
            report.retraining = self.retraining.start(reason, now)
        except RetrainingRunningError as error:
            return Outcome.FIRE.value, "retrain", f"already running: {error}", None
        return Outcome.FIRE.value, "retrain", f"started {report.retraining}", None

    def _drift(self, monitor: DriftMonitor, saved: Mapping[str, Any], now: datetime,
               report: RunReport) -> dict[str, Any]:
        settings = self.rules.drift
        state = dict(saved)
        floor = now - FIRST_RUN_LOOKBACK
        scores_after = max(_time(state.get("scores_after"), floor), floor)
        scores, last = self.lake.feedback_scores(scores_after, now)
        found = monitor.update(FEEDBACK_SCORE, thin(np.asarray(scores), settings.max_values_per_run,
                                                    f"{FEEDBACK_SCORE}/{now.isoformat()}"), now)
        if last is not None:
            state["scores_after"] = last.isoformat()

        hours_after = max(_time(state.get("hours_after"), floor), floor)
        hours = self.lake.segment_hours(hours_after, now)
        per_stream: dict[str, list[np.ndarray]] = {}
        for hour, segment, impressions, clicks in hours:
            if impressions >= settings.min_impressions:
                per_stream.setdefault(ctr_stream(segment), []).append(
                    impression_outcomes(impressions, clicks, f"{segment}/{hour.isoformat()}"))
        for stream, chunks in sorted(per_stream.items()):
            outcomes = thin(np.concatenate(chunks), settings.max_values_per_run, f"{stream}/{now.isoformat()}")
            found += monitor.update(stream, outcomes, now)
        if hours:
            state["hours_after"] = max(h for h, _, _, _ in hours).isoformat()

        report.drift.extend(found)
        if found and settings.retrain:
            last_retrain = _time(state.get("retrained_at"), None)
            if last_retrain is None or now >= last_retrain + timedelta(minutes=settings.retrain_cooldown_minutes):
                streams = ", ".join(sorted({e.stream for e in found}))
                self._retrain(f"drift in {streams}", now, report)
                state["retrained_at"] = now.isoformat()
        return state


    def _effects(self, now: datetime, report: RunReport) -> None:
        """The last complete hour's engagement, the feedback signal's quality, and each experiment's
        sample ratio, as metrics."""
        hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        for segment, variant, values in self.lake.hour_effects(hour):
            report.effects += [EffectMetric(EFFECT_METRICS[column], value, segment, variant)
                               for column, value in values.items() if value is not None]
        day = (now - timedelta(days=SIGNAL_HORIZON_DAYS + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        users, returned, converted = self.lake.signal_quality(day, SIGNAL_HORIZON_DAYS)
        if users >= MIN_SIGNAL_USERS:
            report.effects += [EffectMetric(name, value) for name, value in (
                (Metric.FEEDBACK_RETENTION_CORRELATION, returned), (Metric.FEEDBACK_CONVERSION_CORRELATION, converted))
                if value is not None]
        try:
            document = self.config.current().document
        except DeploymentInProgressError:
            return  # the arms' weights are changing: check the ratio once the deployment is done
        for name, experiment in sorted(document.get("experiments", {}).items()):
            weights = {v: w for v, w in experiment["variants"].items() if w > 0}
            exposed = self.lake.arm_users(name, now - SRM_WINDOW, now)
            observed = {v: exposed.get(v, 0) for v in weights}
            if len(weights) < 2 or sum(observed.values()) < MIN_SRM_USERS:
                continue
            total = sum(weights.values())
            check = sample_ratio_mismatch(observed, {v: w / total for v, w in weights.items()})
            report.srm[name] = {"observed": observed, "p_value": check.p_value, "mismatch": check.mismatch}
            report.effects.append(EffectMetric(Metric.SAMPLE_RATIO_MISMATCH, float(check.mismatch), experiment=name))


def _change(document: dict[str, Any], action: SetConfig, segment: str | None,
            preferred: Callable[[str], list[str]]) -> None:
    target = document["defaults"] if segment is None else document["segments"].setdefault(segment, {})
    if action.flags:
        target["flags"] = target.get("flags", {}) | action.flags
    layout = action.layout.model_dump(exclude_none=True)
    if layout:
        for key, value in layout.items():
            if isinstance(value, list) and PREFERRED_CATEGORIES in value:
                found = preferred(segment) if segment is not None else []
                value = [v for v in value if v != PREFERRED_CATEGORIES] + [c for c in found if c not in value]
            layout[key] = value
        target["layout"] = target.get("layout", {}) | layout


def _time(value: str | None, default: datetime | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else default


def _drift_record(event: DriftEvent, report: RunReport) -> dict[str, Any]:
    return {"subject": f"drift#{event.stream}", "at": event.detected_at.isoformat(), "kind": "drift",
            "run_id": report.run_id, "retraining": report.retraining,
            **asdict(event) | {"detected_at": event.detected_at.isoformat()}}


def decision_summary(report: RunReport) -> dict[str, Any]:
    """What the handler logs and returns: counts by outcome, what fired, what it did."""
    outcomes: dict[str, int] = {}
    for d in report.decisions:
        outcomes[d.outcome] = outcomes.get(d.outcome, 0) + 1
    return {"run_id": report.run_id, "now": report.now.isoformat(), "outcomes": outcomes,
            "fired": [{"rule": d.rule, "scope": d.scope, "value": d.value, "result": d.result}
                      for d in report.fired()],
            "deferred": [{"rule": d.rule, "scope": d.scope, "result": d.result}
                         for d in report.decisions if d.outcome == DEFERRED],
            "config_version": None if report.config is None else report.config.version,
            "drift": [{"stream": e.stream, "mean_before": e.mean_before, "mean_after": e.mean_after}
                      for e in report.drift],
            "retraining": report.retraining, "errors": report.errors, SKIPPED: report.skipped}

