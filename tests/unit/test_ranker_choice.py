"""Thompson sampling over the model's rankers (ADR 0021)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from feedbackloop.item_counters import ItemCounts, ranker_key
from feedbackloop.ranker_choice import choose, probabilities

RANKERS = ("reranker", "attribute", "mf")


def counts(**rates: tuple[float, float]) -> dict[str, ItemCounts]:
    return {ranker_key(name): ItemCounts(examinations, clicks) for name, (examinations, clicks) in rates.items()}


def test_a_single_ranker_always_serves():
    assert choose(("mf",), {}, "r1") == ("mf", 1.0)


def test_without_evidence_the_models_choice_leads_and_every_ranker_is_tried():
    p = probabilities(RANKERS, {})
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == p.max() and (p > 0.05).all()


def test_the_evidence_moves_the_pages_to_the_ranker_that_gets_clicked():
    p = probabilities(RANKERS, counts(reranker=(2000, 40), attribute=(2000, 120), mf=(300, 6)))
    assert p[1] > 0.95
    close = probabilities(RANKERS, counts(reranker=(40, 1), attribute=(40, 2), mf=(40, 1)))
    assert close.max() < 0.8  # little evidence: still exploring


def test_the_choice_is_drawn_from_the_request_id_with_its_probability():
    evidence = counts(reranker=(200, 6), attribute=(200, 8), mf=(200, 5))
    p = dict(zip(RANKERS, probabilities(RANKERS, evidence), strict=True))
    picks = [choose(RANKERS, evidence, f"req-{n}") for n in range(3000)]
    assert choose(RANKERS, evidence, "req-0") == picks[0]  # a request id always gets the same ranker
    assert all(probability == pytest.approx(p[name]) for name, probability in picks)
    frequency = Counter(name for name, _ in picks)
    for name in RANKERS:
        assert frequency[name] / 3000 == pytest.approx(p[name], abs=0.03)


def test_counts_of_items_do_not_reach_the_rankers():
    items = {"reranker": ItemCounts(1000, 900)}  # an item id, not a ranker's key
    assert np.allclose(probabilities(RANKERS, items), probabilities(RANKERS, {}))
