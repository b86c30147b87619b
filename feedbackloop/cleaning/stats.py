"""Streaming statistics that survive between batches and merge across shards.

Per event type the cleaner keeps moments (Welford/Chan, on the transformed value) for z-scores and
a log-bucketed histogram (relative error about 1%, the DDSketch idea) for medians, quartiles and
percentiles. Both merge exactly, so concurrent shards update the same state without losing counts,
and both serialize to small JSON documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GAMMA = 1.02  # bucket growth: quantiles are exact to within (GAMMA - 1) / 2 relative error
_LOG_GAMMA = math.log(GAMMA)


@dataclass
class StreamStats:
    """Moments of transformed values and a histogram of raw values (all >= 0)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    zeros: int = 0
    buckets: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, raw: np.ndarray, transformed: np.ndarray) -> StreamStats:
        stats = cls()
        if raw.size == 0:
            return stats
        stats.n = int(raw.size)
        stats.mean = float(transformed.mean())
        stats.m2 = float(((transformed - stats.mean) ** 2).sum())
        stats.minimum = float(raw.min())
        stats.maximum = float(raw.max())
        positive = raw[raw > 0]
        stats.zeros = int(raw.size - positive.size)
        keys, counts = np.unique(np.ceil(np.log(positive) / _LOG_GAMMA).astype(np.int64), return_counts=True)
        stats.buckets = {int(k): int(c) for k, c in zip(keys, counts, strict=True)}
        return stats

    def merge(self, other: StreamStats) -> StreamStats:
        """The statistics of both samples together (Chan et al.'s parallel update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        buckets = dict(self.buckets)
        for key, count in other.buckets.items():
            buckets[key] = buckets.get(key, 0) + count
        return StreamStats(
            n=n,
            mean=self.mean + delta * other.n / n,
            m2=self.m2 + other.m2 + delta * delta * self.n * other.n / n,
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
            zeros=self.zeros + other.zeros,
            buckets=buckets,
        )

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def quantile(self, q: float) -> float:
        """The q-quantile of the raw values (lower of the two middle values' buckets at ties)."""
        if self.n == 0:
            raise ValueError("no samples")
        rank = q * (self.n - 1)
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen > rank:
                # the bucket (gamma^(k-1), gamma^k] is represented by the point of least relative error
                return min(max(2 * GAMMA**key / (GAMMA + 1), self.minimum), self.maximum)
        return self.maximum

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.minimum if self.n else None,
            "max": self.maximum if self.n else None,
            "zeros": self.zeros,
            "buckets": {str(k): v for k, v in self.buckets.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StreamStats:
        return cls(
            n=int(doc["n"]),
            mean=float(doc["mean"]),
            m2=float(doc["m2"]),
            minimum=math.inf if doc["min"] is None else float(doc["min"]),
            maximum=-math.inf if doc["max"] is None else float(doc["max"]),
            zeros=int(doc["zeros"]),
            buckets={int(k): int(v) for k, v in doc["buckets"].items()},
        )


@dataclass
class CleanerState:
    """What the cleaner learns from the stream: value statistics and device counts per event type."""

    values: dict[str, StreamStats] = field(default_factory=dict)
    devices: dict[str, dict[str, int]] = field(default_factory=dict)

    def merge(self, other: CleanerState) -> CleanerState:
        values = dict(self.values)
        for name, stats in other.values.items():
            values[name] = values.get(name, StreamStats()).merge(stats)
        devices = {name: dict(counts) for name, counts in self.devices.items()}
        for name, counts in other.devices.items():
            merged = devices.setdefault(name, {})
            for device, count in counts.items():
                merged[device] = merged.get(device, 0) + count
        return CleanerState(values, devices)

    def device_mode(self, event_type: str) -> str | None:
        counts = self.devices.get(event_type)
        if not counts:
            return None
        return max(sorted(counts), key=counts.__getitem__)

    def to_json(self) -> dict[str, Any]:
        return {
            "values": {k: v.to_json() for k, v in self.values.items()},
            "devices": self.devices,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CleanerState:
        return cls(
            values={k: StreamStats.from_json(v) for k, v in doc.get("values", {}).items()},
            devices={k: {d: int(c) for d, c in v.items()} for k, v in doc.get("devices", {}).items()},
        )
