"""The protocol pieces of `feedbackloop bench model` on tiny synthetic data (not the benchmark itself)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from feedbackloop.bench import model as bench
from feedbackloop.models.data import Interactions, feedback_as_of
from feedbackloop.models.factorization import FeedbackMF

pytestmark = pytest.mark.unit

CUT = pd.Timestamp("2011-11-09")


def _frame(rows: list[tuple]) -> pd.DataFrame:
    """Online Retail lines: (invoice, stock code, quantity, time, customer)."""
    frame = pd.DataFrame(rows, columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "CustomerID"])
    return frame.assign(Quantity=frame["Quantity"].astype(float), InvoiceDate=pd.to_datetime(frame["InvoiceDate"]),
                        CustomerID=frame["CustomerID"].astype(float), Description="RED MUG", UnitPrice=1.5,
                        Country="United Kingdom")


LINES = _frame([
    ("1", "A", 2, "2011-11-01 10:00", 1),
    ("1", "B", 1, "2011-11-01 10:00", 1),
    ("2", "A", 1, "2011-11-02 10:00", 1),  # a repeat: counts 2
    ("3", "C", 5, "2011-11-03 10:00", 2),
    ("4", "B", 1, "2011-11-04 10:00", 3),  # user 3 buys nothing after the cut
    ("5", "D", 1, "2011-11-05 10:00", None),  # no customer
    ("C6", "C", 1, "2011-11-06 10:00", 1),  # a cancellation (its quantity made positive on purpose)
    ("7", "E", -3, "2011-11-07 10:00", 2),  # a negative quantity
    ("8", "A", 1, "2011-11-09 00:00", 1),  # the cut itself is test
    ("8", "Z", 1, "2011-11-09 00:00", 1),  # an item unseen in train
    ("9", "C", 1, "2011-11-20 09:00", 2),
    ("10", "B", 1, "2011-11-21 09:00", 4),  # a user unseen in train
])


def test_the_implicit_view_keeps_customer_purchases_only():
    view = bench.implicit_view(LINES)
    assert view["InvoiceNo"].tolist() == ["1", "1", "2", "3", "4", "8", "8", "9", "10"]
    assert view["user_id"].tolist()[:4] == ["c1", "c1", "c1", "c2"]
    assert view["item_id"].tolist()[:2] == ["A", "B"]


def test_the_split_its_users_and_relevant_items():
    split = bench.temporal_split(bench.implicit_view(LINES), CUT)
    assert split.train_lines == 5 and split.test_lines == 4
    assert split.user_ids.tolist() == ["c1", "c2", "c3"]
    assert split.item_ids.tolist() == ["A", "B", "C"]
    assert split.counts.toarray().tolist() == [[2, 1, 0], [0, 0, 1], [0, 1, 0]]
    assert split.binary.toarray().tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    # evaluated: users with lines on both sides; an item unseen in train gets a column past the catalog
    assert split.user_ids[split.eval_rows].tolist() == ["c1", "c2"]
    assert split.relevant == [{0, 3}, {2}]
    assert split.describe()["relevant_pairs_unseen_in_train"] == 1


def test_the_validation_split_ends_at_the_test_cut():
    view = bench.implicit_view(LINES)
    split = bench.temporal_split(view, pd.Timestamp("2011-11-03"), end=CUT)
    assert split.train_lines == 3 and split.test_lines == 2  # 3 (c2, C) and 4 (c3, B); not 8, 9, 10
    assert split.user_ids[split.eval_rows].tolist() == []  # c2 and c3 bought nothing before the 3rd


def test_already_bought_items_can_be_recommended_and_hit():
    split = bench.temporal_split(bench.implicit_view(LINES), CUT)
    popularity = bench.Popularity().fit(split.binary)
    top = bench.recommend(popularity.scores, split.eval_rows, k=2)
    assert top.tolist() == [[1, 0], [1, 0]]  # B (2 users), then A; A was c1's own purchase
    metrics = bench.evaluate(popularity.scores, split)
    assert metrics["users"] == 2
    assert metrics["precision_at_10"] == pytest.approx((1 / 10 + 1 / 10) / 2)  # A for c1, C for c2


def _random_binary(users: int = 30, items: int = 12) -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    return sp.csr_matrix((rng.random((users, items)) < 0.3).astype(np.float64))


def test_ease_scores_every_item_for_each_row_and_never_scores_an_item_by_itself():
    x = _random_binary()
    ease = bench.EASE(lam=10.0).fit(x)
    assert ease.b_.shape == (12, 12)
    assert np.all(np.diag(ease.b_) == 0)
    assert ease.scores(np.array([0, 3, 5])).shape == (3, 12)


def test_pure_svd_scores_every_item_for_each_row():
    x = _random_binary()
    svd = bench.PureSVD(k=4).fit(x)
    assert svd.components_.shape == (4, 12)
    scores = svd.scores(np.array([1, 2]))
    assert scores.shape == (2, 12)
    assert np.allclose(scores, (x[[1, 2]].toarray() @ svd.components_.T) @ svd.components_)


def test_implicit_als_scores_every_item_for_each_row():
    als = bench.ImplicitALS(factors=4, regularization=0.1, alpha=1.0, iterations=3).fit(_random_binary())
    assert als.scores(np.arange(5)).shape == (5, 12)


def test_our_scores_land_on_the_split_columns():
    split = bench.temporal_split(bench.implicit_view(LINES), CUT)
    # the model knows A and C (and an item the split does not), c1 and c2 but not c3
    pairs = pd.DataFrame({"user_id": ["c1", "c1", "c2", "c2"], "item_id": ["A", "X", "C", "A"],
                          "composite_score": [0.5, 0.5, 0.5, 0.5], "confidence_mass": [1.0, 1.0, 2.0, 0.5]})
    ours = bench.Ours(FeedbackMF(factors=2, iterations=2), split).fit(Interactions.from_pairs(pairs)).align()
    assert ours.columns_.tolist() == [0, 2, -1]  # A, C, X
    scores = ours.scores(np.array([0, 1, 2]))
    assert scores.shape == (3, 3)
    assert np.all(np.isinf(scores[:, 1]))  # B: unknown to the model, never recommended
    assert np.isfinite(scores[:, [0, 2]]).all()
    assert scores[2, [0, 2]].tolist() == [2.0, 1.0]  # c3, unknown: the model's popularity


def test_tuning_picks_the_best_and_the_earlier_of_ties():
    assert bench._pick([({"a": 1}, 0.2), ({"a": 2}, 0.3), ({"a": 3}, 0.3)]) == ({"a": 2}, 0.3)
    assert list(bench.grid({"a": (1, 2), "b": ("x",)})) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert bench.day_before(CUT) == "2011-11-08"


def _result(name: str, ndcg: float, seconds: float) -> bench.Result:
    return bench.Result(name, {}, {"ndcg_at_10": ndcg, "precision_at_10": ndcg / 2, "recall_at_10": ndcg / 4,
                                   "coverage": 0.5}, seconds)


def test_the_json_entries_put_ndcg_against_the_best_peer_first_then_fit_time_against_als():
    peers = {"popularity": _result("popularity", 0.08, 0.01), "implicit_als": _result("implicit_als", 0.29, 2.0),
             "ease": _result("ease", 0.26, 3.0)}
    entries = bench.entries(_result("feedback_mf", 0.36, 1.0), peers)
    assert [e["name"] for e in entries] == ["model_ndcg_at_10", "model_fit_seconds", "model_precision_at_10",
                                            "model_recall_at_10", "model_coverage"]
    for entry in entries:
        assert set(entry) == {"name", "unit", "value", "baseline", "ratio", "better"}
        assert set(entry["baseline"]) == {"name", "value"}
    first, fit = entries[0], entries[1]
    assert first["baseline"] == {"name": "best_peer_implicit_als_ndcg_at_10", "value": 0.29}
    assert first["ratio"] == round(0.36 / 0.29, 2) and first["better"] == "higher"
    assert fit["baseline"] == {"name": "implicit_als_fit_seconds", "value": 2.0}
    assert fit["ratio"] == 0.5 and fit["better"] == "lower"
    assert entries[2]["baseline"]["name"] == "best_peer_implicit_als_precision_at_10"


def test_the_real_path_from_lines_to_feedback_pairs():
    """The cleaner, then the interactions and feedback_daily jobs, then the pairs as of the day before."""
    view = bench.implicit_view(LINES)
    train = LINES.loc[view.index[view["time"] < CUT]]
    curated, counts = bench.curated_events(train, arrival=datetime(2011, 11, 9, tzinfo=UTC))
    assert counts["records"] == 5 and counts["clean"] == 5
    assert sorted(curated["event_date"].to_pylist()) == ["2011-11-01", "2011-11-01", "2011-11-02", "2011-11-03",
                                                         "2011-11-04"]  # the lines' own dates
    daily = bench.feedback_daily(curated, now=datetime(2011, 11, 9, tzinfo=UTC))
    assert int(daily["events"].sum()) == 5
    pairs = feedback_as_of(daily, bench.day_before(CUT))
    assert sorted(zip(pairs["user_id"], pairs["item_id"], strict=True)) == [
        ("c1", "A"), ("c1", "B"), ("c2", "C"), ("c3", "B")]
    assert (pairs["composite_score"] > 0).all()
    assert pairs.set_index(["user_id", "item_id"]).loc[("c1", "A"), "purchases"] == 2
