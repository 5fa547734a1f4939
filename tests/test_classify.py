"""AUC confidence intervals (DeLong against a hand-worked example, a literal O(m k)
implementation and the bootstrap), random forests with LOOCV and a split (pooled AUC, planted
signal vs noise, leakage-free strict protocol checked with spies), and the survival of
predicted groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import roc_auc_score

from pipelines.exceptions import InputError
from pipelines.stats.classify import (
    auc_ci,
    delong_auc_variance,
    median_labeller,
    rf_loocv,
    rf_split,
    score_group_survival,
)
from pipelines.stats.survival import (
    impute_censored_survival,
    logrank_median_split,
    survival_labeller,
)

FAST = {"n_estimators": 25, "permutation_repeats": 2}


# --------------------------------------------------------------------------- AUC and CI


def delong_literal(y, s):
    """DeLong et al. (1988) written out with the O(m k) kernel psi, for comparison."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / x.size + v01.var(ddof=1) / z.size


def test_delong_hand_worked_example():
    # positives 0.9, 0.7, 0.4; negatives 0.7, 0.3 (one tie, counted 1/2)
    # V10 (per positive): 0.9 -> (1 + 1)/2 = 1; 0.7 -> (0.5 + 1)/2 = 0.75; 0.4 -> (0 + 1)/2 = 0.5
    # V01 (per negative): 0.7 -> (1 + 0.5 + 0)/3 = 0.5; 0.3 -> 1
    # AUC = mean V10 = 0.75; var(V10) = (0.0625 + 0 + 0.0625)/2 = 0.0625; var(V01) = 0.125
    # Var = 0.0625/3 + 0.125/2 = 1/12
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.7, 0.4, 0.7, 0.3])
    auc, var = delong_auc_variance(y, s)
    assert auc == pytest.approx(0.75) and var == pytest.approx(1 / 12)
    a, lo, hi = auc_ci(y, s)
    half = stats.norm.ppf(0.975) * np.sqrt(1 / 12)
    assert (a, lo, hi) == pytest.approx((0.75, 0.75 - half, 1.0))  # clipped at 1


def test_delong_matches_literal_formula_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 70)
    s = np.round(rng.normal(size=70) + y, 1)  # many ties
    auc, var = delong_auc_variance(y, s)
    ref_auc, ref_var = delong_literal(y, s)
    assert auc == pytest.approx(ref_auc, abs=1e-12) and var == pytest.approx(ref_var, rel=1e-10)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_delong_agrees_with_bootstrap():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(120), np.zeros(130)].astype(int)
    s = rng.normal(size=250) + 0.8 * y
    a1, lo1, hi1 = auc_ci(y, s, method="delong")
    a2, lo2, hi2 = auc_ci(y, s, method="bootstrap", seed=3)
    assert a1 == a2 == pytest.approx(roc_auc_score(y, s))
    assert lo1 == pytest.approx(lo2, abs=0.015) and hi1 == pytest.approx(hi2, abs=0.015)
    assert auc_ci(y, s, method="bootstrap", seed=3) == (a2, lo2, hi2)  # seeded


def test_ci_covers_auc_and_shrinks_with_n():
    rng = np.random.default_rng(2)
    widths = []
    for n in (60, 600):
        y = rng.integers(0, 2, n)
        s = rng.normal(size=n) + y
        for method in ("delong", "bootstrap"):
            auc, lo, hi = auc_ci(y, s, method=method, n_boot=500)
            assert lo < auc < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_auc_ci_edge_cases():
    assert np.isnan(auc_ci([1, 1, 1], [0.1, 0.2, 0.3])).all()
    auc, lo, hi = auc_ci([0, 1, 1], [0.1, 0.2, 0.3])
    assert auc == 1.0 and np.isnan([lo, hi]).all()
    assert auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == (1.0, 1.0, 1.0)  # separation
    with pytest.raises(InputError):
        auc_ci([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="method"):
        auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], method="wald")


# --------------------------------------------------------------------------- random forests


def data(n=60, signal=True, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"f{i}" for i in range(8)],
                     index=[f"P{i:03d}" for i in range(n)])
    if signal:
        y = (X["f0"] + X["f1"] + 0.5 * rng.normal(size=n) > 0).astype(int)
    else:
        y = pd.Series(rng.integers(0, 2, n), index=X.index)
    return X, y


def test_loocv_planted_signal_pooled_auc_and_importances():
    X, y = data()
    res = rf_loocv(X, y, **FAST)
    assert res.auc > 0.75
    assert res.auc == pytest.approx(roc_auc_score(res.labels, res.scores), abs=1e-15)
    assert res.auc_low95 < res.auc < res.auc_high95
    assert (res.n, res.n_pos) == (60, y.sum())
    assert list(res.scores.index) == list(X.index) and res.scores.between(0, 1).all()
    assert (res.labels == y).all()
    assert set(res.importances.index[:2]) == {"f0", "f1"}
    top = res.importances.sort_values("permutation_mean", ascending=False).index[:2]
    assert set(top) == {"f0", "f1"}
    assert res.importances["impurity"].sum() == pytest.approx(1.0)
    again = rf_loocv(X, y, **FAST)
    pd.testing.assert_series_equal(res.scores, again.scores)  # seeded


def test_loocv_noise_is_near_chance():
    X, y = data(n=80, signal=False)
    res = rf_loocv(X, y, n_estimators=25, permutation_repeats=0)
    assert abs(res.auc - 0.5) < 0.15 and res.auc_low95 < 0.5 < res.auc_high95
    assert res.importances["permutation_mean"].isna().all()  # skipped


