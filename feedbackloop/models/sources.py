"""Candidate sources: scikit-learn-style estimators on a user x item sparse matrix.

Every source takes `X`, a `scipy.sparse` user x item matrix of signed confidence (positive: how much
evidence that the user wants the item; negative: how much that they turned against it; zero:
unobserved), learns in `fit(X)` (which returns self), and scores a batch of its rows with
`score(users)`, a dense (len(users), n_items) array. `exclude_seen` (a parameter of every source)
sets the score of every observed pair to -inf, for catalogs where a user does not want an item twice.
Nothing here knows a dataset's column names: `FeedbackMatrix` in `feedbackloop.models.data` builds `X`
from the feedback layer, `from_log` from any table of user, item, timestamp and an optional rating.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

EASE_MAX_ITEMS = 20_000  # EASE inverts an items x items matrix (20k: 3.2 GB in float64); beyond, item-kNN


def _positive(x: sp.csr_matrix) -> sp.csr_matrix:
    return x.maximum(0).tocsr()


class _Source:
    exclude_seen: bool = False

    def _finish(self, users: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.exclude_seen:
            seen = self.x_[users]
            rows = np.repeat(np.arange(len(users)), np.diff(seen.indptr))
            scores[rows, seen.indices] = -np.inf
        return scores


class ConfidenceMF(_Source):
    """Weighted ALS for implicit feedback (Hu, Koren, Volinsky 2008), solved by `implicit`: a pair with
    evidence c enters with confidence 1 + alpha * c and preference 1 (c > 0) or 0 (c < 0, a pair the
    user turned against); every unobserved pair with confidence 1 and preference 0. So an old positive,
    however decayed, never weighs less than an unobserved pair."""

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0, iterations: int = 15,
                 exclude_seen: bool = False, random_state: int = 0) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.exclude_seen = exclude_seen
        self.random_state = random_state

    def confidence(self, x: sp.csr_matrix) -> sp.csr_matrix:
        c = x.tocsr().astype(np.float32, copy=True)
        c.data = np.sign(c.data) * (1.0 + self.alpha * np.abs(c.data))
        return c

    def fit(self, x: sp.csr_matrix) -> ConfidenceMF:
        self.x_ = x.tocsr()
        with threadpool_limits(1, "blas"):  # implicit parallelizes over users itself
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=1.0,
                                            iterations=self.iterations, random_state=self.random_state)
            model.fit(self.confidence(self.x_), show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self._finish(users, (self.user_factors_[users] @ self.item_factors_.T).astype(np.float64))


class EASE(_Source):
    """Embarrassingly shallow autoencoder (Steck 2019): item-item weights B = -P / diag(P) with
    P = (X'X + lambda I)^-1 and diag(B) = 0, on the binary matrix of wanted pairs. Past
    `EASE_MAX_ITEMS` items the closed form does not fit in memory: use `ItemKNN`."""

    def __init__(self, lam: float = 500.0, exclude_seen: bool = False) -> None:
        self.lam = lam
        self.exclude_seen = exclude_seen

    def fit(self, x: sp.csr_matrix) -> EASE:
        self.x_ = x.tocsr()
        binary = _positive(self.x_)
        binary.data[:] = 1.0
        if binary.shape[1] > EASE_MAX_ITEMS:
            raise ValueError(f"EASE on {binary.shape[1]:,} items would not fit in memory "
                             f"(more than {EASE_MAX_ITEMS:,}): use ItemKNN")
        gram = (binary.T @ binary).toarray()
        gram[np.diag_indices_from(gram)] += self.lam
        p = np.linalg.inv(gram)
        self.b_ = -p / np.diag(p)
        self.b_[np.diag_indices_from(self.b_)] = 0.0
        self.binary_ = binary
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self._finish(users, np.asarray(self.binary_[users] @ self.b_))


class ItemKNN(_Source):
    """Item-based neighbourhood: cosine similarity between items' columns of the wanted pairs (shrunk
    by `shrink`), each item keeping its `neighbors` most similar; a user's score for an item is the
    sum of its similarity to the items they want, weighted by their evidence. Sparse throughout, so it
    scales to catalogs EASE cannot hold."""

    def __init__(self, neighbors: int = 100, shrink: float = 10.0, exclude_seen: bool = False) -> None:
        self.neighbors = neighbors
        self.shrink = shrink
        self.exclude_seen = exclude_seen

    def fit(self, x: sp.csr_matrix) -> ItemKNN:
        self.x_ = x.tocsr()
        binary = _positive(self.x_)
        binary.data[:] = 1.0
        columns = binary.T.tocsr()
        norms = np.sqrt(np.asarray(columns.multiply(columns).sum(axis=1)).ravel())
        co = (columns @ binary).tocsr().astype(np.float64)  # item x item co-occurrence
        co.setdiag(0.0)
        co.eliminate_zeros()
        rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
        co.data = co.data / (norms[rows] * norms[co.indices] + self.shrink + 1e-12)
        self.similarity_ = _keep_top(co, self.neighbors).T.tocsr()  # column j: item j's neighbours
        self.positive_ = _positive(self.x_)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self._finish(users, np.asarray((self.positive_[users] @ self.similarity_).todense()))


def _keep_top(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's k largest entries."""
    indptr, indices, data = [0], [], []
    for r in range(m.shape[0]):
        start, end = m.indptr[r], m.indptr[r + 1]
        row = m.data[start:end]
        keep = np.argpartition(-row, k - 1)[:k] if len(row) > k else np.arange(len(row))
        indices.append(m.indices[start:end][keep])
        data.append(row[keep])
        indptr.append(indptr[-1] + len(keep))
    return sp.csr_matrix((np.concatenate(data) if data else [], np.concatenate(indices) if indices else [],
                          indptr), shape=m.shape)


class OwnHistory(_Source):
    """The user's own wanted items, by their evidence: with the feedback layer's decay, frequency and
    recency in one number (a recently and often bought item first). `exclude_seen` makes no sense for
    it and is refused."""

    def __init__(self) -> None:
        self.exclude_seen = False

    def fit(self, x: sp.csr_matrix) -> OwnHistory:
        self.x_ = x.tocsr()
        self.positive_ = _positive(self.x_)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.positive_[users].toarray()


class Popularity(_Source):
    """Items by how many users want them: overall, among the users of each segment (`groups`, one
    label per row of X), or trending (`recent`: a 0/1 matrix of pairs seen in the recent window)."""

    def __init__(self, exclude_seen: bool = False) -> None:
        self.exclude_seen = exclude_seen

    def fit(self, x: sp.csr_matrix, groups: np.ndarray | None = None, recent: sp.csr_matrix | None = None
            ) -> Popularity:
        self.x_ = x.tocsr()
        wanted = (self.x_ > 0).astype(np.float64)
        basis = wanted if recent is None else wanted.multiply(recent > 0).tocsr()
        self.popularity_ = np.asarray(basis.sum(axis=0)).ravel()
        self.groups_ = groups
        if groups is not None:
            labels, codes = np.unique(groups, return_inverse=True)
            indicator = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                                      shape=(len(labels), len(codes)))
            self.labels_ = labels
            self.codes_ = codes
            self.by_group_ = np.asarray((indicator @ basis).todense())
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.groups_ is None:
            scores = np.tile(self.popularity_, (len(users), 1))
        else:
            # a tie-break by overall popularity keeps a small segment's ranking complete
            scores = self.by_group_[self.codes_[users]] + self.popularity_ / (self.popularity_.max() + 1.0)
        return self._finish(users, scores.astype(np.float64))
