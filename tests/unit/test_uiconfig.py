"""The UI configuration: the schema refuses bad documents by field, segments override defaults,
experiment assignment is deterministic and follows the weights, and the agent reader reads the local
agent over HTTP the way the AppConfig extension is read."""

from __future__ import annotations

import copy
from collections import Counter

import pytest

from feedbackloop.local.appconfig import LocalAppConfigAgent
from feedbackloop.uiconfig import AgentConfigReader, InvalidConfigError, assign, config_for, default_document, validate

pytestmark = pytest.mark.unit


def test_the_default_document_is_valid():
    assert validate(default_document())["defaults"]["layout"]["ordering"] == "personalized"


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["defaults"]["layout"].update(ordering="random"), "data.defaults.layout.ordering"),
    (lambda d: d["defaults"]["flags"].update(show_reasons="yes"), "data.defaults.flags.show_reasons"),
    (lambda d: d.update(surprise=1), "data"),
    (lambda d: d["experiments"]["ranking"]["variants"].update(popularity=0.6), "data.experiments.ranking.variants"),
    (lambda d: d["segments"].update(s0={"layout": {"hidden_options": ["a", "a"]}}),
     "data.segments.s0.layout.hidden_options"),
])
def test_invalid_documents_are_refused_naming_the_field(change, field):
    document = copy.deepcopy(default_document())
    change(document)
    with pytest.raises(InvalidConfigError, match=field.replace(".", r"\.")):
        validate(document)


def test_segments_override_the_defaults():
    document = copy.deepcopy(default_document())
    document["segments"]["s1"] = {"layout": {"highlighted_categories": ["christmas"]}, "flags": {"show_reasons": False}}
    mine = config_for(document, "u1", "s1")
    assert mine["layout"]["highlighted_categories"] == ["christmas"] and mine["layout"]["ordering"] == "personalized"
    assert mine["flags"] == {"show_recommendations": True, "show_reasons": False}
    assert config_for(document, "u1", "s0")["layout"]["highlighted_categories"] == []


def test_assignment_is_deterministic_and_follows_the_weights():
    variants = {"a": 0.2, "b": 0.8}
    counts = Counter(assign(f"user-{i}", "salt-1", variants) for i in range(20_000))
    assert abs(counts["a"] / 20_000 - 0.2) < 0.015
    assert assign("user-7", "salt-1", variants) == assign("user-7", "salt-1", dict(reversed(variants.items())))
    moved = sum(assign(f"user-{i}", "salt-1", variants) != assign(f"user-{i}", "salt-2", variants) for i in range(2000))
    assert moved > 400  # a new salt reshuffles


def test_the_agent_reader_reads_the_deployed_version_and_caches():
    agent = LocalAppConfigAgent().start()
    try:
        clock = [0.0]
        reader = AgentConfigReader(agent.url, "app", "env", "ui", ttl_seconds=30, clock=lambda: clock[0])
        agent.deploy("app", "env", "ui", default_document())
        assert reader.get()["experiments"] and reader.version == "1"
        changed = copy.deepcopy(default_document())
        changed["defaults"]["layout"]["ordering"] = "popularity"
        agent.deploy("app", "env", "ui", changed)
        assert reader.get()["defaults"]["layout"]["ordering"] == "personalized"  # cached
        clock[0] = 30
        assert reader.get()["defaults"]["layout"]["ordering"] == "popularity" and reader.version == "2"
        with pytest.raises(InvalidConfigError):
            agent.deploy("app", "env", "ui", {"defaults": {}})
    finally:
        agent.stop()
