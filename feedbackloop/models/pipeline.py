"""The ranking core's training: candidate sources tuned on a validation split, a LambdaRank re-ranker
over their candidates, and the choice of what serves, all inside the training job's budget.

Input: rows shaped like the feedback layer's `feedback_daily` (user, item, event day, counts, decayed
score and confidence sums, last signals), from the table jobs, or from any table of user, item,
timestamp and an optional rating through `daily_from_log`. A `Splitter` cuts such rows into a part to
learn from and the pairs to predict; the training job cuts by time (the last days), a benchmark may cut
at random per item. With V1 = split(train) and V2 = split(V1's part to learn from):
1. each source's hyperparameters (and the half-life of the evidence it is fitted on) by NDCG@10 on V1,
   random search from the defaults, seeded, within its share of `tuning_minutes`;
2. the re-ranker learns from V2: candidates and features as of V2's cut, labels the pairs after it;
3. on V1, the re-ranker against every single source, each ranking as serving ranks (the same
   `Ranker`): the best one serves, and the choice and the reasons go into the metrics;
4. the re-ranker is refitted on V1's labels (its number of trees found in step 2), the sources on
   everything, and the whole is published as arrays (`Ranker` reads them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feedbackloop.models.contract import HALF_LIFE_DAYS, TUNING_MINUTES, K
from feedbackloop.models.data import feedback_as_of, unwanted
from feedbackloop.models.evaluation import ndcg_by_user, ranking_metrics
from feedbackloop.models.sources import EASE, EASE_MAX_ITEMS, ConfidenceMF, ItemKNN
from feedbackloop.ranking import (
    ARRAY_PREFIX,
    FEATURES,
    ITEM_FEATURES,
    PRICE_BANDS,
    SOURCES,
    Ranker,
    UserSignals,
    neighbor_indices,
)

NDCG = f"ndcg_at_{K}"
TRENDING_DAYS = 30  # the trending source's recent window
NEIGHBORS_KEPT = 200  # per item, at least, of the item-item weights published for serving
NEIGHBORS_BUDGET = 2_000_000  # item-item weights published in all: a small catalog keeps (nearly) all of EASE's
CANDIDATES = 40  # per source, the re-ranker's candidates (serving scores their union: p99 <= 10 ms)
HALF_LIVES = (7.0, 30.0, 90.0, 365.0, math.inf)  # the evidence's half-life a source is fitted on (inf: none)


# --- one place for the defaults and the search ranges ----------------------------------------------

@dataclass(frozen=True)
class RankingParams:
    """Defaults (each search starts from them) and the budget. Ranges: `SEARCH`."""

    mf: dict[str, Any] = field(default_factory=lambda: {"factors": 64, "regularization": 0.05, "alpha": 10.0,
                                                        "iterations": 15, "half_life_days": 90.0})
    item_item: dict[str, Any] = field(default_factory=lambda: {"model": "ease", "lam": 500.0})
    history_weight: float = 1.0
    reranker: dict[str, Any] = field(default_factory=lambda: {"num_leaves": 31, "learning_rate": 0.05,
                                                              "min_data_in_leaf": 50, "feature_fraction": 0.8,
                                                              "lambda_l2": 1.0})
    max_trees: int = 100  # serving evaluates them for every candidate: p99 <= 10 ms at 100k items
    max_groups: int = 3000  # users the re-ranker learns from per window (a seeded sample beyond)
    label_windows: int = 3  # windows the re-ranker learns from, each cut before the last (stacked)
    candidates: int = CANDIDATES
    feature_half_life_days: float = HALF_LIFE_DAYS  # the online profile's, which serving ranks from
    tuning_minutes: float = TUNING_MINUTES
    random_state: int = 0


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


SEARCH: dict[str, Callable[[np.random.Generator], dict[str, Any]]] = {
    "mf": lambda r: {"factors": int(round(_log_uniform(r, 16, 256))), "regularization": _log_uniform(r, 1e-3, 10),
                     "alpha": _log_uniform(r, 1, 100), "iterations": int(r.choice([10, 15, 25])),
                     "half_life_days": float(r.choice(HALF_LIVES)), "engagement": bool(r.random() < 0.5)},
    "ease": lambda r: {"model": "ease", "lam": _log_uniform(r, 10, 10_000), "engagement": bool(r.random() < 0.5)},
    "knn": lambda r: {"model": "knn", "neighbors": int(round(_log_uniform(r, 10, NEIGHBORS_KEPT))),
                      "shrink": _log_uniform(r, 0.1, 100), "engagement": bool(r.random() < 0.5)},
    "reranker": lambda r: {"num_leaves": int(r.choice([7, 15, 31, 63])),
                           "learning_rate": _log_uniform(r, 0.02, 0.2),
                           "min_data_in_leaf": int(round(_log_uniform(r, 10, 300))),
                           "feature_fraction": float(r.choice([0.5, 0.8, 1.0])),
                           "lambda_l2": _log_uniform(r, 0.1, 100)},
}


# --- data ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Rows to learn from, the day they end, and each user's wanted items after."""

    train: pd.DataFrame
    as_of: str
    relevant: dict[str, set[str]]


Splitter = Callable[[pd.DataFrame], Split]


def relevant_after(later: pd.DataFrame, known_users: set[str], train: pd.DataFrame | None = None,
                   consumed: bool = False) -> dict[str, set[str]]:
    """Each known user's items with a positive signal in `later` (with `consumed`, with any signal, a
    low rating or one at the scale's neutral point too, which the feedback layer records as an explicit
    event with neither a positive nor a negative time: the item was chosen and consumed, which is what a
    protocol that counts every later interaction asks to predict; exposures alone never count); with
    `train`, the items they had already are left out (a discovery protocol) and users left with none
    dropped."""
    signal = later["last_positive_at"].notna()
    if consumed:
        signal = signal | later["last_negative_at"].notna()
        if "explicit_events" in later:
            signal = signal | (later["explicit_events"].fillna(0) > 0)
    positive = later[signal]
    relevant = {u: set(g) for u, g in positive.groupby("user_id")["item_id"] if u in known_users}
    if train is not None:
        seen = train.groupby("user_id")["item_id"].agg(set)
        relevant = {u: items - seen.get(u, set()) for u, items in relevant.items()}
        relevant = {u: items for u, items in relevant.items() if items}
    return relevant


