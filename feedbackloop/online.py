"""The online store's view of a user: their recent feedback per item, decayed, plus their preferences.

One document per user (DynamoDB item, key `user_id`): for each item the decayed sums of confidence x
feedback score and of confidence, as of `updated_at`, the times of the latest positive and negative
signal, and the decayed confidence of the exposures the user examined and passed over since the latest
positive (what serving keeps off their page until they engage again, ADR 0016). The composite score
and the conflict rule are the feedback layer's (ADR 0006), so serving folds a user in from the same
quantity training used. The cleaner merges each batch's clean rows into it; a
user who turned personalization off is left as is.

A profile keeps its items as columns (`ProfileItems`), and a batch is merged into all its users' profiles
at once (`merge_rows`): the batch's rows in time order and the profiles' items, grouped by (user, item)
with one stable sort, then sums and maxima per group, with no Python work per row. The document is
columnar too, so it is read and written without a Python step per item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # merging rows is the cleaner's (pyarrow); serving reads profiles without it
    import pyarrow as pa

from feedbackloop.models.contract import HALF_LIFE_DAYS

MAX_ITEMS = 500  # per user: the DynamoDB item stays far below its 400 KB limit
DECAY_PER_SECOND = math.log(2) / (HALF_LIFE_DAYS * 86400)


@dataclass
class ItemSignal:
    """One item of a profile, as serving reads it."""

    score_mass: float  # sum of confidence x feedback_score, decayed to the profile's updated_at
    weight_mass: float  # sum of confidence, decayed likewise
    last_positive: float | None  # epoch seconds
    last_negative: float | None
    last_type: str  # event type of the latest signal (for "because you ...")
    last_at: float
    # confidence of the exposures the user examined and passed over since the latest positive signal
    # (all of them while there is none), decayed likewise: what they keep ignoring (ADR 0016)
    ignored_mass: float = 0.0

    @property
    def composite(self) -> float:
        mean = self.score_mass / self.weight_mass if self.weight_mass > 0 else 0.0
        negative_last = self.last_negative is not None and (
            self.last_positive is None or self.last_negative >= self.last_positive)
        return min(mean, 0.0) if negative_last else mean


# a profile's item columns, in the order of its document; None in last_positive / last_negative: no
# such signal yet
_COLUMNS = ("item_id", "score_mass", "weight_mass", "last_positive", "last_negative", "last_type", "last_at",
            "ignored_mass")
_FIRST_LAYOUT = _COLUMNS[1:-1]  # {item: [score_mass, ..., last_at]}, as profiles were first written
_DOCUMENT_KEYS = ("items", *_COLUMNS[1:])
_ALL_COLUMNS = attrgetter(*_COLUMNS)  # a profile's columns, in one call per profile


@dataclass(eq=False)
class ProfileItems:
    """A profile's items as columns, one position per item: lists, as its document holds them, so that
    reading and writing a profile takes no Python step per item; a batch's merge turns the columns of
    all its profiles into arrays at once. The lists are never changed in place (a merge replaces them)."""

    item_id: list[str] = field(default_factory=list)
    score_mass: list[float] = field(default_factory=list)
    weight_mass: list[float] = field(default_factory=list)
    last_positive: list[float | None] = field(default_factory=list)
    last_negative: list[float | None] = field(default_factory=list)
    last_type: list[str] = field(default_factory=list)
    last_at: list[float] = field(default_factory=list)
    ignored_mass: list[float] = field(default_factory=list)  # filled with 0 when a document has none

    def __post_init__(self) -> None:
        if len(self.ignored_mass) != len(self.item_id):  # written before the column existed
            self.ignored_mass = [0.0] * len(self.item_id)

    def __len__(self) -> int:
        return len(self.item_id)

    def array(self, name: str) -> np.ndarray:
        """A numeric column as floats (None as NaN)."""
        return np.array(getattr(self, name), dtype=np.float64)

    def composite(self) -> np.ndarray:
        """ItemSignal.composite of every item."""
        score, weight, positive, negative = (self.array(n) for n in _COLUMNS[1:5])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(weight > 0, score / weight, 0.0)
        negative_last = ~np.isnan(negative) & (np.isnan(positive) | (negative >= positive))
        return np.where(negative_last, np.minimum(mean, 0.0), mean)

    def unwanted(self) -> np.ndarray:
        """Negative evidence, as training signs a pair (`feedbackloop.models.data.unwanted`): a composite
        score below 0, a latest signal that is negative (capped at 0, ADR 0006), or only ever shown (no
        positive nor negative signal, the latest a view: an exposure). A neutral rating is engagement."""
        positive, negative = self.array("last_positive"), self.array("last_negative")
        negative_last = ~np.isnan(negative) & (np.isnan(positive) | (negative >= positive))
        exposure = np.isnan(positive) & np.isnan(negative) & (np.array(self.last_type, dtype=object) == "view")
        return (self.composite() < 0) | negative_last | exposure

    def signal(self, position: int) -> ItemSignal:
        return ItemSignal(*(getattr(self, name)[position] for name in _COLUMNS[1:]))

    def to_document(self) -> dict[str, list]:
        return dict(zip(_DOCUMENT_KEYS, _ALL_COLUMNS(self), strict=True))

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ProfileItems:
        items = document["items"]
        if isinstance(items, Mapping):  # the first layout
            values = list(items.values())
            return cls(list(items), *([v[i] for v in values] for i in range(len(_FIRST_LAYOUT))))
        return cls(items, *(document[name] for name in _FIRST_LAYOUT), document.get("ignored_mass", []))


class _ItemsView(Mapping[str, ItemSignal]):
    """`profile.items`: the items by id, each read as an ItemSignal."""

    def __init__(self, columns: ProfileItems) -> None:
        self._columns = columns
        self._index: dict[str, int] | None = None

    def _positions(self) -> dict[str, int]:
        if self._index is None:
            self._index = dict(zip(self._columns.item_id, range(len(self._columns)), strict=True))
        return self._index

    def __getitem__(self, item: str) -> ItemSignal:
        return self._columns.signal(self._positions()[item])

    def __contains__(self, item: object) -> bool:
        return item in self._positions()

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns.item_id)

    def __len__(self) -> int:
        return len(self._columns)


@dataclass
class UserProfile:
    user_id: str
    columns: ProfileItems = field(default_factory=ProfileItems)
    updated_at: float = 0.0  # epoch seconds the masses are decayed to
    personalization: bool = True
    version: int = 0  # optimistic concurrency
    # epoch seconds of the user's latest erasure request (the tombstone's): their events from before it
    # that are still on the stream are quarantined by the cleaner, not kept (ADR 0013)
    erased_at: float | None = None

    @property
    def items(self) -> Mapping[str, ItemSignal]:
        return _ItemsView(self.columns)

    def copy(self) -> UserProfile:
        """A shallow copy, as copy.copy makes it, without its generic protocol (a batch copies thousands)."""
        twin = object.__new__(UserProfile)
        twin.__dict__.update(self.__dict__)
        return twin

    def decayed_to(self, now: float) -> float:
        """The factor that carries the stored masses from updated_at to `now`."""
        return math.exp(-DECAY_PER_SECOND * max(0.0, now - self.updated_at))

    def signals(self, now: float) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Items, their signed confidence mass as of `now` (negative where the pair is unwanted, as
        training signs it: `ProfileItems.unwanted`) and their composite score: what the ranking takes."""
        weight = self.columns.array("weight_mass") * self.decayed_to(now)
        composite = self.columns.composite()
        return list(self.columns.item_id), np.where(self.columns.unwanted(), -weight, weight), composite

    def merge(self, rows: pa.Table, now: float) -> None:
        """Add clean rows (user_id = this user; item_id, event_type, feedback_score, confidence,
        event_time) to the profile, decayed to `now`."""
        merge_rows([self], rows, now)

    def to_document(self) -> dict[str, Any]:
        return self.columns.to_document() | {"updated_at": self.updated_at}

    @classmethod
    def from_document(cls, user_id: str, document: dict[str, Any] | None, personalization: bool = True,
                      version: int = 0, erased_at: float | None = None) -> UserProfile:
        if not document:
            return cls(user_id, personalization=personalization, version=version, erased_at=erased_at)
        return cls(user_id, ProfileItems.from_document(document), document["updated_at"], personalization, version,
                   erased_at)


