"""From the feedback layer to model inputs.

`feedback_as_of` is `glue_jobs/sql/user_feedback.sql` in pandas: training needs the composite score as of
any cut-off (a temporal hold-out cuts in the past), while the table holds one snapshot a day. A unit test
holds the two to the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feedbackloop.models.contract import HALF_LIFE_DAYS

_SUMS = ["events", "explicit_events", "implicit_events", "views", "clicks", "purchases", "cancels", "ratings",
         "rating_sum"]


def feedback_as_of(daily: pd.DataFrame, as_of_date: str,
                   half_life_days: float | None = HALF_LIFE_DAYS) -> pd.DataFrame:
    """Per user and item, the composite score as of the end of `as_of_date` from `feedback_daily` rows:
    the decayed confidence-weighted mean of feedback scores, capped at 0 when the latest signal is
    negative (ADR 0006). `half_life_days=None` is the half-life "none": whole days do not decay (the
    table's sums keep their decay to the end of their own day, hours at most)."""
    if half_life_days is not None and not half_life_days > 0:
        raise ValueError(f"half_life_days must be a positive number of days or None (no decay), not {half_life_days!r}")
    rows = daily[daily["event_date"] <= as_of_date]
    days = (pd.Timestamp(as_of_date) - pd.to_datetime(rows["event_date"])).dt.days.to_numpy()
    decay = np.ones(len(days)) if half_life_days is None else np.exp(-np.log(2) / half_life_days * days)
    frame = rows.assign(score_mass=rows["decayed_score_sum"] * decay,
                        confidence_mass=rows["decayed_weight_sum"] * decay)
    grouped = frame.groupby(["user_id", "item_id"], sort=True)
    pairs = grouped[_SUMS + ["score_mass", "confidence_mass"]].sum()
    pairs["category"] = grouped["category"].max()
    pairs["last_positive_at"] = grouped["last_positive_at"].max()
    pairs["last_negative_at"] = grouped["last_negative_at"].max()
    pairs["last_seen_at"] = grouped["last_seen_at"].max()
    # an exposure the user plausibly never examined has confidence 0 (ADR 0016): a pair with nothing else
    # is an impression, not feedback
    pairs = pairs[pairs["confidence_mass"] > 0].reset_index()
    mean = pairs["score_mass"] / pairs["confidence_mass"]
    negative_last = pairs["last_negative_at"].notna() & (
        pairs["last_positive_at"].isna() | (pairs["last_negative_at"] >= pairs["last_positive_at"]))
    pairs["composite_score"] = np.where(negative_last, np.minimum(mean, 0.0), mean)
    pairs["negative_last"] = negative_last
    pairs["feedback_type"] = np.where(pairs["explicit_events"] > 0, "explicit", "implicit")
    pairs["rating_mean"] = pairs["rating_sum"] / pairs["ratings"].where(pairs["ratings"] > 0)
    return pairs


@dataclass(frozen=True)
class Interactions:
    """Users and items by index, and a sparse user x item matrix of signed confidence: the pair's decayed
    confidence mass, positive for pairs the user engaged with, negative for unwanted ones.

    The confidence is the `c` of Hu, Koren and Volinsky: a model weighs an observed pair 1 + alpha * c,
    above the weight 1 of an unobserved pair however old (small) `c` is. The sign is the preference: a
    pair is negative when its composite score is below 0, when it is 0 because its latest signal is
    negative (the cap of ADR 0006: a purchase then a cancel), or when it holds nothing but exposures
    (views: shown, never engaged with). A composite score of exactly 0 otherwise is engagement at a
    scale's neutral point (a 3 of 5): positive evidence. `negative_last`, `events` and `views` (from
    `feedback_as_of`) are read when present; without them only the score's sign counts."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    confidence: sp.csr_matrix

    @classmethod
    def from_pairs(cls, pairs: pd.DataFrame, item_ids: np.ndarray | None = None) -> Interactions:
        users = pd.Index(np.unique(pairs["user_id"].to_numpy()))
        items = pd.Index(item_ids if item_ids is not None else np.unique(pairs["item_id"].to_numpy()))
        keep = items.get_indexer(pairs["item_id"]) >= 0
        pairs = pairs[keep]
        sign = np.where(unwanted(pairs), -1.0, 1.0)
        values = sign * pairs["confidence_mass"].to_numpy()
        matrix = sp.csr_matrix((values, (users.get_indexer(pairs["user_id"]), items.get_indexer(pairs["item_id"]))),
                               shape=(len(users), len(items)), dtype=np.float64)
        matrix.sum_duplicates()
        return cls(users.to_numpy(), items.to_numpy(), matrix)

    @property
    def liked(self) -> sp.csr_matrix:
        """The positive part: how much evidence each wanted pair has."""
        return self.confidence.maximum(0).tocsr()


def unwanted(pairs: pd.DataFrame) -> np.ndarray:
    """Per pair, whether it is negative evidence (see `Interactions`)."""
    score = pairs["composite_score"].to_numpy(dtype=float)
    negative = score < 0
    if "negative_last" in pairs:  # capped at 0 by a later negative signal
        negative |= pairs["negative_last"].to_numpy(dtype=bool)
    if "views" in pairs and "events" in pairs:  # exposures only
        negative |= (score == 0) & (pairs["events"].to_numpy() == pairs["views"].to_numpy())
    return negative
