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
from feedbackloop.models.data import HALF_LIFE_DAYS, feedback_as_of
from feedbackloop.models.evaluation import rmse
from feedbackloop.models.pipeline import (
    FittedRanking,
    RankingParams,
    State,
    evaluate_ranker,
    fit_ranking,
    refit_ranking,
    temporal_splitter,
)
from feedbackloop.models.rating import BiasedRatingModel
from feedbackloop.models.segments import UserSegmentation
from feedbackloop.ranking import ARRAY_PREFIX, Ranker, UserSignals
from feedbackloop.serving import ServingModel

_RANKING = RankingParams()


@dataclass(frozen=True)
class TrainingParams:
    """The training job's hyperparameters (SageMaker passes each as `--name value`). The ranking core's
    defaults and search ranges are `RankingParams` and `pipeline.SEARCH`: tuned inside the job."""

    tuning_minutes: float = _RANKING.tuning_minutes
    candidates: int = _RANKING.candidates
    max_trees: int = _RANKING.max_trees
    label_windows: int = _RANKING.label_windows
    holdout_days: int = 30
    half_life_days: float = HALF_LIFE_DAYS  # the online profile's: serving ranks from it
    segments_min: int = 2
    segments_max: int = 8
    segment_method: str = "kmeans"
    random_state: int = 0

    def ranking(self) -> RankingParams:
        return RankingParams(max_trees=self.max_trees, candidates=self.candidates, label_windows=self.label_windows,
                             feature_half_life_days=self.half_life_days, tuning_minutes=self.tuning_minutes,
                             random_state=self.random_state)


@dataclass
class TrainedModel:
    version: str
    params: TrainingParams
    ranking: FittedRanking
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


def _as_of(archive: bytes) -> str | None:
    return ServingModel.from_archive(archive).as_of


def _ratings(pairs: pd.DataFrame) -> pd.DataFrame:
    rated = pairs[pairs["ratings"] > 0]
    return pd.DataFrame({"user_id": rated["user_id"], "item_id": rated["item_id"], "rating": rated["rating_mean"]})


def served_ranking(ranker: Ranker, item_ids: np.ndarray, signals: dict[str, UserSignals], k: int = K
                   ) -> Callable[[str], list[str]]:
    """user id -> their top k as serving ranks them (the same `Ranker`) from their `signals` over the
    ranker's items (popularity for a user without any)."""

    def ranking(user: str) -> list[str]:
        top, _ = ranker.rank(signals.get(user, UserSignals.empty()), k)
        return [str(item_ids[i]) for i in top]

    return ranking


def off_policy_estimates(exposures: pd.DataFrame, candidate: Callable[[str], list[str]],
                         current: Callable[[str], list[str]]) -> dict[str, Any]:
    """IPS, SNIPS and DR click rates of both models' rankings (`served_ranking`) on the logged exposures
    (user_id, item_id, position, propensity, clicked; feedbackloop/models/ope.py): what the gate
    compares beside NDCG."""
    return ope.compare(exposures, candidate, current)


