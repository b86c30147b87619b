"""The demo's simulated days: the simulated world's users (feedbackloop/simulation.py: hidden tastes,
position bias, fatigue, three activity levels, new items arriving mid-run) visit through the local API,
the tables the rules and drift read are rebuilt at every checkpoint, the adjust function runs (rules,
drift, config deployments, retraining), the model retrains nightly, and mid-run the tastes shift.

Everything the loop does is read back from its stores; what the simulation knows (the hidden
preferences, the oracle) is only used to judge it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from feedbackloop.datasets import online_retail
from feedbackloop.experiments.analysis import users_sql
from feedbackloop.local.adjust import LocalRetraining
from feedbackloop.local.client import EventsClient
from feedbackloop.local.phases import PhaseClock
from feedbackloop.local.retrain import LOCAL_TRAINING, run_retraining
from feedbackloop.local.runtime import LocalRuntime
from feedbackloop.local.simulate import ArmFigures, DayFigures, SimulatedClients
from feedbackloop.local.sql_engine import local_engine, to_duckdb
from feedbackloop.models.contract import HALF_LIFE_DAYS
from feedbackloop.settings import RetrainSettings
from feedbackloop.simulation import Catalog, World
from glue_jobs.build_tables import JOB_NAMES, run_job

# The smallest relative lift the demo's A/B test is planned to detect: the simulated population is a few
# hundred users, far too few for the 10% a product team would plan for (`feedbackloop experiment report`).
DEMO_MDE = 0.25
CHECKPOINT_HOURS = 12  # tables and the adjust function run this often (hourly and every 5 minutes in AWS)
CHECKPOINT_JOBS = ("interactions", "engagement")  # what rules and drift read
RETRAINING_TIMEOUT = 3600.0  # seconds the loop waits for a retraining the adjust function started


@dataclass(frozen=True)
class LoopPlan:
    days: int = 5
    users: int = 500
    visits_per_day: int = 1200
    shift_day: int = 3  # preferences shift at the start of this day (0-based)
    arrival_day: int = 2  # the catalogue's new items arrive at the start of this day
    nightly_retrain_days: tuple[int, ...] = (0, 2)  # retrain after these days (besides drift-triggered runs)
    seed: int = 7


@dataclass
class Checkpoint:
    day: int
    hour: int
    at: datetime
    arms: dict[str, ArmFigures]
    adjust: dict[str, Any]
    config_change: tuple[str, dict, dict] | None = None  # (user, config before, config after)
    retrained: str | None = None


@dataclass
class LoopResult:
    plan: LoopPlan
    start: datetime
    checkpoints: list[Checkpoint] = field(default_factory=list)
    days: list[DayFigures] = field(default_factory=list)
    retrainings: list[str] = field(default_factory=list)
    events_accepted: int = 0

    def arm(self, variant: str, days: range) -> ArmFigures:
        total = ArmFigures()
        for day in self.days:
            figures = day.arms.get(variant)
            if figures is not None and day.day in days:
                total.merge(figures)
        return total


def run_loop(runtime: LocalRuntime, start: datetime, plan: LoopPlan, accepted_so_far: int,
             say: Callable[[str], None], clock: PhaseClock | None = None) -> LoopResult:
    clock = clock or PhaseClock()
    with clock.phase("closed loop: the simulated world"):
        world = World(Catalog.from_online_retail(online_retail.load()), plan.users, plan.seed)
    clients = SimulatedClients(runtime.api.url, runtime.api_key, world)
    probe = EventsClient(runtime.api.url, runtime.api_key)
    result = LoopResult(plan, start)
    expected = accepted_so_far
    margin = RetrainSettings.model_fields["gate_margin"].default
    say(f"\nThe closed loop: {plan.users:,} simulated users with hidden tastes (categories, price levels), position "
        f"bias and fatigue, {plan.days} days of "
        f"{plan.visits_per_day:,} visits from {start:%Y-%m-%d %H:%M} UTC; preferences shift on day "
        f"{plan.shift_day + 1}")
    say("  each visit: GET recommendations (with the user's segment and arm), show 10 items, post views, clicks, "
        "purchases, ratings")
    try:
        for day in range(plan.days):
            if day == plan.arrival_day:
                world.arrive()
                say(f"  -- day {day + 1}: {int(world.catalog.new.sum())} new items arrive in the catalogue --")
            if day == plan.shift_day:
                world.shift(plan.seed + 1000)
                say(f"  -- day {day + 1}: every user's preferences shift (hidden from the system) --")
            day_figures = DayFigures(day, start + timedelta(days=day))
            for hour in range(0, 24, CHECKPOINT_HOURS):
                at = start + timedelta(days=day, hours=hour)
                started = time.perf_counter()
                with clock.phase("closed loop: visits (GET, batched posts)"):
                    figures = clients.period(day, at, CHECKPOINT_HOURS,
                                             plan.visits_per_day * CHECKPOINT_HOURS // 24,
                                             seed=plan.seed * 100_000 + day * 24 + hour)
                expected += figures.events.accepted
                result.events_accepted += figures.events.accepted
                _merge(day_figures, figures)
                with clock.phase("closed loop: stream drain"):
                    if not runtime.wait_until_processed(expected, timeout=600):
                        raise RuntimeError("the stream did not drain")
                sent = time.perf_counter() - started
                checkpoint_at = at + timedelta(hours=CHECKPOINT_HOURS)
                # what the rules and drift read at every checkpoint; the feedback and feature layers (signal
                # quality's) once a day, unless the nightly retraining is about to build them itself
                end_of_day = hour + CHECKPOINT_HOURS == 24 and day not in plan.nightly_retrain_days
                with clock.phase("closed loop: tables"):
                    tables = _build_tables(runtime, JOB_NAMES if end_of_day else CHECKPOINT_JOBS)
                with clock.phase("closed loop: adjust (rules, drift, config)"):
                    probes = _segment_probes(probe, clients.segment_members)
                    summary = runtime.adjust.invoke({"scheduled_time": checkpoint_at.isoformat()})
                    checkpoint = Checkpoint(day, hour, checkpoint_at, figures.arms, summary)
                    if summary.get("config_version"):
                        checkpoint.config_change = _config_change(runtime, probe, probes, summary)
                if summary.get("retraining"):
                    with clock.phase("closed loop: retraining"):
                        # a wall-clock bound far above an idle machine's minute: a busy, shared one is slow
                        if not LocalRetraining.wait(timeout=RETRAINING_TIMEOUT):
                            raise RuntimeError(f"the drift retraining did not end within {RETRAINING_TIMEOUT:.0f}s")
                    checkpoint.retrained = summary["retraining"]
                    result.retrainings.append(f"day {day + 1} {hour + CHECKPOINT_HOURS:02d}h: drift "
                                              f"({_outcome(LocalRetraining.runs[-1])})")
                result.checkpoints.append(checkpoint)
                _say_checkpoint(say, checkpoint, figures, sent, tables)
            result.days.append(day_figures)
            if day in plan.nightly_retrain_days and result.checkpoints[-1].retrained:
                # the day's last checkpoint started a retraining on the same data: a nightly run would train
                # the same model, and the gate would keep the one just published (no newer day)
                result.retrainings.append(f"day {day + 1} 24h: nightly (not needed: the drift retraining "
                                          "has just learned from the same days)")
                say(f"  nightly retraining after day {day + 1}: not needed, the drift retraining at 24h has just "
                    "learned from the same days")
            elif day in plan.nightly_retrain_days:
                with clock.phase("closed loop: retraining"):
                    run = run_retraining(runtime.moto.endpoint, runtime.session, runtime.training or LOCAL_TRAINING,
                                         margin, say=lambda _line: None)
                result.retrainings.append(f"day {day + 1} 24h: nightly ({_outcome(run)})")
                say(f"  nightly retraining after day {day + 1}: {_outcome(run)}")
    finally:
        clients.close()
        probe.close()
    return result


def _merge(total: DayFigures, part: DayFigures) -> None:
    for variant, figures in part.arms.items():
        total.arms.setdefault(variant, ArmFigures()).merge(figures)
    total.unavailable += part.unavailable
    total.events.sent += part.events.sent
    total.events.accepted += part.events.accepted


def _build_tables(runtime: LocalRuntime, names: tuple[str, ...] = JOB_NAMES) -> float:
    started = time.perf_counter()
    engine = local_engine(runtime.moto.endpoint, runtime.session)
    for name in names:
        run_job(name, engine, settle=timedelta(0), half_life_days=HALF_LIFE_DAYS)
    return time.perf_counter() - started


def _segment_probes(client: EventsClient, members: dict[str, str]) -> dict[str, tuple[str, dict]]:
    """A simulated user of each segment seen, with the config they get now (to show what a rule changes)."""
    probes: dict[str, tuple[str, dict]] = {}
    for segment, user_id in members.items():
        status, config, _ = client.request("GET", f"/users/{user_id}/config")
        if status == 200 and config.get("segment") == segment:
            probes[segment] = (user_id, config)
    return probes


def _config_change(runtime: LocalRuntime, client: EventsClient, probes: dict[str, tuple[str, dict]],
                   summary: dict) -> tuple[str, dict, dict] | None:
    changed = [f["scope"].removeprefix("segment=") for f in summary["fired"] if f["scope"].startswith("segment=")]
    for segment in changed:
        if segment in probes:
            user, before = probes[segment]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the serving function's config cache expires
                status, after, _ = client.request("GET", f"/users/{user}/config")
                if status == 200 and after.get("config_version") == summary["config_version"]:
                    return user, before, after
                time.sleep(0.25)
    return None


def _outcome(run: Any) -> str:
    if isinstance(run, Exception):
        return f"failed: {run}"
    reason = (run.evaluation or {}).get("decision", {}).get("reason", "")
    if run.published is not None:
        return f"published {run.published['version']} ({reason})"
    return f"the gate kept the current model ({reason})"


def _say_checkpoint(say: Callable[[str], None], checkpoint: Checkpoint, figures: DayFigures, sent: float,
                    tables: float) -> None:
    arms = "  ".join(f"{v} CTR {a.ctr:6.1%} (oracle {a.oracle_ctr:5.1%})" for v, a in sorted(checkpoint.arms.items()))
    say(f"  day {checkpoint.day + 1} {checkpoint.hour:02d}-{checkpoint.hour + CHECKPOINT_HOURS:02d}h  "
        f"{figures.events.accepted:>6,} events  {arms}  [send {sent:.0f}s, tables {tables:.0f}s]")
    adjust = checkpoint.adjust
    for fired in adjust.get("fired", []):
        say(f"      rule {fired['rule']} fired in {fired['scope']}: value {fired['value']:.4f} -> {fired['result']}")
    for deferred in adjust.get("deferred", []):
        say(f"      rule {deferred['rule']} deferred in {deferred['scope']}: {deferred['result']}")
    for drift in adjust.get("drift", []):
        say(f"      drift in {drift['stream']}: mean {drift['mean_before']:.4f} -> {drift['mean_after']:.4f}")
    if adjust.get("retraining"):
        say(f"      retraining started ({adjust['retraining']})")
    if checkpoint.config_change:
        user, before, after = checkpoint.config_change
        say(f"      GET /users/{user}/config (segment {after.get('segment')}): version "
            f"{before.get('config_version')} -> {after.get('config_version')}; highlighted categories "
            f"{before['layout'].get('highlighted_categories')} -> {after['layout'].get('highlighted_categories')}, "
            f"flags {sorted(k for k, v in after['flags'].items() if v)}")
    for error in adjust.get("errors", []):
        say(f"      adjust error: {error}")


def summarize(runtime: LocalRuntime, result: LoopResult, seconds: float, say: Callable[[str], None],
              report_path: Path) -> int:
    """The minute-long read: the A/B verdict from the lake, the oracle gap and the shift, from the
    simulation's ground truth, and what the adjust function did; then the HTML report."""
    from feedbackloop.experiments.analysis import USER_COLUMNS, analyze, render
    from feedbackloop.local.lake_reader import connect
    from feedbackloop.local.report_data import collect_local
    from feedbackloop.report import render as render_report
    from feedbackloop.uiconfig import default_document

    plan = result.plan
    end = result.start + timedelta(days=plan.days)
    con = connect(runtime.moto.endpoint)
    users = con.execute(to_duckdb(users_sql(RANKING, result.start, end))[0]).df()[list(USER_COLUMNS)]
    weights = default_document()["experiments"][RANKING]["variants"]
    report = analyze(RANKING, users, None, weights, control="popularity", treatment="personalized",
                     minimum_detectable_effect=DEMO_MDE)
    ab = render(report)

    before = range(0, plan.shift_day)
    shifted = range(plan.shift_day, plan.shift_day + 1)
    after = range(plan.shift_day + 1, plan.days)
    truth = [f"{'arm':<14}{'days':<11}{'CTR':>8}{'expected':>10}{'oracle':>9}{'of oracle':>11}"]
    for variant in ("personalized", "popularity"):
        for label, days in (("before", before), ("shift day", shifted), ("after", after)):
            arm = result.arm(variant, days)
            if arm.sessions:
                truth.append(f"{variant:<14}{label:<11}{arm.ctr:>8.2%}{arm.expected_ctr:>10.2%}"
                             f"{arm.oracle_ctr:>9.2%}{arm.expected_ctr / arm.oracle_ctr:>11.0%}")
    fired = [(c, f) for c in result.checkpoints for f in c.adjust.get("fired", [])]
    drift = [(c, d) for c in result.checkpoints for d in c.adjust.get("drift", [])]
    p_before, p_shift, p_after = (result.arm("personalized", days) for days in (before, shifted, after))
    if p_before.sessions and p_shift.sessions and p_after.sessions:
        drop = p_before.ctr - p_shift.ctr
        regained = (p_after.ctr - p_shift.ctr) / drop if drop > 0 else float("nan")
        after_shift = [f"day {c.day + 1} {c.hour + CHECKPOINT_HOURS:02d}h {d['stream']}" for c, d in drift
                       if c.day >= plan.shift_day]
        truth.append(f"after the shift: personalized CTR {p_before.ctr:.2%} -> {p_shift.ctr:.2%} -> {p_after.ctr:.2%} "
                     f"({regained:.0%} of the drop regained); drift detected after it: "
                     f"{', '.join(after_shift) or 'none'}; lift over popularity after it: "
                     f"{p_after.ctr / max(result.arm('popularity', after).ctr, 1e-9) - 1:+.0%}")
    adjust = [f"{len(result.checkpoints)} runs; rules fired {len(fired)} times; drift events {len(drift)}"]
    adjust += [f"  day {c.day + 1} {c.hour + CHECKPOINT_HOURS:02d}h  {f['rule']} in {f['scope']}: {f['result']}"
               for c, f in fired]
    adjust += [f"  day {c.day + 1} {c.hour + CHECKPOINT_HOURS:02d}h  drift in {d['stream']}" for c, d in drift]
    adjust.append("retraining: " + ("; ".join(result.retrainings) or "none"))

    say("\n" + "=" * 100)
    say(f"Summary ({seconds / 60:.1f} minutes)")
    say(f"\nA/B test, from the interaction layer (planned for a {DEMO_MDE:.0%} relative lift; no pre-period: "
        "CUPED not applied)")
    say("  " + ab.replace("\n", "\n  "))
    say("\nGround truth of the simulation (CTR; expected CTR of what was shown; what an oracle would earn)")
    say("  " + "\n  ".join(truth))
    say("\nThe adjust function")
    say("  " + "\n  ".join(adjust))
    notes = [("A/B test: personalized ranking against the popularity control", ab),
             ("Ground truth of the simulation", "\n".join(truth)), ("The adjust function", "\n".join(adjust))]
    data = collect_local(runtime.moto.endpoint, runtime.session, "feedbackloop: the closed loop", notes)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_report(data))
    say(f"\nReport: {report_path.resolve()}")
    return 0


RANKING = "ranking"
