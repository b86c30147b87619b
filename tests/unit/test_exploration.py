"""The exploration policy (ADR 0017): deterministic per request, exact propensities, within its budget."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from feedbackloop.exploration import GREEDY, ExplorationPolicy, explore, explored_item_probability, policy_for
from feedbackloop.uiconfig import InvalidConfigError, config_for, default_document, validate

pytestmark = pytest.mark.unit

CANDIDATES = [f"i{j}" for j in range(40)]


def test_the_same_request_id_gets_the_same_slate_and_another_may_not():
    policy = ExplorationPolicy(0.3, 20)
    first = explore(CANDIDATES, 10, policy, "req-1")
    assert explore(CANDIDATES, 10, policy, "req-1") == first
    slates = {tuple(item for item, _ in explore(CANDIDATES, 10, policy, f"req-{n}")) for n in range(50)}
    assert len(slates) > 10
    assert len({item for item, _ in first}) == 10  # no item twice


def test_no_budget_or_no_pool_shows_the_greedy_slate_with_propensity_one():
    greedy = [(c, 1.0) for c in CANDIDATES[:10]]
    assert explore(CANDIDATES, 10, GREEDY, "req-1") == greedy
    assert explore(CANDIDATES[:10], 10, ExplorationPolicy(0.5, 20), "req-1") == greedy
    assert explore(CANDIDATES[:4], 10, ExplorationPolicy(0.5, 20), "req-1") == greedy[:4]


@pytest.mark.parametrize(("k", "m", "budget"), [(10, 20, 0.1), (10, 3, 0.4), (5, 1, 0.5), (1, 5, 0.2)])
def test_each_slots_propensities_sum_to_one_and_match_the_policys_frequencies(k, m, budget):
    p_pool = explored_item_probability(k, m, budget)
    p_greedy = 1 - m * p_pool
    assert 0 < p_pool <= budget / m + 1e-12 and p_greedy >= 1 - budget - 1e-12
    policy = ExplorationPolicy(budget, m)
    draws = 6_000
    counts: Counter = Counter()
    for n in range(draws):
        for slot, (item, propensity) in enumerate(explore(CANDIDATES, k, policy, f"r{n}")):
            counts[slot, item] += 1
            expected = p_greedy if item == CANDIDATES[slot] else p_pool
            assert propensity == pytest.approx(expected)
    for slot in range(k):
        shown = {item: counts[slot, item] / draws for s, item in counts if s == slot}
        assert sum(shown.values()) == pytest.approx(1)
        assert shown[CANDIDATES[slot]] == pytest.approx(p_greedy, abs=4 * np.sqrt(p_greedy * (1 - p_greedy) / draws))
        for item in CANDIDATES[k:k + m]:  # every pool item at every slot, as often as its propensity says
            assert shown.get(item, 0) == pytest.approx(p_pool, abs=4 * np.sqrt(p_pool / draws) + 1e-9)


def test_the_share_of_explored_slots_stays_within_the_budget():
    policy = ExplorationPolicy(0.1, 20)
    explored = sum(item not in CANDIDATES[:10] for n in range(3000)
                   for item, _ in explore(CANDIDATES, 10, policy, f"q{n}"))
    share = explored / 30_000
    assert 0.08 < share <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / 30_000)


def test_each_arm_explores_as_the_ui_config_says():
    document = default_document()
    arms = document["experiments"]["ranking"]["exploration"]
    assert policy_for(document, {"ranking": "personalized"}) == ExplorationPolicy.of(arms["personalized"])
    assert policy_for(document, {"ranking": "popularity"}) == GREEDY  # the control does not explore
    assert policy_for(document, {}) == GREEDY
    user = config_for(document, "u1", None)
    assert policy_for(document, user["experiments"]) in (GREEDY, ExplorationPolicy.of(arms["personalized"]))


@pytest.mark.parametrize("exploration", [{"personalized": {"budget": 0.6, "pool": 20}},
                                         {"personalized": {"budget": 0.1, "pool": 0}},
                                         {"personalized": {"budget": 0.1}},
                                         {"nobody": {"budget": 0.1, "pool": 5}}])
def test_a_bad_exploration_setting_is_refused(exploration):
    document = default_document()
    document["experiments"]["ranking"]["exploration"] = exploration
    with pytest.raises(InvalidConfigError):
        validate(document)


def test_a_bad_policy_is_refused():
    with pytest.raises(ValueError, match="exploration needs"):
        ExplorationPolicy(0.9, 5)
