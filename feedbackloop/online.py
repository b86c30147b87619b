"""The online store's view of a user: their recent feedback per item, decayed, plus their preferences.

One document per user (DynamoDB item, key `user_id`): for each item the decayed sums of confidence x
feedback score and of confidence, as of `updated_at`, and the times of the latest positive and negative
signal. The composite score and the conflict rule are the feedback layer's (ADR 0006), so serving folds a
user in from the same quantity training used. The cleaner merges each batch's clean rows into it; a
user who turned personalization off is left as is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from feedbackloop.models.contract import HALF_LIFE_DAYS

MAX_ITEMS = 500  # per user: the DynamoDB item stays far below its 400 KB limit
_DECAY_PER_SECOND = math.log(2) / (HALF_LIFE_DAYS * 86400)


@dataclass
class ItemSignal:
    score_mass: float  # sum of confidence x feedback_score, decayed to the profile's updated_at
    weight_mass: float  # sum of confidence, decayed likewise
    last_positive: float | None  # epoch seconds
    last_negative: float | None
    last_type: str  # event type of the latest signal (for "because you ...")
    last_at: float

    @property
    def unwanted(self) -> bool:
        """Negative evidence, as training signs a pair (`feedbackloop.models.data.unwanted`): a composite
        score below 0, a latest signal that is negative (capped at 0, ADR 0006), or only ever shown (no
        positive nor negative signal, the latest a view: an exposure). A neutral rating is engagement."""
        negative_last = self.last_negative is not None and (
            self.last_positive is None or self.last_negative >= self.last_positive)
        exposure = self.last_positive is None and self.last_negative is None and self.last_type == "view"
        return self.composite < 0 or negative_last or exposure

    @property
    def composite(self) -> float:
        mean = self.score_mass / self.weight_mass if self.weight_mass > 0 else 0.0
        negative_last = self.last_negative is not None and (
            self.last_positive is None or self.last_negative >= self.last_positive)
        return min(mean, 0.0) if negative_last else mean


@dataclass
class UserProfile:
    user_id: str
    items: dict[str, ItemSignal] = field(default_factory=dict)
    updated_at: float = 0.0  # epoch seconds the masses are decayed to
    personalization: bool = True
    version: int = 0  # optimistic concurrency

    def decayed_to(self, now: float) -> float:
        """The factor that carries the stored masses from updated_at to `now`."""
        return math.exp(-_DECAY_PER_SECOND * max(0.0, now - self.updated_at))

    def signals(self, now: float) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Items, their signed confidence mass as of `now` (negative where the user turned against the
        item) and their composite score: what the ranking takes."""
        factor = self.decayed_to(now)
        items = list(self.items)
        weight = np.array([self.items[i].weight_mass * factor for i in items])
        composite = np.array([self.items[i].composite for i in items])
        unwanted = np.array([self.items[i].unwanted for i in items], dtype=bool)
        return items, np.where(unwanted, -weight, weight), composite

    def merge(self, rows: pa.Table, now: float) -> None:
        """Add clean rows (user_id = this user; item_id, event_type, feedback_score, confidence,
        event_time) to the profile, decayed to `now`."""
        factor = self.decayed_to(now)
        for signal in self.items.values():
            signal.score_mass *= factor
            signal.weight_mass *= factor
        self.updated_at = max(self.updated_at, now)
        times = rows["event_time"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy() / 1e6
        contribution = np.exp(-_DECAY_PER_SECOND * np.maximum(0.0, self.updated_at - times))
        score, confidence = (rows[c].to_numpy(zero_copy_only=False) for c in ("feedback_score", "confidence"))
        order = np.argsort(times, kind="stable")
        items, types = rows["item_id"].to_pylist(), rows["event_type"].to_pylist()
        for j in order:
            signal = self.items.get(items[j])
            if signal is None:
                signal = self.items[items[j]] = ItemSignal(0.0, 0.0, None, None, types[j], times[j])
            signal.score_mass += confidence[j] * score[j] * contribution[j]
            signal.weight_mass += confidence[j] * contribution[j]
            if score[j] > 0:
                signal.last_positive = max(signal.last_positive or times[j], times[j])
            elif score[j] < 0:
                signal.last_negative = max(signal.last_negative or times[j], times[j])
            if times[j] >= signal.last_at:
                signal.last_type, signal.last_at = types[j], float(times[j])
        if len(self.items) > MAX_ITEMS:  # keep the items with the most evidence
            keep = sorted(self.items, key=lambda i: self.items[i].weight_mass, reverse=True)[:MAX_ITEMS]
            self.items = {i: self.items[i] for i in keep}

    def to_document(self) -> dict[str, Any]:
        return {"items": {i: [s.score_mass, s.weight_mass, s.last_positive, s.last_negative, s.last_type,
                              s.last_at] for i, s in self.items.items()},
                "updated_at": self.updated_at}

    @classmethod
    def from_document(cls, user_id: str, document: dict[str, Any] | None, personalization: bool = True,
                      version: int = 0) -> UserProfile:
        if not document:
            return cls(user_id, personalization=personalization, version=version)
        items = {i: ItemSignal(*values) for i, values in document["items"].items()}
        return cls(user_id, items, document["updated_at"], personalization, version)


def epoch(moment: datetime) -> float:
    return moment.timestamp()


class OnlineStoreLike(Protocol):
    def load(self, user_ids: Iterable[str]) -> dict[str, UserProfile]: ...

    def save(self, profiles: Iterable[UserProfile]) -> list[str]: ...


def merge_into_profiles(store: OnlineStoreLike, profiles: dict[str, UserProfile], rows: pa.Table, now: float,
                        attempts: int = 3) -> int:
    """Merge clean rows into their users' profiles (loaded already, to decide consent) and save them,
    reloading and merging again the users whose profile moved meanwhile. Users who turned
    personalization off are left alone. Returns the profiles written."""
    by_user = _rows_by_user(rows)
    pending = {u: p for u, p in profiles.items() if u in by_user and p.personalization}
    written = 0
    for _ in range(attempts):
        for user, profile in pending.items():
            profile.merge(by_user[user], now)
        lost = set(store.save(pending.values()))
        written += len(pending) - len(lost)
        if not lost:
            return written
        pending = {u: p for u, p in store.load(lost).items() if p.personalization}
    raise RuntimeError(f"online profiles of {len(pending)} users kept moving under {attempts} attempts")


def _rows_by_user(rows: pa.Table) -> dict[str, pa.Table]:
    if rows.num_rows == 0:
        return {}
    rows = rows.sort_by("user_id")
    users = rows["user_id"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {str(users[s]): rows.slice(s, e - s) for s, e in zip(starts, ends, strict=True)}
