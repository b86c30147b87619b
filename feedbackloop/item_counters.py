"""Item-side freshness: recent examinations, clicks and purchases per item, decayed (ADR 0018).

The cleaner adds each batch's counts per item; serving reads the candidates' counters and moves items
whose recent click rate is above or below the model's expectation before the next retraining does.

Counts are kept by forward decay (Cormode et al., 2009): an event at time t adds exp(λ(t - L)) to a
field of its landmark L (the start of its week), and the value at `now` is the sum over a field's
landmarks of field x exp(-λ(now - L)). Every write is then an atomic ADD: no read before the write, no
lost race between the shards that all touch a hot item, and the result is exact exponential decay.
A week's landmark keeps the numbers small (at most 2^7 with a one-day half-life); a write drops the
fields of landmarks `KEEP_LANDMARKS` weeks old, which have decayed below 2^-28 of their value.

An impression counts as much as the user plausibly examined it (the examination model, ADR 0016), so
clicks / examinations is a click rate corrected for the position items were shown at.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # the cleaner's side (`batch_additions`): serving reads the counters without pyarrow
    import pyarrow as pa

from feedbackloop.examination import EXAMINATION, ExaminationModel
from feedbackloop.schemas import registry

HALF_LIFE_SECONDS = 86400.0  # a day: "recent" in the sense of trending
LANDMARK_SECONDS = 7 * 86400
KEEP_LANDMARKS = 4
# a batch's addition to a field worth less than this many fresh events at write time (one event ten
# half-lives old) is not written: it could not move a ranking (Freshness smooths with 20 examinations),
# and a backfill of old events then costs no write per item and batch
NEGLIGIBLE = 2.0 ** -10
COUNTERS = ("examinations", "clicks", "purchases")
_DECAY = math.log(2) / HALF_LIFE_SECONDS
# the event types that are impressions (polarity 0); the online profile's merge reads them too
EXPOSURES = [name for name, rule in registry.event_type_rules().items() if rule.polarity == 0]


@dataclass(frozen=True)
class ItemCounts:
    """Decayed counts of one item as of a moment."""

    examinations: float = 0.0
    clicks: float = 0.0
    purchases: float = 0.0


def ranker_key(name: str) -> str:
    """The key of a ranker's counts (ADR 0021): item ids begin with a letter or digit (the event schema),
    so no item has it."""
    return f"#ranker/{name}"


def landmark(at: float) -> int:
    """The landmark (epoch seconds) of a moment: the start of its week, in UTC."""
    return int(at // LANDMARK_SECONDS) * LANDMARK_SECONDS


def field_name(counter: str, mark: int) -> str:
    return f"{counter}@{mark}"


def batch_additions(rows: pa.Table, examination: ExaminationModel = EXAMINATION
                    ) -> dict[str, dict[str, float]]:
    """Per item, the fields to ADD for a batch's clean rows (item_id, event_type, event_time, position,
    personalized; and ranker when present, whose key gets the same counts): each event forward-decayed to
    its landmark. Rows of users who turned personalization off are left out, as they are from training."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if rows.num_rows == 0:
        return {}
    rows = rows.filter(pc.fill_null(rows["personalized"], True))
    types = rows["event_type"]
    times = rows["event_time"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy() / 1e6
    marks = (times // LANDMARK_SECONDS).astype(np.int64) * LANDMARK_SECONDS
    forward = np.exp(_DECAY * (times - marks))
    position = rows["position"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    weights = {
        "examinations": np.where(pc.is_in(types, pa.array(EXPOSURES)).to_numpy(zero_copy_only=False),
                                 examination.weight(position), 0.0),
        "clicks": pc.equal(types, "click").to_numpy(zero_copy_only=False).astype(float),
        "purchases": pc.equal(types, "purchase").to_numpy(zero_copy_only=False).astype(float),
    }
    items = rows["item_id"].to_pylist()
    # the page's ranker (schema 1.3) gets the same counts under its own key (ADR 0021)
    rankers = (rows["ranker"].to_pylist() if "ranker" in rows.column_names else [None] * rows.num_rows)
    additions: dict[str, dict[str, float]] = {}
    for counter, weight in weights.items():
        for j in np.flatnonzero(weight > 0):
            name = field_name(counter, int(marks[j]))
            for key in (items[j], ranker_key(rankers[j]) if rankers[j] else None):
                if key is not None:
                    fields = additions.setdefault(key, {})
                    fields[name] = fields.get(name, 0.0) + float(weight[j] * forward[j])
    return additions


def counts_at(fields: Mapping[str, float], now: float) -> ItemCounts:
    """An item's stored fields read as decayed counts at `now`."""
    totals = dict.fromkeys(COUNTERS, 0.0)
    for name, value in fields.items():
        counter, _, mark = name.partition("@")
        if counter in totals and mark.isdigit():
            totals[counter] += float(value) * math.exp(-_DECAY * (now - int(mark)))
    return ItemCounts(**totals)


def stale_fields(now: float) -> list[str]:
    """The fields a write at `now` removes: those of the landmark KEEP_LANDMARKS weeks back."""
    old = landmark(now) - KEEP_LANDMARKS * LANDMARK_SECONDS
    return [field_name(counter, old) for counter in COUNTERS]


def writable(additions: Mapping[str, Mapping[str, float]], now: float) -> dict[str, dict[str, float]]:
    """The additions a write at `now` makes: none to the landmark it removes or older ones (an event that
    old has decayed below 2^-21 of its weight), so no field is both added and removed, or left behind; and
    none worth less than NEGLIGIBLE at `now`."""
    oldest = landmark(now) - KEEP_LANDMARKS * LANDMARK_SECONDS  # the landmark a write at `now` removes

    def kept(name: str, value: float) -> bool:
        mark = int(name.partition("@")[2])
        return mark > oldest and value * math.exp(-_DECAY * (now - mark)) >= NEGLIGIBLE

    chosen = {item: {f: v for f, v in fields.items() if kept(f, v)} for item, fields in additions.items()}
    return {item: fields for item, fields in chosen.items() if fields}


class ItemCounterStore(Protocol):
    def add(self, additions: Mapping[str, Mapping[str, float]], now: float) -> None:
        """ADD each item's fields (atomic per item; concurrent writers never lose a count)."""

    def load(self, item_ids: Iterable[str], now: float) -> dict[str, ItemCounts]:
        """The items' counts at `now` (items never counted are absent)."""


class CachedCounts:
    """A serving container's reads of the item counters: each item's counts are read from `store` at
    most once per `ttl_seconds` and carried from the moment read to the moment asked. Every field of a
    counter decays at the same rate, so that is exact: only counts added in the last `ttl_seconds` are
    missing. The counters are a trend with a day's half-life; seconds of lag cannot move a ranking, while
    a read per page would fetch the same popular items' counters on every cold page (a BatchGetItem of
    its 100-item pool per request). Items never counted are remembered as absent for as long."""

    MAX_ENTRIES = 200_000  # beyond this many items remembered, the expired ones are dropped first

    def __init__(self, store: ItemCounterStore, ttl_seconds: float) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._read: dict[str, tuple[float, ItemCounts | None]] = {}  # item -> (read at, counts or absent)

    def add(self, additions: Mapping[str, Mapping[str, float]], now: float) -> None:
        self._store.add(additions, now)
        with self._lock:
            for item in additions:
                self._read.pop(item, None)

    def load(self, item_ids: Iterable[str], now: float) -> dict[str, ItemCounts]:
        wanted = list(dict.fromkeys(item_ids))
        with self._lock:
            stale = [i for i in wanted if i not in self._read or not 0 <= now - self._read[i][0] < self._ttl]
        if stale:
            fresh = self._store.load(stale, now)
            with self._lock:
                if len(self._read) + len(stale) > self.MAX_ENTRIES:
                    self._read = {i: e for i, e in self._read.items() if 0 <= now - e[0] < self._ttl}
                self._read.update((i, (now, fresh.get(i))) for i in stale)
        found: dict[str, ItemCounts] = {}
        with self._lock:
            entries = [(i, self._read.get(i)) for i in wanted]
        for item, entry in entries:
            if entry is not None and entry[1] is not None:
                at, counts = entry
                factor = math.exp(-_DECAY * max(0.0, now - at))
                found[item] = ItemCounts(counts.examinations * factor, counts.clicks * factor,
                                         counts.purchases * factor)
        return found


@dataclass(frozen=True)
class Freshness:
    """How serving moves candidates by their recent click rate (clicks over examinations): the rate is
    smoothed towards the candidates' pooled rate with `prior` examinations, and an item gains or loses
    `weight` x its relative lift, capped at +-1, on the ranking's scale (the top score is about 1)."""

    weight: float = 0.1
    prior: float = 20.0

    def adjustments(self, item_ids: list[str], counts: Mapping[str, ItemCounts]) -> np.ndarray:
        if not counts or self.weight == 0:
            return np.zeros(len(item_ids))
        examinations = np.array([counts[i].examinations if i in counts else 0.0 for i in item_ids])
        clicks = np.array([counts[i].clicks if i in counts else 0.0 for i in item_ids])
        pooled = clicks.sum() / examinations.sum() if examinations.sum() > 0 else 0.0
        if pooled <= 0:
            return np.zeros(len(item_ids))
        rate = (clicks + self.prior * pooled) / (examinations + self.prior)
        return self.weight * np.clip(rate / pooled - 1, -1, 1)


FRESHNESS = Freshness()


def freshen(candidates: list[int], scores: np.ndarray, item_ids: np.ndarray,
            counts: Mapping[str, ItemCounts], freshness: Freshness = FRESHNESS) -> list[int]:
    """The candidates (indexes, best first) re-ordered by score plus their freshness adjustment."""
    if not counts or not candidates:
        return candidates
    adjusted = scores[candidates] + freshness.adjustments([str(item_ids[c]) for c in candidates], counts)
    return [candidates[j] for j in np.argsort(-adjusted, kind="stable")]
