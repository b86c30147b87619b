"""A simulated user population with hidden preferences that responds to what it is shown, so the loop's
effect can be measured: what each arm of the ranking experiment earns, and what an oracle that knows
the hidden preferences would have earned.

The behaviour model (seeded, documented so the numbers can be judged):
- Items fall into hidden taste groups: k-means over the items' embeddings from the real purchases (a
  truncated SVD of the item x customer matrix), so a taste is what real customers buy together, the
  structure a recommender can learn, not a label it is told. Items bought by fewer than
  `min_buyers` customers belong to no group (nobody's taste).
- Each user has hidden preferences over the groups, drawn from Dirichlet(concentration): a few
  favourite groups each. `affinity(u, i)` = pref[u, group(i)] / max_g pref[u, g], in [0, 1].
- Shown an item, the user views it (an impression) and clicks with probability
  `base_ctr + lift * affinity^2`; the square makes favourites stand out from the merely liked.
- After a click: a purchase with probability `purchase_rate * affinity`, and a 1-5 rating with
  probability `rating_rate`, of 1 + 4 * affinity rounded.
- `shift` gives every user new preferences (their groups rotated), the mid-run change the loop must
  detect and recover from.
The events carry the item's catalog category (from its description), as a client's would.
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
    lift: float = 0.25
    purchase_rate: float = 0.3
    rating_rate: float = 0.2
    concentration: float = 0.3


TASTES = 12  # hidden taste groups
NO_TASTE = -1


@dataclass(frozen=True)
class Catalog:
    """Items with their hidden taste group (NO_TASTE: none), catalog category (into CATEGORIES) and price."""

    item_ids: np.ndarray
    tastes: np.ndarray
    categories: np.ndarray
    prices: np.ndarray

    @property
    def groups(self) -> int:
        return int(self.tastes.max()) + 1

    @classmethod
    def from_online_retail(cls, frame: pd.DataFrame, groups: int = TASTES, min_buyers: int = 10,
                           seed: int = 0) -> Catalog:
        from scipy import sparse
        from sklearn.cluster import KMeans
        from sklearn.decomposition import TruncatedSVD
        from sklearn.preprocessing import normalize

        lines = frame.dropna(subset=["Description"]).drop_duplicates("StockCode", keep="last")
        item_ids = lines["StockCode"].astype(str).to_numpy()
        index = {name: i for i, name in enumerate(CATEGORIES)}
        categories = np.array([index[category_of(d)] for d in lines["Description"]], dtype=np.int64)

        bought = frame[(frame["Quantity"] > 0) & frame["CustomerID"].notna()]
        pairs = bought[["StockCode", "CustomerID"]].astype(str).drop_duplicates()
        buyers = pairs["StockCode"].value_counts()
        known = buyers[buyers >= min_buyers].index
        pairs = pairs[pairs["StockCode"].isin(known)]
        items, item_codes = np.unique(pairs["StockCode"].to_numpy(), return_inverse=True)
        _, customer_codes = np.unique(pairs["CustomerID"].to_numpy(), return_inverse=True)
        matrix = sparse.csr_matrix((np.ones(len(pairs)), (item_codes, customer_codes)))
        embedding = normalize(TruncatedSVD(32, random_state=seed).fit_transform(normalize(matrix)))
        labels = KMeans(groups, n_init=2, random_state=seed).fit_predict(embedding)
        group_of = dict(zip(items, labels, strict=True))
        tastes = np.array([group_of.get(i, NO_TASTE) for i in item_ids], dtype=np.int64)
        return cls(item_ids, tastes, categories, lines["UnitPrice"].to_numpy(dtype=float).clip(0.01, None))

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
    def create(cls, size: int, seed: int, groups: int = TASTES, behaviour: Behaviour | None = None,
               prefix: str = "sim") -> Population:
        behaviour = behaviour or Behaviour()
        rng = np.random.default_rng(seed)
        preferences = rng.dirichlet(np.full(groups, behaviour.concentration), size=size)
        return cls([f"{prefix}{i:05d}" for i in range(size)], preferences, behaviour)

    def shift(self, seed: int) -> None:
        """New hidden preferences: each user's groups rotated by a random non-zero step."""
        rng = np.random.default_rng(seed)
        steps = rng.integers(1, self.preferences.shape[1], size=len(self.user_ids))
        self.preferences = np.stack([np.roll(row, step) for row, step in zip(self.preferences, steps, strict=True)])

    def affinity(self, user: int, tastes: np.ndarray) -> np.ndarray:
        """In [0, 1]; 0 for items of no taste group."""
        row = self.preferences[user]
        return np.where(tastes >= 0, row[np.maximum(tastes, 0)] / row.max(), 0.0)

    def click_probability(self, user: int, tastes: np.ndarray) -> np.ndarray:
        b = self.behaviour
        return b.base_ctr + b.lift * self.affinity(user, tastes) ** 2

    def oracle_ctr(self, user: int, catalog: Catalog, k: int) -> float:
        """The expected CTR of the best k items for the user: what knowing the hidden preferences earns."""
        probability = self.click_probability(user, catalog.tastes)
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
            context: dict[str, Any], rng: np.random.Generator,
            propensities: list[float] | None = None) -> Session:
    """The user's response to `shown`: a view per item, and clicks, purchases and ratings drawn from their
    hidden preferences. `context` (segment, experiment, variant, request id from the serving API) goes on
    every event; a view also carries the item's position and the propensity serving gave it."""
    user_id = population.user_ids[user]
    positions = catalog.positions(shown)
    known = positions >= 0
    categories = np.where(known, catalog.categories[np.maximum(positions, 0)], CATEGORIES.index(OTHER_CATEGORY))
    tastes = np.where(known, catalog.tastes[np.maximum(positions, 0)], NO_TASTE)
    affinity = population.affinity(user, tastes)
    probability = population.click_probability(user, tastes)
    clicked = rng.random(len(shown)) < probability
    b = population.behaviour
    session_id = _id(f"{user_id}|{at.isoformat()}")[:16]
    events = []

    def event(kind: str, item: int, value: float, offset: float, **slate: Any) -> None:
        price = float(catalog.prices[positions[item]]) if known[item] else None
        events.append({
            "event_id": _id(f"{session_id}|{kind}|{shown[item]}|{offset}"), "user_id": user_id,
            "item_id": shown[item], "event_type": kind, "value": value,
            "timestamp": (at + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "schema_version": CURRENT_VERSION,
            "context": {"session_id": session_id, "device": "desktop", "page": "/home",
                        "category": CATEGORIES[categories[item]], **({"price": price} if price else {}),
                        **context, **slate}})

    for i in range(len(shown)):
        event("view", i, 1, i, position=i + 1,
              **({"propensity": propensities[i]} if propensities is not None else {}))
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
