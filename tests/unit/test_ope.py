"""Off-policy evaluation: the Open Bandit Pipeline's IPS, SNIPS and DR on hand-computed rounds, and on a
synthetic log whose target value is known, within their bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedbackloop.models import ope
from feedbackloop.models.contract import off_policy_refusal
from feedbackloop.ranking import UserSignals
from feedbackloop.serving import ServingModel

pytestmark = pytest.mark.unit


def test_the_formulas_on_three_rounds():
    log = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "a"], "position": [0, 1, 0],
                        "propensity": [0.5, 0.25, 0.8], "clicked": [1, 0, 1]})
    target = {"u": ["a", "c"], "v": ["b"]}.get
    q = ope.RewardModel(np.array([0.5, 0.2]), {"a": 1.0, "b": 1.0, "c": 0.5}, 0.5)
    terms = ope.round_rewards(log, ope.target_items(log, target), q)
    # w: a matches at 0 (1/0.5), position 1 has c (no match), v's position 0 has b (no match)
    assert terms["w"].tolist() == [2.0, 0.0, 0.0]
    assert ope._point("ips", terms) == pytest.approx(2.0 / 3)
    assert ope._point("snips", terms) == pytest.approx(1.0)
    # DR: q(target) + w (r - q(logged)): 0.5 + 2 (1 - 0.5); 0.2 * 0.5 + 0; 0.5 + 0
    assert ope._point("dr", terms) == pytest.approx((1.5 + 0.1 + 0.5) / 3)


def _world(n_users: int, seed: int):
    """20 items, users of two types, position-based clicks; the logging policy draws each slot's item from
    a softmax over a noisy score (independently per slot), so every item has a known propensity."""
    rng = np.random.default_rng(seed)
    items = [f"i{j}" for j in range(20)]
    appeal = np.stack([np.linspace(0.6, 0.02, 20), np.linspace(0.02, 0.6, 20)])  # type x item
    examination = np.array([1.0, 0.6, 0.4])
    types = rng.integers(0, 2, n_users)
    logits = np.tile(np.linspace(1.0, 0.0, 20), (2, 1))
    policy = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rows = []
    for u in range(n_users):
        for k in range(3):
            j = rng.choice(20, p=policy[types[u]])
            clicked = int(rng.random() < examination[k] * appeal[types[u], j])
            rows.append((f"u{u}", items[j], k, policy[types[u], j], clicked))
    log = pd.DataFrame(rows, columns=list(ope.EXPOSURE_COLUMNS))

    def truth(ranking: dict[int, list[int]]) -> float:
        """Expected click rate per slot of a ranking by user type, over the logged users and positions."""
        return float(np.mean([examination[k] * appeal[types[u], ranking[types[u]][k]]
                              for u in range(n_users) for k in range(3)]))

    def as_ranking(ranking: dict[int, list[int]]):
        return lambda user: [items[j] for j in ranking[types[int(user[1:])]]]

    return log, truth, as_ranking


def test_the_estimates_find_a_known_value_and_their_intervals_cover_it():
    log, truth, as_ranking = _world(6000, seed=1)
    best = {0: [0, 1, 2], 1: [19, 18, 17]}
    worst = {0: [19, 18, 17], 1: [0, 1, 2]}
    for ranking in (best, worst):
        result = ope.estimate(log, as_ranking(ranking), seed=2)
        for name in ope.ESTIMATORS:
            e = result.estimates[name]
            assert e.low <= truth(ranking) <= e.high, (name, e, truth(ranking))
            if ranking is best:  # the log shows the best items often: a tight estimate
                assert e.value == pytest.approx(truth(ranking), rel=0.15)
    compared = ope.compare(log, as_ranking(worst), as_ranking(best))
    assert compared["candidate"]["dr"]["value"] < compared["current"]["dr"]["value"]
    assert "off-policy DR" in off_policy_refusal(compared, margin=0.05)
    assert off_policy_refusal(ope.compare(log, as_ranking(best), as_ranking(worst)), margin=0.05) is None
    assert "candidate" in ope.render(compared)


def test_doubly_robust_stays_unbiased_with_a_wrong_reward_model():
    log, truth, as_ranking = _world(6000, seed=3)
    ranking = {0: [0, 1, 2], 1: [19, 18, 17]}
    wrong = ope.RewardModel(np.array([0.9, 0.9, 0.9]), {}, 0.9)  # far off everywhere
    dr = ope.estimate(log, as_ranking(ranking), q=wrong, seed=4).estimates["dr"]
    assert dr.low <= truth(ranking) <= dr.high


def test_rows_without_a_propensity_are_left_out_and_bad_logs_are_refused():
    log = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "position": [0, 1],
                        "propensity": [0.5, None], "clicked": [1, 0]})
    usable, without = ope.usable_exposures(log)
    assert len(usable) == 1 and without == 1
    with pytest.raises(ope.ExposureLogError, match="propensities"):
        ope.usable_exposures(log.assign(propensity=[0.0, 0.5]))
    with pytest.raises(ope.ExposureLogError, match="lacks the columns"):
        ope.usable_exposures(log.drop(columns="clicked"))
    assert ope.compare(log.assign(propensity=None), lambda u: ["a"], lambda u: ["b"])["rounds"] == 0
    assert off_policy_refusal({"rounds": 0}, 0.05) is None


def _serving_model(version: str, factors: np.ndarray) -> ServingModel:
    n = len(factors)
    arrays = {"item_ids": np.array([f"i{j}" for j in range(n)]), "item_factors": factors.astype(np.float32),
              "popularity": np.arange(n, 0, -1, dtype=np.float64), "user_ids": np.array([], dtype=str),
              "user_factors": np.zeros((0, factors.shape[1]), dtype=np.float32)}
    return ServingModel(arrays, {"version": version, "params": {"alpha": 10.0, "regularization": 0.01,
                                                                "history_weight": 1.0}})


def test_the_gate_refuses_a_candidate_whose_off_policy_estimate_is_worse_by_the_margin():
    from feedbackloop.models.training import off_policy_estimates, served_ranking
    from feedbackloop.retraining import decide

    # two item groups; every user liked i0 (group A). The good model knows the groups, the bad one has
    # them crossed; clicks in the log go to group A items.
    groups = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    crossed = np.array([[1.0, 0.0]] + [[0.0, 1.0]] * 4 + [[1.0, 0.0]] * 5)  # i0 grouped with i5-i9
    good, bad = _serving_model("good", groups), _serving_model("bad", crossed)
    liked_i0 = {f"u{n}": UserSignals(np.array([0]), np.array([1.0]), np.array([1.0]), np.array([1.0]),
                                     np.array([False])) for n in range(50)}

    def ranking(model: ServingModel):
        return served_ranking(model.ranker, model.item_ids, liked_i0)

    assert ranking(good)("u1")[:5] == ["i0", "i1", "i2", "i3", "i4"]
    assert ranking(good)("stranger") == [f"i{j}" for j in range(10)]  # popularity
    rng = np.random.default_rng(0)
    rows = []
    for n in range(50):
        for k in range(5):
            item = int(rng.integers(0, 10))  # uniform logging: propensity 1/10 per slot
            rows.append((f"u{n}", f"i{item}", k, 0.1, int(item < 5 and rng.random() < 0.5)))
    log = pd.DataFrame(rows, columns=list(ope.EXPOSURE_COLUMNS))
    off_policy = off_policy_estimates(log, ranking(bad), ranking(good))
    assert off_policy["candidate"]["dr"]["value"] < off_policy["current"]["dr"]["value"]
    holdout = {"ranking": {"model": {"ndcg_at_10": 0.5}}, "off_policy": off_policy}
    refused = decide(holdout, {"gate_value": 0.1}, margin=0.05)
    assert not refused.publish and "off-policy DR" in refused.reason
    accepted = decide(holdout | {"off_policy": off_policy_estimates(log, ranking(good), ranking(bad))},
                      {"gate_value": 0.1}, 0.05)
    assert accepted.publish and "off-policy DR" in accepted.reason


def test_the_published_models_estimates_are_read_from_its_registry_record():
    off_policy = {"rounds": 3, "estimator": "dr"}
    assert ope.from_registry_record({"version": "v1", "metrics": '{"off_policy": {"rounds": 3, "estimator": "dr"}}'}) \
        == off_policy
    assert ope.from_registry_record({"version": "v1", "metrics": "{}"}) is None
    assert ope.from_registry_record(None) is None


def test_the_exposure_log_is_read_from_curated_events():
    t = pd.Timestamp("2026-11-20T09:00:00Z")
    events = pd.DataFrame({
        "user_id": ["u"] * 4 + ["v"] * 2, "session_id": ["s1"] * 4 + ["s2"] * 2,
        "item_id": ["b", "a", "a", "c", "a", "d"], "event_type": ["view", "view", "click", "view", "view", "view"],
        "event_time": [t + pd.Timedelta(seconds=s) for s in (1, 0, 0.5, 2, 0, 1)],
        "propensity": [0.5, 0.9, None, 0.2, None, 1.0]})
    log = ope.exposures_from_events(events)
    assert log["propensity"].isna().tolist() == [False, False, False, True, False]
    assert log.fillna({"propensity": -1}).to_dict("records") == [
        {"user_id": "u", "item_id": "a", "position": 0, "propensity": 0.9, "clicked": 1},
        {"user_id": "u", "item_id": "b", "position": 1, "propensity": 0.5, "clicked": 0},
        {"user_id": "u", "item_id": "c", "position": 2, "propensity": 0.2, "clicked": 0},
        {"user_id": "v", "item_id": "a", "position": 0, "propensity": -1, "clicked": 0},
        {"user_id": "v", "item_id": "d", "position": 1, "propensity": 1.0, "clicked": 0}]
    assert ope.usable_exposures(log)[1] == 1
