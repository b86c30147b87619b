"""The online store's view of a user: their recent feedback per item, decayed, plus their preferences.

One document per user (DynamoDB item, key `user_id`): for each item the decayed sums of confidence x
feedback score and of confidence, as of `updated_at`, and the times of the latest positive and negative
signal. The composite score and the conflict rule are the feedback layer's (ADR 0006), so serving folds a
user in from the same quantity training used. The cleaner merges each batch's clean rows into it; a
user who turned personalization off is left as is.

A profile keeps its items as columns (`ProfileItems`), and a batch is merged into all its users' profiles
at once (`merge_rows`): one sort of the batch's and the profiles' rows by (user, item, time), then sums
and maxima per group, with no Python work per row. The document is columnar too, so it is read and
written without a Python step per item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedbackloop.models.contract import HALF_LIFE_DAYS

MAX_ITEMS = 500  # per user: the DynamoDB item stays far below its 400 KB limit
_DECAY_PER_SECOND = math.log(2) / (HALF_LIFE_DAYS * 86400)


@dataclass
class ItemSignal:
    """One item of a profile, as serving reads it."""

    score_mass: float  # sum of confidence x feedback_score, decayed to the profile's updated_at
    weight_mass: float  # sum of confidence, decayed likewise
    last_positive: float | None  # epoch seconds
    last_negative: float | None
    last_type: str  # event type of the latest signal (for "because you ...")
    last_at: float

    @property
    def composite(self) -> float:
        mean = self.score_mass / self.weight_mass if self.weight_mass > 0 else 0.0
        negative_last = self.last_negative is not None and (
            self.last_positive is None or self.last_negative >= self.last_positive)
        return min(mean, 0.0) if negative_last else mean


# a profile's item columns; NaN in last_positive / last_negative: no such signal yet
_COLUMNS = ("item_id", "score_mass", "weight_mass", "last_positive", "last_negative", "last_type", "last_at")


@dataclass(eq=False)
class ProfileItems:
    """A profile's items as columns, one position per item."""

    item_id: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    score_mass: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.float64))
    weight_mass: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.float64))
    last_positive: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.float64))
    last_negative: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.float64))
    last_type: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    last_at: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.float64))

    def __len__(self) -> int:
        return len(self.item_id)

    def slice(self, start: int, stop: int) -> ProfileItems:
        return ProfileItems(*(getattr(self, name)[start:stop] for name in _COLUMNS))

    def composite(self) -> np.ndarray:
        """ItemSignal.composite of every item."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.weight_mass > 0, self.score_mass / self.weight_mass, 0.0)
        negative_last = ~np.isnan(self.last_negative) & (
            np.isnan(self.last_positive) | (self.last_negative >= self.last_positive))
        return np.where(negative_last, np.minimum(mean, 0.0), mean)

    def signal(self, position: int) -> ItemSignal:
        positive, negative = float(self.last_positive[position]), float(self.last_negative[position])
        return ItemSignal(float(self.score_mass[position]), float(self.weight_mass[position]),
                          None if math.isnan(positive) else positive, None if math.isnan(negative) else negative,
                          str(self.last_type[position]), float(self.last_at[position]))

    def to_document(self) -> dict[str, list]:
        return {"items": self.item_id.tolist(), "score_mass": self.score_mass.tolist(),
                "weight_mass": self.weight_mass.tolist(), "last_positive": _nullable(self.last_positive),
                "last_negative": _nullable(self.last_negative), "last_type": self.last_type.tolist(),
                "last_at": self.last_at.tolist()}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ProfileItems:
        items = document["items"]
        if isinstance(items, Mapping):  # the first layout: {item: [score, weight, +, -, type, at]}
            values = list(items.values())
            columns = {name: [v[i] for v in values] for i, name in enumerate(
                ("score_mass", "weight_mass", "last_positive", "last_negative", "last_type", "last_at"))}
            columns["items"] = list(items)
        else:
            columns = document
        return cls(np.array(columns["items"], dtype=object),
                   *(np.array(columns[name], dtype=np.float64) for name in ("score_mass", "weight_mass",
                                                                            "last_positive", "last_negative")),
                   np.array(columns["last_type"], dtype=object), np.array(columns["last_at"], dtype=np.float64))


def _nullable(values: np.ndarray) -> list[float | None]:
    """The column as a JSON list: NaN (no signal) as null."""
    missing = np.flatnonzero(np.isnan(values))
    if len(missing) == len(values):
        return [None] * len(values)
    listed = values.tolist()
    for i in missing.tolist():
        listed[i] = None
    return listed


class _ItemsView(Mapping[str, ItemSignal]):
    """`profile.items`: the items by id, each read as an ItemSignal."""

    def __init__(self, columns: ProfileItems) -> None:
        self._columns = columns
        self._index: dict[str, int] | None = None

    def _positions(self) -> dict[str, int]:
        if self._index is None:
            self._index = dict(zip(self._columns.item_id.tolist(), range(len(self._columns)), strict=True))
        return self._index

    def __getitem__(self, item: str) -> ItemSignal:
        return self._columns.signal(self._positions()[item])

    def __contains__(self, item: object) -> bool:
        return item in self._positions()

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns.item_id.tolist())

    def __len__(self) -> int:
        return len(self._columns)


@dataclass
class UserProfile:
    user_id: str
    columns: ProfileItems = field(default_factory=ProfileItems)
    updated_at: float = 0.0  # epoch seconds the masses are decayed to
    personalization: bool = True
    version: int = 0  # optimistic concurrency

    @property
    def items(self) -> Mapping[str, ItemSignal]:
        return _ItemsView(self.columns)

    def decayed_to(self, now: float) -> float:
        """The factor that carries the stored masses from updated_at to `now`."""
        return math.exp(-_DECAY_PER_SECOND * max(0.0, now - self.updated_at))

    def signals(self, now: float) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Items, their signed confidence mass as of `now` (negative when the composite score is not
        above 0) and their composite score: what fold-in and the own-history blend take."""
        weight = self.columns.weight_mass * self.decayed_to(now)
        composite = self.columns.composite()
        return self.columns.item_id.tolist(), np.where(composite > 0, weight, -weight), composite

    def merge(self, rows: pa.Table, now: float) -> None:
        """Add clean rows (user_id = this user; item_id, event_type, feedback_score, confidence,
        event_time) to the profile, decayed to `now`."""
        merge_rows([self], rows, now)

    def to_document(self) -> dict[str, Any]:
        return self.columns.to_document() | {"updated_at": self.updated_at}

    @classmethod
    def from_document(cls, user_id: str, document: dict[str, Any] | None, personalization: bool = True,
                      version: int = 0) -> UserProfile:
        if not document:
            return cls(user_id, personalization=personalization, version=version)
        return cls(user_id, ProfileItems.from_document(document), document["updated_at"], personalization, version)


