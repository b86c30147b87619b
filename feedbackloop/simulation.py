"""A simulated user population with hidden preferences that responds to what it is shown, so the loop's
effect can be measured: what each arm of the ranking experiment earns, and what an oracle that knows
the hidden preferences would have earned.

The behaviour model (seeded, documented so the numbers can be judged):
- Each user has hidden preferences over the catalog's categories, drawn from Dirichlet(concentration):
  a few favourite categories each. `affinity(u, i)` = pref[u, category(i)] / max_c pref[u, c], in [0, 1].
- Shown an item, the user views it (an impression) and clicks with probability
  `base_ctr + lift * affinity^2`; the square makes favourites stand out from the merely liked.
- After a click: a purchase with probability `purchase_rate * affinity`, and a 1-5 rating with
  probability `rating_rate`, of 1 + 4 * affinity rounded.
- `shift` gives every user new preferences (their categories rotated), the mid-run change the loop must
  detect and recover from.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from feedbackloop.datasets.online_retail import CATEGORY_KEYWORDS, OTHER_CATEGORY, category_of
from feedbackloop.schemas.registry import CURRENT_VERSION

CATEGORIES = tuple(name for name, _ in CATEGORY_KEYWORDS) + (OTHER_CATEGORY,)
_NAMESPACE = uuid.UUID("73696d75-6c61-7465-6475-736572730000")


@dataclass(frozen=True)
class Behaviour:
    base_ctr: float = 0.01
    lift: float = 0.30
    purchase_rate: float = 0.3
    rating_rate: float = 0.2
    concentration: float = 0.3


@dataclass(frozen=True)
class Catalog:
    """Items with their category index (into CATEGORIES) and price."""

    item_ids: np.ndarray
    categories: np.ndarray
    prices: np.ndarray

    @classmethod
    def from_online_retail(cls, frame: pd.DataFrame) -> Catalog:
        lines = frame.dropna(subset=["Description"]).drop_duplicates("StockCode", keep="last")
        index = {name: i for i, name in enumerate(CATEGORIES)}
        categories = np.array([index[category_of(d)] for d in lines["Description"]], dtype=np.int64)
        return cls(lines["StockCode"].astype(str).to_numpy(), categories,
                   lines["UnitPrice"].to_numpy(dtype=float).clip(0.01, None))

    def positions(self, item_ids: list[str]) -> np.ndarray:
        """Catalog positions of the ids (-1 for an item the catalog does not have)."""
        lookup = self._lookup
        return np.array([lookup.get(i, -1) for i in item_ids], dtype=np.int64)

    @property
    def _lookup(self) -> dict[str, int]:
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = {item: i for i, item in enumerate(self.item_ids)}
            object.__setattr__(self, "_index", cached)
        return cached


@dataclass
class Population:
    user_ids: list[str]
    preferences: np.ndarray  # users x categories, rows sum to 1
    behaviour: Behaviour = field(default_factory=Behaviour)

    @classmethod
    def create(cls, size: int, seed: int, behaviour: Behaviour | None = None, prefix: str = "sim") -> Population:
        behaviour = behaviour or Behaviour()
        rng = np.random.default_rng(seed)
        preferences = rng.dirichlet(np.full(len(CATEGORIES), behaviour.concentration), size=size)
        return cls([f"{prefix}{i:05d}" for i in range(size)], preferences, behaviour)

    def shift(self, seed: int) -> None:
        """New hidden preferences: each user's categories rotated by a random non-zero step."""
        rng = np.random.default_rng(seed)
        steps = rng.integers(1, len(CATEGORIES), size=len(self.user_ids))
        self.preferences = np.stack([np.roll(row, step) for row, step in zip(self.preferences, steps, strict=True)])

    def affinity(self, user: int, categories: np.ndarray) -> np.ndarray:
        row = self.preferences[user]
        return row[categories] / row.max()

    def click_probability(self, user: int, categories: np.ndarray) -> np.ndarray:
        b = self.behaviour
        return b.base_ctr + b.lift * self.affinity(user, categories) ** 2

    def oracle_ctr(self, user: int, catalog: Catalog, k: int) -> float:
        """The expected CTR of the best k items for the user: what knowing the hidden preferences earns."""
        probability = self.click_probability(user, catalog.categories)
        return float(np.sort(probability)[-k:].mean())


@dataclass(frozen=True)
class Session:
    """One visit: the ranking shown, in which arm, and the events it produced."""

    user: int
    variant: str | None
    shown: int
    clicks: int
    expected_ctr: float  # mean click probability of what was shown
    oracle_ctr: float
    events: list[dict[str, Any]]


def session(population: Population, catalog: Catalog, user: int, shown: list[str], at: datetime,
            context: dict[str, Any], rng: np.random.Generator) -> Session:
    """The user's response to `shown`: a view per item, and clicks, purchases and ratings drawn from their
    hidden preferences. `context` (segment, experiment, variant from the serving API) goes on every event."""
    user_id = population.user_ids[user]
    positions = catalog.positions(shown)
    known = positions >= 0
    categories = np.where(known, catalog.categories[np.maximum(positions, 0)], CATEGORIES.index(OTHER_CATEGORY))
    affinity = population.affinity(user, categories)
    probability = population.click_probability(user, categories)
    clicked = rng.random(len(shown)) < probability
    b = population.behaviour
    session_id = _id(f"{user_id}|{at.isoformat()}")[:16]
    events = []

    def event(kind: str, item: int, value: float, offset: float) -> None:
        price = float(catalog.prices[positions[item]]) if known[item] else None
        events.append({
            "event_id": _id(f"{session_id}|{kind}|{shown[item]}|{offset}"), "user_id": user_id,
            "item_id": shown[item], "event_type": kind, "value": value,
            "timestamp": (at + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "schema_version": CURRENT_VERSION,
            "context": {"session_id": session_id, "device": "desktop", "page": "/home",
                        "category": CATEGORIES[categories[item]], **({"price": price} if price else {}),
                        **context}})

    for i in range(len(shown)):
        event("view", i, 1, i)
        if clicked[i]:
            event("click", i, 1, i + 0.5)
            if rng.random() < b.purchase_rate * affinity[i]:
                event("purchase", i, 1, i + 0.8)
            if rng.random() < b.rating_rate:
                event("rating", i, float(1 + round(4 * affinity[i])), i + 0.9)
    return Session(user, context.get("variant"), len(shown), int(clicked.sum()), float(probability.mean()),
                   population.oracle_ctr(user, catalog, len(shown)), events)


def _id(text: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, hashlib.sha256(text.encode()).hexdigest()))
