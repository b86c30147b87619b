"""User segments from the feature layer: K-Means (or Ward's hierarchical clustering) on standardized
features, k chosen by the best silhouette score over a range, and a profile per segment."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

LOG_FEATURES = ("events", "active_days", "sessions", "revenue", "events_per_active_day")
PLAIN_FEATURES = ("recency_days", "cancel_rate", "explicit_share", "ctr", "satisfaction", "mean_item_score",
                  "desktop_share", "mobile_share", "tablet_share", "other_device_share")
SILHOUETTE_SAMPLE = 4000


def feature_matrix(users: pd.DataFrame) -> np.ndarray:
    columns = [np.log1p(users[c].fillna(0).clip(lower=0).to_numpy(dtype=float)) for c in LOG_FEATURES]
    columns += [users[c].fillna(0).to_numpy(dtype=float) for c in PLAIN_FEATURES]
    return np.column_stack(columns)


class UserSegmentation:
    def __init__(self, k_min: int = 2, k_max: int = 8, method: str = "kmeans", random_state: int = 0) -> None:
        self.k_min = k_min
        self.k_max = k_max
        self.method = method
        self.random_state = random_state

    def fit(self, users: pd.DataFrame) -> UserSegmentation:
        """`users`: rows of the user_features table."""
        if self.method not in {"kmeans", "hierarchical"}:
            raise ValueError(f"method must be kmeans or hierarchical, not {self.method!r}")
        self.scaler_ = StandardScaler().fit(feature_matrix(users))
        x = self.scaler_.transform(feature_matrix(users))
        rng = np.random.default_rng(self.random_state)
        sample = rng.choice(len(x), size=min(len(x), SILHOUETTE_SAMPLE), replace=False)
        self.silhouettes_: dict[int, float] = {}
        best = None
        for k in range(self.k_min, min(self.k_max, len(x) - 1) + 1):
            labels = self._cluster(x, k)
            self.silhouettes_[k] = float(silhouette_score(x[sample], labels[sample]))
            if best is None or self.silhouettes_[k] > self.silhouettes_[best[0]]:
                best = (k, labels)
        if best is None:
            raise ValueError(f"need more than {self.k_min} users to segment, got {len(x)}")
        self.k_, labels = best
        # segment ids by size, largest first, so a refit names the same big segment s0
        order = np.argsort(-np.bincount(labels, minlength=self.k_), kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(self.k_)
        self.labels_ = rank[labels]
        self.centers_ = np.vstack([x[self.labels_ == s].mean(axis=0) for s in range(self.k_)])
        self.user_ids_ = users["user_id"].to_numpy()
        self.segments_ = np.array([f"s{s}" for s in self.labels_])
        self.profiles_ = profiles(users.assign(segment_id=self.segments_))
        return self

    def _cluster(self, x: np.ndarray, k: int) -> np.ndarray:
        if self.method == "kmeans":
            return KMeans(n_clusters=k, n_init=4, random_state=self.random_state).fit_predict(x)
        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)

    def predict(self, users: pd.DataFrame) -> np.ndarray:
        """The nearest segment of each user (new users too)."""
        x = self.scaler_.transform(feature_matrix(users))
        distances = ((x[:, None, :] - self.centers_[None, :, :]) ** 2).sum(axis=2)
        return np.array([f"s{s}" for s in distances.argmin(axis=1)])


def profiles(users: pd.DataFrame) -> list[dict]:
    """Size, top categories and engagement of each segment."""
    out = []
    for segment, rows in users.groupby("segment_id", sort=True):
        categories = rows["top_category"].dropna().value_counts()
        out.append({
            "segment": segment,
            "users": len(rows),
            "share": round(len(rows) / len(users), 4),
            "top_categories": categories.index[:3].tolist(),
            "events_median": float(rows["events"].median()),
            "active_days_median": float(rows["active_days"].median()),
            "recency_days_median": float(rows["recency_days"].median()),
            "revenue_median": float(rows["revenue"].median()),
            "cancel_rate_mean": float(rows["cancel_rate"].fillna(0).mean()),
            "ctr_mean": None if rows["ctr"].isna().all() else float(rows["ctr"].mean()),
        })
    return out
