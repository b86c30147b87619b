"""The numpy tree evaluator against LightGBM itself: raw scores of regression and LambdaRank models (NaNs,
values exactly at thresholds, every missing type, deep, shallow and one-leaf trees, early stopping), the
round trip through a model's npz, and the refusals (categorical splits, linear leaves, bad arrays)."""

from __future__ import annotations

import io
import subprocess
import sys

import lightgbm as lgb
import numpy as np
import pytest

from feedbackloop.models.trees import ARRAY_PREFIX, TreeEnsemble, TreeEnsembleError

pytestmark = pytest.mark.unit

N_FEATURES = 8


def _data(n: int = 600, seed: int = 0, nan_share: float = 0.1,
          zero_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 3] = rng.integers(0, 5, n)  # a few distinct values: many rows sit exactly on a threshold
    X[rng.random(X.shape) < zero_share] = 0.0
    y = 2 * X[:, 0] - X[:, 1] ** 2 + X[:, 3] + np.sin(3 * X[:, 2]) + 0.1 * rng.normal(size=n)
    X[rng.random(X.shape) < nan_share] = np.nan
    return X, y


def _train(params: dict, X: np.ndarray, y: np.ndarray, rounds: int = 40, group=None, **kwargs) -> lgb.Booster:
    base = {"objective": "regression", "verbose": -1, "seed": 0, "num_threads": 1}
    return lgb.train({**base, **params}, lgb.Dataset(X, y, group=group), num_boost_round=rounds, **kwargs)


def _queries(booster: lgb.Booster, seed: int = 1) -> np.ndarray:
    """Fresh rows with NaNs, zeros, infinities, tiny values, and rows put exactly on every split's
    threshold and on its neighbouring doubles."""
    X, _ = _data(200, seed=seed, nan_share=0.15, zero_share=0.05)
    X[0, :] = np.nan
    X[1, :] = 0.0
    X[2, :] = -0.0
    X[3, :] = 1e-36  # below LightGBM's zero threshold: read as 0.0
    X[4, :] = -np.float32(1e-35)
    X[5, :] = np.inf
    X[6, :] = -np.inf
    rng = np.random.default_rng(seed)
    on_threshold = []
    for tree in booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" in node:
                for value in (node["threshold"], np.nextafter(node["threshold"], np.inf),
                              np.nextafter(node["threshold"], -np.inf)):
                    row = X[rng.integers(len(X))].copy()
                    row[node["split_feature"]] = value
                    on_threshold.append(row)
                stack += [node["left_child"], node["right_child"]]
    return np.vstack([X, *on_threshold]) if on_threshold else X


def _assert_same(booster: lgb.Booster, X: np.ndarray, ensemble: TreeEnsemble | None = None, **predict_kwargs):
    ensemble = ensemble or TreeEnsemble.from_booster(booster)
    expected = booster.predict(X, raw_score=True, **predict_kwargs)
    np.testing.assert_allclose(ensemble.predict(X), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("params", "rounds", "missing_types"), [
    ({"num_leaves": 31}, 40, {2}),  # every feature has NaNs: missing type NaN
    ({"num_leaves": 255, "min_data_in_leaf": 1, "min_sum_hessian_in_leaf": 0}, 8, {2}),  # deep, unbalanced
    ({"max_depth": 1, "num_leaves": 2}, 40, {2}),  # stumps
    ({"num_leaves": 15, "use_missing": False}, 40, {0}),  # missing type None everywhere: NaN reads as 0.0
    ({"num_leaves": 15, "zero_as_missing": True}, 40, {1}),  # missing type Zero: NaN and 0.0 go one way
], ids=["default", "deep", "stumps", "no-missing", "zero-as-missing"])
def test_regression_matches_lightgbm(params, rounds, missing_types):
    X, y = _data(zero_share=0.1)
    booster = _train(params, X, y, rounds=rounds)
    ensemble = TreeEnsemble.from_booster(booster)
    assert set(np.unique(ensemble.missing_type[ensemble.feature >= 0])) == missing_types
    if params.get("num_leaves") == 255:
        assert ensemble.max_depth >= 12
    _assert_same(booster, _queries(booster), ensemble)


