"""Drift detection: one ADWIN (river) per stream, kept between runs of the adjust function.

Streams:
- `feedback_score`: the cleaned events' feedback scores, in event-time order.
- `ctr/<segment>`: each segment's impression outcomes (1 clicked, 0 not); `ctr/*`: everyone's. The
  engagement layer keeps them as hourly counts, so each hour is replayed as its clicks and non-clicks in
  a seeded shuffle. ADWIN looks for a change between the older and the newer part of its window; the
  order within an hour carries no information about a change between hours, so this loses nothing
  that matters.

Runs that bring more values than `max_values_per_run` are thinned uniformly (seeded), which keeps a
run's cost bounded at the price of detection power at very high volumes.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from river.drift import ADWIN

FEEDBACK_SCORE = "feedback_score"
CTR_PREFIX = "ctr/"


def ctr_stream(segment: str) -> str:
    return f"{CTR_PREFIX}{segment}"


@dataclass(frozen=True)
class DriftEvent:
    stream: str
    detected_at: datetime
    values_seen: int  # by this stream's detector, since it started
    mean_before: float  # the detector's estimate just before the change was found
    mean_after: float  # its estimate over the window it kept (the new regime)
    window: int  # values in that window


@dataclass
class DriftMonitor:
    """ADWIN detectors by stream name. `to_bytes`/`from_bytes` carry them between invocations."""

    delta: float = 0.002
    detectors: dict[str, ADWIN] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    def update(self, stream: str, values: Sequence[float] | np.ndarray, at: datetime) -> list[DriftEvent]:
        """Feed `values` in order; one event per change found."""
        detector = self.detectors.get(stream)
        if detector is None:
            detector = self.detectors[stream] = ADWIN(delta=self.delta)
        events = []
        seen = self.seen.get(stream, 0)
        for value in np.asarray(values, dtype=float).tolist():
            before = detector.estimation
            detector.update(value)
            seen += 1
            if detector.drift_detected:
                events.append(DriftEvent(stream, at, seen, float(before), float(detector.estimation),
                                         int(detector.width)))
        self.seen[stream] = seen
        return events

    def to_bytes(self) -> bytes:
        # river detectors persist by pickling (river's own guidance); the bytes live in the project's
        # state table, which only the adjust function writes
        return pickle.dumps({"delta": self.delta, "detectors": self.detectors, "seen": self.seen})

    @classmethod
    def from_bytes(cls, data: bytes | None, delta: float) -> DriftMonitor:
        if not data:
            return cls(delta)
        saved = pickle.loads(data)  # noqa: S301 - our own state, see to_bytes
        if saved["delta"] != delta:  # the rule file changed the sensitivity: start over
            return cls(delta)
        return cls(delta, saved["detectors"], saved["seen"])


def thin(values: np.ndarray, limit: int, seed: str) -> np.ndarray:
    """At most `limit` of `values`, a uniform sample in the original order."""
    if len(values) <= limit:
        return values
    keep = np.sort(_rng(seed).choice(len(values), size=limit, replace=False))
    return values[keep]


def impression_outcomes(impressions: int, clicks: int, seed: str) -> np.ndarray:
    """An hour's impressions as 1 (clicked) and 0, in a seeded shuffle. Clicks without a recorded view
    (a client that only reports clicks) count as impressions too, so the rate stays in [0, 1]."""
    clicks = max(0, clicks)
    impressions = max(impressions, clicks)
    outcomes = np.zeros(impressions)
    outcomes[:clicks] = 1.0
    _rng(seed).shuffle(outcomes)
    return outcomes


def _rng(seed: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
