"""Random-forest classifiers with LOOCV or a single split, AUC confidence intervals, and the
survival analysis of predicted groups (seed 000, sections 2.4, 3.3, 3.4; Figures 4 and 5).

Labels are 0/1 (for survival: 0 = short, 1 = long; for a marker: 0 = at or below the median,
1 = above). ``y`` is either fixed labels or a *label rule*: a callable
``make_labels(train_idx) -> labels of all n rows`` that learns whatever it needs (a median, the
censored-survival imputation) from the training rows ``train_idx`` only; see
:func:`median_labeller` and :func:`pipelines.stats.survival.survival_labeller`.

Two protocols:

- ``"paper"``: what the paper describes. Labels are computed once from all rows
  (``make_labels(all rows)``), so label thresholds (and the censored-survival donors) see the
  test row, a mild leak.
- ``"strict"``: everything learned from data is fitted inside each training fold: the label rule
  is called with the training rows and the test row is scored against the labels that rule gives
  it. No test row is used to fit anything.

In both protocols the preprocessing (missing-value imputation by medians, which the paper does not
describe) is a step of each fold's pipeline, fitted on the fold's training rows only (the OOB
path: on each tree's in-bag rows).

Evaluations: :func:`rf_loocv` (the paper's pooled leave-one-out), :func:`rf_split` (a single
train/test split), :func:`rf_repeated_cv` (repeated stratified k-fold, the recommended estimate at
small n: pooled LOOCV AUCs are biased below 0.5 when there is no signal) and :func:`rf_oob`
(out-of-bag predictions of one forest, cheap).

Random forests use ``n_jobs=1`` (parallelise over analyses, not inside one) and the same
``random_state=seed`` in every fold, so results are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from pipelines.exceptions import InputError
from pipelines.stats.association import MedianSplit, numeric_column
from pipelines.stats.forest import (
    LeanRandomForestClassifier,
    LeanTreeGrower,
    forest_impurity_importances,
)
from pipelines.stats.impute import MedianImputer
from pipelines.stats.splits import loo_folds
from pipelines.stats.survival import (
    LogrankResult,
    aligned_arrays,
    impute_censored_survival,
    logrank_median_split,
)

__all__ = [
    "EVALUATION_NAMES",
    "SMALL_N",
    "ClassifierResult",
    "ScoreSurvivalResult",
    "auc_caveat",
    "auc_ci",
    "delong_auc_variance",
    "median_labeller",
    "rf_loocv",
    "rf_oob",
    "rf_repeated_cv",
    "rf_split",
    "score_group_survival",
]

#: Default forest size: large enough for stable AUCs at n ~ 150, small enough for LOOCV.
N_ESTIMATORS = 300

Protocol = Literal["paper", "strict"]
LabelRule = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- AUC and its CI


def delong_auc_variance(y, score) -> tuple[float, float]:
    """Return (AUC, DeLong variance of the AUC), by the fast algorithm of Sun and Xu (2014).

    With m positives X and k negatives Y, and midranks T_X (within X), T_Y (within Y) and T_Z
    (within all), the structural components are V10_i = (T_Z(X_i) - T_X(X_i)) / k and
    V01_j = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m; AUC = mean(V10) and
    Var = var(V10) / m + var(V01) / k (sample variances, ddof=1). Ties count 1/2, as in the
    Mann-Whitney AUC. NaN pair when a class has fewer than 2 samples.
    """
    y = np.asarray(y).astype(int)
    s = np.asarray(score, dtype=float)
    x, yneg = s[y == 1], s[y == 0]
    m, k = x.size, yneg.size
    if m < 2 or k < 2:
        return np.nan, np.nan
    tx = stats.rankdata(x)
    ty = stats.rankdata(yneg)
    tz = stats.rankdata(np.concatenate([x, yneg]))
    v10 = (tz[:m] - tx) / k
    v01 = 1.0 - (tz[m:] - ty) / m
    auc = float(v10.mean())
    return auc, float(v10.var(ddof=1) / m + v01.var(ddof=1) / k)


def _bootstrap_aucs(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Return AUCs of stratified bootstrap resamples (positives and negatives resampled apart).

    Each AUC is the Mann-Whitney form (rank sum of the positives, average ranks for ties), equal
    to ``roc_auc_score`` and computed for all resamples at once.
    """
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    m, k = pos.size, neg.size
    boot = np.concatenate([rng.choice(pos, (n_boot, m)), rng.choice(neg, (n_boot, k))], axis=1)
    ranks = stats.rankdata(boot, axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * k)


