"""LeanRandomForestClassifier against sklearn's RandomForestClassifier: the same forest to the
bit (every tree's node arrays, every attribute, predictions, importances) on the settings the
analyze stage uses and the ones around them; the settings it does not cover fall back."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier

from pipelines.stats.forest import LeanRandomForestClassifier, forest_impurity_importances


def _data(n: int, p: int, seed: int, classes: int = 2, ties: bool = False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if ties:  # few distinct values and a constant column: ties in every split search
        X = np.round(X)
        X[:, 0] = 1.0
    y = rng.integers(0, classes, n).astype(float)
    y[:classes] = np.arange(classes)  # every class present
    return X, y


def _assert_same_forest(a: RandomForestClassifier, b: RandomForestClassifier, X) -> None:
    assert len(a.estimators_) == len(b.estimators_)
    assert set(vars(a)) == set(vars(b))
    for k in vars(a):
        va, vb = getattr(a, k), getattr(b, k)
        if hasattr(va, "get_params"):  # the template tree: equal settings
            assert va.get_params() == vb.get_params(), k
        elif isinstance(va, np.random.RandomState):  # a stream both forests consumed alike
            assert str(va.get_state()) == str(vb.get_state()), k
        elif k != "estimators_":
            np.testing.assert_array_equal(va, vb, err_msg=k)
    for ta, tb in zip(a.estimators_, b.estimators_, strict=True):
        _assert_same_tree(ta, tb, np.asarray(X))
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.array_equal(a.feature_importances_, b.feature_importances_)
    assert np.array_equal(forest_impurity_importances(b), a.feature_importances_)


@pytest.mark.parametrize("n, p, seed, params", [
    (150, 204, 0, {"max_features": "sqrt"}),          # analyze's survival forest (R+C+I)
    (150, 2, 1, {"max_features": "sqrt"}),            # the clinical set
    (23, 45, 2, {"max_features": "sqrt"}),            # a demo training fold
    (60, 30, 3, {"max_features": "log2", "criterion": "entropy"}),
    (40, 12, 4, {"max_features": 0.5, "max_depth": 3, "min_samples_leaf": 2}),
    (40, 12, 5, {"max_features": None, "min_samples_split": 5, "min_impurity_decrease": 0.01}),
    (40, 12, 6, {"max_features": 4, "min_weight_fraction_leaf": 0.05}),
])
def test_the_lean_fit_is_sklearns_forest_to_the_bit(n, p, seed, params, monkeypatch):
    X, y = _data(n, p, seed)
    ref = RandomForestClassifier(n_estimators=25, random_state=seed, n_jobs=1, **params)
    lean = LeanRandomForestClassifier(n_estimators=25, random_state=seed, n_jobs=1, **params)
    ref.fit(X, y)
    _no_sklearn_fit(monkeypatch)  # the lean path itself is compared, not a fallback
    _assert_same_forest(ref, lean.fit(X, y), X)


def _no_sklearn_fit(monkeypatch) -> None:
    def fail(*a, **k):
        raise AssertionError("fell back to RandomForestClassifier.fit")
    monkeypatch.setattr(RandomForestClassifier, "fit", fail)


@pytest.mark.parametrize("kind", ["ties", "multiclass", "dataframe", "labels", "one_class",
                                  "random_state_object", "float32"])
def test_the_lean_fit_on_other_inputs(kind, monkeypatch):
    X, y = _data(50, 8, 7, classes=3 if kind == "multiclass" else 2, ties=kind == "ties")
    rs = 0
    if kind == "dataframe":
        X = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    if kind == "labels":
        y = np.where(y > 0, "long", "short")
    if kind == "one_class":
        y = np.ones(len(y))
    if kind == "float32":
        X = X.astype(np.float32)
    if kind == "random_state_object":
        rs = np.random.RandomState(11)
    ref = RandomForestClassifier(n_estimators=10, random_state=rs, max_features="sqrt")
    lean = LeanRandomForestClassifier(n_estimators=10, random_state=clone(ref).random_state,
                                      max_features="sqrt")
    if kind == "random_state_object":  # each forest consumes its own copy of the stream
        ref.random_state, lean.random_state = np.random.RandomState(11), np.random.RandomState(11)
    ref.fit(X, y)
    _no_sklearn_fit(monkeypatch)
    _assert_same_forest(ref, lean.fit(X, y), X)


@pytest.mark.parametrize("change", ["nan", "sample_weight", "class_weight", "oob_score",
                                    "ccp_alpha", "max_samples", "max_leaf_nodes", "no_bootstrap"])
def test_settings_it_does_not_cover_fall_back_to_sklearn(change):
    X, y = _data(40, 6, 8)
    kw, fit_kw = {"n_estimators": 10, "random_state": 3}, {}
    if change == "nan":
        X[3, 2] = np.nan
    elif change == "sample_weight":
        fit_kw["sample_weight"] = np.linspace(0.5, 2.0, len(y))
    elif change == "class_weight":
        kw["class_weight"] = "balanced"
    elif change == "oob_score":
        kw["oob_score"] = True
    elif change == "ccp_alpha":
        kw["ccp_alpha"] = 0.01
    elif change == "max_samples":
        kw["max_samples"] = 0.7
    elif change == "max_leaf_nodes":
        kw["max_leaf_nodes"] = 5
    else:
        kw["bootstrap"] = False
    ref = RandomForestClassifier(**kw).fit(X, y, **fit_kw)
    lean = LeanRandomForestClassifier(**kw).fit(X, y, **fit_kw)
    assert np.array_equal(ref.predict_proba(X), lean.predict_proba(X))
    assert np.array_equal(ref.feature_importances_, lean.feature_importances_)


def test_it_clones_pickles_and_refuses_what_sklearn_refuses():
    X, y = _data(30, 5, 9)
    lean = LeanRandomForestClassifier(n_estimators=5, random_state=0)
    again = pickle.loads(pickle.dumps(clone(lean).fit(X, y)))
    assert np.array_equal(again.predict_proba(X), lean.fit(X, y).predict_proba(X))
    with pytest.raises(ValueError):
        LeanRandomForestClassifier(n_estimators=0).fit(X, y)
    with pytest.raises(ValueError):
        LeanRandomForestClassifier(n_estimators=5).fit(X, np.linspace(0, 1, len(y)))


def _assert_same_tree(ta, tb, X) -> None:
    assert type(ta) is type(tb)
    assert ta.get_params() == tb.get_params()
    assert set(vars(ta)) == set(vars(tb))
    for k in vars(ta):
        if k != "tree_":
            np.testing.assert_array_equal(getattr(ta, k), getattr(tb, k), err_msg=k)
    sa, sb = ta.tree_.__getstate__(), tb.tree_.__getstate__()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    assert np.array_equal(ta.predict_proba(X), tb.predict_proba(X))
    assert np.array_equal(ta.feature_importances_, tb.feature_importances_)


@pytest.mark.parametrize("kind, params", [
    ("bootstrap_rows", {"max_features": "sqrt"}),  # rf_oob: a tree on a bootstrap sample's rows
    ("ties", {"max_features": "sqrt"}),
    ("multiclass", {"max_features": None, "criterion": "entropy"}),
    ("labels", {"max_features": 3, "max_depth": 2}),
    ("one_class", {"max_features": "sqrt"}),
    ("dataframe", {"max_features": "log2", "min_samples_leaf": 3}),
    ("float32", {"max_features": 0.4, "min_weight_fraction_leaf": 0.1}),
    ("random_splitter", {"max_features": "sqrt", "splitter": "random"}),
])
def test_the_lean_tree_is_sklearns_tree_to_the_bit(kind, params, monkeypatch):
    X, y = _data(45, 9, 12, classes=3 if kind == "multiclass" else 2, ties=kind == "ties")
    if kind == "bootstrap_rows":
        boot = np.random.default_rng(1).integers(0, len(y), len(y))
        X, y = X[boot], y[boot]
    if kind == "labels":
        y = np.where(y > 0, "long", "short")
    if kind == "one_class":
        y = np.zeros(len(y))
    if kind == "dataframe":
        X = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    if kind == "float32":
        X = X.astype(np.float32)
    from sklearn.tree import DecisionTreeClassifier

    from pipelines.stats.forest import LeanTreeGrower

    grower = LeanTreeGrower(**params)
    refs = [DecisionTreeClassifier(**params, random_state=s).fit(X, y) for s in (5, 99, 2**30)]

    def fail(*a, **k):
        raise AssertionError("fell back to DecisionTreeClassifier.fit")
    monkeypatch.setattr(DecisionTreeClassifier, "fit", fail)
    for s, ref in zip((5, 99, 2**30), refs, strict=True):
        _assert_same_tree(ref, grower.fit(X, y, s), X)


@pytest.mark.parametrize("change", ["nan", "class_weight", "ccp_alpha", "max_leaf_nodes"])
def test_the_lean_tree_falls_back_where_it_does_not_cover(change):
    from sklearn.tree import DecisionTreeClassifier

    from pipelines.stats.forest import LeanTreeGrower

    X, y = _data(40, 6, 13)
    params = {"max_features": "sqrt"}
    if change == "nan":
        X[2, 1] = np.nan
    else:
        params[change] = {"class_weight": "balanced", "ccp_alpha": 0.02,
                          "max_leaf_nodes": 4}[change]
    ref = DecisionTreeClassifier(**params, random_state=4).fit(X, y)
    _assert_same_tree(ref, LeanTreeGrower(**params).fit(X, y, 4), X)


def test_the_lean_tree_refuses_what_sklearn_refuses():
    from pipelines.stats.forest import LeanTreeGrower

    X, y = _data(20, 4, 14)
    with pytest.raises(ValueError, match="continuous"):
        LeanTreeGrower().fit(X, np.linspace(0, 1, len(y)), 0)
    with pytest.raises(ValueError):
        LeanTreeGrower(max_depth=-1)
    with pytest.raises(ValueError):
        LeanTreeGrower().fit(X, y[:-1], 0)
