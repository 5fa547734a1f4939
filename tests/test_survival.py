"""Survival statistics against direct lifelines calls, the paper's censored-survival imputation
on a hand-worked example, and labels that can be fitted on a training fold only."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test

from pipelines.exceptions import InputError
from pipelines.stats.multiple_testing import holm_adjust
from pipelines.stats.survival import (
    category_groups,
    impute_censored_survival,
    logrank_median_split,
    survival_labeller,
    survival_labels,
    survival_table,
)

# Hand-worked imputation example (days). Deaths (event 1) at 100, 250, 300, 400.
TIME = np.array([100, 200, 250, 250, 300, 350, 400, 500], dtype=float)
EVENT = np.array([1, 0, 1, 0, 1, 0, 1, 0])
# censored at 200: deaths >= 200 are 250, 300, 400 -> (250 + 300 + 400) / 3 = 316.67
# censored at 250: deaths >= 250 (a tie counts) are 250, 300, 400 -> 316.67
# censored at 350: deaths >= 350 are 400 -> 400
# censored at 500: no death >= 500 -> keeps its follow-up, 500
IMPUTED = np.array([100, 950 / 3, 250, 950 / 3, 300, 400, 400, 500])
# sorted: 100 250 300 316.67 316.67 400 400 500 -> median 316.67; long (1) = strictly above
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1])


def cohort(n=200, hr=3.0, seed=0):
    """Patients with a feature whose high half has ``hr`` times the hazard, ~30% censored."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    high = x > np.median(x)
    death = rng.exponential(500 / np.where(high, hr, 1.0))
    censor = rng.uniform(200, 1500, n)
    idx = pd.Index([f"P{i:03d}" for i in range(n)], name="patient")
    time = pd.Series(np.round(np.minimum(death, censor)), index=idx, name="time")  # day ties
    event = pd.Series((death <= censor).astype(int), index=idx, name="event")
    feats = pd.DataFrame({
        "x_signal": x,
        "age": np.round(rng.uniform(20, 80, n)),
        "gender": rng.choice(["F", "M"], n),
        "x_noise": rng.normal(size=n),
    }, index=idx)
    return feats, time, event


def direct(groups, time, event):
    """The same statistics with lifelines called directly."""
    g = np.asarray(groups)
    t, e = np.asarray(time, float), np.asarray(event)
    lr = logrank_test(t[g == 1], t[g == 0], e[g == 1], e[g == 0])
    cph = CoxPHFitter().fit(pd.DataFrame({"T": t, "E": e, "g": g}), "T", "E")
    row = cph.summary.loc["g"]
    km = [KaplanMeierFitter().fit(t[g == k], e[g == k]).median_survival_time_ for k in (0, 1)]
    return lr, row, km


def test_logrank_hr_and_medians_match_lifelines():
    feats, time, event = cohort()
    res = logrank_median_split(feats["x_signal"], time, event)
    g = (feats["x_signal"] > feats["x_signal"].median()).astype(int)
    lr, row, km = direct(g, time, event)
    assert res.logrank_stat == pytest.approx(lr.test_statistic, rel=1e-12)
    assert res.p == pytest.approx(lr.p_value, rel=1e-12)
    assert res.hr == pytest.approx(row["exp(coef)"], rel=1e-9)
    assert res.hr_low95 == pytest.approx(row["exp(coef) lower 95%"], rel=1e-9)
    assert res.hr_high95 == pytest.approx(row["exp(coef) upper 95%"], rel=1e-9)
    assert (res.median_low_days, res.median_high_days) == pytest.approx(km)
    assert (res.n_low, res.n_high) == (100, 100)
    assert res.threshold == pytest.approx(feats["x_signal"].median())
    # the planted effect: the high group dies faster, HR 3 inside the 95% CI (fixed seed)
    assert res.p < 1e-3 and res.hr_low95 < 3 < res.hr_high95 and res.hr > 1.5
    assert res.median_high_days < res.median_low_days


def test_groups_override_and_missing_rows_dropped():
    feats, time, event = cohort(n=60, seed=1)
    values = feats["x_signal"].copy()
    values.iloc[:4] = np.nan
    time = time.copy()
    time.iloc[10] = np.nan
    res = logrank_median_split(values, time, event)
    keep = values.notna() & time.notna()
    g = (values[keep] > values[keep].median()).astype(int)
    lr, _, _ = direct(g, time[keep], event[keep])
    assert res.n_low + res.n_high == keep.sum()
    assert res.p == pytest.approx(lr.p_value, rel=1e-12)
    given = logrank_median_split(None, time, event, groups=g.reindex(time.index))
    assert given.p == pytest.approx(res.p, rel=1e-12) and np.isnan(given.threshold)


def test_series_aligned_on_patient_id():
    feats, time, event = cohort(n=50, seed=2)
    a = logrank_median_split(feats["x_signal"], time, event)
    shuffled = event.sample(frac=1, random_state=0)
    b = logrank_median_split(feats["x_signal"], time.iloc[::-1], shuffled)
    assert a == b
    with pytest.raises(InputError, match="align"):
        logrank_median_split(feats["x_signal"], time.iloc[1:], event)