def merge_rows(profiles: Sequence[UserProfile], rows: pa.Table, now: float) -> None:
    """Merge clean rows (user_id, item_id, event_type, feedback_score, confidence, event_time) into the
    profiles of their users, every profile decayed to `now` first; rows of other users are ignored.

    One pass over the whole batch, no Python step per row or per item: the profiles' stored items and
    the rows (in time order) are stacked as (user, item) entries and grouped by one stable sort; each
    group's masses are summed, its latest positive and negative signal are maxima, and its latest entry
    names the latest event type (a row at the same instant as a stored signal, or as an earlier row,
    wins). A user keeps the MAX_ITEMS items with the most evidence."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from feedbackloop.item_counters import EXPOSURES

    if not profiles:
        return
    stored = [p.columns for p in profiles]
    updated = np.array([p.updated_at for p in profiles], dtype=np.float64)
    new_updated = np.maximum(updated, now)
    factor = np.exp(-DECAY_PER_SECOND * np.maximum(0.0, now - updated))  # carries stored masses to now
    stored_user = np.repeat(np.arange(len(profiles)), [len(c) for c in stored])

    row_user, order, times = _rows_of(profiles, rows)
    take = pa.array(order, pa.int64())
    score, confidence = (rows[name].take(take).to_numpy().astype(np.float64) for name in ("feedback_score",
                                                                                          "confidence"))
    contribution = confidence * np.exp(-DECAY_PER_SECOND * np.maximum(0.0, new_updated[row_user] - times))

    user = np.concatenate([stored_user, row_user])
    score_mass = np.concatenate([_floats(_stack(stored, "score_mass")) * factor[stored_user], contribution * score])
    weight_mass = np.concatenate([_floats(_stack(stored, "weight_mass")) * factor[stored_user], contribution])
    last_positive = np.concatenate([_floats(_stack(stored, "last_positive")), np.where(score > 0, times, np.nan)])
    last_negative = np.concatenate([_floats(_stack(stored, "last_negative")), np.where(score < 0, times, np.nan)])
    last_at = np.concatenate([_floats(_stack(stored, "last_at")), times])
    exposure = pc.is_in(rows["event_type"].take(take), pa.array(EXPOSURES)).to_numpy(zero_copy_only=False)
    # a stored item's ignored mass is dated at its latest signal (it holds exposures after its latest
    # positive, none later than that)
    ignored = np.concatenate([_floats(_stack(stored, "ignored_mass")) * factor[stored_user],
                              np.where(exposure, contribution, 0.0)])
    entries = len(user)
    if entries == 0:
        for profile, moment in zip(profiles, new_updated.tolist(), strict=True):
            profile.updated_at = moment
        return
    # items and event types as codes into their distinct values: the merged profiles' strings are then
    # taken from those (a few thousand items, nine types), not converted from Arrow once per entry
    item_names, item = _codes(pa.concat_arrays([pa.array(_stack(stored, "item_id"), pa.string()),
                                                rows["item_id"].take(take).combine_chunks().cast(pa.string())]))
    type_names, kind = _codes(pa.concat_arrays([pa.array(_stack(stored, "last_type"), pa.string()),
                                                rows["event_type"].take(take).combine_chunks().cast(pa.string())]))

    key = user * len(item_names) + item
    # grouped by (user, item); within a group, in the order stacked: the stored signal (if any), then the
    # rows in time order, so that the sums add up in time order and only the stored signal can be later
    # than the group's last row (an event that arrived late)
    sort = np.argsort(key, kind="stable")
    sorted_key = key[sort]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    first, last = sort[starts], sort[np.r_[starts[1:], entries] - 1]
    latest = np.where(last_at[last] >= last_at[first], last, first)  # each group's latest signal
    # per user, the items in the order they first appeared (stored ones first), at most MAX_ITEMS
    group_user = user[first]
    weight = np.add.reduceat(weight_mass[sort], starts)
    positive = np.fmax.reduceat(last_positive[sort], starts)
    # ignored: the exposures after the group's latest positive (all of them when it has none)
    since = np.repeat(positive, np.diff(np.r_[starts, entries]))
    after = np.isnan(since) | (last_at[sort] > since)
    ignored_mass = np.add.reduceat(np.where(after, ignored[sort], 0.0), starts)
    chosen = _strongest(np.argsort(group_user * entries + first), group_user, weight, len(profiles))
    winners = latest[chosen]
    merged = ProfileItems(
        item_id=item_names[item[winners]].tolist(),
        score_mass=_listed(np.add.reduceat(score_mass[sort], starts)[chosen]),
        weight_mass=_listed(weight[chosen]),
        # fmax: NaN is "none yet"
        last_positive=_listed(positive[chosen], nullable=True),
        last_negative=_listed(np.fmax.reduceat(last_negative[sort], starts)[chosen], nullable=True),
        last_type=type_names[kind[winners]].tolist(),
        last_at=_listed(last_at[latest[chosen]]),
        ignored_mass=_listed(ignored_mass[chosen]))
    bounds = np.searchsorted(group_user[chosen], np.arange(len(profiles) + 1)).tolist()
    columns = [getattr(merged, name) for name in _COLUMNS]
    for profile, lo, hi, moment in zip(profiles, bounds, bounds[1:], new_updated.tolist(), strict=False):
        profile.columns = ProfileItems(*[column[lo:hi] for column in columns])
        profile.updated_at = moment


def _rows_of(profiles: Sequence[UserProfile], rows: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of these profiles' users in time order (stable: among equal times, the batch's order):
    per row its profile's position, its index in `rows` and its time in epoch seconds."""
    import pyarrow as pa
    import pyarrow.compute as pc

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


