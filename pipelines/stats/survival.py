"""Survival statistics of seed 000 (section 2.4, 3.2, 3.3), wrapping lifelines.

Conventions: ``time`` is survival in days (days to death for deceased patients, days to last
follow-up otherwise); ``event`` is 1 when the death was observed and 0 when the patient is
censored (the paper calls the former "censorship=1"). Groups are 0 = low and 1 = high, made by
the median split of :mod:`pipelines.stats.association` (high = strictly above the median) unless
given. Hazard ratios are those of the high group relative to the low group, from a Cox model on
the 0/1 group indicator (lifelines ``CoxPHFitter``, Efron ties, Wald 95% CI), fitted to a tight
convergence (:data:`COX_FIT_OPTIONS`) so that HRs and CIs agree with R's ``coxph`` to ~1e-7
relative; a hazard ratio is NaN when it is not estimable: a group without any death (monotone
likelihood) or a Cox fit that does not converge.

Kaplan-Meier medians (:func:`km_median`) follow R by default (``print.survfit``: when S(t) is
exactly 0.5 over a flat stretch, the midpoint of that stretch's first event time and the next
event time); ``median_definition="first"`` gives lifelines' first time with S(t) <= 0.5.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from lifelines.statistics import logrank_test

from pipelines.exceptions import InputError
from pipelines.stats.association import numeric_column
from pipelines.stats.multiple_testing import holm_adjust

__all__ = [
    "LogrankResult",
    "category_groups",
    "cox_hazard_ratio",
    "impute_censored_survival",
    "km_median",
    "logrank_median_split",
    "survival_labeller",
    "survival_labels",
    "survival_table",
]

#: lifelines' Newton-Raphson stopping rule. Its defaults (precision 1e-7 on the Newton decrement,
#: r_precision 1e-9) leave HRs up to ~1e-4 relative from the optimum; these agree with R's
#: ``coxph`` (and statsmodels ``PHReg``) to ~1e-7 at the cost of one or two more iterations.
COX_FIT_OPTIONS = {"precision": 1e-14, "r_precision": 1e-15}

#: R's tolerance when comparing S(t) with 0.5 (``survival:::survmean``: sqrt(machine eps)).
_KM_TOL = float(np.finfo(float).eps) ** 0.5

MedianDefinition = Literal["r", "first"]

TABLE_COLUMNS = ["feature", "n_low", "n_high", "median_low_days", "median_high_days",
                 "logrank_stat", "p", "hr", "hr_low95", "hr_high95", "p_holm", "significant"]


# --------------------------------------------------------------------------- inputs


def aligned_arrays(*objs, names: Sequence[str]) -> tuple[pd.Index, list[np.ndarray]]:
    """Return (index, float arrays) of equally long inputs, Series aligned on their index.

    The first Series' index is the reference; another Series with the same labels in another
    order is reordered to it, one with other labels is an InputError. Plain arrays must have the
    reference length and are taken in order. ``None`` inputs stay ``None``.
    """
    ref = next((o.index for o in objs if isinstance(o, pd.Series)), None)
    n = len(ref) if ref is not None else next(len(o) for o in objs if o is not None)
    out = []
    for name, o in zip(names, objs, strict=True):
        if o is None:
            out.append(None)
            continue
        if isinstance(o, pd.Series) and ref is not None and not o.index.equals(ref):
            if not (o.index.is_unique and set(o.index) == set(ref)):
                raise InputError(f"{name} is indexed by other patients than the first input; "
                                 "align the inputs on the patient id first")
            o = o.loc[ref]
        if len(o) != n:
            raise InputError(f"{name} has {len(o)} rows, expected {n}")
        s = o if isinstance(o, pd.Series) else pd.Series(np.asarray(o))
        out.append(numeric_column(s, name))
    return (ref if ref is not None else pd.RangeIndex(n)), out


def _check_survival(time: np.ndarray, event: np.ndarray, allow_missing: bool = True) -> None:
    """Raise InputError unless time >= 0 and event in {0, 1} (NaN allowed if allow_missing)."""
    miss = np.isnan(time) | np.isnan(event)
    if miss.any() and not allow_missing:
        raise InputError(f"{int(miss.sum())} patients have no survival time or event; "
                         "drop them first")
    t, e = time[~miss], event[~miss]
    if np.any(t < 0) or not np.all(np.isfinite(t)):
        raise InputError("survival times must be finite and >= 0 (days)")
    if not np.all(np.isin(e, (0.0, 1.0))):
        raise InputError("event must be 1 (death observed) or 0 (censored)")


# --------------------------------------------------------------------------- groups and tests


@dataclass(frozen=True)
class LogrankResult:
    """Log-rank comparison of a low (0) and a high (1) group; times in days.

    ``median_*_days`` are Kaplan-Meier median survival times (inf when the curve never falls to
    0.5); ``hr`` with its 95% CI is the Cox hazard ratio of high vs low; ``threshold`` is the
    median used for the split (NaN when the groups were given). Statistics are NaN when a group
    is empty.
    """

    n_low: int
    n_high: int
    events_low: int
    events_high: int
    median_low_days: float
    median_high_days: float
    logrank_stat: float
    p: float
    hr: float
    hr_low95: float
    hr_high95: float
    threshold: float = np.nan

    def to_dict(self) -> dict:
        """Return the fields as a plain dict."""
        return asdict(self)


def cox_hazard_ratio(group: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[float,
                                                                                    float, float]:
    """Return (HR, lower 95%, upper 95%) of group 1 vs group 0 from lifelines ``CoxPHFitter``.

    Efron ties, Wald CI exp(beta +/- 1.96 se), fitted with :data:`COX_FIT_OPTIONS` (agrees with
    R's ``coxph(Surv(time, event) ~ group)``). NaN triple when a group has no death, or
    lifelines reports a convergence problem.
    """
    if event[group == 0].sum() == 0 or event[group == 1].sum() == 0:
        return np.nan, np.nan, np.nan
    df = pd.DataFrame({"T": time, "E": event, "group": group.astype(float)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            cph = CoxPHFitter().fit(df, duration_col="T", event_col="E",
                                    fit_options=dict(COX_FIT_OPTIONS))
        except ConvergenceError:
            return np.nan, np.nan, np.nan
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        return np.nan, np.nan, np.nan
    row = cph.summary.loc["group"]
    return (float(row["exp(coef)"]), float(row["exp(coef) lower 95%"]),
            float(row["exp(coef) upper 95%"]))


def km_median(time, event, definition: MedianDefinition = "r") -> float:
    """Return the Kaplan-Meier median survival time (days; inf if S(t) never falls to 0.5).

    ``definition="r"`` (default): R's ``print.survfit`` / ``summary(survfit)$table`` median, the
    first event time t_j with S(t_j) <= 0.5, except that when S(t_j) is 0.5 (within
    sqrt(machine eps)) and the curve falls again later, the midpoint of t_j and the next event
    time (e.g. 10 deaths at 100, 200, ..., 1000 days: 550). A curve flat at 0.5 to the last
    follow-up keeps t_j (R's ``quantile.survfit`` would average t_j with the last follow-up
    instead). ``definition="first"``: lifelines' ``median_survival_time_``, always t_j.
    ``time``, ``event``: 1-D arrays, no missing values.
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=float)
    if definition == "first":
        return float(KaplanMeierFitter().fit(t, e).median_survival_time_)
    if definition != "r":
        raise InputError(f"median definition must be 'r' or 'first', got {definition!r}")
    death_t = np.unique(t[e == 1])
    if death_t.size == 0:
        return np.inf
    at_risk = (t[None, :] >= death_t[:, None]).sum(axis=1)
    deaths = ((t[None, :] == death_t[:, None]) & (e[None, :] == 1)).sum(axis=1)
    surv = np.cumprod(1.0 - deaths / at_risk)
    below = np.flatnonzero(surv < 0.5 + _KM_TOL)
    if below.size == 0:
        return np.inf
    j = below[0]
    later = np.flatnonzero(surv[j + 1:] < surv[j])
    if abs(surv[j] - 0.5) < _KM_TOL and later.size:
        return float((death_t[j] + death_t[j + 1 + later[0]]) / 2)
    return float(death_t[j])