def test_single_class_training_fold_scores_zero():
    X, _ = data(n=8)
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    res = rf_loocv(X, y, n_estimators=5, permutation_repeats=0)
    assert res.scores.iloc[0] == 0.0  # trained on negatives only


class SpyImputer(BaseEstimator, TransformerMixin):
    """Median imputer recording the rows (values of column 0, the row number) it is fitted on."""

    fitted_rows: list = []

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        SpyImputer.fitted_rows.append(set(X[:, 0].astype(int)))
        self.median_ = np.nanmedian(X, axis=0)
        return self

    def transform(self, X):
        X = np.array(X, dtype=float)
        return np.where(np.isnan(X), self.median_, X)


def spy_data(n=24):
    X, _ = data(n=n)
    X.insert(0, "row", np.arange(n, dtype=float))
    X.iloc[::5, 3] = np.nan
    return X


def test_strict_protocol_never_fits_on_the_test_row():
    n = 24
    X = spy_data(n)
    rng = np.random.default_rng(5)
    t, e = np.round(rng.uniform(30, 900, n)), rng.integers(0, 2, n)
    rule = survival_labeller(t, e)
    seen = []

    def spy_rule(train_idx):
        seen.append(set(train_idx.tolist()))
        return rule(train_idx)

    SpyImputer.fitted_rows = []
    res = rf_loocv(X, spy_rule, protocol="strict", preprocess=SpyImputer(), n_estimators=5,
                   permutation_repeats=0)
    folds_prep, folds_rule = SpyImputer.fitted_rows[:n], seen[1:n + 1]  # then the final model
    for i in range(n):
        assert i not in folds_prep[i] and len(folds_prep[i]) == n - 1
        assert i not in folds_rule[i] and len(folds_rule[i]) == n - 1
    # each row is scored against the label its own fold's rule gives it
    expected = [rule(np.delete(np.arange(n), i))[i] for i in range(n)]
    assert res.labels.tolist() == expected
    assert res.auc == pytest.approx(roc_auc_score(res.labels, res.scores))


def test_paper_protocol_fits_preprocessing_and_labels_on_all_rows():
    n = 24
    X = spy_data(n)
    SpyImputer.fitted_rows = []
    x = np.random.default_rng(6).normal(size=n)
    res = rf_loocv(X, median_labeller(x), protocol="paper", preprocess=SpyImputer(),
                   n_estimators=5, permutation_repeats=0)
    assert SpyImputer.fitted_rows[0] == set(range(n))  # the paper's (leaky) protocol
    assert res.labels.tolist() == (x > np.median(x)).astype(int).tolist()


def test_split_auc_on_test_rows_and_strict_fitting():
    X = spy_data(60)
    y = (X["f0"] + X["f1"] > 0).astype(int)
    train, test = np.arange(40), np.arange(40, 60)
    SpyImputer.fitted_rows = []
    res = rf_split(X, y, train, test, preprocess=SpyImputer(), **FAST)
    assert SpyImputer.fitted_rows == [set(range(40))]
    assert list(res.scores.index) == list(X.index[40:])
    assert res.auc == pytest.approx(roc_auc_score(y.iloc[40:], res.scores))
    assert res.auc > 0.75 and res.n == 20
    assert res.importances.shape == (X.shape[1], 3)
    with pytest.raises(InputError, match="disjoint"):
        rf_split(X, y, train, np.arange(30, 50), **FAST)


def test_input_errors():
    X, y = data(n=10)
    with pytest.raises(InputError, match="protocol"):
        rf_loocv(X, y, protocol="loose", **FAST)
    with pytest.raises(InputError, match="ci_method"):
        rf_split(X, y, [0, 1, 2], [3, 4], ci_method="wald", **FAST)
    with pytest.raises(InputError, match="0 or 1"):
        rf_loocv(X, y * 2, **FAST)
    with pytest.raises(InputError, match="one value per row"):
        rf_loocv(X, y.to_numpy()[:5], **FAST)
    with pytest.raises(InputError, match="DataFrame"):
        rf_loocv(X.to_numpy(), y, **FAST)


# --------------------------------------------------------------------------- predicted groups


def test_score_group_survival_matches_direct_calls():
    rng = np.random.default_rng(8)
    n = 120
    death = rng.exponential(400, n)
    censor = rng.uniform(100, 1200, n)
    t = np.round(np.minimum(death, censor))
    e = (death <= censor).astype(int)
    surv = impute_censored_survival(t, e)
    score = stats.rankdata(surv + rng.normal(0, 150, n)) / n  # a decent predictor in (0, 1]
    res = score_group_survival(score, t, e)
    ref = stats.spearmanr(score, surv)
    assert res.rho == pytest.approx(ref.statistic) and res.rho_p == pytest.approx(ref.pvalue)
    assert res.rho > 0.5 and res.n == n and res.cutoff == 0.5
    lr = logrank_median_split(None, t, e, groups=(score > 0.5).astype(float))
    assert res.logrank == lr
    assert res.hr_low_vs_high == pytest.approx(1 / lr.hr) and res.hr_low_vs_high > 1.5
    assert res.hr_low_vs_high_low95 == pytest.approx(1 / lr.hr_high95)
    raw = score_group_survival(score, t, e, cutoff="median", imputed=False)
    assert raw.rho == pytest.approx(stats.spearmanr(score, t).statistic)
    assert raw.cutoff == pytest.approx(np.median(score))
    assert abs(raw.logrank.n_low - raw.logrank.n_high) <= 1
    assert set(res.summary()) >= {"rho", "p", "hr", "hr_low_vs_high"}