def _codes(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The distinct strings of an array without nulls (an object array, in order of appearance) and
    per value the index of its string."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(values)
    names = np.empty(len(encoded.dictionary), dtype=object)
    names[:] = encoded.dictionary.to_pylist()
    return names, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _stack(columns: list[ProfileItems], name: str) -> list:
    return list(chain.from_iterable(map(attrgetter(name), columns)))


def _floats(values: list) -> np.ndarray:
    return np.array(values, dtype=np.float64)  # None -> NaN


def _listed(values: np.ndarray, nullable: bool = False) -> list:
    """A column as its document holds it (NaN, no signal, as None)."""
    if not nullable:
        return values.tolist()
    listed = values.astype(object)
    listed[np.isnan(values)] = None
    return listed.tolist()


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


@dataclass(frozen=True)
class ProfileMerge:
    """A batch merged into its users' profiles, not saved yet: the cleaner computes it while the batch's
    objects are being written to the lake and saves it once they are committed. The profiles it was
    computed from are left as they were loaded (a failed write leaves them to merge fewer rows)."""

    rows: pa.Table
    now: float
    pending: dict[str, UserProfile]  # the consenting users' profiles with the rows merged in

    @classmethod
    def of(cls, profiles: Mapping[str, UserProfile], rows: pa.Table, now: float) -> ProfileMerge:
        """Merge clean rows into copies of their users' profiles (loaded already, to decide consent).
        Users who turned personalization off are left alone."""
        import pyarrow.compute as pc

        present = set(pc.unique(rows["user_id"]).to_pylist()) if rows.num_rows else set()
        # a shallow copy: a merge replaces a profile's columns, never changes them in place
        pending = {u: p.copy() for u, p in profiles.items() if u in present and p.personalization}
        merge_rows(list(pending.values()), rows, now)
        return cls(rows, now, pending)

    def save(self, store: OnlineStoreLike, attempts: int = 3) -> int:
        """Save the merged profiles, reloading and merging again the users whose profile moved meanwhile.
        Returns the profiles written."""
        import pyarrow as pa
        import pyarrow.compute as pc

        pending, rows = self.pending, self.rows
        written = 0
        for attempt in range(attempts):
            if attempt:
                merge_rows(list(pending.values()), rows, self.now)
            lost = set(store.save(pending.values()))
            written += len(pending) - len(lost)
            if not lost:
                return written
            pending = {u: p for u, p in store.load(lost).items() if p.personalization}
            rows = rows.filter(pc.is_in(rows["user_id"], pa.array(list(pending), pa.string())))
        raise RuntimeError(f"online profiles of {len(pending)} users kept moving under {attempts} attempts")


def merge_into_profiles(store: OnlineStoreLike, profiles: Mapping[str, UserProfile], rows: pa.Table, now: float,
                        attempts: int = 3) -> int:
    """Merge clean rows into their users' profiles (loaded already, to decide consent) and save them,
    reloading and merging again the users whose profile moved meanwhile. Users who turned
    personalization off are left alone. Returns the profiles written."""
    return ProfileMerge.of(profiles, rows, now).save(store, attempts)
