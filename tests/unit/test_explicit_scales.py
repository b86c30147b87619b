"""Explicit scales on a small ratings fixture, through the real path: the cleaner's normalization, the table
jobs (DuckDB), `feedback_as_of` and `Interactions`. A 3 of 5 is not a dislike; a 1 of 5 is a stronger dislike
than a 2; a year-old positive still counts, also for implicit's ALS given Hu-Koren-Volinsky confidence."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from lake_fixtures import lake, table
from threadpoolctl import threadpool_limits

from feedbackloop.cleaning.clean import CleaningRules, clean_events
from feedbackloop.cleaning.decode import decode_batch
from feedbackloop.cleaning.stats import CleanerState
from feedbackloop.models.contract import HALF_LIFE_DAYS
from feedbackloop.models.data import Interactions, feedback_as_of
from glue_jobs.build_tables import run_job

pytestmark = pytest.mark.unit

# (user, item, stars, days before the batch arrived). u1 rates A neutral, B and C low, and D top a year ago;
# the others like E and F, and A too, so that E is what u1's neighbours would push on u1.
RATINGS = [
    ("u1", "A", 3, 2), ("u1", "B", 1, 2), ("u1", "C", 2, 2), ("u1", "D", 5, 365),
    ("u2", "E", 5, 3), ("u2", "F", 4, 3), ("u2", "A", 4, 3),
    ("u3", "E", 5, 4), ("u3", "F", 5, 4), ("u3", "A", 4, 4),
    ("u4", "E", 4, 5), ("u4", "F", 4, 5), ("u4", "B", 2, 5),
    ("u5", "E", 5, 6), ("u5", "A", 5, 6), ("u5", "C", 4, 6),
    ("u6", "F", 4, 7), ("u6", "B", 5, 7),
]
ALPHA = 10.0  # any alpha > 0 will do: the point is the 1 + alpha * c


@pytest.fixture(scope="module")
def path(tmp_path_factory, make_event, make_record, received_at):
    """(the cleaner's rows by (user, item), the feedback pairs as of the arrival date, Interactions)."""
    events = [make_event(event_id=f"r{i}", user_id=user, item_id=item, event_type="rating", value=stars,
                         timestamp=(received_at - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ"))
              for i, (user, item, stars, days) in enumerate(RATINGS)]
    decoded = decode_batch([make_record(e, i) for i, e in enumerate(events)])
    assert decoded.rejected == []
    now = received_at + timedelta(minutes=1)
    # a year of late data accepted, as the demo's replay does
    result = clean_events(decoded.valid, CleanerState(), now, CleaningRules(max_event_age=timedelta(days=400)))
    curated = result.curated.to_pylist()
    assert len(curated) == len(RATINGS)
    folder = tmp_path_factory.mktemp("ratings")
    engine = lake(folder, curated)
    for name in ("interactions", "feedback"):
        run_job(name, engine, now=now + timedelta(minutes=1), settle=timedelta(0), half_life_days=HALF_LIFE_DAYS)
    daily = pd.DataFrame(table(folder, "feedback_daily"))
    as_of = daily["event_date"].max()
    pairs = feedback_as_of(daily, as_of)
    scores = {(r["user_id"], r["item_id"]): r["feedback_score"] for r in curated}
    return scores, pairs.set_index(["user_id", "item_id"]), Interactions.from_pairs(pairs)


def _cell(interactions: Interactions, user: str, item: str) -> float:
    u = interactions.user_ids.tolist().index(user)
    i = interactions.item_ids.tolist().index(item)
    return float(interactions.confidence[u, i])


def test_a_neutral_rating_is_not_a_dislike(path):
    scores, pairs, interactions = path
    assert scores["u1", "A"] == 0.0
    assert pairs.loc[("u1", "A"), "composite_score"] == 0.0
    assert _cell(interactions, "u1", "A") > 0  # engagement: positive evidence, not a negative


def test_a_one_star_is_a_stronger_dislike_than_two(path):
    scores, pairs, interactions = path
    assert scores["u1", "B"] < scores["u1", "C"] < 0
    assert pairs.loc[("u1", "B"), "composite_score"] < pairs.loc[("u1", "C"), "composite_score"] < 0
    assert _cell(interactions, "u1", "B") < 0 and _cell(interactions, "u1", "C") < 0


def test_a_year_old_top_rating_still_counts(path):
    _, pairs, interactions = path
    old = pairs.loc[("u1", "D")]
    assert old["composite_score"] == pytest.approx(1.0)
    c = _cell(interactions, "u1", "D")
    assert 0 < c < 1e-3  # twelve half-lives: little mass, but still a positive pair
    assert c == pytest.approx(0.5 ** (365 / HALF_LIFE_DAYS), rel=0.05)


def _hkv(interactions: Interactions, convention: str) -> sp.csr_matrix:
    """The matrix implicit's ALS gets with alpha=1: Hu-Koren-Volinsky's 1 + alpha * c per observed pair, or the
    old convention alpha * c (what implicit does with its own alpha), the sign kept as the preference."""
    matrix = interactions.confidence.copy().astype(np.float32)
    magnitude = np.abs(matrix.data)
    weight = 1 + ALPHA * magnitude if convention == "hkv" else ALPHA * magnitude
    matrix.data = np.sign(matrix.data) * weight
    return matrix


def _scores(matrix: sp.csr_matrix, user: int, seed: int) -> np.ndarray:
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=4, regularization=1.0, alpha=1.0, iterations=15, random_state=seed)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.item_factors @ model.user_factors[user])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_with_confidence_one_plus_alpha_c_a_year_old_positive_ranks_above_an_unobserved_item(path, seed):
    _, _, interactions = path
    user = interactions.user_ids.tolist().index("u1")
    old, unseen = (interactions.item_ids.tolist().index(i) for i in ("D", "E"))
    assert _cell(interactions, "u1", "E") == 0.0  # u1 never saw E; its neighbours like it
    hkv = _scores(_hkv(interactions, "hkv"), user, seed)
    assert hkv[old] > hkv[unseen]
    # the check can fail: weighed alpha * c, below an unobserved pair's 1, the same positive drops under E
    scaled = _scores(_hkv(interactions, "scaled"), user, seed)
    assert scaled[old] < scaled[unseen]
