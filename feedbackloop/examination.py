"""Which exposures the user plausibly examined: a position-based examination model (ADR 0016).

An item shown and not clicked says something about the user's taste only if they looked at it. Users
look at the first few positions of a list and less and less below (position bias): under the
position-based model a user examines position p with probability θ(p) = 1 for p <= `depth`, then
(depth / p)^eta (the power law Joachims et al. fit to click logs). An exposure's confidence is its event
type's weight times θ(p); one whose θ(p) is below `floor` is not evidence at all (confidence 0, kept out
of the online profile and the feedback layer's masses; it still counts as an impression). An exposure
without a position (clients of schema 1.1) keeps the meaning it had: examined.

Pure numpy: the cleaner calls it on a batch's columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the cleaner's and training's: serving weighs positions without pyarrow
    import pyarrow as pa


@dataclass(frozen=True)
class ExaminationModel:
    depth: int = 3  # the positions every user looks at
    eta: float = 1.0  # how fast examination decays below them
    floor: float = 0.3  # below this probability an ignored item is no evidence (with the defaults: below 10)

    def __post_init__(self) -> None:
        if self.depth < 1 or self.eta < 0 or not 0 < self.floor <= 1:
            raise ValueError(f"examination model needs depth >= 1, eta >= 0, 0 < floor <= 1: {self}")

    def probability(self, positions: np.ndarray) -> np.ndarray:
        """θ(p) per 1-based position; NaN (no position reported) is taken as examined (1)."""
        positions = np.asarray(positions, dtype=float)
        known = ~np.isnan(positions)
        theta = np.ones(len(positions))
        below = known & (positions > self.depth)
        theta[below] = (self.depth / positions[below]) ** self.eta
        return theta

    def weight(self, positions: np.ndarray) -> np.ndarray:
        """What an exposure at each position counts for, as a share of its event type's weight: θ(p), or 0
        where the user plausibly never looked."""
        theta = self.probability(positions)
        return np.where(theta >= self.floor, theta, 0.0)


EXAMINATION = ExaminationModel()


def preference_rows(rows: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    """The clean rows that are evidence of preference for the online profile: all but exposures the user
    never examined (confidence 0). The lake keeps those; they are impressions, not feedback."""
    evidence = pc.greater(rows["confidence"], 0)
    return rows if pc.all(evidence).as_py() else rows.filter(evidence)
