"""Which of the model's rankings serves a page: Thompson sampling over their click rates here (ADR 0021).

Training chooses a ranking on past data (validation inside the job); whether it earns clicks in this
deployment, for these users now, is learned while they use it. A model can rank by its chosen ranking
or by any personalized single source it holds (`Ranker.rankers`). Every page is made by one of them and
the response names it (`ranker`); clients send the name back on the page's events (context.ranker,
schema 1.3), and the cleaner counts each ranker's examinations, clicks and purchases in the item
counters under `ranker_key(name)` (ADR 0018: decayed with a one-day half-life, so the choice follows
change), the same counts an item gets.

Per page, each ranker's click rate is a Beta posterior: its clicks and examinations here, after PRIOR
examinations at the rankers' pooled rate for the model's own choice (before any evidence here, it is
what validation preferred) and at half of it for the others; the ranker whose draw is highest serves
(Thompson sampling: each serves as often as it is likely the best, so exploration fades as the evidence
grows). The probability that each ranker serves is computed from DRAWS draws of a generator with a fixed
seed (a ranker less likely than one in DRAWS to be the best does not serve), and the choice is drawn
from those probabilities by the request id's generator: one request id always gets the same ranker, and
the choice's propensity is that of the policy that ran. The item propensities serving returns are then
the ranker's probability times the item's within that ranker's slate (a lower bound of the probability
of the item at that slot; exact where no other ranker would put it there).

Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from feedbackloop.exploration import request_seed
from feedbackloop.item_counters import ItemCounts, ranker_key

PRIOR = 20.0  # the examinations every ranker's click rate starts from
OTHERS_PRIOR_SHARE = 0.5  # the share of the pooled rate the other rankers start from (the model's choice: all)
DRAWS = 2000  # Monte Carlo draws behind each ranker's probability of serving


def probabilities(rankers: Sequence[str], counts: Mapping[str, ItemCounts]) -> np.ndarray:
    """Per ranker (the model's choice first), the probability that Thompson sampling picks it now."""
    examinations = np.array([counts[ranker_key(r)].examinations if ranker_key(r) in counts else 0.0
                             for r in rankers])
    clicks = np.array([counts[ranker_key(r)].clicks if ranker_key(r) in counts else 0.0 for r in rankers])
    total = examinations.sum()
    pooled = float(np.clip(clicks.sum() / total, 1e-3, 0.5)) if total > 0 else 0.05
    rate = np.full(len(rankers), pooled * OTHERS_PRIOR_SHARE)
    rate[0] = pooled  # the model's own choice: what validation preferred, until the evidence says otherwise
    alpha = clicks + PRIOR * rate
    beta = np.maximum(examinations - clicks, 0.0) + PRIOR * (1.0 - rate)
    draws = np.random.default_rng(0).beta(alpha, beta, size=(DRAWS, len(rankers)))
    return np.bincount(np.argmax(draws, axis=1), minlength=len(rankers)) / DRAWS


def choose(rankers: Sequence[str], counts: Mapping[str, ItemCounts], request_id: str) -> tuple[str, float]:
    """The ranker that makes this request's page, and the probability the policy picked it."""
    if len(rankers) == 1:
        return rankers[0], 1.0
    p = probabilities(rankers, counts)
    j = int(np.searchsorted(np.cumsum(p), np.random.default_rng(request_seed(f"ranker|{request_id}")).random()
                            * p.sum(), side="right"))
    j = min(j, len(rankers) - 1)
    while p[j] == 0:  # (the uniform landed on a boundary; step to a ranker that can be picked)
        j = (j + 1) % len(rankers)
    return rankers[j], float(p[j])
