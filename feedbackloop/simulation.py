"""A simulated world of users who respond to what they are shown, built so it does not favour the model:
what each arm of the ranking experiment earns, and what an oracle that knows the hidden rules would.

The rules (seeded, documented so the numbers can be judged):
- The catalogue is the real one: Online Retail's items bought by at least `min_buyers` customers, each
  with its category (from its description), its price level (the catalogue's price tertiles) and an
  appeal in [0.3, 1] from how many customers bought it (its percentile).
- Tastes are not the model's structure: each user has a mixture over the 11 categories (Dirichlet,
  concentration 0.3: a few favourites) and one over the 3 price levels (Dirichlet(1)).
  affinity(u, i) = cat[u, c(i)] / max cat[u] * price[u, l(i)] / max price[u], in [0, 1].
- Attractiveness a(u, i) = (base_ctr + lift * affinity^2 * appeal(i)) * fatigue^n(u, i) * rebuy, where
  n counts the times the item was shown to the user since they last clicked it (an item shown again
  and again without a click loses appeal), and rebuy is `rebuy_factor` for `rebuy_days` after the user
  bought it (a bought item is rarely bought again soon).
- Position bias: the slot at position k (0 = top) is examined with probability 1 / (1 + k)^examination
  (a position-based model); a click happens with probability examined x a(u, i).
- After a click: a purchase with probability purchase_rate * affinity, and a 1-5 rating with probability
  rating_rate, of 1 + 4 * affinity rounded.
- Three activity levels: light, regular and heavy users (60/30/10% of users) visit with weights 1, 4, 16.
- New items: the catalogue's items first sold in the last `new_item_days` days of the data are absent
  until `arrive()` (mid-run); no user can click them before.
- `shift()` draws every user's tastes anew: the mid-run change the loop must detect and recover from.
- The oracle knows all of this: at each visit it shows the k most attractive items in order (greedy:
  with fatigue the best sequence is out of reach, the best page now is not). Its expected CTR is what
  an attentive system could earn.
The events carry the item's catalogue category and price, as a client's would.
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
PRICE_LEVELS = ("low", "mid", "high")
ACTIVITY = (("light", 0.6, 1.0), ("regular", 0.3, 4.0), ("heavy", 0.1, 16.0))  # name, share, visit weight
_NAMESPACE = uuid.UUID("73696d75-6c61-7465-6475-736572730000")


@dataclass(frozen=True)
class Behaviour:
    base_ctr: float = 0.01
    lift: float = 0.5
    examination: float = 0.6  # position k is examined with probability 1 / (1 + k)^examination
    fatigue: float = 0.75  # appeal kept per showing without a click
    rebuy_factor: float = 0.05
    rebuy_days: float = 14.0
    purchase_rate: float = 0.3
    rating_rate: float = 0.2
    category_concentration: float = 0.3
    price_concentration: float = 1.0

    def click_rate(self, affinity: np.ndarray, appeal: np.ndarray) -> np.ndarray:
        """An examined item's click probability before fatigue and recent purchases."""
        return self.base_ctr + self.lift * affinity ** 2 * appeal

    def rating(self, affinity: np.ndarray) -> np.ndarray:
        """The 1-5 rating a click is followed by (when it is)."""
        return 1 + np.round(4 * affinity)