def test_nan_splits_go_both_ways_and_a_model_without_nans_takes_them():
    X, y = _data()
    with_nan = TreeEnsemble.from_booster(_train({"num_leaves": 31}, X, y))
    nan_splits = (with_nan.feature >= 0) & (with_nan.missing_type == 2)
    assert set(np.unique(with_nan.default_left[nan_splits])) == {False, True}
    clean = _train({"num_leaves": 31}, np.nan_to_num(X), y)
    ensemble = TreeEnsemble.from_booster(clean)
    assert set(np.unique(ensemble.missing_type[ensemble.feature >= 0])) == {0}
    _assert_same(clean, _queries(clean), ensemble)  # NaN at serving time reads as 0.0


def test_infinite_thresholds():
    """A split that sends only NaN one way has threshold +inf, dumped as 1e300: +inf and the doubles
    above 1e300 must still go left."""
    X, y = _data(nan_share=0.3)
    y = y + 5 * np.isnan(X[:, 3])  # feature 3 takes 0..4: "NaN or not" is the best first split
    booster = _train({"num_leaves": 7}, X, y, rounds=5)
    ensemble = TreeEnsemble.from_booster(booster)
    assert np.isinf(ensemble.threshold[ensemble.feature >= 0]).any()
    queries = _queries(booster)
    queries[:20, 3] = [np.inf, -np.inf, 1e300, np.nextafter(1e300, np.inf), np.finfo(float).max, np.nan] * 3 + [1, 0]
    _assert_same(booster, queries, ensemble)


def test_lambdarank_matches_lightgbm():
    rng = np.random.default_rng(3)
    X, y = _data(900, seed=3)
    relevance = np.clip(np.round((y - y.min()) / (y.max() - y.min()) * 4 + rng.normal(0, 0.5, len(y))), 0, 4)
    booster = _train({"objective": "lambdarank", "num_leaves": 31, "min_data_in_leaf": 5}, X, relevance,
                     rounds=60, group=[30] * 30)
    _assert_same(booster, _queries(booster, seed=4))


def test_single_leaf_tree():
    X, y = _data(100)
    booster = _train({"min_data_in_leaf": 1000}, X, y, rounds=3)
    ensemble = TreeEnsemble.from_booster(booster)
    assert ensemble.n_trees >= 1 and ensemble.max_depth == 0
    _assert_same(booster, _queries(booster), ensemble)
    assert np.allclose(ensemble.predict(X), y.mean())


def test_best_and_explicit_iteration():
    X, y = _data(800)
    train, valid = lgb.Dataset(X[:600], y[:600]), lgb.Dataset(X[600:], y[600:])
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 63, "learning_rate": 0.5,
                         "min_data_in_leaf": 2, "num_threads": 1}, train, num_boost_round=200,
                        valid_sets=[valid], callbacks=[lgb.early_stopping(5, verbose=False)])
    assert 0 < booster.best_iteration < 200
    queries = _queries(booster)
    _assert_same(booster, queries)
    # a best iteration short of the trees held: both sides stop there by default, or where they are told
    booster.best_iteration = 3
    best = TreeEnsemble.from_booster(booster)
    assert best.n_trees == 3 < booster.num_trees()
    _assert_same(booster, queries, best)
    every = TreeEnsemble.from_booster(booster, num_iteration=-1)
    assert every.n_trees == booster.num_trees()
    _assert_same(booster, queries, every, num_iteration=-1)


def test_float32_and_integer_input():
    X, y = _data(nan_share=0.0)
    booster = _train({"num_leaves": 31}, X, y)
    ensemble = TreeEnsemble.from_booster(booster)
    _assert_same(booster, _queries(booster).astype(np.float32), ensemble)
    integers = np.random.default_rng(0).integers(-3, 4, size=(50, N_FEATURES))
    _assert_same(booster, integers, ensemble)