def auc_ci(y, score, method: Literal["delong", "bootstrap"] = "delong", seed: int = 0,
           level: float = 0.95, n_boot: int = 2000) -> tuple[float, float, float]:
    """Return (AUC, lower, upper): the ROC AUC of ``score`` for 0/1 labels ``y`` and its CI.

    The AUC is ``sklearn.metrics.roc_auc_score``. ``method="delong"``: AUC +/- z * sqrt(DeLong
    variance) (:func:`delong_auc_variance`), clipped to [0, 1], as R's pROC ``ci.auc``; the
    interval is degenerate (lower = upper = AUC) under perfect separation, where the DeLong
    variance is 0. ``method="bootstrap"``: percentile interval of ``n_boot`` stratified bootstrap
    AUCs drawn with ``numpy.random.default_rng(seed)``. All NaN when a class has fewer than two
    samples (one, for the AUC itself).
    """
    y = np.asarray(y).astype(int)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape or not np.all(np.isin(y, (0, 1))) or np.isnan(s).any():
        raise InputError("auc_ci needs equally long 0/1 labels and non-missing scores")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.nan, np.nan, np.nan
    auc = float(roc_auc_score(y, s))
    if n_pos < 2 or n_neg < 2:
        return auc, np.nan, np.nan
    if method == "delong":
        _, var = delong_auc_variance(y, s)
        half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(var)
        return auc, max(0.0, auc - half), min(1.0, auc + half)
    if method == "bootstrap":
        boot = _bootstrap_aucs(y, s, n_boot, seed)
        lo, hi = np.quantile(boot, [0.5 - level / 2, 0.5 + level / 2])
        return auc, float(lo), float(hi)
    raise InputError(f"method must be 'delong' or 'bootstrap', got {method!r}")


# --------------------------------------------------------------------------- labels


def median_labeller(x) -> LabelRule:
    """Return ``make_labels(train_idx)``: 1 where x > median of x[train_idx], else 0.

    For marker classifiers (below vs above median). ``x`` must have no missing values (drop
    those patients first). ``make_labels(np.arange(n))`` is the median split of all rows.
    """
    v = np.asarray(pd.to_numeric(pd.Series(np.asarray(x)), errors="raise"), dtype=float)
    if np.isnan(v).any():
        raise InputError("the labelled variable has missing values; drop those patients first")

    def make_labels(train_idx) -> np.ndarray:
        split = MedianSplit().fit(v[np.asarray(train_idx)])
        return split.transform(v).to_numpy(dtype=int)

    return make_labels


def _label_rule(y, X: pd.DataFrame) -> LabelRule:
    """Return a label rule for ``y`` (fixed labels become a rule ignoring its argument)."""
    if callable(y):
        rule = y
    else:
        if isinstance(y, pd.Series) and not y.index.equals(X.index):
            if set(y.index) != set(X.index):
                raise InputError("y is indexed by other patients than X")
            y = y.loc[X.index]
        fixed = np.asarray(y)

        def rule(_train_idx):
            return fixed

    n = len(X)

    def checked(train_idx) -> np.ndarray:
        lab = np.asarray(rule(np.asarray(train_idx)))
        if lab.shape != (n,):
            raise InputError(f"labels must have one value per row of X ({n}), got {lab.shape}")
        if pd.isna(lab).any() or not np.all(np.isin(lab, (0, 1))):
            raise InputError("labels must be 0 or 1 with no missing value")
        return lab.astype(int)

    return checked


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ClassifierResult:
    """AUC of a random forest on held-out predictions, with importances.

    ``scores``: held-out predicted P(label = 1) per row (LOOCV: every row, out of fold; split:
    the test rows), indexed like X; ``labels``: the 0/1 labels they are scored against (strict
    LOOCV: each row's label from its own fold's rule). ``importances``: one row per feature,
    columns ``impurity`` (mean decrease in impurity; mean over LOOCV folds) and
    ``permutation_mean`` / ``permutation_std`` (decrease in ROC AUC when the feature is
    permuted; see the producing function for which rows), sorted by decreasing impurity.
    """

    auc: float
    auc_low95: float
    auc_high95: float
    n: int
    n_pos: int
    scores: pd.Series
    labels: pd.Series
    importances: pd.DataFrame
    protocol: str
    ci_method: str
    params: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Return the scalar fields (AUC, CI, n, n_pos, protocol, CI method) as a dict."""
        return {"auc": self.auc, "auc_low95": self.auc_low95, "auc_high95": self.auc_high95,
                "n": self.n, "n_pos": self.n_pos, "protocol": self.protocol,
                "ci_method": self.ci_method}


def _check_X(X) -> pd.DataFrame:
    """Return X as a float DataFrame, or raise InputError."""
    if not isinstance(X, pd.DataFrame):
        raise InputError("X must be a pandas DataFrame (patients x features)")
    if X.shape[1] == 0:
        raise InputError("X has no feature columns")
    return pd.DataFrame({c: numeric_column(X[c], str(c)) for c in X.columns}, index=X.index)


def _pipeline(preprocess, seed: int, n_estimators: int, rf_params: dict | None) -> Pipeline:
    """Return an unfitted (preprocess, random forest) pipeline; preprocess defaults to median
    imputation (a no-op on complete data)."""
    prep = MedianImputer() if preprocess is None else clone(preprocess)
    params = {"max_features": "sqrt", **(rf_params or {})}
    rf = LeanRandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1,
                                    **params)
    return Pipeline([("prep", prep), ("rf", rf)])


def _proba1(model, X) -> np.ndarray:
    """Return P(label = 1) from a fitted classifier (0 or 1 if it saw a single class)."""
    classes = list(model.classes_)
    if 1 not in classes:
        return np.zeros(len(X))
    if len(classes) == 1:
        return np.ones(len(X))
    if isinstance(model, Pipeline) and isinstance(model[-1], RandomForestClassifier):
        return forest_proba(model[-1], model[:-1].transform(X))[:, classes.index(1)]
    if isinstance(model, DecisionTreeClassifier):  # predict_proba without its input checks
        return model.tree_.predict(np.asarray(X, dtype=np.float32))[:, classes.index(1)]
    return model.predict_proba(X)[:, classes.index(1)]


def _take(rows, idx):
    """Return the rows `idx` of an array or DataFrame."""
    return rows[idx] if isinstance(rows, np.ndarray) else rows.iloc[idx]


def forest_proba(forest: RandomForestClassifier, X) -> np.ndarray:
    """Return `forest.predict_proba(X)`, the same to the bit, without its per-tree overhead.

    (n_samples, n_classes) float64. sklearn sums the trees' leaf class fractions in tree order
    (through joblib and a lock, even with n_jobs=1) and divides by the number of trees; the same
    sum over ``tree_.predict`` of the float32 input takes a tenth of the time for a single row,
    which is what each leave-one-out fold predicts.
    """
    X32 = np.asarray(X, dtype=np.float32)
    if X32.ndim != 2 or X32.shape[1] != forest.n_features_in_:
        return forest.predict_proba(X)  # let sklearn raise its own error
    k = int(forest.n_classes_)
    out = np.zeros((X32.shape[0], k), dtype=np.float64)
    for tree in forest.estimators_:
        out += tree.tree_.predict(X32)[:, :k]
    out /= len(forest.estimators_)
    return out


def _impurity(model: Pipeline, n_features: int) -> np.ndarray:
    """Return the forest's impurity importances, checking preprocessing kept the columns."""
    imp = forest_impurity_importances(model.named_steps["rf"])
    if imp.size != n_features:
        raise InputError("preprocess must keep one output column per input feature "
                         f"({n_features}), got {imp.size}")
    return imp


