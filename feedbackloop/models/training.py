"""Train, evaluate on a temporal hold-out, and package the models of one version.

The hold-out: the last `holdout_days` days of the feedback layer are hidden; the models are fitted on
the composite feedback as of the day before and ranked for users seen on both sides; an item is
relevant when the user gave it a positive signal in the hidden days. A popularity ranking is scored
the same way in the same run. The published models are then refitted on everything.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedbackloop.models import ope
from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE, K
from feedbackloop.models.data import HALF_LIFE_DAYS, Interactions, feedback_as_of
from feedbackloop.models.evaluation import ranking_metrics, rmse
from feedbackloop.models.factorization import FeedbackMF, top_k
from feedbackloop.models.rating import BiasedRatingModel
from feedbackloop.models.segments import UserSegmentation
from feedbackloop.serving import ServingModel


@dataclass(frozen=True)
class TrainingParams:
    # defaults: the setting `feedbackloop bench model` picks on its validation split
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 10.0
    iterations: int = 15
    history_weight: float = 1.0
    holdout_days: int = 30
    half_life_days: float = HALF_LIFE_DAYS
    segments_min: int = 2
    segments_max: int = 8
    segment_method: str = "kmeans"
    random_state: int = 0

    def mf(self) -> FeedbackMF:
        return FeedbackMF(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                          iterations=self.iterations, history_weight=self.history_weight,
                          random_state=self.random_state)


@dataclass
class TrainedModel:
    version: str
    params: TrainingParams
    mf: FeedbackMF
    segmentation: UserSegmentation | None
    rating: BiasedRatingModel | None
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HoldOut:
    cutoff: str
    days: int
    train: pd.DataFrame  # feedback pairs as of the cutoff
    relevant: dict[str, set[str]]  # user -> items with a positive signal after it
    test_ratings: pd.DataFrame  # user_id, item_id, rating: explicit ratings after it


def hold_out(daily: pd.DataFrame, days: int, half_life_days: float = HALF_LIFE_DAYS,
             not_before: str | None = None) -> HoldOut:
    """The last `days` days hidden, or the last quarter of the data's span when that is shorter (a young
    system still gets a hold-out score). `not_before`: the cutoff is no earlier than this day (the last
    day a model to be compared on the hold-out has seen), so the hold-out is unseen by both."""
    first, last = (date.fromisoformat(d) for d in (daily["event_date"].min(), daily["event_date"].max()))
    days = min(days, max(1, (last - first).days // 4))
    cutoff = (last - timedelta(days=days)).isoformat()
    if not_before is not None and not_before > cutoff:
        cutoff = min(not_before, (last - timedelta(days=1)).isoformat())
        days = (last - date.fromisoformat(cutoff)).days
    train = feedback_as_of(daily[daily["event_date"] <= cutoff], cutoff, half_life_days)
    later = daily[daily["event_date"] > cutoff]
    positive = later[later["last_positive_at"].notna()]
    known = set(train["user_id"])
    relevant = {u: set(g) for u, g in positive.groupby("user_id")["item_id"] if u in known}
    rated = later[later["ratings"] > 0].groupby(["user_id", "item_id"])[["rating_sum", "ratings"]].sum()
    test_ratings = (rated["rating_sum"] / rated["ratings"]).rename("rating").reset_index()
    return HoldOut(cutoff, days, train, relevant, test_ratings)


def evaluate_ranking(model: FeedbackMF, interactions: Interactions, relevant: dict[str, set[str]]) -> dict:
    """The model and the popularity baseline on the same users and relevant items."""
    candidates = list(relevant)
    found = model.rows_of(candidates)
    users = [u for u, row in zip(candidates, found, strict=True) if row >= 0]
    rows = found[found >= 0]
    item_index = {item: i for i, item in enumerate(interactions.item_ids)}
    wanted = [{item_index[i] for i in relevant[u] if i in item_index} or {-1} for u in users]
    ranked = np.vstack([top_k(model.scores(rows[s:s + 1024]), K) for s in range(0, len(rows), 1024)])
    popular = np.tile(top_k(model.popularity_[None, :], K), (len(rows), 1))
    n_items = len(interactions.item_ids)
    return {"model": ranking_metrics(ranked, wanted, n_items), "popularity": ranking_metrics(popular, wanted, n_items)}


def evaluate_served(model: ServingModel, split: HoldOut) -> dict[str, Any]:
    """A model on the hold-out, ranking as serving ranks a user with feedback: fold-in of the user's
    feedback as of the cutoff against the model's item factors, blended with their own positive history
    (popularity for users with nothing positive). The gate compares the candidate and the published
    model this way, on the same users and the same hidden days."""
    pairs = split.train[split.train["user_id"].isin(split.relevant)]
    rows_of = pd.Index(model.item_ids)
    pairs = pairs.assign(row=rows_of.get_indexer(pairs["item_id"]))
    pairs = pairs[pairs["row"] >= 0]
    by_user = {u: g for u, g in pairs.groupby("user_id")}
    ranked, wanted = [], []
    for user, items in split.relevant.items():
        rows_of_user = by_user.get(user)
        scores = model.popularity.astype(np.float64).copy()
        if rows_of_user is not None:
            rows = rows_of_user["row"].to_numpy()
            mass = rows_of_user["confidence_mass"].to_numpy(dtype=np.float64)
            confidence = np.where(rows_of_user["composite_score"].to_numpy() > 0, mass, -mass)
            if (confidence > 0).any():
                scores = model.blend(model.fold_in(rows, confidence), rows, confidence)
        ranked.append(top_k(scores[None, :], K)[0])
        wanted.append({int(i) for i in rows_of.get_indexer(list(items)) if i >= 0} or {-1})
    return ranking_metrics(np.vstack(ranked), wanted, len(model.item_ids)) | {"version": model.version,
                                                                              "as_of": model.as_of}


def _as_served(mf: FeedbackMF, version: str, as_of: str) -> ServingModel:
    arrays = {"item_ids": mf.item_ids_.astype(str), "item_factors": mf.item_factors_,
              "popularity": mf.popularity_, "user_ids": np.array([], dtype=str),
              "user_factors": np.zeros((0, mf.item_factors_.shape[1]), dtype=np.float32)}
    document = {"version": version, "data": {"as_of": as_of},
                "params": {"alpha": mf.alpha, "regularization": mf.regularization,
                           "history_weight": mf.history_weight}}
    return ServingModel(arrays, document)


def _as_of(archive: bytes) -> str | None:
    return ServingModel.from_archive(archive).as_of


def _ratings(pairs: pd.DataFrame) -> pd.DataFrame:
    rated = pairs[pairs["ratings"] > 0]
    return pd.DataFrame({"user_id": rated["user_id"], "item_id": rated["item_id"], "rating": rated["rating_mean"]})


def served_ranking(model: ServingModel, pairs: pd.DataFrame, k: int = K) -> Callable[[str], list[str]]:
    """user id -> their top k as serving ranks them from their feedback `pairs` (fold-in and their own
    history; popularity without positive feedback)."""
    pairs = pairs.assign(row=pd.Index(model.item_ids).get_indexer(pairs["item_id"]))
    by_user = {u: g for u, g in pairs[pairs["row"] >= 0].groupby("user_id")}
    popular = [str(i) for i in model.item_ids[top_k(model.popularity[None, :].astype(np.float64), k)[0]]]

    def ranking(user: str) -> list[str]:
        own = by_user.get(user)
        if own is None:
            return popular
        rows = own["row"].to_numpy()
        mass = own["confidence_mass"].to_numpy(dtype=np.float64)
        confidence = np.where(own["composite_score"].to_numpy() > 0, mass, -mass)
        if not (confidence > 0).any():
            return popular
        scores = model.blend(model.fold_in(rows, confidence), rows, confidence)
        return [str(i) for i in model.item_ids[top_k(scores[None, :], k)[0]]]

    return ranking


def off_policy_estimates(exposures: pd.DataFrame, candidate: ServingModel, current: ServingModel,
                         pairs: pd.DataFrame) -> dict[str, Any]:
    """IPS, SNIPS and DR click rates of both models' rankings on the logged exposures (user_id, item_id,
    position, propensity, clicked; feedbackloop/models/ope.py), each ranking from the users' feedback
    `pairs`: what the gate compares beside NDCG."""
    return ope.compare(exposures, served_ranking(candidate, pairs), served_ranking(current, pairs))


def train(daily: pd.DataFrame, users: pd.DataFrame | None, params: TrainingParams, version: str,
          current: bytes | None = None, exposures: pd.DataFrame | None = None) -> TrainedModel:
    """`daily`: rows of feedback_daily; `users`: rows of one user_features snapshot (None: no segments);
    `current`: the published model's archive, scored on the same hold-out for the gate (None: none yet);
    `exposures`: logged exposures after the hold-out's cutoff, with propensities, on which both are
    estimated off-policy for the gate (None: none logged)."""
    metrics: dict[str, Any] = {"k": K}
    champion_as_of = _as_of(current) if current is not None else None
    if champion_as_of is not None:
        metrics["current_as_of"] = champion_as_of
    split = hold_out(daily, params.holdout_days, params.half_life_days, not_before=champion_as_of)
    if split.relevant:
        interactions = Interactions.from_pairs(split.train)
        started = time.perf_counter()
        candidate = params.mf().fit(interactions)
        metrics["fit_seconds_holdout"] = time.perf_counter() - started
        metrics["ranking"] = evaluate_ranking(candidate, interactions, split.relevant)
        if current is not None and (champion_as_of is None or champion_as_of <= split.cutoff):
            # the gate's comparison: both as serving ranks, on the same users and days
            served, published = _as_served(candidate, version, split.cutoff), ServingModel.from_archive(current)
            metrics["ranking"]["served"] = evaluate_served(served, split)
            metrics["ranking"]["current"] = evaluate_served(published, split)
            if exposures is not None:
                metrics["off_policy"] = off_policy_estimates(exposures, served, published, split.train)
        metrics["holdout"] = {"cutoff": split.cutoff, "days": split.days, "users": len(split.relevant)}
        if len(split.test_ratings) and (split.train["ratings"] > 0).any():
            rating = BiasedRatingModel().fit(_ratings(split.train))
            predicted = rating.predict(split.test_ratings["user_id"].to_numpy(),
                                       split.test_ratings["item_id"].to_numpy())
            actual = split.test_ratings["rating"].to_numpy()
            metrics["rating"] = {"rmse": rmse(predicted, actual),
                                 "rmse_global_mean": rmse(np.full(len(actual), rating.global_mean_), actual),
                                 "ratings": len(actual)}

    as_of = daily["event_date"].max()
    metrics["as_of"] = as_of  # the last day of data the model learned from (the gate prefers fresher)
    pairs = feedback_as_of(daily, as_of, params.half_life_days)
    started = time.perf_counter()
    mf = params.mf().fit(Interactions.from_pairs(pairs))
    metrics["fit_seconds"] = time.perf_counter() - started
    rating = BiasedRatingModel().fit(_ratings(pairs)) if (pairs["ratings"] > 0).any() else None
    segmentation = None
    if users is not None and len(users) > params.segments_min + 1:
        segmentation = UserSegmentation(params.segments_min, params.segments_max, params.segment_method,
                                        params.random_state).fit(users)
        metrics["segments"] = {"k": segmentation.k_, "silhouette": segmentation.silhouettes_[segmentation.k_],
                               "silhouettes": segmentation.silhouettes_}
    data = {"as_of": as_of, "pairs": len(pairs), "users": len(mf.user_ids_), "items": len(mf.item_ids_),
            "daily_rows": len(daily)}
    return TrainedModel(version, params, mf, segmentation, rating, metrics, data)


def save(model: TrainedModel, folder: Path) -> None:
    """model.npz (arrays serving loads) and metrics.json (params, metrics, segment profiles)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "user_ids": model.mf.user_ids_.astype(str), "item_ids": model.mf.item_ids_.astype(str),
        "user_factors": model.mf.user_factors_, "item_factors": model.mf.item_factors_,
        "popularity": model.mf.popularity_,
    }
    if model.segmentation is not None:
        names, top = segment_popularity(model.mf, model.segmentation)
        arrays |= {"segment_names": names, "segment_top_items": top,
                   "segment_user_ids": model.segmentation.user_ids_.astype(str),
                   "segment_labels": model.segmentation.segments_.astype(str),
                   "segment_centers": model.segmentation.centers_,
                   "segment_scaler_mean": model.segmentation.scaler_.mean_,
                   "segment_scaler_scale": model.segmentation.scaler_.scale_}
    if model.rating is not None:
        arrays |= {"rating_user_ids": model.rating.user_ids_.astype(str),
                   "rating_item_ids": model.rating.item_ids_.astype(str),
                   "rating_user_bias": model.rating.user_bias_, "rating_item_bias": model.rating.item_bias_,
                   "rating_global_mean": np.array([model.rating.global_mean_])}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    (folder / MODEL_FILE).write_bytes(buffer.getvalue())
    document = {"version": model.version, "params": asdict(model.params), "metrics": model.metrics,
                "data": model.data,
                "segments": model.segmentation.profiles_ if model.segmentation is not None else []}
    (folder / METRICS_FILE).write_text(json.dumps(document, indent=2, default=float))


SEGMENT_TOP_ITEMS = 100


def segment_popularity(mf: FeedbackMF, segmentation: UserSegmentation) -> tuple[np.ndarray, np.ndarray]:
    """Per segment, its most liked items (indices into the model's items, most users first): the
    cold-start ranking of a user whose segment is known but whose feedback is not."""
    names = np.unique(segmentation.segments_)
    top = np.full((len(names), SEGMENT_TOP_ITEMS), -1, dtype=np.int64)
    liked = (mf.history_ > 0).astype(np.float64)
    for s, name in enumerate(names):
        rows = mf.rows_of(segmentation.user_ids_[segmentation.segments_ == name])
        counts = np.asarray(liked[rows[rows >= 0]].sum(axis=0)).ravel()
        order = top_k(counts[None, :], SEGMENT_TOP_ITEMS)[0]
        top[s, :len(order)] = order
    return names.astype(str), top


def load_metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / METRICS_FILE).read_text())