@dataclass(frozen=True)
class Catalog:
    """The real catalogue's active items: category (into CATEGORIES), price level (into PRICE_LEVELS),
    price, appeal, and whether the item is new (first sold in the data's last days)."""

    item_ids: np.ndarray
    categories: np.ndarray
    price_levels: np.ndarray
    prices: np.ndarray
    appeal: np.ndarray
    new: np.ndarray
    new_since: pd.Timestamp  # the first day of the new items (the data's invoices before it know none)

    @classmethod
    def from_online_retail(cls, frame: pd.DataFrame, min_buyers: int = 5, new_item_days: int = 21) -> Catalog:
        bought = frame[(frame["Quantity"] > 0) & frame["CustomerID"].notna()
                       & ~frame["InvoiceNo"].astype(str).str.startswith("C")]
        buyers = bought.groupby("StockCode")["CustomerID"].nunique()
        active = buyers[buyers >= min_buyers]
        lines = (frame[frame["StockCode"].isin(active.index)].dropna(subset=["Description"])
                 .drop_duplicates("StockCode", keep="last").sort_values("StockCode", kind="stable"))
        codes = lines["StockCode"].to_numpy()
        index = {name: i for i, name in enumerate(CATEGORIES)}
        categories = np.array([index[category_of(d)] for d in lines["Description"]], dtype=np.int64)
        prices = lines["UnitPrice"].to_numpy(dtype=float).clip(0.01, None)
        levels = np.searchsorted(np.quantile(prices, [1 / 3, 2 / 3]), prices, side="right").astype(np.int64)
        rank = active.reindex(codes).rank(pct=True).to_numpy()
        new_since = pd.Timestamp(frame["InvoiceDate"].max()).normalize() - pd.Timedelta(days=new_item_days)
        first_sold = bought.groupby("StockCode")["InvoiceDate"].min().reindex(codes)
        new = (pd.to_datetime(first_sold) >= new_since).to_numpy()
        return cls(codes.astype(str), categories, levels, prices, 0.3 + 0.7 * rank, new, new_since)

    def positions(self, item_ids: list[str]) -> np.ndarray:
        """Catalogue positions of the ids (-1 for an item the catalogue does not have)."""
        lookup = self._lookup
        return np.array([lookup.get(i, -1) for i in item_ids], dtype=np.int64)

    @property
    def _lookup(self) -> dict[str, int]:
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = {item: i for i, item in enumerate(self.item_ids)}
            object.__setattr__(self, "_index", cached)
        return cached


@dataclass(frozen=True)
class Session:
    """One visit: the ranking shown, in which arm, and what it produced."""

    user: int
    variant: str | None
    shown: int
    clicks: int
    expected_ctr: float  # mean click probability per slot of what was shown
    oracle_ctr: float  # the same for the oracle's page for this user at this moment
    events: list[dict[str, Any]]
    clicked: list[int] = field(default_factory=list)  # positions clicked


