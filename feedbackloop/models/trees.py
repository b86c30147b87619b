"""A LightGBM tree ensemble evaluated with numpy alone, for the serving Lambda (which has no lightgbm).

`TreeEnsemble.from_booster` flattens every tree of `Booster.dump_model()` into a few arrays; `to_arrays` /
`from_arrays` carry them inside the model's `model.npz`; `predict` returns what
`booster.predict(X, raw_score=True)` returns, numerical splits only (categorical and linear trees are
refused at export, so a model the evaluator would score wrongly never ships).

LightGBM's rule for a numerical split (`Tree::NumericalDecision`), reproduced exactly:
- a value with |x| <= kZeroThreshold (float32 1e-35) is read as 0.0 (the dense row reader drops it);
- NaN becomes 0.0 unless the split's missing type is NaN;
- missing type NaN sends NaN, missing type Zero sends 0.0, to the default side (`default_left`);
- otherwise x <= threshold goes left.

How `predict` stays fast in numpy (the serving budget is about 2 ms for a few hundred candidates):
- The missing-value rule costs nothing per node: each node reads one of up to five versions of its
  feature's column prepared once per call, in which NaN (and for missing type Zero, zero) is already
  replaced by 0.0, -inf or +inf (real values are clipped to the finite doubles, which compare with every
  threshold as infinities would), so one `x > threshold` says "go right" for every node.
- Every tree's nodes live in one array; a node's right child is its left child + 1, so the next node is
  `left[node] + go_right`; a leaf is its own left child with threshold +inf, so it stays put.
- The prepared columns lie column-major, so a (tree, candidate) pair reads its node's value at the node's
  column's start plus the candidate's row.
- All (tree, candidate) pairs advance a level at a time with `np.take`; once a good share of them has
  reached its leaf, those leaves' values are added to the scores and the pairs leave the working set
  (a leaf-wise tree's paths are about half its depth).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # lightgbm is a training dependency only; the serving Lambda does not have it
    import lightgbm

#: the prefix of this ensemble's keys in a model's npz file
ARRAY_PREFIX = "reranker_"
FORMAT_VERSION = 1

#: LightGBM's kZeroThreshold (`const double kZeroThreshold = 1e-35f`): a float literal, read as a double
ZERO_THRESHOLD = float(np.float32(1e-35))

# missing types, as stored in the arrays
MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
_MISSING_TYPES = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}

# The column versions a node can read: what replaces NaN (and, for missing type Zero, also zero).
_NAN_AS_ZERO, _NAN_LEFT, _NAN_RIGHT, _ZERO_NAN_LEFT, _ZERO_NAN_RIGHT = range(5)

_DUMP_INFINITY = 1e300
_FLOAT_MAX = float(np.finfo(np.float64).max)

#: compact the working set once this share of it has reached a leaf
_COMPACT_SHARE = 0.3

_ARRAY_NAMES = ("feature", "threshold", "missing_type", "default_left", "left_child", "right_child",
                "leaf_value", "tree_root", "n_features", "format_version")


def _unclamp(threshold: float) -> float:
    """The dump writes an infinite threshold (a split that sends only NaN one way) as +-1e300 (`AvoidInf`);
    a data-derived threshold never gets that far, so read those back as the infinities they were."""
    if threshold >= _DUMP_INFINITY:
        return np.inf
    if threshold <= -_DUMP_INFINITY:
        return -np.inf
    return threshold


class TreeEnsembleError(ValueError):
    """A model the numpy evaluator cannot reproduce exactly, or arrays that do not form a valid ensemble."""


class TreeEnsemble:
    """The trees of a LightGBM model as flat arrays over all nodes (internal nodes and leaves alike).

    Node i: `feature[i]` (-1 for a leaf), `threshold[i]`, `missing_type[i]` (0 None, 1 Zero, 2 NaN),
    `default_left[i]`, `left_child[i]` and `right_child[i]` (global node indices, right = left + 1; a leaf
    points to itself), `leaf_value[i]` (0 for an internal node; shrinkage already applied). Tree t starts
    at node `tree_root[t]`. The raw score of a row is the sum over trees of the value of the leaf it reaches.
    """

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, missing_type: np.ndarray,
                 default_left: np.ndarray, left_child: np.ndarray, right_child: np.ndarray,
                 leaf_value: np.ndarray, tree_root: np.ndarray, n_features: int) -> None:
        self.feature = np.asarray(feature, dtype=np.int32)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.missing_type = np.asarray(missing_type, dtype=np.int8)
        self.default_left = np.asarray(default_left, dtype=bool)
        self.left_child = np.asarray(left_child, dtype=np.int32)
        self.right_child = np.asarray(right_child, dtype=np.int32)
        self.leaf_value = np.asarray(leaf_value, dtype=np.float64)
        self.tree_root = np.asarray(tree_root, dtype=np.int32)
        self.n_features = int(n_features)
        self._validate()
        self._prepare()

    # -- export -------------------------------------------------------------------------------------------

    @classmethod
    def from_booster(cls, booster: lightgbm.Booster, num_iteration: int | None = None) -> TreeEnsemble:
        """Flatten the booster's trees. `num_iteration=None` keeps LightGBM's default: the best iteration
        if early stopping set one, else all; a number keeps that many iterations, as `booster.predict` does."""
        import lightgbm  # lazy: only the training side has it

        if not isinstance(booster, lightgbm.Booster):
            raise TypeError(f"expected a lightgbm.Booster, got {type(booster).__name__}"
                            " (for a scikit-learn model pass its .booster_)")
        return cls.from_dump(booster.dump_model(num_iteration=num_iteration))

    @classmethod
    def from_dump(cls, dump: Mapping[str, Any]) -> TreeEnsemble:
        """Flatten the dict `Booster.dump_model()` returns."""
        if dump.get("num_tree_per_iteration", 1) != 1:
            raise TreeEnsembleError(f"{dump['num_tree_per_iteration']} trees per iteration (a multiclass model):"
                                    " only single-output models (regression, ranking, binary) are supported")
        if dump.get("average_output", False):
            raise TreeEnsembleError("average_output (boosting 'rf') is not supported")
        feature: list[int] = []
        threshold: list[float] = []
        missing: list[int] = []
        default_left: list[bool] = []
        left: list[int] = []
        leaf_value: list[float] = []
        roots: list[int] = []

        def new_node() -> int:
            feature.append(-1)
            threshold.append(np.inf)
            missing.append(MISSING_NONE)
            default_left.append(False)
            left.append(len(left))
            leaf_value.append(0.0)
            return len(feature) - 1

        for tree in dump["tree_info"]:
            tree_index = tree.get("tree_index", len(roots))
            if tree.get("num_cat", 0):
                raise TreeEnsembleError(f"tree {tree_index} has categorical splits: only numerical splits are"
                                        " supported (train the re-ranker without categorical_feature)")
            root = new_node()
            roots.append(root)
            stack = [(tree["tree_structure"], root)]
            while stack:
                node, i = stack.pop()
                if "split_feature" not in node:  # a leaf (a one-leaf tree's root has leaf_value only)
                    if "leaf_const" in node or "leaf_coeff" in node:
                        raise TreeEnsembleError(f"tree {tree_index} has linear leaves (linear_tree):"
                                                " only constant leaves are supported")
                    leaf_value[i] = float(node["leaf_value"])
                    continue
                if node["decision_type"] != "<=":
                    raise TreeEnsembleError(f"tree {tree_index} has a {node['decision_type']!r} split:"
                                            " only numerical splits are supported")
                if node["missing_type"] not in _MISSING_TYPES:
                    raise TreeEnsembleError(f"tree {tree_index}: unknown missing_type {node['missing_type']!r}")
                feature[i] = int(node["split_feature"])
                threshold[i] = _unclamp(float(node["threshold"]))
                missing[i] = _MISSING_TYPES[node["missing_type"]]
                default_left[i] = bool(node["default_left"])
                left_index = new_node()
                new_node()  # the right child, always next to the left one
                left[i] = left_index
                stack.append((node["left_child"], left_index))
                stack.append((node["right_child"], left_index + 1))
        left_arr = np.asarray(left, dtype=np.int32)
        is_leaf = np.asarray(feature) < 0
        return cls(feature=feature, threshold=threshold, missing_type=missing, default_left=default_left,
                   left_child=left_arr, right_child=np.where(is_leaf, left_arr, left_arr + 1),
                   leaf_value=leaf_value, tree_root=roots, n_features=int(dump["max_feature_idx"]) + 1)

    # -- persistence --------------------------------------------------------------------------------------

    def to_arrays(self, prefix: str = ARRAY_PREFIX) -> dict[str, np.ndarray]:
        """The arrays to save beside the model's others: `np.savez(path, **other, **to_arrays())`."""
        values = {"feature": self.feature, "threshold": self.threshold, "missing_type": self.missing_type,
                  "default_left": self.default_left, "left_child": self.left_child,
                  "right_child": self.right_child, "leaf_value": self.leaf_value, "tree_root": self.tree_root,
                  "n_features": np.asarray(self.n_features, dtype=np.int64),
                  "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64)}
        return {prefix + name: value for name, value in values.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = ARRAY_PREFIX) -> TreeEnsemble:
        """Load from a mapping holding `to_arrays()`'s keys, e.g. the `np.load` of a model.npz; other keys
        are ignored."""
        missing = [prefix + name for name in _ARRAY_NAMES if prefix + name not in arrays]
        if missing:
            raise TreeEnsembleError(f"not a tree ensemble: missing arrays {missing}")
        version = int(arrays[prefix + "format_version"])
        if version != FORMAT_VERSION:
            raise TreeEnsembleError(f"tree ensemble format {version}; this code reads format {FORMAT_VERSION}")
        fields = {name: np.asarray(arrays[prefix + name]) for name in _ARRAY_NAMES if name != "format_version"}
        return cls(**{**fields, "n_features": int(fields["n_features"])})

    @property
    def n_trees(self) -> int:
        return len(self.tree_root)

    @property
    def max_depth(self) -> int:
        """The most splits on any path from a root to a leaf."""
        return int(self._depth.max(initial=0))

    # -- scoring ------------------------------------------------------------------------------------------

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The raw score of each row of X (n, n_features), float32 or float64, NaN for missing: what
        `booster.predict(X, raw_score=True)` returns."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {X.shape}")
        if X.dtype.kind not in "fiub":
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        n = X.shape[0]
        if n == 0 or self.n_trees == 0:
            return np.zeros(n)
        # the columns side by side, column-major: a node's value for row r is at its column's start + r
        flat = np.ascontiguousarray(self._columns(X).T).ravel()
        start = self._column * n  # each node's column's start in `flat`
        # One entry per (tree, row) still inside a tree: its node, and its row.
        node = np.repeat(self.tree_root.astype(np.intp), n)
        row = np.tile(np.arange(n, dtype=np.intp), self.n_trees)
        score = np.zeros(n)
        threshold = np.take(self._threshold, node, mode="clip")  # indices were validated: no bounds check
        while node.size:
            at_leaf = threshold == np.inf
            finished = np.count_nonzero(at_leaf)
            # Drop the entries that reached their leaf once they are a good share: a compaction costs about
            # what a level does, and a leaf-wise tree's paths are about half its depth.
            if finished and (finished >= _COMPACT_SHARE * node.size or finished == node.size):
                done = np.flatnonzero(at_leaf)
                score += np.bincount(row.take(done), weights=self.leaf_value.take(node.take(done)), minlength=n)
                keep = np.flatnonzero(~at_leaf)
                node, row, threshold = node.take(keep), row.take(keep), threshold.take(keep)
                if not node.size:
                    break
            column = np.take(start, node, mode="clip")
            column += row
            go_right = np.take(flat, column, mode="clip") > threshold
            node = np.take(self._left, node, mode="clip")
            node += go_right
            threshold = np.take(self._threshold, node, mode="clip")
        return score

    # -- internals ----------------------------------------------------------------------------------------

    def _validate(self) -> None:
        n_nodes = len(self.feature)
        per_node = (self.threshold, self.missing_type, self.default_left, self.left_child, self.right_child,
                    self.leaf_value)
        if any(a.shape != (n_nodes,) for a in (self.feature, *per_node)) or self.tree_root.ndim != 1:
            raise TreeEnsembleError("node arrays must be one-dimensional and of equal length")
        if self.n_features < 1:
            raise TreeEnsembleError(f"n_features must be positive, got {self.n_features}")
        internal = self.feature >= 0
        if np.any(self.feature >= self.n_features):
            raise TreeEnsembleError("a split feature is beyond n_features")
        if not np.isin(self.missing_type, list(_MISSING_TYPES.values())).all():
            raise TreeEnsembleError("unknown missing_type code")
        for name, index in (("left_child", self.left_child), ("right_child", self.right_child),
                            ("tree_root", self.tree_root)):
            if index.size and (index.min() < 0 or index.max() >= n_nodes):
                raise TreeEnsembleError(f"{name} points outside the {n_nodes} nodes")
        leaves = np.flatnonzero(~internal)
        if np.any(self.left_child[leaves] != leaves) or np.any(self.right_child[leaves] != leaves):
            raise TreeEnsembleError("a leaf must be its own child")
        if np.any(self.right_child[internal] != self.left_child[internal] + 1):
            raise TreeEnsembleError("a node's right child must follow its left child")
        if np.any(np.isnan(self.threshold[internal])):
            raise TreeEnsembleError("a split threshold is NaN")
        # Walk every tree level by level: each node must be reached exactly once, so the trees are trees.
        reached = np.zeros(n_nodes, dtype=np.int64)
        depth = np.zeros(self.n_trees, dtype=np.int64)
        frontier, tree = self.tree_root.astype(np.intp), np.arange(self.n_trees)
        for level in range(n_nodes + 1):
            np.add.at(reached, frontier, 1)
            split = internal[frontier]
            if not split.any():
                break
            depth[tree[split]] = level + 1
            parents, tree = frontier[split], np.repeat(tree[split], 2)
            frontier = np.stack([self.left_child[parents], self.right_child[parents]], axis=1).ravel()
            if reached.sum() > n_nodes:
                break
        if np.any(reached != 1):
            raise TreeEnsembleError("the node arrays do not form disjoint trees covering every node")
        self._depth = depth

    def _prepare(self) -> None:
        """The layout `predict` walks: each node's column (its column version, then its feature) and its
        threshold (+inf for a leaf, so it never moves)."""
        internal = self.feature >= 0
        version = np.full(len(self.feature), _NAN_AS_ZERO)
        is_nan, is_zero = self.missing_type == MISSING_NAN, self.missing_type == MISSING_ZERO
        version[is_nan] = np.where(self.default_left[is_nan], _NAN_LEFT, _NAN_RIGHT)
        version[is_zero] = np.where(self.default_left[is_zero], _ZERO_NAN_LEFT, _ZERO_NAN_RIGHT)
        version[~internal] = _NAN_AS_ZERO
        self._versions = np.unique(version[internal]) if internal.any() else np.array([_NAN_AS_ZERO])
        slot = np.zeros(5, dtype=np.intp)
        slot[self._versions] = np.arange(len(self._versions))
        # column of the prepared matrix: version block, then feature
        self._column = (slot[version] * self.n_features + np.maximum(self.feature, 0)).astype(np.intp)
        # Inputs are clipped to the finite doubles (below), so +-inf stay free to stand for "always right" and
        # "always left" (NaN and zero by the missing rule); an infinite threshold is clipped likewise, which
        # keeps every comparison of a finite or infinite input with it as LightGBM makes it.
        self._threshold = np.where(internal, np.clip(self.threshold, -_FLOAT_MAX, _FLOAT_MAX), np.inf)
        self._left = self.left_child.astype(np.intp)

    def _columns(self, X: np.ndarray) -> np.ndarray:
        """X's column versions side by side, with LightGBM's missing-value rule already applied."""
        x = X.astype(np.float64)  # LightGBM compares in double; a float32 input widens exactly
        x[np.abs(x) <= ZERO_THRESHOLD] = 0.0  # the dense row reader drops such values: they read as 0.0
        np.clip(x, -_FLOAT_MAX, _FLOAT_MAX, out=x)  # NaN stays NaN
        nan = np.isnan(x)
        blocks = []
        for version in self._versions:
            if version == _NAN_AS_ZERO:
                blocks.append(np.where(nan, 0.0, x))
            elif version in (_NAN_LEFT, _NAN_RIGHT):
                blocks.append(np.where(nan, -np.inf if version == _NAN_LEFT else np.inf, x))
            else:
                blocks.append(np.where(nan | (x == 0.0), -np.inf if version == _ZERO_NAN_LEFT else np.inf, x))
        return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