def train(daily: pd.DataFrame, users: pd.DataFrame | None, params: TrainingParams, version: str,
          current: bytes | None = None, exposures: pd.DataFrame | None = None) -> TrainedModel:
    """`daily`: rows of feedback_daily; `users`: rows of one user_features snapshot (None: no segments);
    `current`: the published model's archive, scored on the same hold-out for the gate (None: none yet);
    `exposures`: logged exposures after the hold-out's cutoff, with propensities, on which both are
    estimated off-policy for the gate (None: none logged).

    The ranking core is tuned and chosen on the days before the hold-out (`fit_ranking`), scored on the
    hold-out ranking as serving ranks, and then refitted on everything with what was chosen."""
    metrics: dict[str, Any] = {"k": K}
    segmentation = None
    if users is not None and len(users) > params.segments_min + 1:
        segmentation = UserSegmentation(params.segments_min, params.segments_max, params.segment_method,
                                        params.random_state).fit(users)
        metrics["segments"] = {"k": segmentation.k_, "silhouette": segmentation.silhouettes_[segmentation.k_],
                               "silhouettes": segmentation.silhouettes_}
    segments = (dict(zip(segmentation.user_ids_.astype(str), segmentation.segments_.astype(str), strict=True))
                if segmentation is not None else None)
    ranking = params.ranking()
    splitter = temporal_splitter(params.holdout_days)
    champion_as_of = _as_of(current) if current is not None else None
    if champion_as_of is not None:
        metrics["current_as_of"] = champion_as_of
    split = hold_out(daily, params.holdout_days, params.half_life_days, not_before=champion_as_of)
    fitted = None
    if split.relevant:
        before = daily[daily["event_date"] <= split.cutoff]
        started = time.perf_counter()
        fitted = fit_ranking(before, splitter, ranking, segments)
        metrics["fit_seconds_holdout"] = time.perf_counter() - started
        candidate = Ranker(fitted.arrays)
        item_ids = fitted.arrays[f"{ARRAY_PREFIX}item_ids"]

        def score(ranker: Ranker, items: np.ndarray) -> dict[str, Any]:
            return evaluate_ranker(ranker, items, before, split.cutoff, split.relevant, params.half_life_days,
                                   segments)

        served = score(candidate, item_ids)
        candidate.strategy = "popularity"
        metrics["ranking"] = {"model": served, "popularity": score(candidate, item_ids)}
        candidate.strategy = fitted.report["strategy"]
        if current is not None and (champion_as_of is None or champion_as_of <= split.cutoff):
            # the gate's comparison: both ranking as serving does, on the same users and days
            published = ServingModel.from_archive(current)
            metrics["ranking"]["served"] = served | {"version": version, "as_of": split.cutoff}
            metrics["ranking"]["current"] = score(published.ranker, published.item_ids) | {
                "version": published.version, "as_of": published.as_of}
            if exposures is not None:
                state = State.build(before, split.cutoff, params.half_life_days)

                def ranking(ranker: Ranker, items: np.ndarray) -> Callable[[str], list[str]]:
                    return served_ranking(ranker, items, state.signals_for(items, segments,
                                                                           ranker.arrays.get("segment_names")))

                metrics["off_policy"] = off_policy_estimates(exposures, ranking(candidate, item_ids),
                                                             ranking(published.ranker, published.item_ids))
        metrics["holdout"] = {"cutoff": split.cutoff, "days": split.days, "users": len(split.relevant)}
        metrics["ranker"] = {k: v for k, v in fitted.report.items()}
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
    started = time.perf_counter()
    final = (refit_ranking(daily, splitter, fitted, ranking, segments) if fitted is not None
             else fit_ranking(daily, splitter, ranking, segments))
    metrics["fit_seconds"] = time.perf_counter() - started
    metrics["strategy"] = final.report["strategy"]
    pairs = feedback_as_of(daily, as_of, params.half_life_days)
    rating = BiasedRatingModel().fit(_ratings(pairs)) if (pairs["ratings"] > 0).any() else None
    items = final.arrays[f"{ARRAY_PREFIX}item_ids"]
    data = {"as_of": as_of, "pairs": len(pairs), "users": int(pairs["user_id"].nunique()), "items": len(items),
            "daily_rows": len(daily)}
    return TrainedModel(version, params, final, segmentation, rating, metrics, data)


def save(model: TrainedModel, folder: Path) -> None:
    """model.npz (arrays serving loads) and metrics.json (params, metrics, what the tuning chose,
    segment profiles)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = dict(model.ranking.arrays)
    if model.segmentation is not None:
        arrays |= {"segment_user_ids": model.segmentation.user_ids_.astype(str),
                   "segment_labels": model.segmentation.segments_.astype(str),
                   "segment_centers": model.segmentation.centers_,
                   "segment_scaler_mean": model.segmentation.scaler_.mean_,
                   "segment_scaler_scale": model.segmentation.scaler_.scale_}
    if model.rating is not None:
        arrays |= {"rating_user_ids": model.rating.user_ids_.astype(str),
                   "rating_item_ids": model.rating.item_ids_.astype(str),
                   "rating_user_bias": model.rating.user_bias_, "rating_item_bias": model.rating.item_bias_,
                   "rating_global_mean": np.array([model.rating.global_mean_])}
    # stored, not compressed: SageMaker gzips the output folder into model.tar.gz, and a second compression
    # inside it made a cold start decompress every array twice for no smaller archive (serving reads the
    # stored members as the archive is decompressed, `serving.stream_npz`; older compressed ones still load)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / MODEL_FILE).write_bytes(buffer.getvalue())
    document = {"version": model.version, "params": asdict(model.params), "metrics": model.metrics,
                "data": model.data, "ranker": {k: v for k, v in model.ranking.report.items() if k != "trials"},
                "segments": model.segmentation.profiles_ if model.segmentation is not None else []}
    (folder / METRICS_FILE).write_text(json.dumps(document, indent=2, default=float))


def load_metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / METRICS_FILE).read_text())