def test_round_trip_through_a_model_npz():
    X, y = _data()
    booster = _train({"num_leaves": 31}, X, y)
    ensemble = TreeEnsemble.from_booster(booster)
    arrays = ensemble.to_arrays()
    assert all(key.startswith(ARRAY_PREFIX) for key in arrays)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, user_factors=np.ones((3, 2)), **arrays)  # beside the model's other arrays
    buffer.seek(0)
    with np.load(buffer) as npz:
        loaded = TreeEnsemble.from_arrays(npz)
    queries = _queries(booster)
    np.testing.assert_array_equal(loaded.predict(queries), ensemble.predict(queries))
    _assert_same(booster, queries, loaded)
    other = TreeEnsemble.from_arrays(ensemble.to_arrays(prefix="second_"), prefix="second_")
    assert other.n_trees == ensemble.n_trees


def test_empty_input_and_shape_errors():
    X, y = _data()
    ensemble = TreeEnsemble.from_booster(_train({"num_leaves": 7}, X, y, rounds=5))
    assert ensemble.predict(np.empty((0, N_FEATURES))).shape == (0,)
    with pytest.raises(ValueError, match=f"shape \\(n, {N_FEATURES}\\)"):
        ensemble.predict(np.zeros((3, N_FEATURES + 1)))
    with pytest.raises(ValueError, match="numeric"):
        ensemble.predict(np.full((2, N_FEATURES), "a"))


def test_categorical_splits_are_refused():
    X, y = _data(nan_share=0.0)
    X[:, 4] = np.random.default_rng(0).integers(0, 6, len(X))
    y = y + 3 * (X[:, 4] % 2)
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(X, y, categorical_feature=[4]), num_boost_round=5)
    with pytest.raises(TreeEnsembleError, match="categorical"):
        TreeEnsemble.from_booster(booster)


def test_linear_trees_and_multiclass_are_refused():
    X, y = _data(nan_share=0.0)
    with pytest.raises(TreeEnsembleError, match="linear"):
        TreeEnsemble.from_booster(_train({"linear_tree": True, "num_leaves": 4}, X, y, rounds=2))
    classes = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    with pytest.raises(TreeEnsembleError, match="multiclass"):
        TreeEnsemble.from_booster(_train({"objective": "multiclass", "num_class": 3}, X, classes, rounds=2))
    with pytest.raises(TypeError, match="lightgbm.Booster"):
        TreeEnsemble.from_booster(object())


def test_bad_arrays_are_refused():
    X, y = _data()
    arrays = TreeEnsemble.from_booster(_train({"num_leaves": 7}, X, y, rounds=3)).to_arrays()
    with pytest.raises(TreeEnsembleError, match="missing arrays"):
        TreeEnsemble.from_arrays({k: v for k, v in arrays.items() if not k.endswith("leaf_value")})
    with pytest.raises(TreeEnsembleError, match="format"):
        TreeEnsemble.from_arrays({**arrays, ARRAY_PREFIX + "format_version": np.asarray(99)})
    internal = int(np.flatnonzero(arrays[ARRAY_PREFIX + "feature"] >= 0)[-1])
    cyclic = {k: v.copy() for k, v in arrays.items()}
    cyclic[ARRAY_PREFIX + "left_child"][internal] = int(arrays[ARRAY_PREFIX + "tree_root"][0]) - 1 \
        if arrays[ARRAY_PREFIX + "tree_root"][0] > 0 else 0
    cyclic[ARRAY_PREFIX + "right_child"][internal] = cyclic[ARRAY_PREFIX + "left_child"][internal] + 1
    with pytest.raises(TreeEnsembleError, match="disjoint trees"):
        TreeEnsemble.from_arrays(cyclic)
    beyond = {**arrays, ARRAY_PREFIX + "n_features": np.asarray(1)}
    with pytest.raises(TreeEnsembleError, match="beyond n_features"):
        TreeEnsemble.from_arrays(beyond)


def test_serving_import_needs_no_lightgbm():
    code = "import sys, feedbackloop.models.trees; assert 'lightgbm' not in sys.modules, 'lightgbm imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
