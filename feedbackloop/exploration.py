"""Exploration with logged propensities: an epsilon policy over the top candidates (ADR 0017).

The ranking's top k are the greedy slate; the next `pool` candidates are the exploration pool. Each slot
is explored independently with probability `budget`; the explored slots, in a random order, take
distinct pool items drawn uniformly, and any explored slot left over once the pool is used up keeps its
greedy item. Every draw comes from a generator seeded by the request id, so one request id always gets
the same slate (a retried or audited request is reproducible), and each shown item's propensity, the
probability that the policy shows that item at that slot, is exact and closed-form:

    P(slot shows a given pool item)   = budget * E[min(N, m) / N] / m,  N = 1 + Binomial(k - 1, budget)
    P(slot shows its greedy item)     = 1 - m * P(slot shows a given pool item)

(m pool items; per slot the probabilities sum to 1). Clients send the propensity back on the exposure
event (schema 1.2) so the logs support inverse-propensity estimates of other policies. The share of
slots explored is at most `budget`.

Pure numpy, no I/O: serving calls `explore` once, on its final candidate list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb
from typing import Any, TypeVar

import numpy as np

Candidate = TypeVar("Candidate")
MAX_BUDGET = 0.5  # the config schema's bound: at most half the slots of an arm explore


@dataclass(frozen=True)
class ExplorationPolicy:
    budget: float  # the probability that a slot is explored: the share of slots an arm spends exploring
    pool: int  # how many candidates below the top k may be shown instead

    def __post_init__(self) -> None:
        if not 0 <= self.budget <= MAX_BUDGET or self.pool < 0:
            raise ValueError(f"exploration needs 0 <= budget <= {MAX_BUDGET} and pool >= 0: {self}")

    @classmethod
    def of(cls, setting: Mapping[str, Any]) -> ExplorationPolicy:
        return cls(float(setting["budget"]), int(setting["pool"]))


GREEDY = ExplorationPolicy(0.0, 0)


def explored_item_probability(k: int, m: int, budget: float) -> float:
    """The probability that one slot of a k-slot slate shows one given item of an m-item pool."""
    if k == 0 or m == 0 or budget == 0:
        return 0.0
    # E[min(N, m) / N] over the other slots' explorations (N counts this slot too)
    share = sum(comb(k - 1, j) * budget**j * (1 - budget) ** (k - 1 - j) * min(j + 1, m) / (j + 1)
                for j in range(k))
    return budget * share / m


def request_seed(text: str) -> int:
    """A generator seed from a request id (or a text derived from it): one id, one draw, on any machine."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def explore(candidates: Sequence[Candidate], k: int, policy: ExplorationPolicy,
            request_id: str) -> list[tuple[Candidate, float]]:
    """The slate shown for a candidate list ranked best first: up to k (candidate, propensity) pairs."""
    greedy = list(candidates[:k])
    pool = list(candidates[len(greedy):len(greedy) + policy.pool])
    if not greedy or not pool or policy.budget == 0:
        return [(c, 1.0) for c in greedy]
    rng = np.random.default_rng(request_seed(request_id))
    explored = np.flatnonzero(rng.random(len(greedy)) < policy.budget)
    explored = rng.permutation(explored)[:len(pool)]
    replacements = rng.choice(len(pool), size=len(explored), replace=False)
    slate = list(greedy)
    for slot, choice in zip(explored.tolist(), replacements.tolist(), strict=True):
        slate[slot] = pool[choice]
    p_pool = explored_item_probability(len(greedy), len(pool), policy.budget)
    p_greedy = 1 - len(pool) * p_pool
    chosen = set(explored.tolist())
    return [(c, p_pool if slot in chosen else p_greedy) for slot, c in enumerate(slate)]


def policy_for(document: Mapping[str, Any], assignments: Mapping[str, str]) -> ExplorationPolicy:
    """The exploration of a user's arms (`assignments`: experiment -> variant) under the UI config
    document: the first experiment, by name, whose arm of the user explores; else greedy."""
    for name in sorted(assignments):
        setting = document.get("experiments", {}).get(name, {}).get("exploration", {}).get(assignments[name])
        if setting is not None:
            return ExplorationPolicy.of(setting)
    return GREEDY
