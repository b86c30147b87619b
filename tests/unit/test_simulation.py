"""The simulated population: seeded, responds to what it is shown through its hidden preferences, its
events pass the event schema, and a preference shift changes what it likes."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from feedbackloop.datasets import online_retail
from feedbackloop.schemas.registry import check_event_type_rules, validate_event
from feedbackloop.simulation import TASTES, Catalog, Population, session

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_online_retail(online_retail.load())


def test_the_population_is_seeded_and_has_favourite_categories():
    a, b = Population.create(50, seed=1), Population.create(50, seed=1)
    assert np.array_equal(a.preferences, b.preferences)
    assert np.allclose(a.preferences.sum(axis=1), 1)
    assert (a.preferences.max(axis=1) > 2 / TASTES).mean() > 0.9  # concentrated, not uniform


def test_users_click_what_they_prefer_and_the_oracle_knows_it(catalog):
    population = Population.create(200, seed=2)
    rng = np.random.default_rng(3)
    liked, disliked = [], []
    for user in range(200):
        affinity = population.affinity(user, catalog.tastes)
        best = [str(i) for i in catalog.item_ids[np.argsort(-affinity, kind="stable")[:10]]]
        worst = [str(i) for i in catalog.item_ids[np.argsort(affinity, kind="stable")[:10]]]
        liked.append(session(population, catalog, user, best, AT, {}, rng).clicks)
        disliked.append(session(population, catalog, user, worst, AT, {}, rng).clicks)
        assert population.oracle_ctr(user, catalog, 10) == pytest.approx(
            population.click_probability(user, catalog.tastes[catalog.positions(best)]).mean())
    assert np.mean(liked) / 10 > 0.25 > 0.03 > np.mean(disliked) / 10


def test_session_events_pass_the_schema_and_carry_the_arm(catalog):
    population = Population.create(10, seed=4)
    shown = [str(i) for i in catalog.item_ids[:10]] + ["not-in-catalog"]
    result = session(population, catalog, 3, shown, AT, {"experiment": "ranking", "variant": "popularity",
                                                         "segment": "2"}, np.random.default_rng(5))
    for event in result.events:
        assert validate_event(event) is None and check_event_type_rules(event) is None
        assert event["context"]["variant"] == "popularity" and event["user_id"] == population.user_ids[3]
    kinds = [e["event_type"] for e in result.events]
    assert kinds.count("view") == 11 == result.shown and kinds.count("click") == result.clicks
    assert len({e["event_id"] for e in result.events}) == len(result.events)


def test_taste_groups_come_from_what_real_customers_buy_together(catalog):
    grouped = catalog.tastes >= 0
    assert catalog.groups == TASTES and 1000 < grouped.sum() < len(catalog.item_ids)
    sizes = np.bincount(catalog.tastes[grouped])
    assert sizes.min() >= 10  # no degenerate groups


def test_a_shift_changes_every_users_favourite(catalog):
    population = Population.create(100, seed=6)
    before = population.preferences.argmax(axis=1)
    population.shift(seed=7)
    assert (population.preferences.argmax(axis=1) != before).all()