def test_hr_not_estimable_without_deaths_in_a_group():
    t = np.arange(1.0, 21.0) * 10
    e = np.r_[np.ones(10), np.zeros(10)]
    g = np.r_[np.zeros(10), np.ones(10)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = logrank_median_split(None, t, e, groups=g)
    assert np.isnan([res.hr, res.hr_low95, res.hr_high95]).all()
    assert res.p < 0.05 and res.events_high == 0 and res.median_high_days == np.inf


def test_empty_group_gives_nan():
    res = logrank_median_split(np.zeros(10), np.arange(1.0, 11.0), np.ones(10))
    assert (res.n_low, res.n_high) == (10, 0) and np.isnan(res.p) and np.isnan(res.hr)


def test_survival_table_rows_gender_and_holm():
    feats, time, event = cohort()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tab = survival_table(feats, time, event)
    assert list(tab.columns) == ["feature", "n_low", "n_high", "median_low_days",
                                 "median_high_days", "logrank_stat", "p", "hr", "hr_low95",
                                 "hr_high95", "p_holm", "significant"]
    assert tab["feature"].tolist() == list(feats.columns)
    tab = tab.set_index("feature")
    for col in ("x_signal", "age", "x_noise"):
        assert tab.loc[col, "p"] == pytest.approx(
            logrank_median_split(feats[col], time, event).p, rel=1e-12)
    g = (feats["gender"] == "M").astype(int)  # F = 0 (low), M = 1 (high)
    lr, row, _ = direct(g, time, event)
    assert tab.loc["gender", "p"] == pytest.approx(lr.p_value, rel=1e-12)
    assert tab.loc["gender", "hr"] == pytest.approx(row["exp(coef)"], rel=1e-9)
    assert tab.loc["gender", "n_high"] == g.sum()
    np.testing.assert_allclose(tab["p_holm"], holm_adjust(tab["p"].to_numpy()))
    assert tab.loc["x_signal", "significant"] and not tab.loc["x_noise", "significant"]


def test_survival_table_input_errors():
    feats, time, event = cohort(n=30)
    with pytest.raises(InputError, match="not numeric"):
        survival_table(feats, time, event, categorical=())
    with pytest.raises(InputError, match="two categories"):
        survival_table(feats.assign(gender=["F", "M", "X"] * 10), time, event)
    with pytest.raises(InputError, match="event must be"):
        survival_table(feats, time, event * 2)
    with pytest.raises(InputError, match=">= 0"):
        survival_table(feats, -time, event)


def test_category_groups():
    s = pd.Series(["M", "F", None, "F"], name="gender")
    assert category_groups(s).tolist() == [1, 0, pd.NA, 0]


# --------------------------------------------------------------------------- imputation, labels


def test_imputation_hand_worked_example():
    np.testing.assert_allclose(impute_censored_survival(TIME, EVENT), IMPUTED, rtol=1e-12)
    np.testing.assert_array_equal(survival_labels(TIME, EVENT), LABELS)
    # a given threshold (e.g. learned on a training fold)
    np.testing.assert_array_equal(survival_labels(TIME, EVENT, threshold=250),
                                  (IMPUTED > 250).astype(int))


def test_imputation_with_training_donors_only():
    # donors rows 0-5: deaths at 100, 250, 300 (the death at 400, row 6, is a test row)
    # censored at 200 -> (250 + 300) / 2 = 275; at 250 -> 275; at 350 -> none -> 350; 500 -> 500
    out = impute_censored_survival(TIME, EVENT, donors=np.arange(6))
    np.testing.assert_allclose(out, [100, 275, 250, 275, 300, 350, 400, 500])
    mask = np.arange(8) < 6
    np.testing.assert_allclose(impute_censored_survival(TIME, EVENT, donors=mask), out)


def test_imputation_missing_and_uncensored_kept():
    t = np.array([10.0, np.nan, 30.0])
    e = np.array([0, 1, 1])
    np.testing.assert_allclose(impute_censored_survival(t, e), [30.0, np.nan, 30.0])
    with pytest.raises(InputError, match="drop them"):
        survival_labels(t, e)


def test_labeller_uses_training_rows_only():
    rng = np.random.default_rng(4)
    n = 40
    t = np.round(rng.uniform(50, 1000, n))
    e = rng.integers(0, 2, n)
    train, test = np.arange(30), np.arange(30, 40)
    np.testing.assert_array_equal(survival_labeller(t, e)(np.arange(n)), survival_labels(t, e))
    base = survival_labeller(t, e)(train)
    # rewrite every test outcome: training labels cannot change, and a test row's label only
    # depends on its own outcome and the training rows
    t2, e2 = t.copy(), e.copy()
    t2[test] = rng.uniform(50, 1000, 10)
    e2[test] = 1 - e2[test]
    other = survival_labeller(t2, e2)(train)
    np.testing.assert_array_equal(base[train], other[train])
    t3 = t.copy()
    t3[test[1:]] = 5000.0
    np.testing.assert_array_equal(survival_labeller(t3, e)(train)[test[0]], base[test[0]])
