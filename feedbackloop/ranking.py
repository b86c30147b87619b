"""One user's ranking from the published model and their latest feedback: the code serving runs and
the gate evaluates (numpy only, so the serving Lambda imports it without the training libraries).

Every candidate source scores the catalog from the user's signals as of now (their online profile in
serving; the feedback layer as of the cut-off in training and in the gate):
- `mf`: the confidence-weighted factorization, the user folded in against the published item factors
  (the least-squares step ALS takes for a user, confidence 1 + alpha * c);
- `item_item`: the items' nearest neighbours (EASE's weights, or item-kNN's, kept sparse) summed over
  the items the user wants;
- `history`: the user's own evidence per item (frequency and recency in one decayed mass);
- `popularity`, `trending` (the recent window) and `segment` (popularity among the user's segment);
- `attribute`: the items' attributes as clients send them (category, price band): the user's share of
  recent wanted evidence (each signal weighed down by its age, half-life ATTRIBUTE_HALF_LIFE_DAYS) in
  the item's category times that in its price band, each smoothed towards the catalogue's own mix,
  times the item's popularity percentile. It generalizes from a single click to
  every item like it, which the factorization and the neighbours cannot do for an item they know
  little about, and it is what a user new to the system is ranked from after their first clicks.
`attribute_rate`, a ranking serving may choose online (ADR 0021) but not a source of the re-ranker's, is
the attribute source with the evidence against: the user's recent rate of wanted evidence in the item's
category (its wanted mass over its wanted and unwanted mass, items shown and passed over counting
against it) times that in its price band, each smoothed towards the user's own rate, times the item's
popularity percentile; a category the user keeps passing over falls below one they were never shown.
The union of each source's top `candidates` items is then ordered by the re-ranker (gradient-boosted
trees over the sources' scores and ranks and the user's, the item's and the pair's feedback features,
evaluated with numpy), or, when the re-ranker did not beat the best single source on validation, by
that source. Items the user turned against, and blocked items, are never shown; seen items are left
out when the published model says the catalog is consumed once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SOURCES = ("mf", "item_item", "history", "popularity", "trending", "segment", "attribute")
PAIR_FEATURES = ("hist_mass", "neg_mass", "composite", "days_since", "conflicting", "category_share",
                 "price_share", "recent_category_share", "recent_price_share", "hist_share", "days_before_last")
# the pair features read from `source_scores` (the user's shares of the item's attributes)
_SHARE_FEATURES = PAIR_FEATURES[5:9]
USER_FEATURES = ("user_items", "user_mass", "user_days_since", "user_mean_composite")
ITEM_FEATURES = ("item_users", "item_trending", "item_age_days", "item_purchase_rate", "item_cancel_rate",
                 "item_ctr", "item_rating", "item_mean_score")
FEATURES = tuple(f"{s}_{kind}" for s in SOURCES for kind in ("score", "rank")) + PAIR_FEATURES + USER_FEATURES \
    + ITEM_FEATURES
# the columns of models published before the attribute source (they carry no `feature_names`)
_FIRST_FEATURES = tuple(f"{s}_{kind}" for s in SOURCES[:6] for kind in ("score", "rank")) + PAIR_FEATURES[:5] \
    + USER_FEATURES + ITEM_FEATURES
ARRAY_PREFIX = "ranker_"
_SCORED = ("mf", "item_item", "history", "attribute")  # sources that score only some items for a user
PRICE_BANDS = 4  # the catalogue's price quartiles
ATTRIBUTE_PRIOR = 0.1  # the confidence mass the catalogue's mix counts for in a user's shares (half a click's)
ATTRIBUTE_HALF_LIFE_DAYS = 1.0  # "recent" in the user's recent shares: the interest of their latest visits
# the confidence mass at the user's own rate that each category's and price band's rate starts from (five
# examined views' worth), and the rate a user without evidence starts from
ATTRIBUTE_RATE_PRIOR = 0.5
ATTRIBUTE_PRIOR_RATE = 0.1
# the single sources serving may choose between online besides the model's own choice (ADR 0021): the
# personalized ones; popularity and its kin are what a user without feedback gets anyway
ONLINE_RANKERS = ("attribute_rate", "item_item", "mf", "history")


@dataclass(frozen=True)
class UserSignals:
    """A user's feedback over the model's items: rows with any signal, their signed confidence mass
    (negative for unwanted pairs, as training signs them: turned against, or only ever shown), composite
    score, days since the latest signal and whether the pair holds both a positive and a negative
    signal; the user's segment (-1: none); and per row the confidence of the exposures the user examined
    and passed over since the pair's latest positive signal (None: none known, as in training). Serving
    never shows an unwanted item again (ADR 0010), nor a wanted one the user has passed over since they
    last engaged with it, until they engage with it again (ADR 0016)."""

    rows: np.ndarray
    confidence: np.ndarray
    composite: np.ndarray
    days_since: np.ndarray
    conflicting: np.ndarray
    segment: int = -1
    ignored: np.ndarray | None = None

    @classmethod
    def empty(cls, segment: int = -1) -> UserSignals:
        return cls(np.array([], dtype=np.int64), np.array([]), np.array([]), np.array([]), np.array([], dtype=bool),
                   segment)

    @property
    def wanted(self) -> np.ndarray:
        return self.confidence > 0

    @property
    def passed_over(self) -> np.ndarray:
        """Wanted rows shown to the user, examined and not engaged with since their latest positive."""
        return self.wanted & (self.ignored > 0) if self.ignored is not None else np.zeros(len(self.rows), bool)


class Ranker:
    """The published ranking model's arrays (see `to_arrays`) and the ranking they make."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        get = {name[len(ARRAY_PREFIX):]: value for name, value in arrays.items() if name.startswith(ARRAY_PREFIX)}
        self.arrays = get
        self.item_factors = np.ascontiguousarray(get["item_factors"], dtype=np.float32)
        self.regularization = float(get["regularization"])
        self.alpha = float(get["alpha"])
        y = self.item_factors.astype(np.float64)
        self.gram = y.T @ y + self.regularization * np.eye(y.shape[1])
        self.neighbors = (get["neighbors_indptr"], get["neighbors_indices"], get["neighbors_data"])
        self.item_item_binary = bool(get["item_item_binary"])
        # every observed pair as positive evidence (chosen on validation), or the wanted ones only
        self.mf_engagement = bool(get.get("mf_engagement", False))
        self.item_item_engagement = bool(get.get("item_item_engagement", False))
        self.popularity = get["popularity"].astype(np.float64)
        self.trending = get["trending"].astype(np.float64)
        self.segment_popularity = get["segment_popularity"].astype(np.float64)  # segments x items
        self.item_features = get["item_features"].astype(np.float64)  # items x ITEM_FEATURES
        self.candidates = int(get["candidates"])
        self.exclude_seen = bool(get["exclude_seen"])
        self.strategy = str(get["strategy"])  # "reranker" or the single source that serves
        self.history_weight = float(get["history_weight"])
        self.n_items = self.item_factors.shape[0]
        self.popular_order = np.argsort(-self.popularity, kind="stable")[:self.candidates]
        self.trending_order = np.argsort(-self.trending, kind="stable")[:self.candidates]
        self.segment_order = [np.argsort(-row, kind="stable")[:self.candidates] for row in self.segment_popularity]
        # attribute codes: 0 for none known, else 1 + the category's index / the price band
        self.item_category = get.get("item_category", np.zeros(self.n_items, np.int64)).astype(np.int64)
        self.item_price_band = get.get("item_price_band", np.zeros(self.n_items, np.int64)).astype(np.int64)
        self.category_prior = _mix(self.item_category, self.popularity)
        self.price_prior = _mix(self.item_price_band, self.popularity)
        order = np.argsort(self.popularity, kind="stable")
        self.popularity_percentile = np.empty(self.n_items)
        self.popularity_percentile[order] = (np.arange(self.n_items) + 1.0) / max(self.n_items, 1)
        # the attribute source's score is a weight per (category, price band) cell times the item's popularity
        # percentile: the items of each cell, most popular first, let a request find its top candidates among
        # each cell's first few instead of scoring and partitioning the whole catalogue
        self.item_cell = cell = self.item_category * len(self.price_prior) + self.item_price_band
        self.cell_items = np.lexsort((-self.popularity_percentile, cell))
        self.cell_indptr = np.searchsorted(cell[self.cell_items],
                                           np.arange(len(self.category_prior) * len(self.price_prior) + 1))
        self.by_popularity = np.argsort(-self.popularity, kind="stable")  # the whole catalogue, most popular first
        self.trees = None
        # the re-ranker may boost from one source's ranking: its score column (of FEATURES), times a weight,
        # is added to the trees' (-1: none)
        self.base_feature = int(get.get("trees_reranker_base_feature", -1))
        self.base_weight = float(get.get("trees_reranker_base_weight", 0.0))
        if self.strategy == "reranker":
            from feedbackloop.models.trees import TreeEnsemble

            self.trees = TreeEnsemble.from_arrays({k[len("trees_"):]: v for k, v in get.items()
                                                   if k.startswith("trees_")})
            # the re-ranker's columns, by name: a model keeps working when later code adds features
            names = [str(n) for n in get["feature_names"]] if "feature_names" in get else _FIRST_FEATURES
            self.feature_columns = np.array([FEATURES.index(n) for n in names], dtype=np.int64)
            if self.base_feature >= 0:  # an index into the columns the model was trained on
                self.base_feature = FEATURES.index(names[self.base_feature])

    # --- the sources --------------------------------------------------------------------------------

    def fold_in(self, s: UserSignals) -> np.ndarray | None:
        """The user's factor vector from their signals alone; None without a wanted item."""
        wanted = np.ones(len(s.rows), dtype=bool) if self.mf_engagement else s.wanted
        if not wanted.any():
            return None
        y = self.item_factors[s.rows].astype(np.float64)
        c = self.alpha * np.abs(s.confidence)  # confidence - 1, with confidence 1 + alpha * |c|
        a = self.gram + y.T @ (c[:, None] * y)
        b = y[wanted].T @ (1.0 + c[wanted])
        return np.linalg.solve(a, b)

    def source_scores(self, s: UserSignals) -> SourceScores:
        """Every source's score of every item for this user."""
        x = self.fold_in(s)
        mf = self.item_factors @ x.astype(np.float32) if x is not None else np.zeros(self.n_items, np.float32)
        history = np.zeros(self.n_items)
        history[s.rows[s.wanted]] = s.confidence[s.wanted]
        indptr, indices, data = self.neighbors
        engaged = np.ones(len(s.rows), dtype=bool) if self.item_item_engagement else s.wanted
        liked = s.rows[engaged]
        weight = np.ones(len(liked)) if self.item_item_binary else np.abs(s.confidence[engaged])
        starts, lengths = indptr[liked], indptr[liked + 1] - indptr[liked]
        take = np.arange(lengths.sum()) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        item_item = np.bincount(indices[take], weights=data[take] * np.repeat(weight, lengths),
                                minlength=self.n_items)
        segment = (self.segment_popularity[s.segment] if 0 <= s.segment < len(self.segment_popularity)
                   else self.popularity)
        category, price = self._attribute_shares(s)
        recent_category, recent_price = self._attribute_shares(s, ATTRIBUTE_HALF_LIFE_DAYS)
        return SourceScores(self, {"mf": mf, "item_item": item_item, "history": history,
                                   "popularity": self.popularity, "trending": self.trending, "segment": segment},
                            {"category_share": category, "price_share": price,
                             "recent_category_share": recent_category, "recent_price_share": recent_price})

    def attribute_shares(self, s: UserSignals, half_life_days: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Per item, the user's share of wanted evidence in its category and in its price band, each
        signal weighed by 0.5^(days before the user's latest signal / `half_life_days`), the shares
        smoothed towards the catalogue's mix by ATTRIBUTE_PRIOR (a user without any: the mix)."""
        category, price = self._attribute_shares(s, half_life_days)
        return category[self.item_category], price[self.item_price_band]

    def _attribute_shares(self, s: UserSignals, half_life_days: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """`attribute_shares` per category code and per price band code (what each item's are read from)."""
        wanted = s.wanted
        age = s.days_since[wanted] - (s.days_since[wanted].min() if wanted.any() else 0.0)
        mass = s.confidence[wanted] * np.exp2(-age / half_life_days)
        out = []
        for codes, prior in ((self.item_category, self.category_prior), (self.item_price_band, self.price_prior)):
            evidence = np.bincount(codes[s.rows[wanted]], weights=mass, minlength=len(prior))[:len(prior)]
            evidence[0] = 0.0  # no attribute known: no evidence about attributes
            out.append((evidence + ATTRIBUTE_PRIOR * prior) / (evidence.sum() + ATTRIBUTE_PRIOR))
        return out[0], out[1]

    def _attribute_cells(self, scores: SourceScores) -> np.ndarray:
        """The attribute source's weight per (category, price band) cell: an item's score is its cell's
        weight times its popularity percentile (the same product, so the same value, as item by item)."""
        return (scores.shares["recent_category_share"][:, None]
                * scores.shares["recent_price_share"][None, :]).ravel()

    def _attribute_top(self, scores: SourceScores, allowed: np.ndarray, excluded: int) -> np.ndarray:
        """The attribute source's top `candidates` allowed items with a score, best first: within a cell the
        items are in score order, so the top ones are among each cell's first `candidates + excluded`."""
        weight = self._attribute_cells(scores)
        starts = self.cell_indptr[:-1]
        # the items not allowed, per cell (a cell's first `candidates` allowed ones are enough)
        excluded_per_cell = np.bincount(self.item_cell[~allowed] if excluded else np.array([], np.int64),
                                        minlength=len(weight))
        lengths = np.minimum(np.diff(self.cell_indptr), self.candidates + excluded_per_cell)
        lengths[weight == 0] = 0  # an item without a score is not a candidate
        take = np.arange(lengths.sum()) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        items = self.cell_items[take]
        values = np.repeat(weight, lengths) * self.popularity_percentile[items]
        keep = allowed[items] & (values != 0)
        items, values = items[keep], values[keep]
        m = min(len(items), self.candidates)
        if 0 < m < len(items):
            part = np.argpartition(-values, m - 1)[:m]
            items, values = items[part], values[part]
        return items[np.argsort(-values, kind="stable")]

    def attribute_rates(self, s: UserSignals, half_life_days: float = ATTRIBUTE_HALF_LIFE_DAYS
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Per item, the user's rate of wanted evidence in its category and in its price band: the wanted
        mass over the wanted and unwanted mass there (pairs turned against or only shown, and the examined
        exposures passed over since a wanted pair's latest positive), each signal weighed by 0.5^(days
        before the user's latest signal / `half_life_days`), smoothed towards the user's own rate over
        every attribute by ATTRIBUTE_RATE_PRIOR. A category the user was never shown gets their own rate,
        one they keep passing over falls below it: the ranking moves on when their taste does."""
        age = s.days_since - (s.days_since.min() if len(s.rows) else 0.0)
        decay = np.exp2(-age / half_life_days)
        wanted = np.where(s.confidence > 0, s.confidence, 0.0) * decay
        unwanted = np.where(s.confidence < 0, -s.confidence, 0.0) * decay
        if s.ignored is not None:
            unwanted = unwanted + np.where(s.confidence > 0, s.ignored, 0.0)
        own = ((wanted.sum() + ATTRIBUTE_RATE_PRIOR * ATTRIBUTE_PRIOR_RATE)
               / (wanted.sum() + unwanted.sum() + ATTRIBUTE_RATE_PRIOR))
        out = []
        for codes in (self.item_category, self.item_price_band):
            n = int(codes.max(initial=0)) + 1
            pro = np.bincount(codes[s.rows], weights=wanted, minlength=n)[:n]
            con = np.bincount(codes[s.rows], weights=unwanted, minlength=n)[:n]
            rate = (pro + ATTRIBUTE_RATE_PRIOR * own) / (pro + con + ATTRIBUTE_RATE_PRIOR)
            rate[0] = own  # no attribute known: no evidence about attributes
            out.append(rate[codes])
        return out[0], out[1]

    def _top(self, name: str, scores: np.ndarray, allowed: np.ndarray, s: UserSignals, excluded: int
             ) -> np.ndarray:
        """A source's top `candidates` allowed items with a score, best first (`excluded`: how many items
        are not allowed, so that a partition of that many more holds the top allowed ones)."""
        if name == "popularity":
            order = self.popular_order
        elif name == "trending":
            order = self.trending_order
        elif name == "segment" and 0 <= s.segment < len(self.segment_order):
            order = self.segment_order[s.segment]
        elif name == "segment":
            order = self.popular_order
        elif name == "history":  # only the user's own items have a score
            order = s.rows[s.wanted]
            order = order[np.argsort(-scores[order], kind="stable")]
        elif name == "item_item":  # only the wanted items' neighbours have a score: partition those alone
            scored = np.flatnonzero(scores != 0)  # (a boolean's nonzero: several times a float's speed)
            m = min(len(scored), self.candidates + excluded)
            order = scored[np.argpartition(-scores[scored], m - 1)[:m]] if 0 < m < len(scored) else scored
            order = order[np.argsort(-scores[order], kind="stable")]
        else:
            order = _largest(scores, min(self.n_items, self.candidates + excluded))
            order = order[np.argsort(-scores[order], kind="stable")]
        keep = allowed[order] & (scores[order] != 0) if name in _SCORED else allowed[order]
        return order[keep][:self.candidates]

    # --- the ranking ------------------------------------------------------------------------------

    def allowed(self, s: UserSignals, blocked: np.ndarray | None = None) -> np.ndarray:
        allowed = np.ones(self.n_items, dtype=bool)
        allowed[s.rows[(s.confidence < 0) | s.passed_over | self.exclude_seen]] = False
        if blocked is not None and len(blocked):
            allowed[blocked] = False
        return allowed

    def popular(self, s: UserSignals, k: int, blocked: np.ndarray | None = None,
                reorder: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """For a user with no wanted item yet: the popular items (their segment's when known) they have
        not ignored, spread over the categories (the most popular item of each category in turn, the
        categories the user ignored least first, then in order of their best item), so that a first page
        asks about as many tastes as it can and the next ones ask about those not yet ruled out.
        `reorder` may move the popular items (best first) before they are spread: serving's freshness."""
        order = self.segment_order[s.segment] if 0 <= s.segment < len(self.segment_order) else self.popular_order
        order = np.concatenate([order, self.by_popularity])  # beyond the top, all
        order = order[self.allowed(s, blocked)[order]]
        order = order[np.sort(np.unique(order, return_index=True)[1])][:max(k * 10, self.candidates)]
        if reorder is not None:
            order = reorder(order)
        category = self.item_category[order]
        if not category.any():
            return order[:k]
        turn = np.zeros(len(order), dtype=np.int64)  # the item's place among its category's
        for code in np.unique(category):
            where = np.flatnonzero(category == code)
            turn[where] = np.arange(len(where))
        ignored = np.bincount(self.item_category[s.rows], weights=np.maximum(-s.confidence, 0.0),
                              minlength=int(self.item_category.max()) + 1)
        return order[np.lexsort((np.arange(len(order)), ignored[category], turn))][:k]

    def candidates_of(self, s: UserSignals, scores: SourceScores, allowed: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The union of every source's top items, and each candidate's rank in each source
        (1-based; candidates + 1 when outside its top)."""
        excluded = self.n_items - int(np.count_nonzero(allowed))
        tops = {name: self._attribute_top(scores, allowed, excluded) if name == "attribute" and name not in scores
                else self._top(name, scores[name], allowed, s, excluded) for name in SOURCES}
        union = np.unique(np.concatenate(list(tops.values())))
        ranks = np.full((len(union), len(SOURCES)), self.candidates + 1, dtype=np.float64)
        for j, name in enumerate(SOURCES):
            where = np.searchsorted(union, tops[name])
            ranks[where, j] = np.arange(1, len(tops[name]) + 1)
        return union, ranks

    def features(self, s: UserSignals, scores: SourceScores, union: np.ndarray, ranks: np.ndarray
                 ) -> np.ndarray:
        """One row per candidate, the columns of FEATURES."""
        n = len(union)
        columns = []
        for j, name in enumerate(SOURCES):
            values = scores.at(name, union)
            scale = scores.largest(name) if name in _SCORED else 1.0
            columns += [values / scale if scale > 0 else values, ranks[:, j]]
        pair = np.full((n, len(PAIR_FEATURES)), np.nan)
        pair[:, 0] = 0.0
        pair[:, 1] = 0.0
        pair[:, 4] = 0.0
        if len(s.rows):
            where = np.searchsorted(union, s.rows)
            inside = (where < n) & (union[np.minimum(where, n - 1)] == s.rows)
            w = where[inside]
            c = s.confidence[inside]
            pair[w, 0] = np.maximum(c, 0)
            pair[w, 1] = np.maximum(-c, 0)
            pair[w, 2] = s.composite[inside]
            pair[w, 3] = s.days_since[inside]
            pair[w, 4] = s.conflicting[inside]
        for j, name in enumerate(_SHARE_FEATURES, start=5):
            pair[:, j] = scores.at(name, union)
        # the pair relative to the user's own history, which trees cannot compute from the columns above:
        # its share of the user's wanted mass, and how long before the user's latest signal it was last
        # seen (an item of the latest visit: 0; NaN: not in the history)
        wanted = s.wanted
        total = float(s.confidence[wanted].sum())
        pair[:, 9] = pair[:, 0] / total if total > 0 else 0.0
        if len(s.rows):
            pair[:, 10] = pair[:, 3] - float(s.days_since.min())
        user = np.array([float(len(s.rows)), float(s.confidence[wanted].sum()),
                         float(s.days_since.min()) if len(s.rows) else np.nan,
                         float(s.composite.mean()) if len(s.rows) else np.nan])
        return np.column_stack([*columns, pair, np.tile(user, (n, 1)), self.item_features[union]])

    @property
    def rankers(self) -> tuple[str, ...]:
        """The rankings this model can serve: the one validation chose first, then every personalized single
        source it holds data for (serving may learn online which earns clicks, ADR 0021)."""
        have = {"mf": True, "item_item": len(self.neighbors[1]) > 0, "history": True,
                "attribute_rate": bool(self.item_category.any() or self.item_price_band.any())}
        return (self.strategy,) + tuple(name for name in ONLINE_RANKERS if have[name] and name != self.strategy)

    def rank(self, s: UserSignals, k: int, blocked: np.ndarray | None = None, strategy: str | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """The user's top k item rows, best first, and their scores, by `strategy` (one of `rankers`; None:
        the one validation chose)."""
        strategy = strategy or self.strategy
        if strategy not in self.rankers:
            raise ValueError(f"this model cannot rank by {strategy!r}: it has {self.rankers}")
        scores = self.source_scores(s)
        allowed = self.allowed(s, blocked)
        if strategy == "reranker":
            union, ranks = self.candidates_of(s, scores, allowed)
            if not len(union):
                return union, np.array([])
            value = self.rerank(self.features(s, scores, union, ranks))
            order = np.argsort(-value, kind="stable")[:k]
            return union[order], value[order]
        if strategy == "attribute_rate":
            category, price = self.attribute_rates(s)
            scores["attribute_rate"] = category * price * self.popularity_percentile
        value = self.single(strategy, scores)
        value = np.where(allowed, value, -np.inf)
        k = min(k, int(np.isfinite(value).sum()))
        if k == 0:
            return np.array([], dtype=np.int64), np.array([])
        part = np.argpartition(-value, k - 1)[:k]
        order = part[np.argsort(-value[part], kind="stable")]
        return order, value[order]

    def rerank(self, x: np.ndarray) -> np.ndarray:
        """The re-ranker's score of candidates' FEATURES rows (the columns it was trained on, by name)."""
        value = self.trees.predict(x[:, self.feature_columns])
        return value + self.base_weight * x[:, self.base_feature] if self.base_feature >= 0 else value

    def single(self, name: str, scores: dict[str, np.ndarray]) -> np.ndarray:
        """A single source's ranking score; `blend` is the factorization plus the user's own history,
        each scaled to its maximum (the published model of earlier versions)."""
        if name != "blend":
            # popularity breaks ties (and ranks users the source knows nothing about)
            return scores[name] + 1e-9 * self.popularity / (self.popularity.max() + 1.0)
        mf, history = scores["mf"], scores["history"]
        return (mf / max(np.abs(mf).max(), 1e-12) + self.history_weight * history / max(history.max(), 1e-12)
                + 1e-9 * self.popularity / (self.popularity.max() + 1.0))


class SourceScores(dict):
    """Every source's score of every item for one user (name -> array over the items), and the user's shares
    of the items' attributes. The attribute source's and the shares' arrays are products of a value per
    category and per price band, made only when read by name: the candidates and their features read
    those values for the items they need (`at`, `largest`), the same numbers without a pass over the
    catalogue per request."""

    _SHARE_CODES = {"category_share": "item_category", "recent_category_share": "item_category",
                    "price_share": "item_price_band", "recent_price_share": "item_price_band"}

    def __init__(self, ranker: Ranker, scores: dict[str, np.ndarray], shares: dict[str, np.ndarray]) -> None:
        super().__init__(scores)
        self.ranker = ranker
        self.shares = shares  # per attribute code, by the name of the per-item array

    def at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """`self[name][rows]`."""
        if name in self:
            return self[name][rows]
        if name in self._SHARE_CODES:
            return self.shares[name][getattr(self.ranker, self._SHARE_CODES[name])[rows]]
        if name == "attribute":
            return (self.at("recent_category_share", rows) * self.at("recent_price_share", rows)
                    * self.ranker.popularity_percentile[rows])
        return self[name][rows]

    def largest(self, name: str) -> float:
        """`np.abs(self[name]).max()`."""
        if name == "attribute" and name not in self:  # no score is negative; within a cell, the most popular
            first = self.ranker.cell_indptr[:-1]
            filled = first < self.ranker.cell_indptr[1:]
            return float(np.max(self.ranker._attribute_cells(self)[filled]
                                * self.ranker.popularity_percentile[self.ranker.cell_items[first[filled]]]))
        value = self[name]
        return max(value.max(), -value.min())  # (two reductions: less than half np.abs's pass and copy)

    def __missing__(self, name: str) -> np.ndarray:
        if name in self._SHARE_CODES or name == "attribute":
            value = self.at(name, np.arange(self.ranker.n_items))
            self[name] = value
            return value
        raise KeyError(name)


def neighbor_indices(indices: np.ndarray, n_items: int) -> np.ndarray:
    """The item-item neighbours' column indices as a model publishes them: int32 below 2^31 items (half
    int64's bytes; with the weights, the largest arrays of a large catalogue's model, so half the
    indices' share of a cold start's decompression), int64 above. The ranking reads either."""
    return indices.astype(np.int32 if n_items < 2**31 else np.int64)


def _largest(values: np.ndarray, m: int) -> np.ndarray:
    """The indexes of the m largest values, in no order (ties at the m-th in any): `argpartition` over the
    values at or above a bound that a strided sample's order statistic gives (every SAMPLE_STRIDE-th value;
    about 2m + 9 * SAMPLE_STRIDE of a large catalogue's items pass it), not over the whole catalogue: a
    fraction of the partition's time. Where fewer than m pass, the whole catalogue's partition."""
    n = len(values)
    if m >= n:
        return np.arange(n)
    if n >= _SAMPLED_PARTITION_ITEMS:
        sample = values[::_SAMPLE_STRIDE]
        rank = min(len(sample), 2 * (m // _SAMPLE_STRIDE) + 9)
        bound = np.partition(sample, len(sample) - rank)[len(sample) - rank]
        above = np.flatnonzero(values >= bound)
        if len(above) > m:
            return above[np.argpartition(-values[above], m - 1)[:m]]
        if len(above) == m:
            return above
    return np.argpartition(-values, m - 1)[:m]


_SAMPLE_STRIDE = 64
_SAMPLED_PARTITION_ITEMS = 16_384  # below this many items, a whole partition is as quick


def _mix(codes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The catalogue's share of `weights` per attribute code (code 0, none known, gets none)."""
    mix = np.bincount(codes, weights=weights + 1.0, minlength=int(codes.max(initial=0)) + 1)
    mix[0] = 0.0
    total = mix.sum()
    return mix / total if total > 0 else mix