def logrank_groups(group: np.ndarray, time: np.ndarray, event: np.ndarray,
                   threshold: float = np.nan,
                   median_definition: MedianDefinition = "r") -> LogrankResult:
    """Return the :class:`LogrankResult` of 0/1 groups (complete rows only, no NaN).

    KM medians by :func:`km_median` with ``median_definition``.
    """
    lo, hi = group == 0, group == 1
    n_low, n_high = int(lo.sum()), int(hi.sum())
    ev_low, ev_high = int(event[lo].sum()), int(event[hi].sum())
    if n_low == 0 or n_high == 0:
        nan = np.nan
        return LogrankResult(n_low, n_high, ev_low, ev_high, nan, nan, nan, nan, nan, nan, nan,
                             threshold)
    lr = logrank_test(time[hi], time[lo], event_observed_A=event[hi], event_observed_B=event[lo])
    hr, hr_lo, hr_hi = cox_hazard_ratio(group, time, event)
    return LogrankResult(
        n_low=n_low, n_high=n_high, events_low=ev_low, events_high=ev_high,
        median_low_days=km_median(time[lo], event[lo], median_definition),
        median_high_days=km_median(time[hi], event[hi], median_definition),
        logrank_stat=float(lr.test_statistic), p=float(lr.p_value),
        hr=hr, hr_low95=hr_lo, hr_high95=hr_hi, threshold=threshold,
    )


