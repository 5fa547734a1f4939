"""AUC confidence intervals (DeLong against a hand-worked example, a literal O(m k)
implementation and the bootstrap), random forests with LOOCV, a split, repeated stratified k-fold
and out-of-bag predictions (planted signal vs noise, the pooled-LOOCV bias without signal,
leakage-free strict protocol checked with spies on every path), and the survival of predicted
groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import roc_auc_score

from pipelines.exceptions import InputError
from pipelines.stats.classify import (
    SMALL_N,
    _pipeline,
    auc_caveat,
    auc_ci,
    delong_auc_variance,
    forest_proba,
    median_labeller,
    permutation_importance_batched,
    rf_leave_pair_out,
    rf_loocv,
    rf_oob,
    rf_repeated_cv,
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
    """Median imputer recording the rows (values of column 0, the row number) it is fitted on,
    and, per fit, the rows it then transforms (``transformed[k]``: list of sets of fit k)."""

    fitted_rows: list = []
    transformed: list = []

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        SpyImputer.fitted_rows.append(set(X[:, 0].astype(int)))
        SpyImputer.transformed.append([])
        self.fit_no_ = len(SpyImputer.fitted_rows) - 1
        self.median_ = np.nanmedian(X, axis=0)
        return self

    def transform(self, X):
        X = np.array(X, dtype=float)
        SpyImputer.transformed[self.fit_no_].append(set(X[:, 0].astype(int)))
        return np.where(np.isnan(X), self.median_, X)


def reset_spy():
    SpyImputer.fitted_rows, SpyImputer.transformed = [], []


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


def test_paper_protocol_labels_on_all_rows_but_imputer_inside_each_fold():
    n = 24
    X = spy_data(n)
    reset_spy()
    x = np.random.default_rng(6).normal(size=n)
    res = rf_loocv(X, median_labeller(x), protocol="paper", preprocess=SpyImputer(),
                   n_estimators=5, permutation_repeats=0)
    # the paper's labels (median of all rows), but the imputer never sees the test row
    assert res.labels.tolist() == (x > np.median(x)).astype(int).tolist()
    for i in range(n):
        assert SpyImputer.fitted_rows[i] == set(range(n)) - {i}
        assert SpyImputer.transformed[i][-1] == {i}


def test_missing_values_imputed_from_training_rows_only():
    # the test rows carry the only large values of f2; the training rows miss f2 half the time.
    # A median fitted on all rows would impute the training rows' f2 from the test rows.
    X, y = data(n=40)
    X["f2"] = np.where(np.arange(40) < 30, X["f2"], 1e6)
    X.iloc[:30:2, X.columns.get_loc("f2")] = np.nan
    train, test = np.arange(30), np.arange(30, 40)
    for protocol in ("paper", "strict"):
        res = rf_split(X, y, train, test, protocol=protocol, n_estimators=25,
                       permutation_repeats=0)
        ref = rf_split(X.iloc[:30].assign(f2=X["f2"].iloc[:30].fillna(
            X["f2"].iloc[:30].median())).pipe(lambda d: pd.concat([d, X.iloc[30:]])),
            y, train, test, protocol=protocol, n_estimators=25, permutation_repeats=0)
        pd.testing.assert_series_equal(res.scores, ref.scores)


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



# --------------------------------------------------------------------------- repeated CV, OOB


def test_uninformative_feature_pooled_loocv_auc_is_zero_repeated_cv_is_chance():
    # A feature that cannot be split on: the forest predicts its training class balance. Leaving
    # a positive out lowers that balance, so every positive scores below every negative and the
    # pooled LOOCV AUC is 0 -- the bias that makes small-n LOOCV AUCs fall far below chance.
    # Stratified folds score a whole fold alike, so each fold AUC is exactly 0.5.
    n = 24
    X = pd.DataFrame({"constant": np.ones(n)}, index=[f"P{i:02d}" for i in range(n)])
    y = np.random.default_rng(3).permutation(np.r_[np.zeros(12), np.ones(12)]).astype(int)
    no_boot = {"bootstrap": False}
    loo = rf_loocv(X, y, n_estimators=5, permutation_repeats=0, rf_params=no_boot)
    rcv = rf_repeated_cv(X, y, n_estimators=5, n_repeats=3, rf_params=no_boot)
    assert loo.auc == 0.0
    assert rcv.auc == 0.5 and rcv.params["fold_aucs"] == [0.5] * 15
    assert "biased below 0.5" in auc_caveat("loocv", n, loo.auc, loo.auc_low95,
                                            loo.auc_high95)
    oob = rf_oob(X, y, n_estimators=50)  # out-of-bag scores are pooled too: biased alike
    assert oob.auc < 0.3
    # leaving a pair (one of each class) out keeps the balance: every pair ties, AUC 0.5
    lpo = rf_leave_pair_out(X, y, n_estimators=5, rf_params=no_boot, max_pairs=40)
    assert lpo.auc == 0.5 and lpo.n_pairs == 40


def test_leave_pair_out_finds_a_planted_signal_and_is_near_chance_on_noise():
    X, y = data(n=60)
    res = rf_leave_pair_out(X, y, n_estimators=25, max_pairs=80)
    assert res.auc > 0.75 and res.auc_low95 < res.auc <= res.auc_high95
    assert res.n_pairs == 80 and res.wins.shape == (int(y.sum()), 60 - int(y.sum()))
    null = []
    for seed in range(6):
        rng = np.random.default_rng(300 + seed)
        Xn = pd.DataFrame({"gender": rng.integers(0, 2, 24).astype(float),
                           "grp": rng.integers(0, 3, 24).astype(float)})
        yn = rng.permutation(np.r_[np.zeros(12), np.ones(12)]).astype(int)
        null.append(rf_leave_pair_out(Xn, yn, n_estimators=10, max_pairs=40, seed=seed).auc)
    assert abs(np.mean(null) - 0.5) < 0.08


def test_null_cohorts_pooled_loocv_below_chance_repeated_cv_near_it():
    # noise features, balanced labels, n = 24 (the demo's size): mean AUC over 10 cohorts
    loo, rcv = [], []
    for seed in range(10):
        rng = np.random.default_rng(200 + seed)
        X = pd.DataFrame({"gender": rng.integers(0, 2, 24).astype(float),
                          "grp": rng.integers(0, 3, 24).astype(float)})
        y = rng.permutation(np.r_[np.zeros(12), np.ones(12)]).astype(int)
        loo.append(rf_loocv(X, y, n_estimators=20, permutation_repeats=0).auc)
        rcv.append(rf_repeated_cv(X, y, n_estimators=20, n_repeats=4).auc)
    assert np.mean(loo) < 0.46 and abs(np.mean(rcv) - 0.5) < 0.05
    assert np.mean(rcv) - np.mean(loo) > 0.05


def test_repeated_cv_planted_signal_and_ci():
    X, y = data(n=60)
    res = rf_repeated_cv(X, y, n_estimators=25, n_repeats=3)
    assert res.auc > 0.75 and res.auc_low95 < res.auc < res.auc_high95
    assert res.auc == pytest.approx(np.mean(res.params["fold_aucs"]))
    assert len(res.params["fold_aucs"]) == 15 and res.n == 60
    assert (res.labels == y).all() and res.scores.between(0, 1).all()
    assert res.importances.index[0] in ("f0", "f1")
    with pytest.raises(InputError, match="each class"):
        rf_repeated_cv(X, np.r_[1, np.zeros(59)].astype(int), n_estimators=5)


def test_repeated_cv_strict_fits_every_fold_on_its_training_rows_only():
    n = 30
    X = spy_data(n)
    rng = np.random.default_rng(9)
    x = rng.normal(size=n)
    rule = median_labeller(x)
    seen = []

    def spy_rule(train_idx):
        seen.append(set(train_idx.tolist()))
        return rule(train_idx)

    reset_spy()
    res = rf_repeated_cv(X, spy_rule, protocol="strict", preprocess=SpyImputer(),
                         n_estimators=5, n_splits=5, n_repeats=2)
    assert len(SpyImputer.fitted_rows) == 10
    for k, fitted in enumerate(SpyImputer.fitted_rows):
        tested = SpyImputer.transformed[k][-1]
        assert fitted.isdisjoint(tested) and fitted | tested == set(range(n))
        assert seen[1 + k] == fitted  # seen[0]: the labels of all rows used to stratify
    assert res.labels.tolist() == [rule(np.delete(np.arange(n), i))[i] for i in range(n)]
    assert res.protocol == "strict"


def test_oob_strict_each_tree_learns_labels_and_imputer_from_its_in_bag_rows():
    n = 30
    X = spy_data(n)
    x = np.random.default_rng(10).normal(size=n)
    rule = median_labeller(x)
    seen = []

    def spy_rule(train_idx):
        seen.append(set(train_idx.tolist()))
        return rule(train_idx)

    reset_spy()
    res = rf_oob(X, spy_rule, protocol="strict", preprocess=SpyImputer(), n_estimators=50)
    assert len(SpyImputer.fitted_rows) == 50
    for k, fitted in enumerate(SpyImputer.fitted_rows):
        assert seen[1 + k] == fitted  # the tree's marker median: its in-bag rows only
        oob = SpyImputer.transformed[k][-1]  # the rows this tree scores
        assert fitted.isdisjoint(oob) and fitted | oob == set(range(n))
    # each row is scored against the label the rule gives it without the row itself
    rows = [X.index.get_loc(i) for i in res.scores.index]
    want = [rule(np.delete(np.arange(n), i))[i] for i in rows]
    assert res.labels.tolist() == want and res.protocol == "strict"
    assert res.auc == pytest.approx(roc_auc_score(res.labels, res.scores))


def test_oob_paper_uses_all_row_labels_and_finds_signal():
    X, y = data(n=80)
    res = rf_oob(X, y, n_estimators=100)
    assert res.protocol == "paper" and res.auc > 0.75
    assert (res.labels == y.loc[res.scores.index]).all()
    assert res.auc == pytest.approx(roc_auc_score(res.labels, res.scores))
    again = rf_oob(X, y, n_estimators=100)
    pd.testing.assert_series_equal(res.scores, again.scores)


def test_auc_caveat():
    assert auc_caveat("repeated_cv", 151, 0.8, 0.72, 0.88) == ""
    assert "includes 0.5" in auc_caveat("split", 151, 0.6, 0.45, 0.75)
    small = auc_caveat("loocv", 24, 0.55, 0.3, 0.8)
    assert "too small" in small and "repeated stratified" in small
    assert "too small" not in auc_caveat("loocv", SMALL_N, 0.8, 0.7, 0.9)
    assert "not estimable" in auc_caveat("loocv", 24, np.nan, np.nan, np.nan)


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


@pytest.mark.parametrize("n,p,trees,repeats,seed", [
    (40, 7, 30, 3, 0), (60, 25, 20, 5, 1), (25, 3, 10, 1, 2), (31, 12, 15, 2, 3)])
def test_batched_permutation_importance_equals_sklearns_to_the_bit(n, p, trees, repeats, seed,
                                                                  monkeypatch):
    """Same permutations, same forest scores, same AUCs: equal arrays, not close ones (with
    missing values imputed by the pipeline, and batches that split the features)."""
    from sklearn.inspection import permutation_importance

    import pipelines.stats.classify as classify

    monkeypatch.setattr(classify, "PERMUTATION_BATCH_ROWS", 3 * n * repeats)
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"f{i}" for i in range(p)])
    X.iloc[rng.integers(0, n, 4), rng.integers(0, p, 4)] = np.nan
    y = (X["f0"].fillna(0) + rng.normal(size=n) > 0).astype(int).to_numpy()
    model = _pipeline(None, seed, trees, None).fit(X, y)
    want = permutation_importance(model, X, y, scoring="roc_auc", n_repeats=repeats,
                                  random_state=seed, n_jobs=1)
    got = permutation_importance_batched(model, X, y, n_repeats=repeats, random_state=seed)
    np.testing.assert_array_equal(got["importances"], want.importances)
    np.testing.assert_array_equal(got["importances_mean"], want.importances_mean)
    np.testing.assert_array_equal(got["importances_std"], want.importances_std)


@pytest.mark.parametrize("seed", range(6))
def test_forest_proba_equals_predict_proba_to_the_bit(seed):
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    n, p = int(rng.integers(10, 80)), int(rng.integers(1, 30))
    X = rng.normal(size=(n, p))
    y = rng.integers(0, 2 + seed % 2, n)  # two or three classes
    rf = RandomForestClassifier(n_estimators=int(rng.integers(1, 40)), random_state=seed,
                                max_features="sqrt", n_jobs=1).fit(X, y)
    for rows in (X[:1], X, rng.normal(size=(7, p)), np.asfortranarray(X)):
        np.testing.assert_array_equal(forest_proba(rf, rows), rf.predict_proba(rows))


@pytest.mark.parametrize("seed", range(4))
def test_tree_proba1_equals_predict_proba_to_the_bit(seed):
    from sklearn.tree import DecisionTreeClassifier

    from pipelines.stats.classify import _proba1

    rng = np.random.default_rng(seed)
    n, p = int(rng.integers(8, 60)), int(rng.integers(1, 20))
    X = rng.normal(size=(n, p))
    y = rng.integers(0, 2, n) if seed < 3 else np.ones(n, dtype=int)  # one class: all ones
    tree = DecisionTreeClassifier(random_state=seed, max_features="sqrt").fit(X, y)
    for rows in (X[:1], X, rng.normal(size=(5, p))):
        want = (tree.predict_proba(rows)[:, list(tree.classes_).index(1)]
                if len(tree.classes_) > 1 else np.ones(len(rows)))
        np.testing.assert_array_equal(_proba1(tree, rows), want)