class World:
    """Users with hidden tastes and memory (fatigue, recent purchases) over a catalogue. Seeded: two
    worlds made with the same arguments answer the same visits the same way."""

    def __init__(self, catalog: Catalog, users: int, seed: int, behaviour: Behaviour | None = None,
                 prefix: str = "sim") -> None:
        self.catalog = catalog
        self.behaviour = b = behaviour or Behaviour()
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.user_ids = [f"{prefix}{i:05d}" for i in range(users)]
        self.category_taste, self.price_taste = self._tastes(rng, users)
        shares = np.array([share for _, share, _ in ACTIVITY])
        self.activity = rng.choice(len(ACTIVITY), size=users, p=shares / shares.sum())
        self.visit_weight = np.array([weight for _, _, weight in ACTIVITY])[self.activity]
        items = len(catalog.item_ids)
        self.ignored = np.zeros((users, items), dtype=np.int16)  # showings since the last click
        self.bought_until = np.full((users, items), -np.inf)  # epoch seconds
        self.available = ~catalog.new
        self.examination = 1.0 / (1.0 + np.arange(100)) ** b.examination

    def _tastes(self, rng: np.random.Generator, users: int) -> tuple[np.ndarray, np.ndarray]:
        b = self.behaviour
        categories = rng.dirichlet(np.full(len(CATEGORIES), b.category_concentration), size=users)
        prices = rng.dirichlet(np.full(len(PRICE_LEVELS), b.price_concentration), size=users)
        return categories, prices

    def shift(self, seed: int) -> None:
        """Every user's tastes drawn anew (hidden from the system)."""
        self.category_taste, self.price_taste = self._tastes(np.random.default_rng(seed), len(self.user_ids))

    def arrive(self) -> None:
        """The new items enter the catalogue."""
        self.available = np.ones(len(self.catalog.item_ids), dtype=bool)

    def visitors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` visits' users, drawn by activity."""
        return rng.choice(len(self.user_ids), size=n, p=self.visit_weight / self.visit_weight.sum())

    def affinity(self, user: int) -> np.ndarray:
        c, p = self.category_taste[user], self.price_taste[user]
        return (c[self.catalog.categories] / c.max()) * (p[self.catalog.price_levels] / p.max())

    def attractiveness(self, user: int, now: float) -> np.ndarray:
        """Every item's click probability if examined, for the user now (0 for items not yet arrived)."""
        return self.behaviour.click_rate(self.affinity(user), self.catalog.appeal) * self.memory(user, now)

    def memory(self, user: int, now: float) -> np.ndarray:
        """Every item's factor on its click rate from what the user saw and bought (fatigue, recent
        purchases; 0 for items not yet arrived): what a system that logs its pages and the purchases knows."""
        b = self.behaviour
        tired = b.fatigue ** self.ignored[user].astype(np.float64)
        rebuy = np.where(self.bought_until[user] > now, b.rebuy_factor, 1.0)
        return np.where(self.available, tired * rebuy, 0.0)

    def best(self, user: int, k: int, now: float) -> np.ndarray:
        """The oracle's page: the k most attractive items now, most attractive first."""
        a = self.attractiveness(user, now)
        top = np.argpartition(-a, k - 1)[:k]
        return top[np.argsort(-a[top], kind="stable")]

    def oracle_ctr(self, user: int, k: int, now: float) -> float:
        a = self.attractiveness(user, now)
        return float((np.sort(a)[::-1][:k] * self.examination[:k]).mean())

    def respond(self, user: int, shown: list[str], at: datetime, context: dict[str, Any], rng: np.random.Generator,
                view_context: list[dict[str, Any]] | None = None) -> Session:
        """The user's response to `shown` (best first): a view per item, clicks by position and
        attractiveness, purchases and ratings; the user's memory moves on. `context` (segment,
        experiment, variant from the serving API) goes on every event, `view_context[j]` on item j's
        view (its logged propensity)."""
        b, now = self.behaviour, at.timestamp()
        positions = self.catalog.positions(shown)
        known = positions >= 0
        rows = np.maximum(positions, 0)
        a = np.where(known, self.attractiveness(user, now)[rows], b.base_ctr)
        probability = self.examination[:len(shown)] * a
        oracle = self.oracle_ctr(user, max(len(shown), 1), now)
        clicked = rng.random(len(shown)) < probability
        affinity = np.where(known, self.affinity(user)[rows], 0.0)
        user_id = self.user_ids[user]
        session_id = _id(f"{user_id}|{at.isoformat()}")[:16]
        events: list[dict[str, Any]] = []

        def event(kind: str, j: int, value: float, offset: float, extra: dict[str, Any] | None = None) -> None:
            item_context = ({"category": CATEGORIES[self.catalog.categories[rows[j]]],
                             "price": float(self.catalog.prices[rows[j]])} if known[j] else {})
            events.append({
                "event_id": _id(f"{session_id}|{kind}|{shown[j]}|{offset}"), "user_id": user_id,
                "item_id": shown[j], "event_type": kind, "value": value,
                "timestamp": (at + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "schema_version": CURRENT_VERSION,
                "context": {"session_id": session_id, "device": "desktop", "page": "/home", **item_context,
                            **context, **(extra or {})}})

        for j in range(len(shown)):
            event("view", j, 1, j, {"position": j + 1, **(view_context[j] if view_context else {})})
            if not known[j]:
                continue
            if clicked[j]:
                event("click", j, 1, j + 0.5)
                self.ignored[user, rows[j]] = 0
                if rng.random() < b.purchase_rate * affinity[j]:
                    event("purchase", j, 1, j + 0.8)
                    self.bought_until[user, rows[j]] = now + b.rebuy_days * 86400
                if rng.random() < b.rating_rate:
                    event("rating", j, float(b.rating(affinity[j])), j + 0.9)
            else:
                self.ignored[user, rows[j]] = min(int(self.ignored[user, rows[j]]) + 1, 1000)
        return Session(user, context.get("variant"), len(shown), int(clicked.sum()),
                       float(probability.mean()) if len(shown) else 0.0, oracle, events,
                       np.flatnonzero(clicked).tolist())


def _id(text: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, hashlib.sha256(text.encode()).hexdigest()))
