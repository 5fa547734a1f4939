"""Survival statistics against direct lifelines calls and against R's values (``coxph``,
``survfit``; computed once by hand, R is not a test dependency), the paper's censored-survival
imputation on a hand-worked example, and labels that can be fitted on a training fold only."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test
from statsmodels.duration.hazard_regression import PHReg

from pipelines.exceptions import InputError
from pipelines.stats.multiple_testing import holm_adjust
from pipelines.stats.survival import (
    COX_FIT_OPTIONS,
    category_groups,
    cox_hazard_ratio,
    impute_censored_survival,
    km_median,
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
    cph = CoxPHFitter().fit(pd.DataFrame({"T": t, "E": e, "g": g}), "T", "E",
                            fit_options=COX_FIT_OPTIONS)
    row = cph.summary.loc["g"]
    km = [KaplanMeierFitter().fit(t[g == k], e[g == k]).median_survival_time_ for k in (0, 1)]
    return lr, row, km


def test_logrank_hr_and_medians_match_lifelines():
    feats, time, event = cohort()
    res = logrank_median_split(feats["x_signal"], time, event, median_definition="first")
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


# --------------------------------------------------------------------------- agreement with R
# Reference values from R 4.2.2, survival 3.5.3 (Debian r-base-core, r-cran-survival), computed
# once by hand; R is not needed to run the tests. The data sets (days, 1 = death) have many ties.
#
#   library(survival)
#   t1 <- c(500, 200, 300, 50, 250, 800, 100, 350, 700, 250, 200, 850, 200, 300, 350,
#           100, 400, 50, 150, 750, 250, 500, 100, 100, 400, 850, 150, 100, 500, 200)
#   e1 <- c(1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0,
#           1, 1)
#   g1 <- rep(c(0, 1), each = 15)
#   t2 <- c(150, 1410, 2040, 750, 3360, 60, 240, 1680, 570, 150, 90, 930, 270, 1020, 60, 510,
#           120, 330, 420, 2040, 390, 1290, 300, 120, 330, 570, 300, 3180, 1590, 2880, 60, 30,
#           210, 1410, 120, 210, 690, 60, 420, 690)
#   e2 <- c(1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1,
#           1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1)
#   g2 <- c(1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0,
#           0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0)
#   for (d in list(list(t1, e1, g1), list(t2, e2, g2))) {
#     fit <- coxph(Surv(d[[1]], d[[2]]) ~ d[[3]], ties = "efron")
#     ci <- summary(fit)$conf.int
#     cat(sprintf("HR %.15g lower %.15g upper %.15g\n", ci[1, 1], ci[1, 3], ci[1, 4]))
#     km <- summary(survfit(Surv(d[[1]], d[[2]]) ~ d[[3]]))$table[, "median"]
#     cat(sprintf("median %s\n", paste(sprintf("%.15g", km), collapse = " ")))
#   }
#
# R printed:
#   HR 1.0462431521957 lower 0.459227313545639 upper 2.38362288398075
#   median 300 400
#   HR 5.31957445755158 lower 1.98316233774674 upper 14.26906505374
#   median 1410 330
T1 = [500, 200, 300, 50, 250, 800, 100, 350, 700, 250, 200, 850, 200, 300, 350,
      100, 400, 50, 150, 750, 250, 500, 100, 100, 400, 850, 150, 100, 500, 200]
E1 = [1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1]
G1 = [0] * 15 + [1] * 15
T2 = [150, 1410, 2040, 750, 3360, 60, 240, 1680, 570, 150, 90, 930, 270, 1020, 60, 510, 120,
      330, 420, 2040, 390, 1290, 300, 120, 330, 570, 300, 3180, 1590, 2880, 60, 30, 210, 1410,
      120, 210, 690, 60, 420, 690]
E2 = [1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1,
      0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
G2 = [1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0,
      0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0]
R_COX = [  # (data, (HR, lower 95%, upper 95%), (KM median group 0, group 1)) as R printed them
    ((T1, E1, G1), (1.0462431521957, 0.459227313545639, 2.38362288398075), (300, 400)),
    ((T2, E2, G2), (5.31957445755158, 1.98316233774674, 14.26906505374), (1410, 330)),
]


@pytest.mark.parametrize(("data", "r_hr", "r_median"), R_COX)
def test_cox_hr_and_ci_agree_with_r_coxph(data, r_hr, r_median):
    t, e, g = (np.asarray(v, dtype=float) for v in data)
    ours = np.array(cox_hazard_ratio(g.astype(int), t, e))
    np.testing.assert_allclose(ours, r_hr, rtol=1e-6, atol=0)
    res = logrank_median_split(None, t, e, groups=g)
    assert (res.hr, res.hr_low95, res.hr_high95) == pytest.approx(r_hr, rel=1e-6)
    assert (res.median_low_days, res.median_high_days) == pytest.approx(r_median, abs=1e-9)


def test_lifelines_default_convergence_is_not_good_enough():
    # why COX_FIT_OPTIONS exist: lifelines' default stopping rule is ~1e-4 off R on data set 1
    (t, e, g), r_hr, _ = R_COX[0]
    cph = CoxPHFitter().fit(pd.DataFrame({"T": t, "E": e, "g": g}), "T", "E")
    assert abs(cph.hazard_ratios_["g"] / r_hr[0] - 1) > 1e-5


def test_cox_agrees_with_statsmodels_on_random_tied_data():
    # statsmodels PHReg (Efron ties) agrees with R's coxph; check many data sets, not just two
    rng = np.random.default_rng(14)
    worst = 0.0
    for _ in range(25):
        n = int(rng.integers(20, 120))
        g = rng.integers(0, 2, n)
        t = np.round(rng.exponential(500 / np.where(g == 1, rng.uniform(0.3, 4), 1)) / 30) * 30
        e = (rng.uniform(size=n) < 0.7).astype(float)
        if e[g == 0].sum() == 0 or e[g == 1].sum() == 0:
            continue
        sm = PHReg(t + 1, g[:, None].astype(float), status=e, ties="efron").fit(tol=1e-14)
        beta, se = sm.params[0], sm.bse[0]
        want = np.exp([beta, beta - 1.959963984540054 * se, beta + 1.959963984540054 * se])
        worst = max(worst, np.max(np.abs(np.array(cox_hazard_ratio(g, t + 1, e)) / want - 1)))
    assert worst < 1e-6


# Kaplan-Meier medians with S(t) exactly 0.5 over a flat stretch, R 4.2.2 / survival 3.5.3:
#
#   km <- list(
#     list(t = seq(100, 1000, 100), e = rep(1, 10)),
#     list(t = c(100, 200, 300, 400, 500, 600), e = c(1, 1, 1, 0, 0, 0)),
#     list(t = c(10, 20, 20, 30, 40, 50, 60, 70), e = c(1, 0, 1, 1, 0, 1, 1, 0)),
#     list(t = c(30, 30, 30, 40, 50, 50, 50, 70, 70, 80, 90, 100),
#          e = c(1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1)),
#     list(t = c(20, 40, 40, 40, 50, 50, 80, 90, 100, 110), e = c(1, 1, 1, 1, 0, 1, 1, 1, 1, 0)),
#     list(t = c(1, 2, 3, 4, 5), e = c(0, 1, 1, 1, 1)),
#     list(t = c(100, 200, 300), e = c(1, 0, 0)))
#   for (d in km) cat(sprintf("%.15g ", summary(survfit(Surv(d$t, d$e) ~ 1))$table["median"]))
#
# R printed:
#   550 300 50 60 65 3.5 NA
R_KM = [
    (list(range(100, 1001, 100)), [1] * 10, 550.0),
    ([100, 200, 300, 400, 500, 600], [1, 1, 1, 0, 0, 0], 300.0),
    ([10, 20, 20, 30, 40, 50, 60, 70], [1, 0, 1, 1, 0, 1, 1, 0], 50.0),
    ([30, 30, 30, 40, 50, 50, 50, 70, 70, 80, 90, 100], [1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1],
     60.0),
    ([20, 40, 40, 40, 50, 50, 80, 90, 100, 110], [1, 1, 1, 1, 0, 1, 1, 1, 1, 0], 65.0),
    ([1, 2, 3, 4, 5], [0, 1, 1, 1, 1], 3.5),
    ([100, 200, 300], [1, 0, 0], np.inf),  # NA in R: never reaches 0.5
]


@pytest.mark.parametrize(("t", "e", "r_median"), R_KM)
def test_km_median_agrees_with_r_survfit(t, e, r_median):
    assert km_median(t, e) == r_median
    first = km_median(t, e, definition="first")
    assert first == pytest.approx(
        KaplanMeierFitter().fit(t, e).median_survival_time_)
    assert first <= r_median or np.isinf(first)


def test_km_median_definitions_differ_on_a_flat_stretch():
    t, e = np.arange(100.0, 1001.0, 100.0), np.ones(10)
    assert km_median(t, e) == 550.0 and km_median(t, e, definition="first") == 500.0
    res = logrank_median_split(None, np.r_[t, t], np.r_[e, e], groups=np.r_[np.zeros(10),
                                                                           np.ones(10)])
    assert res.median_low_days == 550.0
    with pytest.raises(InputError, match="median definition"):
        km_median(t, e, definition="mean")


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
