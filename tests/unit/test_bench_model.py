"""The protocol pieces of `feedbackloop bench model` on tiny data, and the whole command on a small
table with no tuning budget (not the benchmark itself)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from feedbackloop.bench import model as bench

pytestmark = pytest.mark.unit


def _frame(rows: list[tuple]) -> pd.DataFrame:
    """Online Retail lines: (invoice, stock code, quantity, time, customer)."""
    frame = pd.DataFrame(rows, columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "CustomerID"])
    return frame.assign(Quantity=frame["Quantity"].astype(float), InvoiceDate=pd.to_datetime(frame["InvoiceDate"]),
                        CustomerID=frame["CustomerID"].astype(float), Description="RED MUG", UnitPrice=1.5,
                        Country="United Kingdom")


LINES = _frame([
    ("1", "A", 2, "2011-11-01 10:00", 1),
    ("3", "C", 5, "2011-11-03 10:00", 2),
    ("5", "D", 1, "2011-11-05 10:00", None),  # no customer
    ("C6", "C", 1, "2011-11-06 10:00", 1),  # a cancellation
    ("7", "E", -3, "2011-11-07 10:00", 2),  # a negative quantity
])


def test_the_implicit_view_keeps_customer_purchases_only():
    view = bench.implicit_view(LINES)
    assert view["InvoiceNo"].tolist() == ["1", "3"]
    assert view["user_id"].tolist() == ["c1", "c2"] and view["item_id"].tolist() == ["A", "C"]


def _log(users: int = 60, items: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        pool = np.arange((u % 2) * items // 2, (u % 2 + 1) * items // 2)
        for _ in range(rng.integers(6, 14)):
            rows.append((f"u{u}", f"i{rng.choice(pool)}", 1_600_000_000 + int(rng.integers(0, 60 * 86400)),
                         int(rng.integers(1, 6))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"]).assign(
        timestamp=lambda f: pd.to_datetime(f["timestamp"], unit="s", utc=True))


def test_random_per_item_holds_out_a_quarter_of_each_items_interactions_and_removes_seen_items():
    log = _log()
    p = bench.split_log(log, "random-per-item")
    assert len(p.train) + len(p.test) == len(log) and not p.repeats
    for item, rows in log.groupby("item_id"):
        assert (p.test["item_id"] == item).sum() == int(np.floor(len(rows) * bench.TEST_SHARE))
    seen = p.train.groupby("user_id")["item_id"].agg(set)
    assert all(not (items & seen.get(u, set())) for u, items in p.relevant().items())
    assert bench.split_log(log, "random-per-item").test.equals(p.test)  # seeded


def test_temporal_protocols_cut_in_time_and_allow_repeats_when_the_data_has_them():
    log = _log()
    global_ = bench.split_log(log, "temporal-global")
    assert global_.train["timestamp"].max() < global_.test["timestamp"].min() and global_.repeats
    per_user = bench.split_log(log, "temporal-per-user")
    for user, rows in per_user.test.groupby("user_id"):
        assert rows["timestamp"].min() >= per_user.train.loc[per_user.train["user_id"] == user, "timestamp"].max()
    once = log.drop_duplicates(["user_id", "item_id"])
    assert not bench.split_log(once, "temporal-global").repeats
    with pytest.raises(ValueError, match="unknown protocol"):
        bench.split_log(log, "leave-one-out")


def test_the_own_history_peer_ranks_by_count_then_recency():
    log = pd.DataFrame({"user_id": ["a"] * 4, "item_id": ["x", "x", "y", "z"],
                        "timestamp": pd.to_datetime([1, 2, 5, 3], unit="D", utc=True)})
    m = bench.Matrix.of(log)
    scores = bench.OwnHistory().fit(m.counts, m.last).scores(np.array([0]))[0]
    assert [m.item_ids[i] for i in np.argsort(-scores)] == ["x", "y", "z"]


def test_ratings_become_the_events_a_client_sends():
    events = bench.log_events(_log().head(3), pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime())
    assert {e["event_type"] for e in events} == {"rating"} and all(1 <= e["value"] <= 5 for e in events)
    assert max(e["timestamp"] for e in events) == "2026-01-01T00:00:00Z"


def test_the_command_on_a_table_writes_ours_against_the_best_peer(tmp_path):
    table = tmp_path / "ratings.parquet"
    _log(users=80).to_parquet(table)
    out = tmp_path / "model.json"
    console = io.StringIO()
    assert bench.run(str(out), console, interactions=str(table), protocol="random-per-item", tuning_minutes=0.0) == 0
    document = json.loads(out.read_text())
    first = document["benchmarks"][0]
    assert first["name"] == "model_ndcg_at_10_random_per_item" and first["baseline"]["name"].startswith("best_peer_")
    models = document["models"]["random_per_item"]
    assert set(models) == {"popularity", "own_history", "implicit_als", "als_history", "ease", "pure_svd",
                           "item_knn", "ours"}
    best = max(v["ndcg_at_10"] for k, v in models.items() if k != "ours")
    assert first["baseline"]["value"] == pytest.approx(best, abs=1e-4)
    assert first["ratio"] == pytest.approx(models["ours"]["ndcg_at_10"] / best, abs=1e-2)
    assert models["ours"]["why"] and document["protocol"]["real_path"]["cleaner"]["clean"] > 0
