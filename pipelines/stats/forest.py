"""Random forests fitted with sklearn's own tree builder but without its per-tree Python checks.

The analyze stage fits tens of thousands of small forests (a leave-one-out series is n forests of
300 trees on about 150 rows). On such data sklearn spends about four fifths of each tree's fit in
Python input checks (target type, sample-weight and array validation, joblib dispatch) and one
fifth building the tree. :class:`LeanRandomForestClassifier` validates the data once per forest
and then drives sklearn's Cython builder (criterion, splitter, ``Tree``, ``DepthFirstTreeBuilder``)
per tree with the very arguments ``RandomForestClassifier.fit`` would pass, so the fitted forest
is the same to the bit: the same trees (node arrays), predictions and importances
(``tests/test_forest.py`` compares every attribute). Settings it does not cover (sample or class
weights, missing values, sparse input, pruning, best-first trees, warm start, out-of-bag score,
``max_samples``, multi-output) and an sklearn whose private tree API has moved fall back to
``RandomForestClassifier.fit`` itself.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

try:  # sklearn's private tree-building API (checked against the public fit by the tests)
    from sklearn.tree._classes import CRITERIA_CLF, DENSE_SPLITTERS
    from sklearn.tree._tree import DepthFirstTreeBuilder, Tree
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_random_state, validate_data
except ImportError:  # pragma: no cover - a future sklearn: use the public fit
    CRITERIA_CLF = None

INT32_MAX = np.iinfo(np.int32).max


def tree_max_features(max_features, n_features: int) -> int:
    """Return the number of features a split draws (``BaseDecisionTree._fit``'s rule)."""
    if isinstance(max_features, str):
        if max_features == "sqrt":
            return max(1, int(np.sqrt(n_features)))
        return max(1, int(np.log2(n_features)))  # "log2" (the only other string)
    if max_features is None:
        return n_features
    if isinstance(max_features, numbers.Integral):
        return int(max_features)
    return max(1, int(max_features * n_features)) if max_features > 0.0 else 0


def forest_impurity_importances(forest: RandomForestClassifier) -> np.ndarray:
    """Return ``forest.feature_importances_`` (n_features,) float64, the same to the bit, without
    joblib's dispatch per tree."""
    imps = [t.tree_.compute_feature_importances() for t in forest.estimators_
            if t.tree_.node_count > 1]
    if not imps:
        return np.zeros(forest.n_features_in_, dtype=np.float64)
    mean = np.mean(imps, axis=0, dtype=np.float64)
    return mean / np.sum(mean)


class LeanRandomForestClassifier(RandomForestClassifier):
    """A ``RandomForestClassifier`` whose ``fit`` builds its trees without per-tree checks.

    Same parameters, attributes and results as ``RandomForestClassifier`` (see the module
    docstring); only ``fit`` differs, and only in speed.
    """

    def _lean_covers(self, sample_weight) -> bool:
        """Return whether fit can take the lean path with these forest-level settings (the
        trees' own settings are checked by :func:`_tree_covered`)."""
        return (CRITERIA_CLF is not None and sample_weight is None and self.bootstrap
                and not self.oob_score and not self.warm_start and self.class_weight is None
                and self.max_samples is None)

    def fit(self, X, y, sample_weight=None):
        """Fit the forest on (X, y); return self (equal to ``RandomForestClassifier.fit``)."""
        if not self._lean_covers(sample_weight):
            return super().fit(X, y, sample_weight)
        self._validate_params()
        self._validate_estimator()
        template = self._make_estimator(append=False, random_state=0)  # seeds set per tree
        if not _tree_covered(template):
            return super().fit(X, y, sample_weight)
        X_in, y_in = X, y
        X, y = validate_data(self, X, y, multi_output=True, accept_sparse="csc",
                             dtype=np.float32, ensure_all_finite=False)
        y = np.atleast_1d(y)
        if (not isinstance(X, np.ndarray) or not np.isfinite(X).all()
                or (y.ndim == 2 and y.shape[1] != 1) or y.ndim > 2):
            return super().fit(X_in, y_in, sample_weight)  # sparse, missing values, multi-output
        y = np.reshape(y, (-1, 1))
        self._n_samples, self.n_outputs_ = y.shape
        y, _ = self._validate_y_class_weight(y, None)  # classes_, n_classes_; y as class indices
        y = np.ascontiguousarray(y, dtype=np.float64)
        self._sample_weight = None
        self._n_samples_bootstrap = X.shape[0]
        random_state = check_random_state(self.random_state)
        # RandomForestClassifier draws one seed per tree, in order (``_set_random_states``)
        seeds = random_state.randint(INT32_MAX, size=self.n_estimators)
        # one generator reseeded per use: RandomState(seed) would first draw OS entropy (~90 us)
        rs = np.random.RandomState(0)
        self.estimators_ = [_bootstrap_tree(template, int(s), X, y[:, 0], rs) for s in seeds]
        self.n_classes_ = self.n_classes_[0]
        self.classes_ = self.classes_[0]
        return self


def _bootstrap_tree(template: DecisionTreeClassifier, seed: int, X: np.ndarray,
                    labels: np.ndarray, rs: np.random.RandomState) -> DecisionTreeClassifier:
    """Return a copy of ``template`` with this seed, grown on a bootstrap sample of the n rows
    of X: ``_parallel_build_trees`` (the sample as counts, from sklearn's
    ``_generate_sample_indices``), then :func:`_grown_tree`; ``rs`` is reseeded with ``seed``
    for each of sklearn's ``RandomState(seed)``."""
    tree = copy.copy(template)
    tree.random_state = seed
    n = X.shape[0]
    rs.seed(seed)
    idx = rs.randint(0, n, n).astype(np.int32)
    weight = np.bincount(idx, minlength=n).astype(np.float64)
    return _grown_tree(tree, X, labels, weight, rs)


def _tree_covered(tree: DecisionTreeClassifier) -> bool:
    """Return whether :func:`_grown_tree` reproduces this tree's fit."""
    return (CRITERIA_CLF is not None and tree.criterion in CRITERIA_CLF
            and tree.splitter in DENSE_SPLITTERS and tree.class_weight is None
            and tree.max_leaf_nodes is None and tree.ccp_alpha == 0.0
            and tree.monotonic_cst is None and isinstance(tree.random_state, numbers.Integral)
            and isinstance(tree.min_samples_leaf, numbers.Integral)
            and isinstance(tree.min_samples_split, numbers.Integral))


def _grown_tree(tree: DecisionTreeClassifier, X: np.ndarray, labels: np.ndarray,
                weight: np.ndarray | None, rs: np.random.RandomState) -> DecisionTreeClassifier:
    """Return ``tree`` grown on validated float32 X (n, p) and 1-D labels (n,) with optional
    float64 sample weights: ``BaseDecisionTree._fit`` after its input checks, for the settings
    :func:`_tree_covered` accepts; ``rs`` is reseeded with the tree's seed for the splitter."""
    n, n_features = X.shape
    classes, encoded = np.unique(labels, return_inverse=True)
    n_classes = np.array([classes.shape[0]], dtype=np.intp)
    y_tree = np.ascontiguousarray(encoded.reshape(-1, 1), dtype=np.float64)
    max_features = tree_max_features(tree.max_features, n_features)
    min_leaf = tree.min_samples_leaf
    min_split = max(tree.min_samples_split, 2 * min_leaf)
    min_weight_leaf = tree.min_weight_fraction_leaf * (n if weight is None else np.sum(weight))
    max_depth = INT32_MAX if tree.max_depth is None else tree.max_depth
    criterion = CRITERIA_CLF[tree.criterion](1, n_classes)
    splitter = DENSE_SPLITTERS[tree.splitter](
        criterion, max_features, min_leaf, min_weight_leaf, rs, None)
    rs.seed(tree.random_state)  # the splitter draws its own seed when the builder starts
    tree_ = Tree(n_features, n_classes, 1)
    DepthFirstTreeBuilder(splitter, min_split, min_leaf, min_weight_leaf, max_depth,
                          tree.min_impurity_decrease).build(tree_, X, y_tree, weight, None)
    tree.n_features_in_ = n_features
    tree.n_outputs_ = 1
    tree.max_features_ = max_features
    tree.classes_ = classes
    tree.n_classes_ = n_classes[0]
    tree.tree_ = tree_
    return tree


def _integral_labels(y: np.ndarray) -> bool:
    """Return whether y is numeric, finite and whole-valued (then sklearn's target check, which
    costs more than growing a small tree, is sure to pass: binary or multiclass)."""
    return y.dtype.kind in "biu" or (y.dtype.kind == "f" and bool(np.all(np.isfinite(y)))
                                     and bool(np.all(y == np.floor(y))))


class LeanTreeGrower:
    """Fits ``DecisionTreeClassifier(**params, random_state=seed)`` on (X, y), the same tree to
    the bit as its ``fit``: parameters validated once, input checks per tree only where they
    can fail, sklearn's builder as in :class:`LeanRandomForestClassifier`."""

    def __init__(self, **params):
        self.template = DecisionTreeClassifier(**params, random_state=0)
        self.template._validate_params()
        self.covered = _tree_covered(self.template)
        self.rs = np.random.RandomState(0)

    def fit(self, X, y, seed: int) -> DecisionTreeClassifier:
        """Return the tree of this seed fitted on X (n, p) and labels y (n,)."""
        tree = copy.copy(self.template)
        tree.random_state = int(seed)
        if not self.covered:
            return tree.fit(X, y)
        X32, labels = validate_data(
            tree, X, y, validate_separately=(
                {"dtype": np.float32, "accept_sparse": "csc", "ensure_all_finite": False},
                {"ensure_2d": False, "dtype": None}))
        labels = np.atleast_1d(labels)
        if (not isinstance(X32, np.ndarray) or not np.isfinite(X32).all() or labels.ndim != 1
                or len(labels) != X32.shape[0]):
            return tree.fit(X, y)  # sparse, missing values, multi-output, or sklearn's error
        if not _integral_labels(labels):
            check_classification_targets(labels)
        return _grown_tree(tree, X32, labels, None, self.rs)
