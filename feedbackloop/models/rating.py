"""A rating model with user and item biases, for when explicit ratings exist: r = mu + b_u + b_i,
fitted by alternating regularized least squares (Koren 2008's baseline predictor)."""

from __future__ import annotations

import numpy as np
import pandas as pd


class BiasedRatingModel:
    def __init__(self, user_regularization: float = 5.0, item_regularization: float = 5.0,
                 iterations: int = 10) -> None:
        self.user_regularization = user_regularization
        self.item_regularization = item_regularization
        self.iterations = iterations

    def fit(self, ratings: pd.DataFrame) -> BiasedRatingModel:
        """`ratings`: user_id, item_id, rating."""
        users, u = np.unique(ratings["user_id"].to_numpy(), return_inverse=True)
        items, i = np.unique(ratings["item_id"].to_numpy(), return_inverse=True)
        r = ratings["rating"].to_numpy(dtype=np.float64)
        self.global_mean_ = float(r.mean())
        user_bias, item_bias = np.zeros(len(users)), np.zeros(len(items))
        for _ in range(self.iterations):
            residual = r - self.global_mean_ - user_bias[u]
            item_bias = np.bincount(i, residual, len(items)) / (np.bincount(i, minlength=len(items))
                                                               + self.item_regularization)
            residual = r - self.global_mean_ - item_bias[i]
            user_bias = np.bincount(u, residual, len(users)) / (np.bincount(u, minlength=len(users))
                                                               + self.user_regularization)
        self.user_ids_, self.item_ids_ = users, items
        self.user_bias_, self.item_bias_ = user_bias, item_bias
        return self

    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        users = pd.Index(self.user_ids_).get_indexer(user_ids)
        items = pd.Index(self.item_ids_).get_indexer(item_ids)
        return (self.global_mean_ + np.where(users >= 0, self.user_bias_[users], 0.0)
                + np.where(items >= 0, self.item_bias_[items], 0.0))