def _permutation(model, X: pd.DataFrame, y: np.ndarray, repeats: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (mean, std) permutation importances (ROC AUC decrease); NaN if not computable."""
    nan = np.full(X.shape[1], np.nan)
    if repeats <= 0 or len(np.unique(y)) < 2:
        return nan, nan
    r = permutation_importance_batched(model, X, y, n_repeats=repeats, random_state=seed)
    return r["importances_mean"], r["importances_std"]


#: Rows scored per predict_proba call of `permutation_importance_batched` (bounds its memory).
PERMUTATION_BATCH_ROWS = 40_000


def permutation_importance_batched(model, X: pd.DataFrame, y, n_repeats: int = 5,
                                   random_state: int = 0) -> dict[str, np.ndarray]:
    """Return sklearn's ROC AUC permutation importances, the same to the bit, in a few large
    predict calls: {"importances_mean", "importances_std"} (n_features,) and
    "importances" (n_features, n_repeats).

    `sklearn.inspection.permutation_importance(model, X, y, scoring="roc_auc",
    n_repeats=n_repeats, random_state=random_state)` scores each of the n_features x n_repeats
    permuted copies of X with its own predict_proba call; a random forest's per-call overhead
    (one Python call per tree) then dominates: 900 calls of 300 trees take about 100 s. A forest
    scores each row independently (per-tree probabilities summed in tree order), so stacking the
    permuted copies and predicting them together gives the same scores. The permutations are
    sklearn's: one seed drawn from `random_state`, a fresh RandomState of it per column, and
    each repeat re-shuffles the previous repeat's order.

    X: DataFrame (patients x features) the model was fitted with; y: 0/1 labels (both present).
    """
    from sklearn.utils import check_random_state

    X = pd.DataFrame(X)
    y = np.asarray(y)
    n, n_features = X.shape
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max + 1)
    values = X.to_numpy(copy=True)
    baseline = roc_auc_score(y, _proba1(model, X))
    # the column values of every (feature, repeat), as sklearn's loop makes them
    orders = []
    for _ in range(n_features):
        rs = check_random_state(seed)
        idx = np.arange(n)
        composed = np.arange(n)
        per = []
        for _ in range(n_repeats):
            rs.shuffle(idx)
            composed = composed[idx]  # X_permuted[:, c] = X_permuted[idx, c], cumulatively
            per.append(composed.copy())
        orders.append(per)
    permuted = np.empty((n_features, n_repeats))
    per_batch = max(1, PERMUTATION_BATCH_ROWS // max(1, n * n_repeats))
    for start in range(0, n_features, per_batch):
        cols = range(start, min(n_features, start + per_batch))
        block = np.tile(values, (len(cols) * n_repeats, 1))
        k = 0
        for c in cols:
            for r in range(n_repeats):
                block[k * n:(k + 1) * n, c] = values[orders[c][r], c]
                k += 1
        proba = _proba1(model, pd.DataFrame(block, columns=X.columns))
        k = 0
        for c in cols:
            for r in range(n_repeats):
                permuted[c, r] = roc_auc_score(y, proba[k * n:(k + 1) * n])
                k += 1
    importances = baseline - permuted
    return {"importances_mean": np.mean(importances, axis=1),
            "importances_std": np.std(importances, axis=1), "importances": importances}


def _importances(cols, impurity, perm) -> pd.DataFrame:
    """Return the importances frame (index = feature), sorted by decreasing impurity."""
    df = pd.DataFrame({"impurity": impurity, "permutation_mean": perm[0],
                       "permutation_std": perm[1]}, index=pd.Index(cols, name="feature"))
    return df.sort_values("impurity", ascending=False, kind="stable")


def _result(y_eval, scores, index, importances, protocol, ci_method, seed, params):
    """Return a ClassifierResult for held-out labels and scores."""
    auc, lo, hi = auc_ci(y_eval, scores, method=ci_method, seed=seed)
    return ClassifierResult(
        auc=auc, auc_low95=lo, auc_high95=hi, n=len(y_eval), n_pos=int(np.sum(y_eval)),
        scores=pd.Series(scores, index=index, name="score"),
        labels=pd.Series(y_eval, index=index, name="label"),
        importances=importances, protocol=protocol, ci_method=ci_method, params=params)


def _check_options(protocol: str, ci_method: str) -> None:
    """Raise InputError for an unknown protocol or CI method (before any model is fitted)."""
    if protocol not in ("paper", "strict"):
        raise InputError(f"protocol must be 'paper' or 'strict', got {protocol!r}")
    if ci_method not in ("delong", "bootstrap"):
        raise InputError(f"ci_method must be 'delong' or 'bootstrap', got {ci_method!r}")


def rf_loocv(X: pd.DataFrame, y, seed: int = 0, n_estimators: int = N_ESTIMATORS,
             protocol: Protocol = "paper", preprocess=None, ci_method: str = "delong",
             permutation_repeats: int = 5, rf_params: dict | None = None) -> ClassifierResult:
    """Leave-one-out random forest: pooled out-of-fold scores, one AUC over all n rows.

    ``X``: patients x features (NaN allowed: imputed by ``preprocess``); ``y``: 0/1 labels
    (array, or Series on X's index) or a label rule ``make_labels(train_idx) -> labels of all
    rows`` (see the module docstring and ``protocol``). ``preprocess``: an unfitted sklearn
    transformer that keeps the columns, cloned and fitted on each fold's training rows (both
    protocols); None means median imputation (:class:`MedianImputer`, the values of
    ``SimpleImputer(strategy="median", keep_empty_features=True)``).
    ``rf_params``: extra ``RandomForestClassifier`` arguments (``max_features`` defaults to
    "sqrt").

    Each of the n folds fits a forest on n - 1 rows and predicts P(label = 1) for the left-out
    row; the n out-of-fold scores are pooled and one ROC AUC (with a ``ci_method`` 95% CI, see
    :func:`auc_ci`) is computed from them. The paper reports "the mean over n iterations", but a
    leave-one-out test fold holds a single patient, so a per-fold AUC (which needs a positive
    and a negative) is undefined; the pooled AUC is the standard LOOCV estimate and what such a
    mean can only have meant. Under the null the pooled LOOCV AUC is biased *below* 0.5 (leaving a
    positive out shifts the training class balance against it), so chance-level results spread
    on both sides of 0.5 and an AUC well under 0.5 means "no signal", not "inverted signal".

    Importances: impurity = mean over the folds' forests; permutation = decrease in ROC AUC when
    a feature is permuted (``sklearn.inspection.permutation_importance``, ``permutation_repeats``
    repeats, ``random_state=seed``) for a final forest fitted on all rows and evaluated on those
    same rows: it shows what the model relies on, not held-out performance (0 repeats skips it).

    Returns a :class:`ClassifierResult`.
    """
    _check_options(protocol, ci_method)
    X = _check_X(X)
    n = len(X)
    rule = _label_rule(y, X)
    all_rows = np.arange(n)
    labels_all = rule(all_rows)
    base = _pipeline(preprocess, seed, n_estimators, rf_params)
    scores, y_eval = np.empty(n), np.empty(n, dtype=int)
    impurity = np.zeros(X.shape[1])
    for train, test in loo_folds(n):
        lab = labels_all if protocol == "paper" else rule(train)
        model = clone(base).fit(X.iloc[train], lab[train])
        scores[test] = _proba1(model, X.iloc[test])
        y_eval[test] = lab[test]
        impurity += _impurity(model, X.shape[1])
    final = _pipeline(preprocess, seed, n_estimators, rf_params).fit(X, labels_all)
    perm = _permutation(final, X, labels_all, permutation_repeats, seed)
    params = {"seed": seed, "n_estimators": n_estimators, "rf_params": dict(rf_params or {}),
              "permutation_repeats": permutation_repeats, "validation": "loocv"}
    return _result(y_eval, scores, X.index, _importances(X.columns, impurity / n, perm),
                   protocol, ci_method, seed, params)


def rf_split(X: pd.DataFrame, y, train_idx, test_idx, seed: int = 0,
             n_estimators: int = N_ESTIMATORS, protocol: Protocol = "strict", preprocess=None,
             ci_method: str = "delong", permutation_repeats: int = 5,
             rf_params: dict | None = None) -> ClassifierResult:
    """Random forest trained on ``train_idx`` rows and evaluated on ``test_idx`` rows.

    ``train_idx`` / ``test_idx``: integer row positions of X (e.g. from
    :func:`pipelines.stats.splits.train_test_split_ids` mapped to positions). Arguments as in
    :func:`rf_loocv`. With a label rule, ``protocol="strict"`` (default) computes the labels of
    all rows from the training rows (``make_labels(train_idx)``); ``"paper"`` uses
    ``make_labels(all rows)``. The preprocessing is fitted on the training rows in both.

    Returns a :class:`ClassifierResult` with the AUC and CI of the test rows, the forest's
    impurity importances and permutation importances computed on the test rows.
    """
    _check_options(protocol, ci_method)
    X = _check_X(X)
    train, test = np.asarray(train_idx, dtype=int), np.asarray(test_idx, dtype=int)
    if np.intersect1d(train, test).size or train.size == 0 or test.size == 0:
        raise InputError("train_idx and test_idx must be non-empty and disjoint")
    rule = _label_rule(y, X)
    lab = rule(np.arange(len(X)) if protocol == "paper" else train)
    model = _pipeline(preprocess, seed, n_estimators, rf_params).fit(X.iloc[train], lab[train])
    scores = _proba1(model, X.iloc[test])
    perm = _permutation(model, X.iloc[test], lab[test], permutation_repeats, seed)
    params = {"seed": seed, "n_estimators": n_estimators, "rf_params": dict(rf_params or {}),
              "permutation_repeats": permutation_repeats, "validation": "split",
              "n_train": int(train.size)}
    imp = _importances(X.columns, _impurity(model, X.shape[1]), perm)
    return _result(lab[test], scores, X.index[test], imp, protocol, ci_method, seed, params)


def _loo_labels(rule: LabelRule, n: int) -> np.ndarray:
    """Return each row's label from the rule fitted on all other rows (strict evaluation labels).

    Shape (n,), 0/1 ints: row i gets ``rule(all rows but i)[i]``, as in strict LOOCV.
    """
    rows = np.arange(n)
    return np.array([rule(np.delete(rows, i))[i] for i in range(n)], dtype=int)


def rf_repeated_cv(X: pd.DataFrame, y, seed: int = 0, n_estimators: int = N_ESTIMATORS,
                   n_splits: int = 5, n_repeats: int = 10, protocol: Protocol = "paper",
                   preprocess=None, ci_method: str = "delong",
                   rf_params: dict | None = None) -> ClassifierResult:
    """Return a :class:`ClassifierResult` of repeated stratified k-fold cross-validation.

    The small-n estimate: ``n_repeats`` times, the rows are split into ``n_splits`` folds
    stratified on the labels of all rows (``sklearn RepeatedStratifiedKFold(random_state=seed)``;
    ``n_splits`` is lowered to the minority-class count when that is smaller, >= 2), a forest is
    fitted on each training part (preprocessing inside the fold; strict: labels from
    ``make_labels(training rows)``) and the AUC of each test fold is computed on its own; ``auc``
    is the mean of the fold AUCs (folds with one class only are skipped). Fold AUCs, unlike the
    pooled LOOCV AUC, are not biased below 0.5 when there is no signal. The 95% CI is ``auc`` +/-
    the mean over repeats of the half-width of the ``ci_method`` CI of that repeat's pooled
    out-of-fold scores: an approximation that ignores the variability of the training sets.
    ``scores``: each row's held-out score averaged over the repeats; ``labels``: the labels of
    all rows (paper) or, strict, each row's label from the rule fitted on all other rows.
    Arguments otherwise as in :func:`rf_loocv`; no permutation importances (impurity: mean over
    the folds' forests).
    """
    _check_options(protocol, ci_method)
    X = _check_X(X)
    n = len(X)
    rule = _label_rule(y, X)
    labels_all = rule(np.arange(n))
    minority = int(min(labels_all.sum(), n - labels_all.sum()))
    k = min(int(n_splits), minority)
    if k < 2 or n_repeats < 1:
        raise InputError(f"repeated {n_splits}-fold CV needs >= 2 rows of each class per fold "
                         f"(minority class has {minority}) and n_repeats >= 1")
    cv = RepeatedStratifiedKFold(n_splits=k, n_repeats=int(n_repeats), random_state=seed)
    base = _pipeline(preprocess, seed, n_estimators, rf_params)
    fold_aucs, halves = [], []
    score_sum = np.zeros(n)
    impurity = np.zeros(X.shape[1])
    rep_scores, rep_labels = np.empty(n), np.empty(n, dtype=int)
    for f, (train, test) in enumerate(cv.split(np.zeros(n), labels_all)):
        lab = labels_all if protocol == "paper" else rule(train)
        model = clone(base).fit(X.iloc[train], lab[train])
        s = _proba1(model, X.iloc[test])
        score_sum[test] += s
        rep_scores[test], rep_labels[test] = s, lab[test]
        impurity += _impurity(model, X.shape[1])
        if 0 < lab[test].sum() < test.size:
            fold_aucs.append(roc_auc_score(lab[test], s))
        if (f + 1) % k == 0:  # end of a repeat: CI half-width of its pooled scores
            _, lo, hi = auc_ci(rep_labels, rep_scores, method=ci_method, seed=seed)
            if np.isfinite(lo) and np.isfinite(hi):
                halves.append((hi - lo) / 2)
    n_fits = k * int(n_repeats)
    auc = float(np.mean(fold_aucs)) if fold_aucs else np.nan
    half = float(np.mean(halves)) if halves else np.nan
    lo, hi = max(0.0, auc - half), min(1.0, auc + half)
    y_eval = labels_all if protocol == "paper" else _loo_labels(rule, n)
    params = {"seed": seed, "n_estimators": n_estimators, "rf_params": dict(rf_params or {}),
              "validation": "repeated_cv", "n_splits": k, "n_repeats": int(n_repeats),
              "fold_aucs": [float(a) for a in fold_aucs]}
    return ClassifierResult(
        auc=auc, auc_low95=lo, auc_high95=hi, n=n, n_pos=int(y_eval.sum()),
        scores=pd.Series(score_sum / int(n_repeats), index=X.index, name="score"),
        labels=pd.Series(y_eval, index=X.index, name="label"),
        importances=_importances(X.columns, impurity / n_fits,
                                 (np.full(X.shape[1], np.nan), np.full(X.shape[1], np.nan))),
        protocol=protocol, ci_method=ci_method, params=params)


@dataclass
class LeavePairOutResult:
    """Leave-pair-out AUC: the share of (positive, negative) pairs, each held out together from
    a forest fitted on all other rows, whose positive scores higher (ties count half).

    ``wins``: (n_pos, n_neg) array of 1 / 0.5 / 0 per evaluated pair (NaN where not
    evaluated); the 95% CI is the percentile CI of bootstrapping patients over these fixed pair
    outcomes (it ignores the variability of the training sets).
    """

    auc: float
    auc_low95: float
    auc_high95: float
    n: int
    n_pos: int
    n_pairs: int
    protocol: str
    wins: np.ndarray
    params: dict = field(default_factory=dict)


def rf_leave_pair_out(X: pd.DataFrame, y, seed: int = 0, n_estimators: int = N_ESTIMATORS,
                      protocol: Protocol = "paper", preprocess=None, max_pairs: int | None = None,
                      n_boot: int = 2000, rf_params: dict | None = None) -> LeavePairOutResult:
    """Return the leave-pair-out AUC of a random forest (Airola et al. 2011), the estimate that
    stays unbiased at small n where pooled LOOCV scores are anti-correlated with the labels.

    Every (positive, negative) pair of rows (or a seeded random subset of `max_pairs`) is held
    out; a forest is fitted on the other n - 2 rows (preprocessing inside the fold; strict: the
    label rule fitted on those rows too, which then labels the pair; pairs it labels alike are
    skipped). n_pos * n_neg forests: meant for small n. Arguments otherwise as in
    :func:`rf_loocv`.
    """
    _check_options(protocol, "delong")
    X = _check_X(X)
    n = len(X)
    rule = _label_rule(y, X)
    labels_all = rule(np.arange(n))
    pos, neg = np.flatnonzero(labels_all == 1), np.flatnonzero(labels_all == 0)
    if len(pos) < 2 or len(neg) < 2:
        raise InputError("leave-pair-out AUC needs >= 2 rows of each class")
    pairs = [(i, j) for i in range(len(pos)) for j in range(len(neg))]
    rng = np.random.default_rng(seed)
    if max_pairs is not None and max_pairs < len(pairs):
        pairs = [pairs[k] for k in np.sort(rng.choice(len(pairs), int(max_pairs), replace=False))]
    base = _pipeline(preprocess, seed, n_estimators, rf_params)
    wins = np.full((len(pos), len(neg)), np.nan)
    everyone = np.arange(n)
    for i, j in pairs:
        a, b = pos[i], neg[j]
        train = everyone[(everyone != a) & (everyone != b)]
        lab = labels_all if protocol == "paper" else rule(train)
        if lab[a] == lab[b] or len(np.unique(lab[train])) < 2:
            continue
        model = clone(base).fit(X.iloc[train], lab[train])
        sa, sb = _proba1(model, X.iloc[[a, b]])
        hi_row, lo_row = (sa, sb) if lab[a] == 1 else (sb, sa)
        wins[i, j] = 1.0 if hi_row > lo_row else 0.5 if hi_row == lo_row else 0.0
    done = ~np.isnan(wins)
    auc = float(np.nanmean(wins)) if done.any() else np.nan
    boots = []
    for _ in range(int(n_boot)):
        w = wins[rng.integers(0, len(pos), len(pos))][:, rng.integers(0, len(neg), len(neg))]
        if (~np.isnan(w)).any():
            boots.append(np.nanmean(w))
    lo, hi = (np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan))
    return LeavePairOutResult(
        auc=auc, auc_low95=float(lo), auc_high95=float(hi), n=n, n_pos=len(pos),
        n_pairs=int(done.sum()), protocol=protocol, wins=wins,
        params={"seed": seed, "n_estimators": n_estimators, "max_pairs": max_pairs,
                "validation": "leave_pair_out"})


def rf_oob(X: pd.DataFrame, y, seed: int = 0, n_estimators: int = 100,
           protocol: Protocol = "paper", preprocess=None, ci_method: str = "delong",
           rf_params: dict | None = None) -> ClassifierResult:
    """Return a :class:`ClassifierResult` from the out-of-bag predictions of a random forest.

    A forest of ``max(n_estimators, 50)`` trees (``DecisionTreeClassifier``, ``max_features``
    "sqrt" unless ``rf_params`` says otherwise), each fitted on a bootstrap sample of the n rows
    (``numpy.random.default_rng(seed)``); a row's score is the mean P(label = 1) of the trees
    whose sample left it out, so it is held out like leave-one-out's at the cost of one forest
    (rows no tree left out, possible with few trees, are dropped). Each tree's preprocessing
    (``preprocess``, default median imputation) is fitted on its in-bag rows only. Labels:
    ``"paper"`` uses ``make_labels(all rows)`` for training and evaluation; ``"strict"`` trains
    each tree on ``make_labels(its in-bag rows)`` and scores row i against
    ``make_labels(all rows but i)[i]``, so no threshold, donor or imputer a row is judged by has
    seen that row. ``y`` as in :func:`rf_loocv`. Impurity importances: mean over the trees.
    Out-of-bag scores are pooled like leave-one-out's, and share its bias below 0.5 when there
    is no signal (the trees that leave a positive out saw fewer positives); prefer
    :func:`rf_repeated_cv` at small n.
    """
    _check_options(protocol, ci_method)
    X = _check_X(X)
    n = len(X)
    rule = _label_rule(y, X)
    labels_all = rule(np.arange(n))
    params = {"max_features": "sqrt", **(rf_params or {})}
    rng = np.random.default_rng(seed)
    n_trees = max(int(n_estimators), 50)
    seeds = rng.integers(0, 2**31 - 1, n_trees)
    total, count = np.zeros(n), np.zeros(n)
    impurity = np.zeros(X.shape[1])
    A = X.to_numpy(dtype=np.float64)
    grower = LeanTreeGrower(**params)  # DecisionTreeClassifier(**params, random_state=seed).fit
    for b in range(n_trees):
        boot = rng.integers(0, n, n)
        inbag = np.unique(boot)
        oob = np.setdiff1d(np.arange(n), inbag)
        lab = labels_all if protocol == "paper" else rule(inbag)
        if preprocess is None:  # numpy rows: no pandas indexing or clone per tree
            prep, rows = MedianImputer().fit(A[inbag]), A
        else:
            prep, rows = clone(preprocess).fit(X.iloc[inbag]), X
        tree = grower.fit(prep.transform(_take(rows, boot)), lab[boot], int(seeds[b]))
        imp = tree.feature_importances_
        if imp.size != X.shape[1]:
            raise InputError("preprocess must keep one output column per input feature")
        impurity += imp
        if oob.size:
            total[oob] += _proba1(tree, prep.transform(_take(rows, oob)))
            count[oob] += 1
    ok = count > 0
    scores = total[ok] / count[ok]
    y_eval = (labels_all if protocol == "paper" else _loo_labels(rule, n))[ok]
    run = {"seed": seed, "n_estimators": n_trees, "rf_params": dict(rf_params or {}),
           "validation": "oob", "oob": True}
    empty = (np.full(X.shape[1], np.nan), np.full(X.shape[1], np.nan))
    return _result(y_eval, scores, X.index[ok], _importances(X.columns, impurity / n_trees,
                                                                empty),
                   protocol, ci_method, seed, run)


# --------------------------------------------------------------------------- predicted groups


@dataclass(frozen=True)
class ScoreSurvivalResult:
    """Survival of the groups predicted by a classifier score (Figure 4b/4c of the paper).

    ``rho``, ``rho_p``, ``n``: Spearman correlation of the score with survival (days; imputed
    for censored patients unless ``imputed=False``). ``cutoff``: the score threshold; group 1 =
    score > cutoff (predicted long survival when label 1 = long). ``logrank``: the
    :class:`LogrankResult` of group 1 (high) vs group 0 (low), its ``hr`` being high vs low;
    ``hr_low_vs_high`` and its CI are the inverse, the predicted-short vs predicted-long hazard
    ratio the paper reports (> 1 when the prediction works).
    """

    rho: float
    rho_p: float
    n: int
    cutoff: float
    logrank: LogrankResult
    hr_low_vs_high: float
    hr_low_vs_high_low95: float
    hr_low_vs_high_high95: float

    def summary(self) -> dict:
        """Return a flat dict of the correlation, the log-rank result and both HRs."""
        return {"rho": self.rho, "rho_p": self.rho_p, "n": self.n, "cutoff": self.cutoff,
                **self.logrank.to_dict(), "hr_low_vs_high": self.hr_low_vs_high,
                "hr_low_vs_high_low95": self.hr_low_vs_high_low95,
                "hr_low_vs_high_high95": self.hr_low_vs_high_high95}


def score_group_survival(score, time, event, cutoff: float | Literal["median"] = 0.5,
                         imputed: bool = True) -> ScoreSurvivalResult:
    """Spearman of a predicted score with survival, and log-rank/KM/Cox of the predicted groups.

    ``score``: predicted P(long survival) per patient (e.g. ``ClassifierResult.scores``);
    ``time`` (days) and ``event`` (1 = death), aligned on the index when Series. Correlation:
    ``scipy.stats.spearmanr`` of score with the survival time, censored patients imputed with
    :func:`impute_censored_survival` (``imputed=True``, the survival the labels were made from)
    or their raw follow-up time. Groups: score > ``cutoff`` (default 0.5, the forest's decision
    threshold; ``"median"`` splits at the median score, which always gives two halves where 0.5
    can leave one group empty and the log-rank statistics NaN).

    Returns a :class:`ScoreSurvivalResult`.
    """
    _, (s, t, e) = aligned_arrays(score, time, event, names=("score", "time", "event"))
    ok = ~(np.isnan(s) | np.isnan(t) | np.isnan(e))
    s, t, e = s[ok], t[ok], e[ok]
    cut = float(np.median(s)) if cutoff == "median" else float(cutoff)
    surv = impute_censored_survival(t, e) if imputed else t
    if s.size >= 3 and s.min() < s.max() and surv.min() < surv.max():
        sp = stats.spearmanr(s, surv)
        rho, rho_p = float(sp.statistic), float(sp.pvalue)
    else:
        rho, rho_p = np.nan, np.nan
    lr = logrank_median_split(None, t, e, groups=(s > cut).astype(float))
    with np.errstate(divide="ignore"):
        inv = (1.0 / lr.hr, 1.0 / lr.hr_high95, 1.0 / lr.hr_low95)
    return ScoreSurvivalResult(rho, rho_p, int(s.size), cut, lr, *map(float, inv))


# --------------------------------------------------------------------------- reading AUCs

#: Display names of the evaluations, recommended first.
EVALUATION_NAMES = {"repeated_cv": "repeated stratified k-fold CV",
                    "leave_pair_out": "leave-pair-out", "loocv": "pooled LOOCV",
                    "split": "train/test split", "oob": "out-of-bag"}

#: Below this many patients a cross-validated AUC is not stable (95% CI half-width ~0.15 or
#: more with balanced median-split labels), and pooled LOOCV is visibly biased below 0.5.
SMALL_N = 60


def auc_caveat(evaluation: str, n: int, auc: float, low95: float, high95: float) -> str:
    """Return a one-sentence caveat on reading an AUC, or "" when there is none.

    ``evaluation``: "loocv", "split", "repeated_cv", "leave_pair_out" or "oob"; ``n``:
    patients evaluated; ``auc`` with its 95% CI. Caveats: an AUC whose CI lies below 0.5 (under
    pooled LOOCV this is the known bias of pooling leave-one-out scores when there is no signal,
    not an inverted signal); a CI that includes 0.5 (not distinguishable from chance);
    ``n < SMALL_N`` (too few patients for a stable estimate).
    """
    if auc is None or not np.isfinite(auc):
        return "AUC not estimable"
    parts = []
    if np.isfinite(high95) and high95 < 0.5:
        parts.append("below chance: pooled LOOCV AUCs are biased below 0.5 when there is no "
                     "signal, so read this as no signal, not an inverted one"
                     if evaluation == "loocv" else
                     "below chance: read as no signal, not an inverted one")
    elif np.isfinite(low95) and np.isfinite(high95) and low95 <= 0.5 <= high95:
        parts.append("95% CI includes 0.5: not distinguishable from chance")
    if n < SMALL_N:
        parts.append(f"n = {n} is too small for a stable AUC estimate"
                     + ("; prefer repeated stratified k-fold CV" if evaluation == "loocv"
                        else ""))
    return "; ".join(parts)
