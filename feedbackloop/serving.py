"""Personalized rankings from the published model and the user's latest feedback.

The ranking itself is `feedbackloop.ranking.Ranker`, the code the gate evaluates: every candidate
source scores the catalog from the user's online profile as of now (the factorization folds the user
in, the item-item weights and the user's own evidence follow their latest events), and the re-ranker
orders the union of their top candidates (or the single source that won on validation), so an event
the cleaner merged a moment ago changes the next ranking without retraining. Items the user turned
against (latest signal negative) and items blocked by configuration are filtered; a user with nothing
wanted yet (no feedback, or only items shown and ignored) gets the popular items (their segment's when
known) they have not ignored, spread over the categories so each page asks about as many tastes as it
can, the items with the best recent click rate moved up (the item counters); a user who turned
personalization off gets the global ranking and is told so.

Light on purpose (numpy only): the serving Lambda imports it without the training libraries.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from feedbackloop.exploration import GREEDY, ExplorationPolicy, explore
from feedbackloop.item_counters import ItemCounts, freshen, ranker_key
from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
from feedbackloop.online import UserProfile
from feedbackloop.ranker_choice import choose
from feedbackloop.ranking import ARRAY_PREFIX, ITEM_FEATURES, Ranker, UserSignals
from feedbackloop.registry import Artifacts, ModelRegistry

VERBS = {"purchase": "bought", "click": "clicked", "view": "viewed", "rating": "rated", "dwell": "spent time on",
         "feature_use": "used", "form_score": "scored", "nps": "rated"}

_SPOOL_CHUNK = 1 << 20  # model.npz is copied to its temporary file a MiB at a time
# a zip member's local header: its signature, then (after 22 bytes) its name's and its extra field's lengths
_LOCAL_HEADER = struct.Struct("<4s22xHH")
# after its signature: flags, compression, (time, date, CRC-32, compressed size,) size, name and extra lengths
_STREAMED_HEADER = struct.Struct("<2xHH12xLHH")


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    reason: str
    propensity: float = 1.0  # the probability the policy showed this item at this position (ADR 0017)


@dataclass(frozen=True)
class Recommendations:
    user_id: str
    items: list[Recommendation]
    model_version: str | None  # None: no model is published yet (popularity from the item counters)
    segment: str | None
    personalized: bool
    strategy: str  # fold_in (ranked from the user's feedback), segment_popularity, popularity, opted_out
    ranker: str | None = None  # fold_in: the ranking that made the page (the model's choice, or a source, ADR 0021)
    ranker_propensity: float = 1.0  # the probability that serving chose that ranking (in each item's propensity)


class ServingModel:
    """The arrays of one published model version, ready for ranking."""

    def __init__(self, arrays: dict[str, np.ndarray], document: dict) -> None:
        self.version: str = document["version"]
        self.as_of: str | None = document.get("data", {}).get("as_of")  # its last day of training data
        if f"{ARRAY_PREFIX}item_ids" not in arrays:
            arrays = legacy_arrays(arrays, document)
        self.ranker = Ranker(arrays)
        self.item_ids = arrays[f"{ARRAY_PREFIX}item_ids"].astype(str)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.item_factors = self.ranker.item_factors
        self.item_norms = np.linalg.norm(self.item_factors, axis=1) + 1e-9
        self.popularity = self.ranker.popularity
        self.global_top = self.ranker.popular_order
        self.segment_names = [str(name) for name in self.ranker.arrays["segment_names"]]
        self.segment_top = {name: order for name, order in zip(self.segment_names, self.ranker.segment_order,
                                                                strict=True)}
        self.user_segments: dict[str, str] = {}
        if "segment_user_ids" in arrays:
            self.user_segments = dict(zip(arrays["segment_user_ids"].astype(str),
                                          arrays["segment_labels"].astype(str), strict=True))

    @classmethod
    def from_archive(cls, archive: bytes) -> ServingModel:
        """From a published model.tar.gz (model.npz and metrics.json, in either order), in one pass.

        The archive is decompressed once, its members read in the order they come (looking a member up by
        name read the whole gzip stream to list the members, then again from the start to reach model.npz:
        twice the decompression, most of a cold start's load, docs/capacity.md), and model.npz's arrays are
        read as it is decompressed (`stream_npz`): neither the npz's bytes nor a copy in Lambda's /tmp are
        held beside the arrays. An npz that cannot be read that way (not `np.savez`'s) is decompressed again
        to a temporary file and read from there (`read_npz`)."""
        try:
            arrays, document = _read_archive(archive, streamed=True)
        except _NotStreamable:
            arrays, document = _read_archive(archive, streamed=False)
        return cls(arrays, document)

    def signals(self, user_id: str, profile: UserProfile | None, now: float) -> tuple[UserSignals, list[str]]:
        """The user's profile as the ranker takes it (items the model does not know left out), and the
        item ids of its rows."""
        segment = self.user_segments.get(user_id)
        segment_row = self.segment_names.index(segment) if segment in self.segment_top else -1
        if profile is None or not profile.items:
            return UserSignals.empty(segment_row), []
        items, confidence, composite = profile.signals(now)
        rows = np.array([self.item_index.get(i, -1) for i in items], dtype=np.int64)
        known = rows >= 0
        columns = profile.columns  # in the order of `items`
        last = columns.array("last_at")
        conflicting = ~np.isnan(columns.array("last_positive")) & ~np.isnan(columns.array("last_negative"))
        own = [i for i, ok in zip(items, known, strict=True) if ok]
        ignored = columns.array("ignored_mass") * profile.decayed_to(now)
        return UserSignals(rows[known], confidence[known], composite[known],
                           np.maximum(0.0, now - last[known]) / 86400, conflicting[known], segment_row,
                           ignored[known]), own


class _NotStreamable(Exception):
    """model.npz is not one `stream_npz` reads."""


def _read_archive(archive: bytes, streamed: bool) -> tuple[dict[str, np.ndarray], dict]:
    document = arrays = None
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name == METRICS_FILE and member.isfile():
                document = json.loads(tar.extractfile(member).read())
            elif name == MODEL_FILE and member.isfile() and streamed:
                arrays = stream_npz(tar.extractfile(member))
            elif name == MODEL_FILE and member.isfile():
                with tempfile.TemporaryFile(prefix="model-", suffix=".npz") as spool:
                    shutil.copyfileobj(tar.extractfile(member), spool, _SPOOL_CHUNK)
                    arrays = read_npz(spool)
        # to the end of the gzip stream, which checks its CRC-32 over every byte read (the arrays' readers
        # do not repeat the zip members' own)
        while tar.fileobj.read(_SPOOL_CHUNK):
            pass
    missing = [name for name, found in ((MODEL_FILE, arrays), (METRICS_FILE, document)) if found is None]
    if missing:
        raise ValueError(f"the model archive holds no {' and no '.join(missing)}")
    return arrays, document


class _Member:
    """The next `size` bytes of a stream, and no more."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream, self.remaining = stream, size

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(self.remaining if size < 0 else min(size, self.remaining))
        self.remaining -= len(data)
        return data


def stream_npz(stream: BinaryIO) -> dict[str, np.ndarray]:
    """The arrays of an .npz file read in one pass from its start, as `np.load` reads them (no pickled
    objects): each member from its local header straight into its array, until the zip's central
    directory. For `np.savez`'s files (uncompressed members, their sizes in their headers); anything else
    (compressed members, sizes after the data, members that are not arrays) raises `_NotStreamable`."""
    arrays = {}
    while True:
        signature = stream.read(4)
        if signature in (b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06"):  # the central directory: all read
            return arrays
        header = stream.read(_STREAMED_HEADER.size)
        if signature != b"PK\x03\x04" or len(header) < _STREAMED_HEADER.size:
            raise _NotStreamable
        flags, method, size, name_length, extra_length = _STREAMED_HEADER.unpack(header)
        name, extra = stream.read(name_length).decode(), stream.read(extra_length)
        if flags & 0x9 or method != zipfile.ZIP_STORED or not name.endswith(".npy"):
            raise _NotStreamable  # encrypted, sizes after the data, compressed, or not an array
        at = 0
        while size == 0xFFFFFFFF and at + 4 <= len(extra):  # Zip64: the size in its extra field, first
            kind, length = struct.unpack_from("<HH", extra, at)
            if kind == 1 and length >= 8:
                (size,) = struct.unpack_from("<Q", extra, at + 4)
            at += 4 + length
        if size == 0xFFFFFFFF:
            raise _NotStreamable
        member = _Member(stream, size)
        arrays[name.removesuffix(".npy")] = np.lib.format.read_array(member, allow_pickle=False)
        if member.remaining:
            raise ValueError(f"model.npz: {name} is not the size its zip header says")


def read_npz(file: BinaryIO) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, as `np.load` reads them (no pickled objects), each uncompressed member
    (`np.savez`'s) read from its offset in the file straight into the array's memory: `np.load` reads a
    member through the zip module in chunks, checks its CRC-32 and copies it again, a third of the load's
    time at 100,000 items. Compressed members (`np.savez_compressed`) go through `np.load`."""
    arrays = {}
    with zipfile.ZipFile(file) as npz:
        members = npz.infolist()
    with open(file.fileno(), "rb", closefd=False) as reader:  # a real file: numpy reads it with fromfile
        for info in members:
            if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED \
                    or info.flag_bits & 0x1:  # not an array, compressed, or encrypted: np.load's
                continue
            reader.seek(info.header_offset)
            header = reader.read(_LOCAL_HEADER.size)
            signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
            if signature != b"PK\x03\x04":
                raise ValueError(f"model.npz: no local header for {info.filename}")
            reader.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
            arrays[info.filename.removesuffix(".npy")] = np.lib.format.read_array(reader, allow_pickle=False)
            if reader.tell() != info.header_offset + _LOCAL_HEADER.size + name_length + extra_length \
                    + info.file_size:
                raise ValueError(f"model.npz: {info.filename} is not the size its zip entry says")
    if len(arrays) < len(members):
        file.seek(0)
        with np.load(file) as npz:
            arrays |= {name: npz[name] for name in npz.files if name not in arrays}
    return arrays


def legacy_arrays(arrays: dict[str, np.ndarray], document: dict) -> dict[str, np.ndarray]:
    """A model published before the ranking core (factors and popularity only) as the ranker's
    arrays: it ranks by its factorization blended with the user's own history, as it did."""
    items = arrays["item_factors"].shape[0]
    params = document["params"]
    names = arrays.get("segment_names", np.array([], dtype=str)).astype(str)
    segment_popularity = np.zeros((len(names), items))
    for s, row in enumerate(arrays.get("segment_top_items", np.zeros((0, 0), dtype=np.int64))):
        row = row[row >= 0]
        segment_popularity[s, row] = np.arange(len(row), 0, -1)
    out = {"item_ids": arrays["item_ids"], "item_factors": arrays["item_factors"],
           "regularization": np.array(params.get("regularization", 0.05)), "alpha": np.array(params.get("alpha", 1.0)),
           "neighbors_indptr": np.zeros(items + 1, dtype=np.int64), "neighbors_indices": np.array([], np.int64),
           "neighbors_data": np.array([]), "item_item_binary": np.array(True), "popularity": arrays["popularity"],
           "trending": arrays["popularity"], "segment_names": names, "segment_popularity": segment_popularity,
           "item_features": np.full((items, len(ITEM_FEATURES)), np.nan), "candidates": np.array(100),
           "exclude_seen": np.array(False), "strategy": np.array("blend"),
           "history_weight": np.array(params.get("history_weight", 1.0))}
    return {ARRAY_PREFIX + k: v for k, v in out.items()} | {k: v for k, v in arrays.items()
                                                          if k.startswith("segment_user") or k == "segment_labels"}


def recommend(model: ServingModel, user_id: str, profile: UserProfile | None, now: float, k: int = 10,
              blocked: Collection[str] = (), exclude_consumed: bool = False,
              ordering: str = "personalized", exploration: ExplorationPolicy = GREEDY,
              request_id: str = "", item_counts: Callable[[list[str]], Mapping[str, ItemCounts]] | None = None
              ) -> Recommendations:
    """The top k for a user. `ordering` popularity (the UI config's, or the user's arm of the ranking
    experiment): the segment's or the global popularity, the control arm of an A/B test.
    `exclude_consumed` (the UI config's): leave out every item the user has a signal on. `exploration`:
    the user's arm's policy, drawn deterministically from `request_id`; each item carries its
    propensity. `item_counts`: reads the items' recent counts, which move the candidates before the
    slate is drawn (ADR 0018), and the rankers' counts, from which the page's ranker is chosen (ADR 0021;
    without it, the model's choice ranks)."""
    segment = model.user_segments.get(user_id)
    if profile is not None and not profile.personalization:
        return _popular(model, user_id, None, k, blocked, personalized=False)
    if ordering == "popularity":
        return _popular(model, user_id, segment, k, blocked, personalized=True)
    signals, own = model.signals(user_id, profile, now)
    blocked_rows = np.array([model.item_index[i] for i in blocked if i in model.item_index], dtype=np.int64)
    if not signals.wanted.any():
        # nothing wanted yet: popular items spread over the categories, none the user ignored, the
        # recently clicked ones (for the examinations they had) first
        reorder = _by_recent_clicks(model, item_counts) if item_counts is not None else None
        return _popular(model, user_id, segment, k, blocked, personalized=True,
                        ranking=model.ranker.popular(signals, k, blocked_rows, reorder))
    if exclude_consumed and len(signals.rows):
        blocked_rows = np.concatenate([blocked_rows, signals.rows])
    wanted = k + exploration.pool + (k if item_counts is not None else 0)
    ranker, chosen = model.ranker.strategy, 1.0
    if item_counts is not None:  # which ranking earns clicks here, learned online (ADR 0021)
        rankers = model.ranker.rankers
        ranker, chosen = choose(rankers, item_counts([ranker_key(r) for r in rankers]), request_id)
    top, values = model.ranker.rank(signals, wanted, blocked_rows, ranker)
    scores = np.full(len(model.item_ids), -np.inf)
    scores[top] = values / max(float(np.abs(values).max(initial=0.0)), 1e-12)  # the scale freshness adds to
    ranked = top.tolist()
    if item_counts is not None:
        ranked = freshen(ranked, scores, model.item_ids, item_counts([str(model.item_ids[i]) for i in ranked]))
    shown = explore(ranked, k, exploration, request_id)
    reason = _reasons(model, signals.rows, own, profile, signals.rows[signals.wanted])
    return Recommendations(user_id, [Recommendation(str(model.item_ids[i]), float(scores[i]), reason(i), chosen * p)
                                     for i, p in shown], model.version, segment, True, "fold_in", ranker, chosen)


def _by_recent_clicks(model: ServingModel, item_counts: Callable[[list[str]], Mapping[str, ItemCounts]]
                      ) -> Callable[[np.ndarray], np.ndarray]:
    """A cold page's pool (best first) re-ordered by the freshness rule on a rank scale (1 for its first,
    down to 0), so that an item moves at most a tenth of the pool (ADR 0018)."""
    def reorder(pool: np.ndarray) -> np.ndarray:
        scores = np.zeros(len(model.item_ids))
        scores[pool] = 1.0 - np.arange(len(pool)) / len(pool)
        counts = item_counts([str(model.item_ids[i]) for i in pool])
        return np.array(freshen(pool.tolist(), scores, model.item_ids, counts), dtype=np.int64)
    return reorder


def _reasons(model: ServingModel, rows: np.ndarray, own: list[str], profile: UserProfile | None,
             liked: np.ndarray) -> Callable[[int], str]:
    """Why each item of a user's page is there: an item of their own ("you bought it before"), else the
    liked item whose factors are closest to it's (what every item's reason reads, gathered once a page)."""
    position: dict[int, int] = {}
    for j, row in enumerate(rows.tolist()):
        position.setdefault(row, j)
    y = model.item_factors
    liked_factors, liked_norms = y[liked], model.item_norms[liked]
    items = profile.items if profile is not None else None  # (one view: it indexes the items once)

    def reason(item: int) -> str:
        if items is not None and item in position:
            signal = items[own[position[item]]]
            return f"you {VERBS.get(signal.last_type, 'chose')} it before"
        if len(liked) == 0:
            return "recommended for you"
        similarity = (liked_factors @ y[item]) / (liked_norms * model.item_norms[item])
        anchor = int(liked[int(np.argmax(similarity))])
        signal = items[str(model.item_ids[anchor])] if items is not None else None
        verb = VERBS.get(signal.last_type, "liked") if signal is not None else "liked"
        return f"because you {verb} {model.item_ids[anchor]}"
    return reason


def _popular(model: ServingModel, user_id: str, segment: str | None, k: int, blocked: Collection[str],
             personalized: bool, ranking: np.ndarray | None = None) -> Recommendations:
    if ranking is None and segment is not None:
        ranking = model.segment_top.get(segment)
    reason = f"popular in your segment ({segment})" if segment in model.segment_top else "popular overall"
    if ranking is None:
        ranking = model.global_top
    chosen = [i for i in ranking if str(model.item_ids[i]) not in blocked][:k]
    strategy = "opted_out" if not personalized else ("segment_popularity" if segment in model.segment_top
                                                     else "popularity")
    return Recommendations(user_id, [Recommendation(str(model.item_ids[i]), float(model.popularity[i]), reason)
                                     for i in chosen], model.version, segment, personalized, strategy)


def popular_without_model(counts: Mapping[str, int], user_id: str, k: int = 10, blocked: Collection[str] = (),
                          personalization: bool = True) -> Recommendations | None:
    """Before the first model: the k items with the most clean events (the online store's item counters),
    ties by item id; None when nothing was counted yet. Nobody is personalized, so an opted-out user gets
    the same ranking as anyone."""
    ranked = sorted(((-count, item) for item, count in counts.items() if count > 0 and item not in blocked))[:k]
    if not ranked:
        return None
    return Recommendations(user_id, [Recommendation(item, float(-negative), "popular overall")
                                     for negative, item in ranked],
                           None, None, False, "popularity" if personalization else "opted_out")


class ModelCache:
    """The published model, loaded once per container and replaced when the registry points at a new
    version (checked at most every `refresh_seconds`)."""

    def __init__(self, registry: ModelRegistry, artifacts: Artifacts, refresh_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._artifacts = artifacts
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._model: ServingModel | None = None
        self._checked = -float("inf")

    def get(self) -> ServingModel | None:
        with self._lock:
            if self._clock() - self._checked >= self._refresh:
                self._checked = self._clock()
                current = self._registry.current()
                if current is not None and (self._model is None or self._model.version != current["version"]):
                    self._model = ServingModel.from_archive(self._artifacts.read(current["artifact"]))
            return self._model
