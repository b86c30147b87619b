"""The serving Lambda against moto: a model published to S3 and the registry, profiles the cleaner wrote
to the online store, the routes' validation and the preference switch."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from model_fixtures import publish_model

from feedbackloop.ranker_choice import choose

pytestmark = pytest.mark.functional
RECENT = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _publish(session, items: list[str]) -> None:
    rng = np.random.default_rng(0)
    factors = rng.normal(0, 0.1, (len(items), 4)).astype(np.float32)
    factors[:, 0] += 1
    publish_model(session, items, item_factors=factors)


def _get(handler, api_event, path: str) -> tuple[int, dict]:
    response = handler(api_event("", method="GET", path=path))
    return response["statusCode"], json.loads(response["body"])


def test_no_model_yet_is_a_retryable_503(account, serving_handler, api_event):
    status, body = _get(serving_handler, api_event, "/users/u1/recommendations")
    assert status == 503 and body["error"] == "no_model"


def test_before_the_first_model_popularity_comes_from_the_cleaners_item_counts(
        account, serving_handler, post, cleaner_handler, make_event, api_event):
    """Every recommendations request was 503 until the first nightly model, though the README promised a
    popularity fallback: the cleaner now counts clean events per item in the online store."""
    events = [make_event(event_id=f"c{i}", user_id=f"u{i}", item_id=item, event_type="click", value=1,
                         timestamp=RECENT) for i, item in enumerate(["hot"] * 3 + ["warm"] * 2 + ["cold"])]
    assert post(events)[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    status, body = _get(serving_handler, api_event, "/users/someone/recommendations?k=2")
    assert status == 200, body
    assert (body["strategy"], body["model_version"], body["personalized"]) == ("popularity", None, False)
    assert [(i["item_id"], i["score"]) for i in body["items"]] == [("hot", 3.0), ("warm", 2.0)]
    # a redelivered batch is a duplicate, counted once
    for event in account.kinesis_events():
        cleaner_handler(event)
    assert _get(serving_handler, api_event, "/users/someone/recommendations?k=1")[1]["items"][0]["score"] == 3.0


# a request whose page the published model's own choice makes while no ranking has evidence here (ADR 0021:
# the others may serve a request too); the test model is a legacy one, whose rankings are these
MODELS_CHOICE = next(f"q{n}" for n in range(100) if choose(("blend", "mf", "history"), {}, f"q{n}")[0] == "blend")


def test_recommendations_follow_the_users_feedback_from_the_cleaner(
        account, serving_handler, post, cleaner_handler, make_event, api_event):
    items = [f"item-{i}" for i in range(30)]
    _publish(account.session, items)
    status, cold = _get(serving_handler, api_event, "/users/u1/recommendations?k=3")
    assert status == 200 and cold["strategy"] == "popularity" and cold["model_version"] == "v1"
    assert [i["item_id"] for i in cold["items"]] == items[:3]

    assert post([make_event(event_id=f"p{i}", user_id="u1", item_id=f"item-{20 + i}", event_type="purchase",
                            value=3, timestamp=RECENT) for i in range(3)])[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    status, warm = _get(serving_handler, api_event, f"/users/u1/recommendations?k=3&request_id={MODELS_CHOICE}")
    assert status == 200 and warm["strategy"] == "fold_in" and warm["personalized"] and warm["ranker"] == "blend"
    assert {i["item_id"] for i in warm["items"]} == {"item-20", "item-21", "item-22"}
    assert all(i["reason"] == "you bought it before" for i in warm["items"])


@pytest.mark.parametrize(("path", "status"), [
    ("/users/u1/recommendations?k=0", 422),
    ("/users/u1/recommendations?k=101", 422),
    ("/users/u1/recommendations?k=ten", 422),
    ("/users/%20bad/recommendations", 422),
    ("/users/u1/nothing", 404),
])
def test_bad_requests_get_a_4xx_naming_the_problem(account, serving_handler, api_event, path, status):
    _publish(account.session, ["a", "b"])
    code, body = _get(serving_handler, api_event, path)
    assert code == status, body
    if status == 422:
        assert body["detail"] and body["detail"][0]["loc"]


def test_turning_personalization_off_and_on(account, serving_handler, api_event, post, cleaner_handler,
                                            make_event):
    _publish(account.session, [f"item-{i}" for i in range(10)])
    response = serving_handler(api_event(json.dumps({"personalization": False}), method="PUT",
                                         path="/users/u2/preferences"))
    assert response["statusCode"] == 200
    post([make_event(event_id="q1", user_id="u2", item_id="item-9", event_type="purchase", value=2,
                     timestamp=RECENT)])
    for event in account.kinesis_events():
        cleaner_handler(event)
    status, body = _get(serving_handler, api_event, "/users/u2/recommendations?k=2")
    assert status == 200 and body["personalized"] is False and body["strategy"] == "opted_out"
    bad = serving_handler(api_event(json.dumps({"personalization": "maybe"}), method="PUT",
                                    path="/users/u2/preferences"))
    assert bad["statusCode"] == 422


@pytest.mark.parametrize(("arm", "strategy"), [("personalized", "fold_in"), ("popularity", "segment_popularity")])
def test_the_ranking_experiments_arm_decides_the_ranking_and_is_reported(
        account, serving_handler, post, cleaner_handler, make_event, api_event, monkeypatch, arm, strategy):
    """Everyone in one arm (weights 1 and 0): the control arm gets popularity whatever their feedback."""
    from feedbackloop.local.appconfig import LocalAppConfigAgent
    from feedbackloop.resources import UI_CONFIG
    from feedbackloop.uiconfig import RANKING_EXPERIMENT, default_document

    items = [f"item-{i}" for i in range(30)]
    _publish(account.session, items)
    assert post([make_event(event_id=f"a{i}", user_id="u1", item_id=f"item-{20 + i}", event_type="purchase",
                            value=3, timestamp=RECENT) for i in range(3)])[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    document = default_document()
    variants = document["experiments"][RANKING_EXPERIMENT]["variants"]
    document["experiments"][RANKING_EXPERIMENT]["variants"] = {name: float(name == arm) for name in variants}
    document["experiments"][RANKING_EXPERIMENT].pop("exploration")  # the greedy slate (exploration: below)
    agent = LocalAppConfigAgent().start()
    try:
        agent.deploy(UI_CONFIG.application, UI_CONFIG.environment, UI_CONFIG.profile, document)
        monkeypatch.setenv("FEEDBACKLOOP_APPCONFIG_AGENT_URL", agent.url)
        import lambdas.serving.handler as module

        module._ui_config.cache_clear()
        status, body = _get(serving_handler, api_event, f"/users/u1/recommendations?k=3&request_id={MODELS_CHOICE}")
    finally:
        agent.stop()
        module._ui_config.cache_clear()
    assert status == 200 and body["experiments"] == {RANKING_EXPERIMENT: arm} and body["ordering"] == arm
    assert arm == "popularity" or body["ranker"] == "blend"
    assert body["strategy"] in (strategy, "popularity") if arm == "popularity" else body["strategy"] == strategy
    expected = items[:3] if arm == "popularity" else ["item-20", "item-21", "item-22"]
    assert sorted(i["item_id"] for i in body["items"]) == sorted(expected)


def _deploy(monkeypatch, document):
    """Serve `document` as the UI config through a local AppConfig agent; returns a stop function."""
    import lambdas.serving.handler as module
    from feedbackloop.local.appconfig import LocalAppConfigAgent
    from feedbackloop.resources import UI_CONFIG

    agent = LocalAppConfigAgent().start()
    agent.deploy(UI_CONFIG.application, UI_CONFIG.environment, UI_CONFIG.profile, document)
    monkeypatch.setenv("FEEDBACKLOOP_APPCONFIG_AGENT_URL", agent.url)
    module._ui_config.cache_clear()

    def stop():
        agent.stop()
        module._ui_config.cache_clear()
    return stop


def test_the_personalized_arm_explores_within_its_budget_the_same_way_for_one_request_id(
        account, serving_handler, post, cleaner_handler, make_event, api_event, monkeypatch):
    from feedbackloop.exploration import ExplorationPolicy, explored_item_probability
    from feedbackloop.uiconfig import RANKING_EXPERIMENT, default_document

    _publish(account.session, [f"item-{i}" for i in range(60)])
    assert post([make_event(event_id="x1", user_id="u1", item_id="item-20", event_type="purchase", value=3,
                            timestamp=RECENT)])[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    document = default_document()
    experiment = document["experiments"][RANKING_EXPERIMENT]
    experiment["variants"] = {name: float(name == "personalized") for name in experiment["variants"]}
    experiment["exploration"] = {"personalized": {"budget": 0.5, "pool": 20}}
    stop = _deploy(monkeypatch, document)
    try:
        bodies = [_get(serving_handler, api_event, f"/users/u1/recommendations?k=10&request_id=req-{n % 5}")[1]
                  for n in range(10)]
        status, chosen = _get(serving_handler, api_event, "/users/u1/recommendations?k=10")
    finally:
        stop()
    assert status == 200 and chosen["request_id"]  # the gateway's, when the client names none
    assert [b["request_id"] for b in bodies[:5]] == [f"req-{n}" for n in range(5)]
    slate = [[(i["item_id"], i["propensity"]) for i in b["items"]] for b in bodies]
    for n in range(5):  # one request id, one slate (the scores move as the profile decays by the second)
        assert slate[n] == slate[n + 5]
    assert len({tuple(s) for s in slate}) > 1
    p_pool = explored_item_probability(10, 20, ExplorationPolicy(0.5, 20).budget)
    # the item's probability within its page's ranking, times the ranking's (ADR 0021)
    propensities = sorted({round(i["propensity"] / b["ranker_propensity"], 6) for b in bodies for i in b["items"]})
    assert propensities == [round(p_pool, 6), round(1 - 20 * p_pool, 6)]  # some slots explored, some not
    assert all(0 < b["ranker_propensity"] <= 1 and b["ranker"] for b in bodies)


def test_an_examined_item_left_unclicked_drops_from_the_next_ranking_and_an_unexamined_one_stays(
        account, serving_handler, post, cleaner_handler, make_event, api_event):
    """Impressions are feedback (ADR 0016): the exposures go through ingest and the cleaner into the profile."""
    items = [f"item-{i}" for i in range(60)]
    _publish(account.session, items)
    assert post([make_event(event_id="b1", user_id="u1", item_id="item-20", event_type="purchase", value=3,
                            timestamp=RECENT)])[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    status, before = _get(serving_handler, api_event, "/users/u1/recommendations?k=30&request_id=t1")
    assert status == 200 and before["strategy"] == "fold_in"
    shown = [i["item_id"] for i in before["items"]]
    exposures = [make_event(event_id=f"v{n}", user_id="u1", item_id=item, event_type="view", value=1,
                            timestamp=RECENT, schema_version="1.2",
                            context={"request_id": before["request_id"], "position": n + 1,
                                     "propensity": before["items"][n]["propensity"]})
                 for n, item in enumerate(shown)]
    assert post(exposures)[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    status, after = _get(serving_handler, api_event, "/users/u1/recommendations?k=30&request_id=t1")
    now_shown = {i["item_id"] for i in after["items"]}
    examined = [item for item in shown[:10] if item != "item-20"]  # positions 1-10 (θ >= 0.3); not the bought one
    assert examined and not now_shown & set(examined)
    assert "item-20" in now_shown  # a bought item stays: one view does not outweigh a purchase
    assert set(shown[10:]) <= now_shown  # never examined: no evidence, still ranked


def test_items_others_ignore_move_down_and_items_others_click_move_up_before_retraining(
        account, serving_handler, post, cleaner_handler, make_event, api_event):
    """Item-side freshness (ADR 0018): other users' exposures and clicks reach the item counters through
    the cleaner, and move u1's next ranking without a new model."""
    from feedbackloop.local.environment import physical_name
    from feedbackloop.resources import ITEM_COUNTERS_TABLE

    _publish(account.session, [f"item-{i}" for i in range(60)])
    assert post([make_event(event_id="f1", user_id="u1", item_id="item-20", event_type="purchase", value=3,
                            timestamp=RECENT)])[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    page = "/users/u1/recommendations?k=10&request_id=t1"  # one request id: one ranking (ADR 0021)
    before = [i["item_id"] for i in _get(serving_handler, api_event, page)[1]["items"]]
    stale, rising = before[1], before[9]
    others = []
    for n in range(30):  # the rank-2 item is shown first to everyone and ignored; the rank-10 one clicked
        context = {"request_id": f"o{n}", "propensity": 1.0}
        others += [make_event(event_id=f"s{n}", user_id=f"o{n}", item_id=stale, event_type="view", value=1,
                              timestamp=RECENT, schema_version="1.2", context=context | {"position": 1}),
                   make_event(event_id=f"r{n}", user_id=f"o{n}", item_id=rising, event_type="view", value=1,
                              timestamp=RECENT, schema_version="1.2", context=context | {"position": 2}),
                   make_event(event_id=f"c{n}", user_id=f"o{n}", item_id=rising, event_type="click", value=1,
                              timestamp=RECENT)]
    assert post(others)[0] == 200
    for event in account.kinesis_events():
        cleaner_handler(event)
    stored = account.session.client("dynamodb").get_item(
        TableName=physical_name(ITEM_COUNTERS_TABLE.key), Key={"item_id": {"S": rising}})["Item"]
    assert any(name.startswith("clicks@") for name in stored)
    after = [i["item_id"] for i in _get(serving_handler, api_event, page)[1]["items"]]
    assert after.index(rising) < before.index(rising)
    assert stale not in after or after.index(stale) > before.index(stale)


def test_a_failing_request_counts_as_a_serving_error(account, serving_handler, api_event, monkeypatch, capsys):
    import lambdas.serving.handler as module

    _publish(account.session, [f"item-{i}" for i in range(5)])

    @functools.cache  # as the real factory (the fixture clears it afterwards)
    def broken():
        raise RuntimeError("the online store is gone")

    monkeypatch.setattr(module, "_online", broken)
    logged: list[tuple[str, dict, bool]] = []
    real = module.logger.exception

    def exception(message, *args, **kwargs):  # records, then logs as before
        import sys
        logged.append((message, kwargs.get("extra", {}), sys.exc_info()[0] is RuntimeError))
        return real(message, *args, **kwargs)

    monkeypatch.setattr(module.logger, "exception", exception)
    event = api_event("", method="GET", path="/users/u1/recommendations")
    response = serving_handler(event)
    # a 500 in the one error shape, naming the request; the log has the traceback under the same id
    body = json.loads(response["body"])
    request_id = event["requestContext"]["requestId"]
    assert response["statusCode"] == 500 and body["error"] == "internal_error" and request_id in body["reason"]
    out = capsys.readouterr().out
    assert '"ServingErrors":[1.0]' in out.replace(" ", "")
    # logged with its traceback (logger.exception, inside the except) and the API request id
    assert logged == [("unexpected error", {"api_request_id": request_id}, True)]