def merge_rows(profiles: Sequence[UserProfile], rows: pa.Table, now: float) -> None:
    """Merge clean rows (user_id, item_id, event_type, feedback_score, confidence, event_time) into the
    profiles of their users, every profile decayed to `now` first; rows of other users are ignored.

    One pass over the whole batch, no Python step per row or per item: the profiles' stored items and
    the rows (in time order) are stacked as (user, item) entries; sorted by (user, item, time, position),
    each group's masses are summed, its latest positive and negative signal are maxima, and its last entry
    names the latest event type (so a row at the same instant as a stored signal, or as an earlier row,
    wins). A user keeps the MAX_ITEMS items with the most evidence."""
    if not profiles:
        return
    stored = [p.columns for p in profiles]
    updated = np.array([p.updated_at for p in profiles], dtype=np.float64)
    new_updated = np.maximum(updated, now)
    factor = np.exp(-_DECAY_PER_SECOND * np.maximum(0.0, now - updated))  # carries stored masses to now
    stored_user = np.repeat(np.arange(len(profiles)), [len(c) for c in stored])

    row_user, order, times = _rows_of(profiles, rows)
    take = pa.array(order, pa.int64())
    score, confidence = (_floats(rows[name].take(take)) for name in ("feedback_score", "confidence"))
    contribution = confidence * np.exp(-_DECAY_PER_SECOND * np.maximum(0.0, new_updated[row_user] - times))

    user = np.concatenate([stored_user, row_user])
    score_mass = np.concatenate([_stack(stored, "score_mass") * factor[stored_user], contribution * score])
    weight_mass = np.concatenate([_stack(stored, "weight_mass") * factor[stored_user], contribution])
    last_positive = np.concatenate([_stack(stored, "last_positive"), np.where(score > 0, times, np.nan)])
    last_negative = np.concatenate([_stack(stored, "last_negative"), np.where(score < 0, times, np.nan)])
    last_at = np.concatenate([_stack(stored, "last_at"), times])
    items = pa.concat_arrays([pa.array(_stack(stored, "item_id"), pa.string()),
                              rows["item_id"].take(take).combine_chunks().cast(pa.string())])
    types = pa.concat_arrays([pa.array(_stack(stored, "last_type"), pa.string()),
                              rows["event_type"].take(take).combine_chunks().cast(pa.string())])
    entries = len(user)
    if entries == 0:
        for profile, moment in zip(profiles, new_updated.tolist(), strict=True):
            profile.updated_at = moment
        return

    encoded = pc.dictionary_encode(items)
    key = user * len(encoded.dictionary) + encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    position = np.arange(entries)
    sort = np.lexsort((position, last_at, key))
    sorted_key = key[sort]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    latest = sort[np.r_[starts[1:], entries] - 1]  # each group's latest entry
    # per user, the items in the order they first appeared (stored ones first), at most MAX_ITEMS
    first = np.minimum.reduceat(position[sort], starts)
    group_user = user[latest]
    weight = np.add.reduceat(weight_mass[sort], starts)
    chosen = _strongest(np.lexsort((first, group_user)), group_user, weight, len(profiles))
    winners = pa.array(latest[chosen])
    merged = ProfileItems(
        item_id=items.take(winners).to_numpy(zero_copy_only=False),
        score_mass=np.add.reduceat(score_mass[sort], starts)[chosen],
        weight_mass=weight[chosen],
        last_positive=np.fmax.reduceat(last_positive[sort], starts)[chosen],  # fmax: NaN is "none yet"
        last_negative=np.fmax.reduceat(last_negative[sort], starts)[chosen],
        last_type=types.take(winners).to_numpy(zero_copy_only=False),
        last_at=last_at[latest[chosen]])
    bounds = np.searchsorted(group_user[chosen], np.arange(len(profiles) + 1)).tolist()
    for u, profile in enumerate(profiles):
        profile.columns = merged.slice(bounds[u], bounds[u + 1])
        profile.updated_at = float(new_updated[u])