def logrank_median_split(values, time, event, groups=None,
                         median_definition: MedianDefinition = "r") -> LogrankResult:
    """Log-rank test, KM medians and Cox HR of the median-split groups of ``values``.

    ``values``: one feature per patient (Series or array); ``time`` (days) and ``event``
    (1 = death) per patient, aligned on the index when Series. Patients missing the time, the
    event or the value are left out; the median is that of the remaining patients' values, and
    a patient is high (1) when strictly above it. ``groups`` (0/1, NaN/<NA> = left out) replaces
    the median split when given, e.g. categories or a split learned on a training set; then
    ``values`` may be None. ``median_definition``: see :func:`km_median` (default R's).

    Returns a :class:`LogrankResult` (lifelines ``logrank_test``, :func:`km_median`,
    ``CoxPHFitter``; HR of high vs low).
    """
    if values is None and groups is None:
        raise InputError("give values to split at their median, or groups")
    _, (v, t, e, g) = aligned_arrays(values, time, event, groups,
                                     names=("values", "time", "event", "groups"))
    _check_survival(t, e)
    ok = ~(np.isnan(t) | np.isnan(e))
    threshold = np.nan
    if g is None:
        ok &= ~np.isnan(v)
        v, t, e = v[ok], t[ok], e[ok]
        threshold = float(np.median(v)) if v.size else np.nan
        g = (v > threshold).astype(float)
    else:
        ok &= ~np.isnan(g)
        g, t, e = g[ok], t[ok], e[ok]
        if not np.all(np.isin(g, (0.0, 1.0))):
            raise InputError("groups must be 0 (low), 1 (high) or missing")
    return logrank_groups(g.astype(int), t, e, threshold, median_definition)


def category_groups(x: pd.Series) -> pd.Series:
    """Return 0/1/<NA> (Int64) groups of a two-category variable such as gender.

    The two distinct non-missing values are sorted (as strings): the first is group 0, the
    second group 1 (gender coded "F"/"M": F = 0, M = 1, so the HR is M vs F). Any other number
    of categories is an InputError.
    """
    s = pd.Series(x)
    cats = sorted(s.dropna().unique(), key=str)
    if len(cats) != 2:
        raise InputError(f"categorical column {s.name!r} must have exactly two categories, "
                         f"found {len(cats)}: {cats[:5]}")
    out = pd.array(np.where(s == cats[1], 1, 0), dtype="Int64")
    out[s.isna().to_numpy()] = pd.NA
    return pd.Series(out, index=s.index, name=s.name)