def temporal_splitter(days: int, discovery: bool = False, consumed: bool = False) -> Splitter:
    """The last `days` days (a quarter of the span when that is shorter) are predicted (`discovery`,
    `consumed`: `relevant_after`'s)."""

    def split(daily: pd.DataFrame) -> Split:
        first, last = (pd.Timestamp(d) for d in (daily["event_date"].min(), daily["event_date"].max()))
        span = max(1, min(days, (last - first).days // 4))
        cut = (last - pd.Timedelta(days=span)).strftime("%Y-%m-%d")
        train, later = daily[daily["event_date"] <= cut], daily[daily["event_date"] > cut]
        return Split(train, cut, relevant_after(later, set(train["user_id"]), train if discovery else None, consumed))

    return split


def temporal_share_splitter(share: float = 0.25, discovery: bool = False, consumed: bool = False) -> Splitter:
    """The last `share` of the rows in time are predicted (a global cut at a day)."""

    def split(daily: pd.DataFrame) -> Split:
        dates = np.sort(daily["event_date"].to_numpy())
        cut = dates[min(len(dates) - 1, int(len(dates) * (1 - share)))]
        train, later = daily[daily["event_date"] < cut], daily[daily["event_date"] >= cut]
        if not len(train):
            train, later = daily[daily["event_date"] <= cut], daily[daily["event_date"] > cut]
        return Split(train, train["event_date"].max(), relevant_after(later, set(train["user_id"]),
                                                                      train if discovery else None, consumed))

    return split


def temporal_user_splitter(share: float = 0.25, discovery: bool = False, consumed: bool = False) -> Splitter:
    """Each user's last `share` of rows in time are predicted."""

    def split(daily: pd.DataFrame) -> Split:
        ordered = daily.sort_values(["user_id", "last_seen_at"], kind="stable")
        position = ordered.groupby("user_id").cumcount().to_numpy()
        size = ordered.groupby("user_id")["user_id"].transform("size").to_numpy()
        test = position >= np.ceil(size * (1 - share))
        train, later = ordered[~test], ordered[test]
        return Split(train, daily["event_date"].max(), relevant_after(later, set(train["user_id"]),
                                                                      train if discovery else None, consumed))

    return split


def random_item_splitter(test_share: float = 0.25, seed: int = 0, discovery: bool = True,
                         consumed: bool = False) -> Splitter:
    """Each item's rows shuffled (seeded), `test_share` of them predicted."""

    def split(daily: pd.DataFrame) -> Split:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(daily))
        shuffled = daily.iloc[order]
        position = shuffled.groupby("item_id").cumcount().to_numpy()
        size = shuffled.groupby("item_id")["item_id"].transform("size").to_numpy()
        test = position < np.floor(size * test_share)
        train, later = shuffled[~test], shuffled[test]
        as_of = daily["event_date"].max()
        return Split(train, as_of, relevant_after(later, set(train["user_id"]), train if discovery else None,
                                                  consumed))

    return split


@dataclass
class State:
    """The users' feedback as of a day over fixed users and items: what the sources are fitted on
    (`evidence`, at a source's half-life) and what they rank from (`signals`, at the online
    profile's half-life), with the item features."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    as_of: str
    pairs: pd.DataFrame  # feedback_as_of at the profile's half-life, with user and item rows
    daily: pd.DataFrame
    _evidence: dict[float, sp.csr_matrix] = field(default_factory=dict)
    fitted: dict[str, tuple[dict[str, Any], Any]] = field(default_factory=dict)  # source -> (params, model)

    @classmethod
    def build(cls, daily: pd.DataFrame, as_of: str, feature_half_life: float) -> State:
        pairs = feedback_as_of(daily, as_of, feature_half_life)
        users = np.unique(pairs["user_id"].to_numpy())
        items = np.unique(pairs["item_id"].to_numpy())
        pairs = pairs.assign(user_row=pd.Index(users).get_indexer(pairs["user_id"]),
                             item_row=pd.Index(items).get_indexer(pairs["item_id"]))
        end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
        last = pd.to_datetime(pairs["last_seen_at"], utc=True)
        pairs["days_since"] = ((end - last).dt.total_seconds() / 86400).to_numpy()
        return cls(users, items, as_of, pairs, daily)

    def matrix(self, values: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((values, (self.pairs["user_row"].to_numpy(), self.pairs["item_row"].to_numpy())),
                          shape=(len(self.user_ids), len(self.item_ids)))
        m.sum_duplicates()
        return m

    @staticmethod
    def signed(pairs: pd.DataFrame) -> np.ndarray:
        """Confidence mass, negative for unwanted pairs (`feedbackloop.models.data.unwanted`)."""
        mass = pairs["confidence_mass"].to_numpy(dtype=np.float64)
        return np.where(unwanted(pairs), -mass, mass)

    def evidence(self, half_life: float, engagement: bool = False) -> sp.csr_matrix:
        """X for fitting a source: signed confidence mass decayed at `half_life` (inf: none); with
        `engagement`, every observed pair as positive evidence (a low rating still says the user chose
        the item: on some catalogs that predicts what they choose next better than the dislike does)."""
        if engagement:
            return abs(self.evidence(half_life))
        if half_life not in self._evidence:
            pairs = feedback_as_of(self.daily, self.as_of, half_life)
            pairs = pairs.assign(user_row=pd.Index(self.user_ids).get_indexer(pairs["user_id"]),
                                 item_row=pd.Index(self.item_ids).get_indexer(pairs["item_id"]))
            m = sp.csr_matrix((self.signed(pairs), (pairs["user_row"].to_numpy(), pairs["item_row"].to_numpy())),
                              shape=(len(self.user_ids), len(self.item_ids)))
            m.sum_duplicates()
            self._evidence[half_life] = m
        return self._evidence[half_life]

    def signals(self) -> list[UserSignals]:
        """Each user's signals (row order), as serving reads them from the online profile."""
        p = self.pairs.sort_values(["user_row", "item_row"])
        confidence = self.signed(p)
        bounds = np.searchsorted(p["user_row"].to_numpy(), np.arange(len(self.user_ids) + 1))
        rows = p["item_row"].to_numpy()
        composite = p["composite_score"].to_numpy(dtype=np.float64)
        days = p["days_since"].to_numpy(dtype=np.float64)
        conflicting = (p["last_positive_at"].notna() & p["last_negative_at"].notna()).to_numpy()
        return [UserSignals(rows[a:b], confidence[a:b], composite[a:b], days[a:b], conflicting[a:b])
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def signals_for(self, item_ids: np.ndarray, segments: dict[str, str] | None = None,
                    segment_names: np.ndarray | None = None) -> dict[str, UserSignals]:
        """Each user's signals over another model's items (unknown items dropped), by user id."""
        rows = pd.Index(item_ids).get_indexer(self.item_ids)
        index = {name: i for i, name in enumerate(segment_names if segment_names is not None else [])}
        out = {}
        for user, s in zip(self.user_ids, self.signals(), strict=True):
            mapped = rows[s.rows]
            keep = mapped >= 0
            out[user] = UserSignals(mapped[keep], s.confidence[keep], s.composite[keep], s.days_since[keep],
                                    s.conflicting[keep], index.get((segments or {}).get(user, ""), -1))
        return out

    def item_attributes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per item row, its category code and price band as `Ranker` reads them (0: none known, else
        1 + the index into the returned category names / 1 + the quartile of the items' prices), from the
        attributes the events carried (an item's latest category, its median daily highest price)."""
        n = len(self.item_ids)
        category, price = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        names = np.array([], dtype=str)
        if "category" in self.daily and self.daily["category"].notna().any():
            last = (self.daily.dropna(subset=["category"]).sort_values("event_date", kind="stable")
                    .groupby("item_id")["category"].last().reindex(self.item_ids))
            names = np.array(sorted(last.dropna().unique()), dtype=str)
            codes = pd.Index(names).get_indexer(last.fillna("").to_numpy())
            category = np.where(codes >= 0, codes + 1, 0)
        if "price" in self.daily and self.daily["price"].notna().any():
            median = self.daily.groupby("item_id")["price"].median().reindex(self.item_ids).to_numpy(dtype=np.float64)
            known = np.isfinite(median)
            edges = np.quantile(median[known], np.arange(1, PRICE_BANDS) / PRICE_BANDS)
            price = np.where(known, np.searchsorted(edges, np.where(known, median, 0.0), side="right") + 1, 0)
        return category, price, names

    def item_features(self) -> np.ndarray:
        """ITEM_FEATURES per item row, as of the day."""
        p = self.pairs
        wanted = p[self.signed(p) > 0]
        n = len(self.item_ids)

        def per_item(frame: pd.DataFrame, column: str) -> np.ndarray:
            return np.bincount(frame["item_row"].to_numpy(), weights=frame[column].to_numpy(dtype=np.float64),
                               minlength=n)

        users = np.bincount(wanted["item_row"].to_numpy(), minlength=n).astype(np.float64)
        recent = wanted[wanted["days_since"] <= TRENDING_DAYS]
        trending = np.bincount(recent["item_row"].to_numpy(), minlength=n).astype(np.float64)
        first = self.daily.groupby("item_id")["event_date"].min()
        age = (pd.Timestamp(self.as_of) - pd.to_datetime(first.reindex(self.item_ids).to_numpy())).days
        events, purchases, cancels = (per_item(p, c) for c in ("events", "purchases", "cancels"))
        clicks, views = per_item(p, "clicks"), per_item(p, "views")
        ratings, rating_sum = per_item(p, "ratings"), per_item(p, "rating_sum")
        with np.errstate(divide="ignore", invalid="ignore"):
            columns = {
                "item_users": users, "item_trending": trending, "item_age_days": np.asarray(age, dtype=np.float64),
                "item_purchase_rate": np.where(events > 0, purchases / events, np.nan),
                "item_cancel_rate": np.where(purchases > 0, cancels / purchases, np.nan),
                "item_ctr": np.where(views > 0, clicks / views, np.nan),
                "item_rating": np.where(ratings > 0, rating_sum / ratings, np.nan),
                "item_mean_score": per_item(p, "composite_score") / np.maximum(
                    np.bincount(p["item_row"].to_numpy(), minlength=n), 1),
            }
        return np.column_stack([columns[name] for name in ITEM_FEATURES])


# --- fitting the sources ----------------------------------------------------------------------------

def fit_mf(state: State, params: dict[str, Any], seed: int) -> ConfidenceMF:
    kwargs = {k: v for k, v in params.items() if k not in ("half_life_days", "engagement")}
    return ConfidenceMF(**kwargs, random_state=seed).fit(
        state.evidence(params["half_life_days"], params.get("engagement", False)))


def fit_item_item(state: State, params: dict[str, Any]) -> EASE | ItemKNN:
    x = state.evidence(math.inf, params.get("engagement", False))
    if params["model"] == "ease":
        return EASE(lam=params["lam"]).fit(x)
    return ItemKNN(neighbors=params["neighbors"], shrink=params["shrink"]).fit(x)


def neighbors_kept(items: int) -> int:
    """How many item-item weights serving keeps per candidate item: EASE's ranking is the sum over all
    of a user's items, and cutting it to the 200 strongest costs (on MovieLens-100k, 1,682 items, NDCG@10
    0.481 -> 0.473); within `NEIGHBORS_BUDGET` weights in all a small catalog keeps more."""
    return max(NEIGHBORS_KEPT, min(items, NEIGHBORS_BUDGET // max(items, 1)))


def neighbors_of(model: EASE | ItemKNN, kept: int) -> sp.csr_matrix:
    """Rows: an item the user wants; columns: the items it speaks for, with weights; each candidate
    item keeping its `kept` strongest (EASE's negative weights too: they push items down)."""
    if isinstance(model, EASE):
        weights = model.b_.T.copy()  # row j: the weights of every item towards candidate j
        part = np.argpartition(-np.abs(weights), min(kept, weights.shape[1] - 1), axis=1)[:, :kept]
        rows = np.repeat(np.arange(weights.shape[0]), part.shape[1])
        values = weights[rows, part.ravel()]
        keep = values != 0
        by_candidate = sp.csr_matrix((values[keep], (rows[keep], part.ravel()[keep])), shape=weights.shape)
        return by_candidate.T.tocsr()
    return model.similarity_.tocsr()


def evaluate_source(score: Callable[[np.ndarray], np.ndarray], state: State, relevant: dict[str, set[str]],
                    exclude_seen: bool) -> float:
    users, wanted = _targets(state, relevant)
    if not len(users):
        return 0.0
    x = state.evidence(math.inf)
    ranked = []
    for start in range(0, len(users), 1024):
        rows = users[start:start + 1024]
        scores = score(rows).astype(np.float64)
        if exclude_seen:
            seen = x[rows]
            scores[np.repeat(np.arange(len(rows)), np.diff(seen.indptr)), seen.indices] = -np.inf
        ranked.append(_top_k(scores, K))
    return ranking_metrics(np.vstack(ranked), wanted, len(state.item_ids))[NDCG]


def _targets(state: State, relevant: dict[str, set[str]]) -> tuple[np.ndarray, list[set[int]]]:
    """Rows of the evaluated users (known to the state) and their wanted items as columns
    (-1: an item the state does not know, which no model can recommend)."""
    index = pd.Index(state.user_ids)
    items = pd.Index(state.item_ids)
    users = sorted(u for u in relevant if u in index)
    rows = index.get_indexer(users)
    wanted = [{int(c) if c >= 0 else -1 - j for j, c in enumerate(items.get_indexer(sorted(relevant[u])))}
              for u in users]
    return rows, wanted


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


@dataclass
class Trial:
    source: str
    params: dict[str, Any]
    ndcg: float
    seconds: float


def tune_sources(state: State, relevant: dict[str, set[str]], params: RankingParams, exclude_seen: bool,
                 deadline: float) -> tuple[dict[str, dict[str, Any]], list[Trial]]:
    """Random search per source from its defaults until its share of the time is spent (at least the
    defaults and one random draw each)."""
    rng = np.random.default_rng(params.random_state)
    item_spaces = ["ease", "knn"] if len(state.item_ids) <= EASE_MAX_ITEMS else ["knn"]
    spaces = {"mf": ["mf"], "item_item": item_spaces}
    defaults = {"mf": params.mf, "item_item": params.item_item if len(state.item_ids) <= EASE_MAX_ITEMS
                else SEARCH["knn"](np.random.default_rng(0))}
    trials: list[Trial] = []
    best: dict[str, dict[str, Any]] = {}
    names = list(spaces)
    for position, name in enumerate(names):
        share_end = time.monotonic() + (deadline - time.monotonic()) / (len(names) - position)
        # the defaults, and the defaults reading every observed pair as engagement
        candidates = [defaults[name], {**defaults[name], "engagement": True}]
        draws = 0
        while True:
            if not candidates:
                if draws >= 2 and time.monotonic() >= share_end:
                    break
                space = spaces[name][draws % len(spaces[name])]
                candidates.append(SEARCH[space](rng))
            trial_params = candidates.pop(0)
            draws += 1
            started = time.monotonic()
            if name == "mf":
                model = fit_mf(state, trial_params, params.random_state)
            else:
                model = fit_item_item(state, trial_params)
            ndcg = evaluate_source(model.score, state, relevant, exclude_seen)
            trials.append(Trial(name, trial_params, ndcg, time.monotonic() - started))
            if ndcg >= max((t.ndcg for t in trials if t.source == name), default=-1.0):
                state.fitted[name] = (trial_params, model)  # the best so far: ranker_arrays reuses it
            del model
        mine = [t for t in trials if t.source == name]
        best[name] = max(mine, key=lambda t: t.ndcg).params
    return best, trials


# --- the ranker's arrays -----------------------------------------------------------------------------

def ranker_arrays(state: State, chosen: dict[str, dict[str, Any]], params: RankingParams, strategy: str,
                  exclude_seen: bool, segments: dict[str, str] | None = None,
                  trees: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Fit the chosen sources on the state and lay them out as `Ranker` reads them."""
    def fitted(name: str, fit: Callable[[], Any]) -> Any:
        cached = state.fitted.get(name)
        return cached[1] if cached is not None and cached[0] == chosen[name] else fit()

    mf = fitted("mf", lambda: fit_mf(state, chosen["mf"], params.random_state))
    item_item = fitted("item_item", lambda: fit_item_item(state, chosen["item_item"]))
    neighbors = neighbors_of(item_item, neighbors_kept(len(state.item_ids)))
    x = state.evidence(math.inf)
    wanted = (x > 0).astype(np.float64).tocsr()
    popularity = np.asarray(wanted.sum(axis=0)).ravel()
    features = state.item_features()
    category, price_band, category_names = state.item_attributes()
    trending = features[:, ITEM_FEATURES.index("item_trending")]
    labels = np.array([segments.get(u, "") for u in state.user_ids]) if segments else np.array([""] * len(
        state.user_ids))
    names = np.array(sorted(set(labels) - {""}), dtype=str)
    segment_popularity = np.zeros((len(names), len(state.item_ids)))
    for s, name in enumerate(names):
        segment_popularity[s] = np.asarray(wanted[labels == name].sum(axis=0)).ravel()
    arrays = {
        "item_ids": state.item_ids.astype(str), "item_factors": mf.item_factors_,
        "regularization": np.array(mf.regularization), "alpha": np.array(mf.alpha),
        "neighbors_indptr": neighbors.indptr.astype(np.int64),
        "neighbors_indices": neighbor_indices(neighbors.indices, len(state.item_ids)),
        "neighbors_data": neighbors.data.astype(np.float64),
        "item_item_binary": np.array(isinstance(item_item, EASE)),
        "mf_engagement": np.array(bool(chosen["mf"].get("engagement", False))),
        "item_item_engagement": np.array(bool(chosen["item_item"].get("engagement", False))),
        "item_category": category, "item_price_band": price_band, "category_names": category_names,
        "popularity": popularity, "trending": trending, "segment_names": names,
        "segment_popularity": segment_popularity, "item_features": features,
        "candidates": np.array(params.candidates), "exclude_seen": np.array(exclude_seen),
        "strategy": np.array(strategy), "history_weight": np.array(params.history_weight),
    }
    if trees is not None:
        arrays |= {f"trees_{k}": v for k, v in trees.items()} | {"feature_names": np.array(FEATURES, dtype=str)}
    return {ARRAY_PREFIX + k: v for k, v in arrays.items()}


def segment_rows(state: State, segments: dict[str, str] | None, names: np.ndarray) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get((segments or {}).get(u, ""), -1) for u in state.user_ids])


def with_segments(signals: list[UserSignals], rows: np.ndarray) -> list[UserSignals]:
    return [UserSignals(s.rows, s.confidence, s.composite, s.days_since, s.conflicting, int(r))
            for s, r in zip(signals, rows, strict=True)]


def rank_users(ranker: Ranker, signals: list[UserSignals], users: np.ndarray, k: int = K,
               exclude_seen: bool | None = None) -> np.ndarray:
    """Each user's top k item rows (-1 padding), ranking exactly as serving ranks."""
    saved = ranker.exclude_seen
    if exclude_seen is not None:
        ranker.exclude_seen = exclude_seen
    try:
        out = np.full((len(users), k), -1, dtype=np.int64)
        for j, u in enumerate(users):
            top, _ = ranker.rank(signals[u], k)
            out[j, :len(top)] = top
        return out
    finally:
        ranker.exclude_seen = saved


SINGLE = ("blend", *SOURCES)


@dataclass
class Candidates:
    """Per evaluated user, with seen items excluded or not: every single strategy's top k, and the
    re-ranker's candidates, features and labels (1: a wanted item)."""

    top: dict[str, np.ndarray]  # strategy -> (users, k)
    union: list[np.ndarray]
    features: list[np.ndarray]
    labels: list[np.ndarray]

    def rows(self, max_groups: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The re-ranker's training rows: users with at least one wanted candidate (at most
        `max_groups` of them, drawn with the seed)."""
        keep = [i for i, y in enumerate(self.labels) if y.any()]
        if max_groups is not None and len(keep) > max_groups:
            keep = sorted(np.random.default_rng(seed).choice(keep, max_groups, replace=False).tolist())
        if not keep:
            return np.empty((0, len(FEATURES))), np.empty(0), np.empty(0, dtype=np.int64)
        return (np.vstack([self.features[i] for i in keep]), np.concatenate([self.labels[i] for i in keep]),
                np.array([len(self.labels[i]) for i in keep]))

    def subset(self, users: np.ndarray) -> Candidates:
        """These users only (positions in the pass's user order)."""
        return Candidates({name: top[users] for name, top in self.top.items()},
                          [self.union[i] for i in users], [self.features[i] for i in users],
                          [self.labels[i] for i in users])

    def reranked(self, predict: Callable[[np.ndarray], np.ndarray], k: int = K) -> np.ndarray:
        sizes = [len(u) for u in self.union]
        values = predict(np.vstack(self.features)) if sum(sizes) else np.empty(0)
        out = np.full((len(self.union), k), -1, dtype=np.int64)
        offsets = np.cumsum([0, *sizes])
        for j, union in enumerate(self.union):
            v = values[offsets[j]:offsets[j + 1]]
            top = union[np.argsort(-v, kind="stable")[:k]]
            out[j, :len(top)] = top
        return out


def candidates(ranker: Ranker, signals: list[UserSignals], users: np.ndarray, wanted: list[set[int]],
               choices: list[bool], k: int = K, features: bool = True, singles: bool = True
               ) -> dict[bool, Candidates]:
    """One pass over the users: each source's scores once, then (with `singles`) every single strategy
    for every choice and (with `features`) the re-ranker's candidates."""
    out = {seen: Candidates({name: np.full((len(users), k), -1, dtype=np.int64) for name in SINGLE}, [], [], [])
           for seen in choices}
    saved = ranker.exclude_seen
    try:
        for j, (u, items) in enumerate(zip(users, wanted, strict=True)):
            s = signals[u]
            scores = ranker.source_scores(s)
            for seen in choices:
                ranker.exclude_seen = seen
                allowed = ranker.allowed(s)
                c = out[seen]
                for name in SINGLE if singles else ():
                    value = np.where(allowed, ranker.single(name, scores), -np.inf)
                    n = min(k, int(np.isfinite(value).sum()))
                    if n:
                        part = np.argpartition(-value, n - 1)[:n]
                        c.top[name][j, :n] = part[np.argsort(-value[part], kind="stable")]
                if not features:
                    continue
                union, ranks = ranker.candidates_of(s, scores, allowed)
                c.union.append(union)
                c.features.append(ranker.features(s, scores, union, ranks).astype(np.float32))
                c.labels.append(np.fromiter((i in items for i in union), dtype=np.float64, count=len(union)))
    finally:
        ranker.exclude_seen = saved
    return out


def decision_halves(users: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions 0..users-1 in two seeded halves (tune, decide); both all of them when there are too
    few users to split (fewer than 4)."""
    if users < 4:
        every = np.arange(users)
        return every, every
    order = np.random.default_rng(seed).permutation(users)
    return np.sort(order[: users // 2]), np.sort(order[users // 2:])


def label_windows(v1: Split, splitter: Splitter, count: int) -> list[Split]:
    """V1 and up to `count` windows before it, each cut from the previous one's part to learn from (the
    re-ranker learns from all of them stacked: more users and more moments than one window holds);
    fewer when the data runs out."""
    out = [v1]
    while len(out) <= count:
        window = splitter(out[-1].train)
        if not len(window.train) or not window.relevant or len(window.train) == len(out[-1].train):
            break
        out.append(window)
    return out


def _window(state: State, split: Split, chosen: dict[str, dict[str, Any]], params: RankingParams,
            segments: dict[str, str] | None) -> tuple[Ranker, list[UserSignals], np.ndarray, list[set[int]], int]:
    """The chosen sources fitted on a window's part to learn from, as a ranker; its users' signals, the
    evaluated users and their wanted items, and the number of items."""
    ranker = Ranker(ranker_arrays(state, chosen, params, "blend", False, segments))
    signals = with_segments(state.signals(), segment_rows(state, segments, ranker.arrays["segment_names"]))
    return (ranker, signals, *_targets(state, split.relevant), len(state.item_ids))


def stack_rows(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several windows' re-ranker rows as one training set (each user of each window a group)."""
    parts = [p for p in parts if len(p[2])]
    if not parts:
        return np.empty((0, len(FEATURES))), np.empty(0), np.empty(0, dtype=np.int64)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


BASE_WEIGHTS = (0.0, 3.0, 10.0)  # the weight of the best source's score the re-ranker boosts from (0: none)


def reranker_settings(params: RankingParams, deadline: float, most: int = 10):
    """The re-ranker's hyperparameters and base weight to try: the defaults with each of `BASE_WEIGHTS`,
    then seeded draws from `SEARCH["reranker"]` while the budget lasts (at most `most` in all)."""
    rng = np.random.default_rng(params.random_state)
    for weight in BASE_WEIGHTS:
        yield dict(params.reranker), weight
    for _ in range(most - len(BASE_WEIGHTS)):
        if time.monotonic() >= deadline:
            return
        yield SEARCH["reranker"](rng), float(rng.choice(BASE_WEIGHTS))


def with_base(value: np.ndarray, x: np.ndarray, base: tuple[int, float]) -> np.ndarray:
    """The trees' score plus the base source's weighted score column (`Ranker.rerank`)."""
    return value + base[1] * x[:, base[0]] if base[0] >= 0 else value


def tree_arrays(booster, base: tuple[int, float]) -> dict[str, np.ndarray]:
    """The trees as `Ranker` reads them, with the base they boost from."""
    from feedbackloop.models.trees import ARRAY_PREFIX as TREES

    return _ensemble(booster).to_arrays() | {f"{TREES}base_feature": np.array(base[0], dtype=np.int64),
                                             f"{TREES}base_weight": np.array(base[1])}


def fit_trees(x: np.ndarray, y: np.ndarray, groups: np.ndarray, params: RankingParams, trees: int,
              valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, settings: dict[str, Any] | None = None,
              base: tuple[int, float] = (-1, 0.0)):
    """LambdaRank trees (`settings`: the re-ranker's hyperparameters, `params.reranker` by default),
    boosting from `base` (a FEATURES column and its weight; -1: from zero)."""
    import lightgbm

    settings = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [K], "verbosity": -1,
                "seed": params.random_state, "deterministic": True, "num_threads": 2,
                "lambdarank_truncation_level": 2 * K, **(params.reranker if settings is None else settings)}
    def init(rows: np.ndarray) -> np.ndarray | None:
        return base[1] * rows[:, base[0]].astype(np.float64) if base[0] >= 0 else None

    train = lightgbm.Dataset(x, y, group=groups, feature_name=list(FEATURES), free_raw_data=False, init_score=init(x))
    callbacks, sets = [], []
    if valid is not None and len(valid[2]):
        sets = [lightgbm.Dataset(valid[0], valid[1], group=valid[2], reference=train, init_score=init(valid[0]))]
        callbacks = [lightgbm.early_stopping(30, verbose=False)]
    return lightgbm.train(settings, train, num_boost_round=trees, valid_sets=sets, callbacks=callbacks)


def evaluate_ranker(ranker: Ranker, item_ids: np.ndarray, daily: pd.DataFrame, as_of: str,
                    relevant: dict[str, set[str]], feature_half_life: float,
                    segments: dict[str, str] | None = None) -> dict[str, float]:
    """A published ranker on a hold-out, ranking each user as serving would from their feedback as of
    `as_of` (the rows of `daily`): the gate scores the candidate and the current model this way."""
    state = State.build(daily, as_of, feature_half_life)
    signals = state.signals_for(item_ids, segments, ranker.arrays.get("segment_names"))
    index = pd.Index(item_ids)
    users = sorted(relevant)
    ranked = np.full((len(users), K), -1, dtype=np.int64)
    for j, user in enumerate(users):
        top, _ = ranker.rank(signals.get(user, UserSignals.empty()), K)
        ranked[j, :len(top)] = top
    wanted = [{int(c) if c >= 0 else -1 - i for i, c in enumerate(index.get_indexer(sorted(relevant[u])))}
              for u in users]
    return ranking_metrics(ranked, wanted, len(item_ids))


# --- the whole ---------------------------------------------------------------------------------------

@dataclass
class FittedRanking:
    arrays: dict[str, np.ndarray]
    report: dict[str, Any]


def fit_ranking(daily: pd.DataFrame, splitter: Splitter, params: RankingParams,
                segments: dict[str, str] | None = None, exclude_seen: bool | None = None,
                console: Callable[[str], None] = lambda _: None) -> FittedRanking:
    """Tune, train and choose on `daily` (everything the model may learn from); the arrays of the
    ranker fitted on all of it. `exclude_seen`: forced by a protocol, or None to choose on validation."""
    started = time.monotonic()
    deadline = started + 60 * params.tuning_minutes
    v1 = splitter(daily)
    windows = label_windows(v1, splitter, params.label_windows)
    state1 = State.build(v1.train, v1.as_of, params.feature_half_life_days)
    report: dict[str, Any] = {"validation": {"as_of": v1.as_of, "users": len(v1.relevant)},
                              "reranker_labels": [{"as_of": w.as_of, "users": len(w.relevant)} for w in windows[1:]]}
    choices = [exclude_seen] if exclude_seen is not None else [False, True]
    # 1. the sources, on V1 (two thirds of the budget; the rest is the re-ranker's)
    chosen, trials = tune_sources(state1, v1.relevant, params, exclude_seen is True,
                                  started + (deadline - started) * 2 / 3)
    console(f"sources tuned in {time.monotonic() - started:.0f} s ({len(trials)} trials): {chosen}")
    # 2. on V1, every single strategy, seen items left out or not: whether they are is the data's
    # (repeat consumption or not), and the re-ranker is trained for that choice only
    ranker1, signals1, users1, wanted1, n1 = _window(state1, v1, chosen, params, segments)
    singles = candidates(ranker1, signals1, users1, wanted1, choices, features=False)
    scores: dict[tuple[str, bool], float] = {(name, seen): ranking_metrics(singles[seen].top[name], wanted1, n1)[NDCG]
                                             for seen in choices for name in SINGLE}
    seen = max(scores.items(), key=lambda kv: kv[1])[0][1]
    # 3. the re-ranker: learns on the windows before V1 (stacked), stops early and is scored on V1's
    passes = [candidates(ranker1, signals1, users1, wanted1, [seen], singles=False)[seen]]
    for w in windows[1:]:
        state = State.build(w.train, w.as_of, params.feature_half_life_days)
        passes.append(candidates(*_window(state, w, chosen, params, segments)[:4], [seen], singles=False)[seen])
    console(f"candidates built in {time.monotonic() - started:.0f} s ({len(passes) - 1} label windows)")
    # V1's users in two seeded halves: the re-ranker's settings, base and number of trees are chosen on
    # one (`tune`), and whether it serves is decided on the other (`decide`), which none of those choices
    # saw: chosen among many on the same users, its score there is biased upwards and a small gain is noise
    tune, decide = decision_halves(len(users1), params.random_state)
    tune_pass, decide_pass = passes[0].subset(tune), passes[0].subset(decide)
    wanted_tune, wanted_decide = [wanted1[i] for i in tune], [wanted1[i] for i in decide]
    valid_rows = tune_pass.rows(params.max_groups, params.random_state)
    train_rows = stack_rows([p.rows(params.max_groups, params.random_state + i) for i, p in enumerate(passes[1:])])
    best_settings: dict[str, Any] | None = None
    trees_of, base = 0, (-1, 0.0)
    if len(train_rows[2]) and len(valid_rows[2]):
        # boosting from the best single source's ranking (its score column, weighted) or from nothing
        source = max((v, name) for (name, s), v in scores.items() if s == seen and name in SOURCES)[1]
        column = FEATURES.index(f"{source}_score")
        tried = []
        for settings, weight in reranker_settings(params, deadline):
            b = (column, weight) if weight else (-1, 0.0)
            booster = fit_trees(*train_rows, params, params.max_trees, valid=valid_rows, settings=settings, base=b)
            ranked = tune_pass.reranked(lambda x, bo=booster, b=b: with_base(bo.predict(x, raw_score=True), x, b))
            tried.append((ranking_metrics(ranked, wanted_tune, n1)[NDCG], len(tried), settings, b,
                          booster.best_iteration or params.max_trees, booster))
            if time.monotonic() >= deadline and len(tried) >= 3:
                break
        value, _, best_settings, base, trees_of, booster = max(tried, key=lambda t: (t[0], -t[1]))
        scores[("reranker", seen)] = value
        reranked_top = decide_pass.reranked(lambda x: with_base(booster.predict(x, raw_score=True), x, base))
        report["reranker_trials"] = [{"params": t[2], "base": FEATURES[t[3][0]] if t[3][0] >= 0 else None,
                                      "base_weight": t[3][1], "trees": t[4], "ndcg": round(t[0], 4)} for t in tried]
        report["importance"] = dict(sorted(zip(FEATURES, booster.feature_importance("gain").round(1).tolist(),
                                               strict=True), key=lambda kv: -kv[1])[:12])
    single_value, (single_name, single_seen) = max((v, key) for key, v in scores.items() if key[0] != "reranker")
    (strategy, seen), best = (single_name, single_seen), single_value
    reranker = scores.get(("reranker", seen))
    if reranker is not None:
        # on the users none of its choices saw, the re-ranker serves only if it beats the best single
        # source by more than the noise of a per-user comparison (one standard error of the paired difference)
        single_top = singles[single_seen].top[single_name][decide]
        gain = ndcg_by_user(reranked_top, wanted_decide) - ndcg_by_user(single_top, wanted_decide)
        error = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else math.inf
        report["reranker_gain"] = {"users": len(gain), "mean": round(float(gain.mean()), 4),
                                   "standard_error": round(error, 4), "single": single_name}
        if gain.mean() > error:
            (strategy, seen), best = ("reranker", seen), reranker
        else:
            (strategy, seen), best = (single_name, single_seen), single_value
    # the single strategies' on all of V1's users, the re-ranker's on the half that tuned it
    report["validation_ndcg"] = {f"{name}{', seen excluded' if s else ''}": round(v, 4)
                                 for (name, s), v in scores.items()}
    report["strategy"], report["exclude_seen"] = strategy, seen
    decided = report.get("reranker_gain", {})
    report["why"] = (f"the best single source, {strategy} at {best:.4f}, serves: no re-ranker trained"
                     if reranker is None else
        f"on {decided['users']} validation users its choices never saw, the re-ranker beats the best single "
        f"source, {single_name}, by {decided['mean']:.4f} NDCG@10 (standard error {decided['standard_error']:.4f})"
        if strategy == "reranker" else
        f"the best single source, {strategy} at {best:.4f}, serves: on {decided['users']} validation users the "
        f"re-ranker's choices never saw, it gains {decided['mean']:.4f} NDCG@10 over it, not more than the "
        f"noise (one standard error, {decided['standard_error']:.4f})")
    # 4. refit: the re-ranker on the latest windows' labels, V1's included (as many windows as it learnt
    # from, its settings and number of trees found above), the sources on everything
    trees = None
    if reranker is not None:  # what was chosen for it, recorded whether it serves or not
        report["reranker_trees"], report["reranker_params"] = trees_of, best_settings
        report["reranker_base"] = {"feature": FEATURES[base[0]] if base[0] >= 0 else None, "weight": base[1]}
    if strategy == "reranker":
        rows = stack_rows([p.rows(params.max_groups, params.random_state + i) for i, p in enumerate(passes[:-1])])
        trees = tree_arrays(fit_trees(*rows, params, trees_of, settings=best_settings, base=base), base)
    final = State.build(daily, daily["event_date"].max(), params.feature_half_life_days)
    arrays = ranker_arrays(final, chosen, params, strategy, seen, segments, trees)
    report["sources"] = chosen
    report["trials"] = [{"source": t.source, "params": t.params, "ndcg": round(t.ndcg, 4),
                         "seconds": round(t.seconds, 2)} for t in trials]
    report["seconds"] = round(time.monotonic() - started, 1)
    return FittedRanking(arrays, report)


def refit_ranking(daily: pd.DataFrame, splitter: Splitter, fitted: FittedRanking, params: RankingParams,
                  segments: dict[str, str] | None = None) -> FittedRanking:
    """What `fit_ranking` chose, refitted on more data without tuning again: the re-ranker on the
    latest windows' labels (as many windows, trees and the settings chosen), the sources on everything."""
    report = fitted.report
    chosen, strategy, seen = report["sources"], report["strategy"], bool(report["exclude_seen"])
    trees = None
    if strategy == "reranker":
        # as many label windows as fit_ranking's final re-ranker learnt from, the latest ones
        windows = label_windows(splitter(daily), splitter, max(0, len(report["reranker_labels"]) - 1))
        parts = []
        for i, split in enumerate(windows):
            state = State.build(split.train, split.as_of, params.feature_half_life_days)
            ranker, signals, users, wanted, _ = _window(state, split, chosen, params, segments)
            parts.append(candidates(ranker, signals, users, wanted, [seen], singles=False)[seen].rows(
                params.max_groups, params.random_state + i))
        rows = stack_rows(parts)
        if len(rows[2]):
            chosen_base = report.get("reranker_base") or {"feature": None, "weight": 0.0}
            base = ((FEATURES.index(chosen_base["feature"]), float(chosen_base["weight"]))
                    if chosen_base["feature"] else (-1, 0.0))
            trees = tree_arrays(fit_trees(*rows, params, int(report["reranker_trees"]),
                                          settings=report.get("reranker_params"), base=base), base)
        else:
            strategy = max(((v, k) for k, v in report["validation_ndcg"].items() if not k.startswith("reranker")))[1]
            strategy = strategy.split(",")[0]
    final = State.build(daily, daily["event_date"].max(), params.feature_half_life_days)
    arrays = ranker_arrays(final, chosen, params, strategy, seen, segments, trees)
    return FittedRanking(arrays, report | {"strategy": strategy})


def _ensemble(booster):
    from feedbackloop.models.trees import TreeEnsemble

    return TreeEnsemble.from_booster(booster)


def daily_from_log(log: pd.DataFrame, rating_scale: tuple[float, float, float] | None = None) -> pd.DataFrame:
    """Any table of `user_id`, `item_id`, `timestamp` and an optional `rating` (and the items' optional
    `category` and `price`) as feedback_daily rows:
    an interaction is implicit evidence of weight 1 and score 1; a rating is explicit, scored 0 at the
    scale's neutral point, +-1 at its ends (`rating_scale`: min, neutral, max; default: the data's
    min and max and their midpoint)."""
    frame = log.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, unit="s" if pd.api.types.is_numeric_dtype(
        frame["timestamp"]) else None)
    frame["event_date"] = frame["timestamp"].dt.strftime("%Y-%m-%d")
    explicit = "rating" in frame and frame["rating"].notna().any()
    if explicit:
        low, neutral, high = rating_scale or (frame["rating"].min(), (frame["rating"].min() + frame["rating"].max())
                                              / 2, frame["rating"].max())
        r = frame["rating"].to_numpy(dtype=np.float64)
        score = np.where(r >= neutral, (r - neutral) / max(high - neutral, 1e-9),
                         (r - neutral) / max(neutral - low, 1e-9))
    else:
        score = np.ones(len(frame))
    frame["score"] = score
    frame["positive_at"] = frame["timestamp"].where(score >= 0)
    frame["negative_at"] = frame["timestamp"].where(score < 0)
    grouped = frame.groupby(["user_id", "item_id", "event_date"], sort=False)
    out = grouped.agg(events=("score", "size"), decayed_score_sum=("score", "sum"),
                      last_positive_at=("positive_at", "max"), last_negative_at=("negative_at", "max"),
                      last_seen_at=("timestamp", "max"), first_seen_at=("timestamp", "min")).reset_index()
    if explicit:
        rated = grouped["rating"].agg(["size", "sum"]).reset_index(drop=True)
        out["ratings"], out["rating_sum"] = rated["size"].to_numpy(), rated["sum"].to_numpy()
    else:
        out["ratings"], out["rating_sum"] = 0, 0.0
    out["decayed_weight_sum"] = out["events"].astype(np.float64)
    out["explicit_events"] = out["ratings"] if explicit else 0
    out["implicit_events"] = out["events"] - out["explicit_events"]
    for column in ("views", "clicks", "cancels"):
        out[column] = 0
    out["purchases"] = out["implicit_events"]
    for column in ("category", "price"):  # optional attributes of the items, as a client sends them
        out[column] = grouped[column].max().to_numpy() if column in frame else None
    return out