def _rows_of(profiles: Sequence[UserProfile], rows: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of these profiles' users in time order (stable: among equal times, the batch's order):
    per row its profile's position, its index in `rows` and its time in epoch seconds."""
    if rows.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    times = rows["event_time"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy() / 1e6
    position = {p.user_id: i for i, p in enumerate(profiles)}
    users = pc.dictionary_encode(rows["user_id"].combine_chunks())
    of_user = np.array([position.get(u, -1) for u in users.dictionary.to_pylist()] + [-1], dtype=np.int64)
    row_user = of_user[pc.fill_null(users.indices, -1).to_numpy(zero_copy_only=False)]
    order = np.argsort(times, kind="stable")
    order = order[row_user[order] >= 0]
    return row_user[order], order, times[order]


def _floats(values: pa.ChunkedArray) -> np.ndarray:
    return values.to_numpy().astype(np.float64)


def _stack(columns: list[ProfileItems], name: str) -> np.ndarray:
    return np.concatenate([getattr(c, name) for c in columns])


def _strongest(groups: np.ndarray, group_user: np.ndarray, weight: np.ndarray, users: int) -> np.ndarray:
    """`groups` (ordered by user) without each user's items beyond the MAX_ITEMS of most weight."""
    bounds = np.searchsorted(group_user[groups], np.arange(users + 1))
    crowded = np.flatnonzero(np.diff(bounds) > MAX_ITEMS)
    if not len(crowded):
        return groups
    keep = np.ones(len(groups), dtype=bool)
    for u in crowded.tolist():
        lo, hi = bounds[u], bounds[u + 1]
        keep[lo + np.argsort(-weight[groups[lo:hi]], kind="stable")[MAX_ITEMS:]] = False
    return groups[keep]


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
    present = set(pc.unique(rows["user_id"]).to_pylist()) if rows.num_rows else set()
    pending = {u: p for u, p in profiles.items() if u in present and p.personalization}
    written = 0
    for _ in range(attempts):
        merge_rows(list(pending.values()), rows, now)
        lost = set(store.save(pending.values()))
        written += len(pending) - len(lost)
        if not lost:
            return written
        pending = {u: p for u, p in store.load(lost).items() if p.personalization}
        rows = rows.filter(pc.is_in(rows["user_id"], pa.array(list(pending), pa.string())))
    raise RuntimeError(f"online profiles of {len(pending)} users kept moving under {attempts} attempts")
