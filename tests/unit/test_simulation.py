"""The simulated world: seeded; tastes over the real catalogue's categories and price levels; position
bias, fatigue and rebuy; three activity levels; new items arriving; a greedy oracle; events that pass the
event schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from feedbackloop.datasets import online_retail
from feedbackloop.schemas.registry import check_event_type_rules, validate_event
from feedbackloop.simulation import ACTIVITY, CATEGORIES, PRICE_LEVELS, Behaviour, Catalog, World

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_online_retail(online_retail.load())


def test_the_catalogue_is_the_real_one_with_categories_price_levels_and_new_items(catalog):
    assert 2000 < len(catalog.item_ids) < 4000
    assert set(np.unique(catalog.categories)) == set(range(len(CATEGORIES)))
    assert np.bincount(catalog.price_levels).min() > len(catalog.item_ids) / 5  # tertiles
    assert catalog.appeal.min() >= 0.3 and catalog.appeal.max() <= 1.0
    assert 0 < catalog.new.sum() < 100


def test_the_world_is_seeded_and_its_tastes_are_mixtures(catalog):
    a, b = World(catalog, 200, seed=1), World(catalog, 200, seed=1)
    assert np.array_equal(a.category_taste, b.category_taste) and np.array_equal(a.activity, b.activity)
    assert np.allclose(a.category_taste.sum(axis=1), 1) and a.price_taste.shape == (200, len(PRICE_LEVELS))
    assert (a.category_taste.max(axis=1) > 2 / len(CATEGORIES)).mean() > 0.9  # a few favourites
    assert set(np.unique(a.activity)) == set(range(len(ACTIVITY)))
    visits = np.bincount(a.activity[a.visitors(20_000, np.random.default_rng(2))], minlength=3) / 20_000
    assert visits[2] > visits[0] / 3  # 10% heavy users make a large part of the visits


def test_users_click_what_they_like_more_at_the_top_and_the_oracle_shows_the_best(catalog):
    world = World(catalog, 300, seed=2)
    rng = np.random.default_rng(3)
    liked, disliked, top, bottom = [], [], 0, 0
    for user in range(300):
        best = [str(i) for i in catalog.item_ids[world.best(user, 10, AT.timestamp())]]
        assert world.oracle_ctr(user, 10, AT.timestamp()) >= world.respond(
            user, best[::-1], AT, {}, np.random.default_rng(user)).expected_ctr - 1e-12
        worst = [str(i) for i in catalog.item_ids[np.argsort(world.affinity(user), kind="stable")[:10]]]
        visit = world.respond(user, best, AT, {}, rng)
        liked.append(visit.clicks)
        top += sum(1 for k in visit.clicked if k < 3)
        bottom += sum(1 for k in visit.clicked if k >= 7)
        disliked.append(world.respond(user, worst, AT, {}, rng).clicks)
    assert np.mean(liked) / 10 > 0.1 > 0.02 > np.mean(disliked) / 10
    assert top > 2 * bottom  # position bias


def test_fatigue_and_rebuy_lower_appeal_and_a_click_restores_it(catalog):
    world = World(catalog, 5, seed=4, behaviour=Behaviour(purchase_rate=1.0))
    item = int(world.best(0, 1, AT.timestamp())[0])
    fresh = world.attractiveness(0, AT.timestamp())[item]
    never = np.random.default_rng(0)
    world.examination = np.zeros_like(world.examination)  # shown, never examined: no click
    for _ in range(3):
        world.respond(0, [str(catalog.item_ids[item])], AT, {}, never)
    assert world.attractiveness(0, AT.timestamp())[item] == pytest.approx(fresh * Behaviour().fatigue ** 3)
    world.examination = np.ones_like(world.examination)
    world.behaviour = Behaviour(base_ctr=1.0, purchase_rate=1.0)  # examined and clicked, then bought
    world.respond(0, [str(catalog.item_ids[item])], AT, {}, never)
    assert world.ignored[0, item] == 0
    assert world.bought_until[0, item] > AT.timestamp()
    later = (AT + timedelta(days=Behaviour().rebuy_days + 1)).timestamp()
    assert world.attractiveness(0, AT.timestamp())[item] < world.attractiveness(0, later)[item] / 10


def test_new_items_arrive_and_a_shift_changes_tastes(catalog):
    world = World(catalog, 100, seed=6)
    new = np.flatnonzero(catalog.new)
    assert (world.attractiveness(0, AT.timestamp())[new] == 0).all()
    world.arrive()
    assert (world.attractiveness(0, AT.timestamp())[new] > 0).all()
    before = world.category_taste.argmax(axis=1)
    world.shift(seed=7)
    assert (world.category_taste.argmax(axis=1) != before).mean() > 0.7


def test_events_pass_the_schema_and_carry_the_arm_and_the_views_propensity(catalog):
    world = World(catalog, 10, seed=4)
    shown = [str(i) for i in catalog.item_ids[:10]] + ["not-in-catalog"]
    views = [{"propensity": 0.5}] * len(shown)
    context = {"experiment": "ranking", "variant": "popularity", "segment": "2"}
    result = world.respond(3, shown, AT, context, np.random.default_rng(5))
    for event in result.events:
        assert validate_event(event) is None and check_event_type_rules(event) is None
        assert event["context"]["variant"] == "popularity" and event["user_id"] == world.user_ids[3]
    kinds = [e["event_type"] for e in result.events]
    assert kinds.count("view") == 11 == result.shown and kinds.count("click") == result.clicks
    assert len({e["event_id"] for e in result.events}) == len(result.events)
    logged = World(catalog, 10, seed=4).respond(3, shown, AT, context, np.random.default_rng(5), views)
    assert all(e["context"]["propensity"] == 0.5 for e in logged.events if e["event_type"] == "view")
