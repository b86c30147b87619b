"""Top-k ranking metrics on a temporal hold-out, the same for every model and baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feedbackloop.models.contract import K


def ranking_metrics(recommended: np.ndarray, relevant: Sequence[set[int]], n_items: int,
                    k: int = K) -> dict[str, float]:
    """`recommended`: item indices, one row per user, best first; `relevant`: each user's held-out
    items. Precision, recall, NDCG and MAP at k (averaged over users), and catalog coverage."""
    top = recommended[:, :k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg, average_precision = [], [], [], []
    for row, wanted in zip(top, relevant, strict=True):
        hits = np.fromiter((i in wanted for i in row), dtype=bool, count=len(row))
        n_hits = hits.sum()
        precision.append(n_hits / k)
        recall.append(n_hits / len(wanted))
        ideal = discount[:min(len(wanted), k)].sum()
        ndcg.append(float((hits * discount[:len(row)]).sum() / ideal))
        cumulative = np.cumsum(hits) / np.arange(1, len(row) + 1)
        average_precision.append(float((cumulative * hits).sum() / min(len(wanted), k)))
    return {
        f"precision_at_{k}": float(np.mean(precision)),
        f"recall_at_{k}": float(np.mean(recall)),
        f"ndcg_at_{k}": float(np.mean(ndcg)),
        f"map_at_{k}": float(np.mean(average_precision)),
        "coverage": float(len(np.unique(top)) / n_items),
        "users": len(relevant),
    }


def ndcg_by_user(recommended: np.ndarray, relevant: Sequence[set[int]], k: int = K) -> np.ndarray:
    """Each user's NDCG@k (`ranking_metrics` averages them): to compare two rankings user by user."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.empty(len(relevant))
    for j, (row, wanted) in enumerate(zip(recommended[:, :k], relevant, strict=True)):
        hits = np.fromiter((i in wanted for i in row), dtype=bool, count=len(row))
        out[j] = (hits * discount[:len(row)]).sum() / discount[:min(len(wanted), k)].sum()
    return out


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))