def survival_table(features: pd.DataFrame, time, event, categorical: Sequence[str] = ("gender",),
                   alpha: float = 0.05,
                   median_definition: MedianDefinition = "r") -> pd.DataFrame:
    """Log-rank test of the median-split (or two-category) groups of every column, Holm-corrected.

    ``features``: patients x features (DRFs, age, markers, gender...); ``time`` (days) and
    ``event`` (1 = death) aligned with its rows (Series on the same index, or arrays in row
    order). Columns named in ``categorical`` are split by their two categories
    (:func:`category_groups`), the others at their median (:func:`logrank_median_split`);
    ``median_definition`` chooses the KM median (:func:`km_median`).

    Returns one row per feature with columns feature, n_low, n_high, median_low_days,
    median_high_days, logrank_stat, p, hr, hr_low95, hr_high95 (high vs low group), p_holm (Holm
    over all features of the table with a defined p) and significant (p_holm < alpha).
    """
    if not isinstance(features, pd.DataFrame):
        raise InputError("features must be a pandas DataFrame (patients x features)")
    idx, (t, e) = aligned_arrays(time, event, names=("time", "event"))
    if isinstance(time, pd.Series) or isinstance(event, pd.Series):
        if not features.index.equals(idx):
            if set(features.index) != set(idx):
                raise InputError("time/event are indexed by other patients than the features")
            features = features.loc[idx]
    elif len(features) != len(t):
        raise InputError(f"time has {len(t)} rows, features {len(features)}")
    rows = []
    for col in features.columns:
        x = features[col].reset_index(drop=True)
        if col in categorical:
            res = logrank_median_split(None, t, e, groups=category_groups(x),
                                       median_definition=median_definition)
        else:
            res = logrank_median_split(numeric_column(x, col), t, e,
                                       median_definition=median_definition)
        rows.append({"feature": col, **res.to_dict()})
    out = pd.DataFrame(rows, columns=TABLE_COLUMNS[:-2])
    out["p_holm"] = holm_adjust(out["p"].to_numpy(dtype=float))
    out["significant"] = (out["p_holm"] < alpha).astype(bool)
    return out[TABLE_COLUMNS]


# --------------------------------------------------------------------------- imputation, labels


def impute_censored_survival(time, event, donors=None) -> np.ndarray:
    """Return survival times (days, float) with censored patients imputed as in the paper.

    A censored patient (event 0, follow-up t) gets the mean survival time of the uncensored
    patients (event 1) whose time to death is >= t; if there is none (censored after the last
    observed death) the follow-up time t is kept, a lower bound. Uncensored patients keep their
    time; NaN time or event gives NaN.

    ``donors`` (optional boolean mask or integer positions) restricts the uncensored patients
    whose times are averaged, e.g. to a training fold so that imputing a test patient uses no
    test outcome; the imputed values are still returned for every patient.
    """
    _, (t, e) = aligned_arrays(time, event, names=("time", "event"))
    _check_survival(t, e)
    n = t.size
    pool = np.zeros(n, bool)
    if donors is None:
        pool[:] = True
    else:
        d = np.asarray(donors)
        pool[d] = True
    dead = pool & (e == 1)
    dead_t = t[dead]
    out = t.copy()
    for i in np.flatnonzero(e == 0):
        later = dead_t[dead_t >= t[i]]
        if later.size:
            out[i] = later.mean()
    out[np.isnan(e)] = np.nan
    return out


def survival_labels(time, event, threshold: float | None = None) -> np.ndarray:
    """Return short (0) vs long (1) survival labels (int array) after censored imputation.

    Survival is imputed with :func:`impute_censored_survival`; a patient is long (1) when the
    imputed survival is strictly above ``threshold`` (days), by default the median imputed
    survival of all given patients. Every patient must have a time and an event.
    """
    _, (t, e) = aligned_arrays(time, event, names=("time", "event"))
    _check_survival(t, e, allow_missing=False)
    s = impute_censored_survival(t, e)
    thr = float(np.median(s)) if threshold is None else float(threshold)
    return (s > thr).astype(int)


def survival_labeller(time, event) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``make_labels(train_idx) -> labels of all patients`` fitted on training rows only.

    For leakage-free classifiers (:func:`pipelines.stats.classify.rf_loocv` with
    ``protocol="strict"``): censored patients are imputed from the uncensored *training*
    patients only, and the short/long threshold is the median imputed survival of the training
    patients. ``make_labels(np.arange(n))`` gives :func:`survival_labels` of everybody.
    """
    _, (t, e) = aligned_arrays(time, event, names=("time", "event"))
    _check_survival(t, e, allow_missing=False)

    def make_labels(train_idx) -> np.ndarray:
        train_idx = np.asarray(train_idx)
        s = impute_censored_survival(t, e, donors=train_idx)
        return (s > np.median(s[train_idx])).astype(int)

    return make_labels
