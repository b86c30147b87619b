"""Matrix factorization on the composite feedback, blended with the user's own feedback.

Weighted ALS for implicit feedback (Hu, Koren, Volinsky 2008), solved by the `implicit` library: every
user-item pair of the feedback layer enters with a confidence, its decayed confidence mass (explicit
signals weigh more than implicit ones, recent ones more than old ones), as a positive preference when
its composite score is above 0 and as a negative one otherwise (a cancelled or badly rated item).

A ranking blends the factorization with the user's own decayed positive feedback, each scaled to its
user's maximum: score = mf / max|mf| + history_weight * own / max(own). On repeat-purchase data the
user's own history is the strongest single signal; the factorization adds what similar users liked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from feedbackloop.models.data import Interactions


class FeedbackMF:
    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 2.0, iterations: int = 15,
                 history_weight: float = 1.0, random_state: int = 0) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.history_weight = history_weight
        self.random_state = random_state

    def fit(self, interactions: Interactions) -> FeedbackMF:
        with threadpool_limits(1, "blas"):  # implicit parallelizes over users itself
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                            alpha=self.alpha, iterations=self.iterations,
                                            random_state=self.random_state)
            model.fit(interactions.confidence.astype(np.float32), show_progress=False)
        self.user_ids_ = interactions.user_ids
        self.item_ids_ = interactions.item_ids
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        self.history_ = interactions.liked
        self.popularity_ = np.asarray((self.history_ > 0).sum(axis=0)).ravel().astype(np.float64)
        return self

    def rows_of(self, user_ids) -> np.ndarray:
        """Row index of each user, -1 for users the model has not seen."""
        return pd.Index(self.user_ids_).get_indexer(user_ids)

    def blend(self, mf: np.ndarray, own: np.ndarray) -> np.ndarray:
        """Rows of factorization scores and own-feedback scores -> the ranking score."""
        mf_scale = np.abs(mf).max(axis=1, keepdims=True)
        own_scale = own.max(axis=1, keepdims=True)
        return (mf / np.where(mf_scale > 0, mf_scale, 1.0)
                + self.history_weight * own / np.where(own_scale > 0, own_scale, 1.0))

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Ranking scores of known users (row indices) over all items."""
        mf = self.user_factors_[users] @ self.item_factors_.T
        return self.blend(mf, self.history_[users].toarray())

    def fold_in(self, items: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """A user's vector from their feedback alone, against the fitted item factors: the same
        least-squares step ALS takes for a user (what serving does with a user's latest feedback)."""
        y = self.item_factors_.astype(np.float64)
        c = self.alpha * np.asarray(confidence, dtype=np.float64)
        rows = y[items]
        a = y.T @ y + self.regularization * np.eye(y.shape[1]) + rows.T @ ((np.abs(c) - 1)[:, None] * rows)
        b = rows.T @ np.where(c > 0, c, 0.0)
        return np.linalg.solve(a, b)

    def recommend(self, user_id: str, k: int = 10) -> list[tuple[str, float]]:
        """Top k items of a known user; unknown users get the most popular items."""
        (index,) = self.rows_of([user_id])
        scores = self.popularity_ if index < 0 else self.scores(np.array([index]))[0]
        top = top_k(scores[None, :], k)[0]
        return [(str(self.item_ids_[i]), float(scores[i])) for i in top]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores of each row, best first (ties: lower index first)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)

