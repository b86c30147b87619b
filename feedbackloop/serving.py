"""Personalized rankings from the published model and the user's latest feedback.

The user's vector is folded in from their online profile against the published item factors (the
least-squares step ALS takes for a user), so an event the cleaner merged a moment ago changes the next
ranking without retraining. The ranking blends it with the user's own feedback as training did; items
the user turned against (latest signal negative) and items blocked by configuration are filtered; a
user without usable feedback gets their segment's or the global popularity; a user who turned
personalization off gets the global ranking and is told so.

Light on purpose (numpy only): the serving Lambda imports it without the training libraries.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np

from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
from feedbackloop.online import UserProfile
from feedbackloop.registry import Artifacts, ModelRegistry

VERBS = {"purchase": "bought", "click": "clicked", "view": "viewed", "rating": "rated", "dwell": "spent time on",
         "feature_use": "used", "form_score": "scored", "nps": "rated"}


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True)
class Recommendations:
    user_id: str
    items: list[Recommendation]
    model_version: str | None  # None: no model is published yet (popularity from the item counters)
    segment: str | None
    personalized: bool
    strategy: str  # fold_in, trained_vector, segment_popularity, popularity, opted_out


class ServingModel:
    """The arrays of one published model version, ready for ranking."""

    def __init__(self, arrays: dict[str, np.ndarray], document: dict) -> None:
        params = document["params"]
        self.version: str = document["version"]
        self.as_of: str | None = document.get("data", {}).get("as_of")  # its last day of training data
        self.item_ids = arrays["item_ids"].astype(str)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.item_factors = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        self.item_norms = np.linalg.norm(self.item_factors, axis=1) + 1e-9
        self.popularity = arrays["popularity"]
        self.global_top = np.argsort(-self.popularity, kind="stable")[:1000]
        self.alpha = float(params["alpha"])
        self.history_weight = float(params["history_weight"])
        y = self.item_factors.astype(np.float64)
        self.gram = y.T @ y + float(params["regularization"]) * np.eye(y.shape[1])
        self.user_index = {u: i for i, u in enumerate(arrays["user_ids"].astype(str))}
        self.user_factors = arrays["user_factors"]
        self.user_segments: dict[str, str] = {}
        self.segment_top: dict[str, np.ndarray] = {}
        if "segment_names" in arrays:
            self.user_segments = dict(zip(arrays["segment_user_ids"].astype(str),
                                          arrays["segment_labels"].astype(str), strict=True))
            self.segment_top = {name: row[row >= 0] for name, row in
                                zip(arrays["segment_names"].astype(str), arrays["segment_top_items"], strict=True)}

    @classmethod
    def from_archive(cls, archive: bytes) -> ServingModel:
        """From a published model.tar.gz (model.npz and metrics.json)."""
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            arrays = np.load(io.BytesIO(tar.extractfile(MODEL_FILE).read()))
            document = json.loads(tar.extractfile(METRICS_FILE).read())
            return cls({name: arrays[name] for name in arrays.files}, document)

    def blend(self, x: np.ndarray, rows: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Every item's ranking score for a user vector `x`: the factorization scaled to its maximum, plus
        the user's own positive feedback (`rows`, signed `confidence`) scaled to its maximum."""
        scores = self.item_factors @ x.astype(np.float32)
        scores /= max(float(np.abs(scores).max()), 1e-9)
        history = np.where(confidence > 0, confidence, 0.0)
        if history.max(initial=0.0) > 0:
            scores[rows] += self.history_weight * history / history.max()
        return scores

    def fold_in(self, rows: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        c = self.alpha * confidence
        y = self.item_factors[rows].astype(np.float64)
        a = self.gram + y.T @ ((np.abs(c) - 1)[:, None] * y)
        return np.linalg.solve(a, y.T @ np.where(c > 0, c, 0.0))


def recommend(model: ServingModel, user_id: str, profile: UserProfile | None, now: float, k: int = 10,
              blocked: Collection[str] = (), exclude_consumed: bool = False, naive: bool = False,
              ordering: str = "personalized") -> Recommendations:
    """The top k for a user. `naive` ranks by a full sort of every score (the benchmark's baseline).
    `ordering` popularity (the UI config's, or the user's arm of the ranking experiment): the segment's
    or the global popularity, the control arm of an A/B test."""
    segment = model.user_segments.get(user_id)
    if profile is not None and not profile.personalization:
        return _popular(model, user_id, None, k, blocked, personalized=False)
    if ordering == "popularity":
        return _popular(model, user_id, segment, k, blocked, personalized=True)
    items, confidence, composite = profile.signals(now) if profile else ([], np.array([]), np.array([]))
    rows = np.array([model.item_index.get(i, -1) for i in items], dtype=np.int64)
    known = rows >= 0
    rows, confidence, composite = rows[known], confidence[known], composite[known]
    own = [i for i, ok in zip(items, known, strict=True) if ok]
    if len(rows) and (confidence > 0).any():
        x, strategy = model.fold_in(rows, confidence), "fold_in"
    elif user_id in model.user_index:
        x, strategy = model.user_factors[model.user_index[user_id]].astype(np.float64), "trained_vector"
    else:
        return _popular(model, user_id, segment, k, blocked, personalized=True)

    scores = model.blend(x, rows, confidence)
    excluded = rows[(composite <= 0) | exclude_consumed] if len(rows) else rows
    scores[excluded] = -np.inf
    for item in blocked:
        if item in model.item_index:
            scores[model.item_index[item]] = -np.inf
    top = _naive_top(scores, k) if naive else _top(scores, k)
    top = top[np.isfinite(scores[top])]
    liked = rows[confidence > 0]
    reasons = [_reason(model, i, rows, own, profile, liked) for i in top]
    return Recommendations(user_id, [Recommendation(str(model.item_ids[i]), float(scores[i]), r)
                                     for i, r in zip(top, reasons, strict=True)],
                           model.version, segment, True, strategy)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def _naive_top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def _reason(model: ServingModel, item: int, rows: np.ndarray, own: list[str], profile: UserProfile | None,
            liked: np.ndarray) -> str:
    if profile is not None and item in set(rows.tolist()):
        signal = profile.items[own[int(np.flatnonzero(rows == item)[0])]]
        return f"you {VERBS.get(signal.last_type, 'chose')} it before"
    if len(liked) == 0:
        return "recommended for you"
    y = model.item_factors
    similarity = (y[liked] @ y[item]) / (model.item_norms[liked] * model.item_norms[item])
    anchor = int(liked[int(np.argmax(similarity))])
    signal = profile.items[str(model.item_ids[anchor])] if profile is not None else None
    verb = VERBS.get(signal.last_type, "liked") if signal is not None else "liked"
    return f"because you {verb} {model.item_ids[anchor]}"


def _popular(model: ServingModel, user_id: str, segment: str | None, k: int, blocked: Collection[str],
             personalized: bool) -> Recommendations:
    ranking = model.segment_top.get(segment) if segment is not None else None
    reason = f"popular in your segment ({segment})" if ranking is not None else "popular overall"
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
