"""The examination model (ADR 0016): which exposures are weak negatives, and how much they weigh."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from feedbackloop.adapters.memory import MemoryDedupStore, MemoryLake, MemoryOnlineStore, MemoryStateStore
from feedbackloop.cleaning.clean import CleaningRules, clean_events
from feedbackloop.cleaning.decode import decode_batch
from feedbackloop.cleaning.service import CleanerService
from feedbackloop.cleaning.stats import CleanerState
from feedbackloop.examination import EXAMINATION, ExaminationModel, preference_rows
from feedbackloop.schemas import registry

pytestmark = pytest.mark.unit

NOW = datetime(2025, 6, 10, 12, 5, tzinfo=UTC)
VIEW_WEIGHT = registry.event_type_rules()["view"].weight


def test_the_first_positions_are_examined_and_examination_decays_below_them():
    model = ExaminationModel(depth=3, eta=1.0, floor=0.3)
    theta = model.probability(np.array([1, 2, 3, 4, 6, 10, 11, 30], dtype=float))
    np.testing.assert_allclose(theta, [1, 1, 1, 0.75, 0.5, 0.3, 3 / 11, 0.1])
    weight = model.weight(np.array([1, 4, 10, 11, 30], dtype=float))
    np.testing.assert_allclose(weight, [1, 0.75, 0.3, 0, 0])  # below the floor: no evidence at all


def test_an_exposure_without_a_position_is_taken_as_examined():
    np.testing.assert_allclose(EXAMINATION.weight(np.array([np.nan, 1.0])), [1.0, 1.0])


@pytest.mark.parametrize("bad", [dict(depth=0), dict(eta=-1), dict(floor=0), dict(floor=1.5)])
def test_a_bad_model_is_refused(bad):
    with pytest.raises(ValueError, match="examination model"):
        ExaminationModel(**bad)


def _view(make_event, event_id: str, item: str, position: int | None, **overrides):
    event = make_event(event_id=event_id, item_id=item, event_type="view", value=1, schema_version="1.2",
                       **overrides)
    if position is not None:
        event["context"] |= {"position": position, "request_id": "req-1", "propensity": 0.9}
    return event


def test_the_cleaner_weighs_an_exposure_by_its_examination(make_event, make_record):
    events = [_view(make_event, "e1", "a", 1), _view(make_event, "e2", "b", 6), _view(make_event, "e3", "c", 20),
              _view(make_event, "e4", "d", None),
              make_event(event_id="e5", item_id="e", event_type="click", value=1)]
    decoded = decode_batch([make_record(e, i) for i, e in enumerate(events)])
    result = clean_events(decoded.valid, CleanerState(), NOW, CleaningRules())
    rows = {r["event_id"]: r for r in result.curated.to_pylist()}
    assert rows["e1"]["confidence"] == pytest.approx(VIEW_WEIGHT)
    assert rows["e2"]["confidence"] == pytest.approx(VIEW_WEIGHT * 0.5)
    assert rows["e3"]["confidence"] == 0  # never examined: an impression, no feedback
    assert rows["e4"]["confidence"] == pytest.approx(VIEW_WEIGHT)  # a 1.1 client's view: as before
    assert rows["e5"]["confidence"] == pytest.approx(registry.event_type_rules()["click"].weight)  # not exposure
    assert all(r["feedback_score"] == 0 for r in rows.values() if r["event_type"] == "view")
    # the slate fields reach the curated rows
    assert (rows["e2"]["request_id"], rows["e2"]["position"], rows["e2"]["propensity"]) == ("req-1", 6, 0.9)
    assert [r["event_id"] for r in preference_rows(result.curated).to_pylist()] == ["e1", "e2", "e4", "e5"]


def test_only_examined_exposures_reach_the_online_profile(make_event, make_record):
    online = MemoryOnlineStore()
    lake = MemoryLake()
    service = CleanerService(MemoryDedupStore(), MemoryStateStore(), lake, CleaningRules(), lambda: NOW, online)
    events = [_view(make_event, "e1", "top", 1), _view(make_event, "e2", "deep", 25)]
    outcome = service.clean([make_record(e, i) for i, e in enumerate(events)])
    assert outcome.clean == 2  # both are in the lake
    profile = online.load(["user-1"])["user-1"]
    assert set(profile.items) == {"top"}
    items, confidence, composite = profile.signals(NOW.timestamp())
    assert composite.tolist() == [0.0] and confidence[0] < 0  # a weak negative for fold-in
