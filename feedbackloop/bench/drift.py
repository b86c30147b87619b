"""How fast the adjust function's drift detector finds a known change, and how often it cries wolf.

The detector is the deployed one (`DriftMonitor`: river's ADWIN, delta 0.002, one value at a time). Each
scenario is a synthetic stream of PRE values of one regime followed by up to POST values of another,
over SEEDS seeds: the delay is how many values after the change point the first detection comes (a run
without one within POST values is a miss). False alarms: detections in RUNS stationary streams of
STATIONARY values of each kind (feedback scores and click outcomes), and detections before the change
point in the scenarios.

Baseline, on the very same streams: river's Page-Hinkley test with its defaults (the other change
detector river ships for a mean shift), so a delay is read beside a peer's delay and false alarms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import numpy as np
from river.drift import PageHinkley

from feedbackloop.adjust.drift import DriftMonitor
from feedbackloop.bench import write_results

DELTA = 0.002  # the rule file's default sensitivity (DriftMonitor.delta)
SEEDS = 50
PRE, POST = 10_000, 20_000
RUNS, STATIONARY = 20, 100_000
_AT = datetime(2026, 1, 1, tzinfo=UTC)

Stream = Callable[[np.random.Generator, int], np.ndarray]


def _scores(mean: float) -> Stream:
    return lambda rng, n: rng.normal(mean, 0.2, n)


def _clicks(rate: float) -> Stream:
    return lambda rng, n: (rng.random(n) < rate).astype(np.float64)


@dataclass(frozen=True)
class Scenario:
    name: str  # as in the entry names
    described: str
    before: Stream
    after: Stream


SCENARIOS = (
    Scenario("feedback_score_0.5_to_0.4", "feedback scores N(0.5, 0.2) -> N(0.4, 0.2)", _scores(0.5), _scores(0.4)),
    Scenario("feedback_score_0.5_to_0.3", "feedback scores N(0.5, 0.2) -> N(0.3, 0.2)", _scores(0.5), _scores(0.3)),
    Scenario("ctr_10_to_5_percent", "click outcomes, CTR 10% -> 5%", _clicks(0.10), _clicks(0.05)),
    Scenario("ctr_10_to_8_percent", "click outcomes, CTR 10% -> 8%", _clicks(0.10), _clicks(0.08)),
)
STATIONARY_KINDS = (("feedback_score", "feedback scores N(0.5, 0.2)", _scores(0.5)),
                    ("ctr", "click outcomes, CTR 10%", _clicks(0.10)))


def adwin_detections(values: np.ndarray, delta: float = DELTA) -> list[int]:
    """1-based positions at which the deployed detector reported a change."""
    return [event.values_seen for event in DriftMonitor(delta).update("bench", values, _AT)]


def page_hinkley_detections(values: np.ndarray) -> list[int]:
    detector, found = PageHinkley(), []
    for position, value in enumerate(values.tolist(), start=1):
        detector.update(value)
        if detector.drift_detected:
            found.append(position)
    return found


DETECTORS = {"adwin": adwin_detections, "page_hinkley": page_hinkley_detections}


@dataclass
class Delays:
    delays: list[int]
    missed: int
    early: int  # detections before the change point

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.delays, q)) if self.delays else float("nan")

    def as_dict(self) -> dict:
        return {"median": self.quantile(0.5), "p90": self.quantile(0.9), "missed": self.missed,
                "false_alarms_before_change": self.early, "runs": len(self.delays) + self.missed}


def delays(scenario: Scenario, detect: Callable[[np.ndarray], list[int]], seeds: int = SEEDS, pre: int = PRE,
           post: int = POST) -> Delays:
    found, missed, early = [], 0, 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        positions = detect(np.concatenate([scenario.before(rng, pre), scenario.after(rng, post)]))
        early += sum(p <= pre for p in positions)
        after = [p - pre for p in positions if p > pre]
        if after:
            found.append(after[0])
        else:
            missed += 1
    return Delays(found, missed, early)


def false_alarms(stream: Stream, detect: Callable[[np.ndarray], list[int]], runs: int = RUNS,
                 length: int = STATIONARY, seed: int = 1000) -> int:
    return sum(len(detect(stream(np.random.default_rng(seed + r), length))) for r in range(runs))


def _entry(name: str, unit: str, value: float, baseline_name: str, baseline: float, better: str) -> dict:
    ratio = value / baseline if baseline and np.isfinite(baseline) and np.isfinite(value) else float("nan")
    return {"name": name, "unit": unit, "value": value, "baseline": {"name": baseline_name, "value": baseline},
            "ratio": round(ratio, 3), "better": better}


def run(json_path: str, console: TextIO, seeds: int = SEEDS, runs: int = RUNS, stationary: int = STATIONARY,
        pre: int = PRE, post: int = POST) -> int:
    results: dict[str, dict] = {}
    benchmarks = []
    for scenario in SCENARIOS:
        found = {name: delays(scenario, detect, seeds, pre, post) for name, detect in DETECTORS.items()}
        results[scenario.name] = {"stream": scenario.described} | {n: d.as_dict() for n, d in found.items()}
        ours, theirs = found["adwin"], found["page_hinkley"]
        benchmarks.append(_entry(f"drift_delay_{scenario.name}_median_values", "values", ours.quantile(0.5),
                                 f"page_hinkley_delay_{scenario.name}_median_values", theirs.quantile(0.5), "lower"))
        console.write(f"  {scenario.described}: ADWIN median {ours.quantile(0.5):g} (p90 {ours.quantile(0.9):g}, "
                      f"missed {ours.missed}); Page-Hinkley median {theirs.quantile(0.5):g} "
                      f"(missed {theirs.missed})\n")
    alarms: dict[str, dict] = {}
    for kind, described, stream in STATIONARY_KINDS:
        counted = {name: false_alarms(stream, detect, runs, stationary) for name, detect in DETECTORS.items()}
        alarms[kind] = {"stream": described} | counted
        benchmarks.append(_entry(f"drift_false_alarms_{kind}_stationary", "alarms", float(counted["adwin"]),
                                 f"page_hinkley_false_alarms_{kind}_stationary", float(counted["page_hinkley"]),
                                 "lower"))
    write_results(json_path, benchmarks, console, scenarios=results, stationary=alarms,
                  protocol={"detector": f"DriftMonitor (river ADWIN, delta {DELTA}), one value at a time",
                            "baseline": "river PageHinkley with its defaults, on the same streams",
                            "change_points": f"{seeds} seeds per scenario; {pre:,} values of the first regime, "
                                             f"then up to {post:,} of the second; delay = values after the change "
                                             "point to the first detection; none within them = missed",
                            "false_alarms": f"{runs} stationary streams of {stationary:,} values of each kind",
                            "ratio": "value / baseline; NaN where the baseline is 0"})
    return 0
