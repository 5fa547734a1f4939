"""Feature-marker association: Spearman correlation and Wilcoxon rank-sum tests of median-split
groups, Holm-corrected per heatmap (seed 000, section 2.4 and Figures 2-3).

All functions take a features frame (patients x features) and a markers frame (patients x
markers) whose rows are the same patients, and return long frames, one row per
(feature, marker) pair. The Holm correction runs over all pairs of one call together: one call
is one heatmap of the paper.

Median split convention (used here, in :mod:`pipelines.stats.survival` and for classifier
labels): a value strictly greater than the median is "high" (1), every other value, including
values equal to the median, is "low" (0); missing values stay missing. With an odd number of
patients the median patient is therefore in the low group, and for a marker that is 0 for more
than half of the patients (common for CIBERSORT fractions) the groups are "zero" vs "non-zero".
When more than half of the values equal the maximum (e.g. a marker that is 0 for everybody) the
high group is empty and the group test is not computed (NaN).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipelines.exceptions import InputError
from pipelines.stats.multiple_testing import holm_adjust

__all__ = [
    "MedianSplit",
    "median_split",
    "split_at",
    "spearman_matrix",
    "wilcoxon_groups",
]

#: Fewest pairwise-complete observations for which a Spearman correlation is reported.
MIN_SPEARMAN_N = 3


# --------------------------------------------------------------------------- inputs


def aligned_frames(features: pd.DataFrame, markers: pd.DataFrame) -> tuple[pd.DataFrame,
                                                                           pd.DataFrame]:
    """Return (features, markers) with markers' rows in the order of features' rows.

    Both must be DataFrames of the same patients: equal indexes, or the same set of unique index
    labels in another order (reordered). Anything else is an :class:`InputError`: join the
    tables on the patient id first.
    """
    for name, df in (("features", features), ("markers", markers)):
        if not isinstance(df, pd.DataFrame):
            raise InputError(f"{name} must be a pandas DataFrame (patients x columns)")
        if not df.index.is_unique:
            raise InputError(f"{name} has duplicated row labels; index it by patient id")
    if features.index.equals(markers.index):
        return features, markers
    if set(features.index) != set(markers.index):
        raise InputError("features and markers must have the same patients (row index); "
                         "join them on the patient id first")
    return features, markers.loc[features.index]


def numeric_column(s: pd.Series, name: str) -> np.ndarray:
    """Return a column as float64 (NaN for missing), or raise InputError if it is not numeric."""
    try:
        return pd.to_numeric(s, errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise InputError(f"column {name!r} is not numeric: {exc}") from None


# --------------------------------------------------------------------------- median split


@dataclass
class MedianSplit:
    """Split a variable at a median learned on some rows and applied to any rows.

    ``fit(x_train)`` sets ``threshold_`` (the median of the non-missing training values);
    ``transform(x)`` returns 1 where x > threshold_, 0 where x <= threshold_, <NA> where x is
    missing (pandas ``Int64``). Fitting on the training rows only and transforming the test
    rows keeps a split free of test-set leakage.
    """

    threshold_: float = np.nan

    def fit(self, x) -> MedianSplit:
        """Learn the median of the non-missing values of ``x``; returns self."""
        v = np.asarray(pd.to_numeric(pd.Series(x), errors="raise"), dtype=float)
        v = v[~np.isnan(v)]
        self.threshold_ = float(np.median(v)) if v.size else np.nan
        return self

    def transform(self, x) -> pd.Series:
        """Return the 0/1/<NA> groups of ``x`` at ``threshold_`` (Int64; index kept)."""
        return split_at(x, self.threshold_)

    def fit_transform(self, x) -> pd.Series:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)


def split_at(x, threshold: float) -> pd.Series:
    """Return 1 where x > threshold, 0 where x <= threshold, <NA> where x (or threshold) is NaN.

    The result is a pandas ``Int64`` Series with the index of ``x`` (a RangeIndex for arrays).
    """
    s = x if isinstance(x, pd.Series) else pd.Series(np.asarray(x))
    v = np.asarray(pd.to_numeric(s, errors="raise"), dtype=float)
    out = pd.array((v > threshold).astype("int64"), dtype="Int64")
    out[np.isnan(v) | np.isnan(threshold)] = pd.NA
    return pd.Series(out, index=s.index, name=s.name)


def median_split(x) -> pd.Series:
    """Return the median split of ``x``: 1 above the median, 0 at or below it, <NA> if missing.

    The median is that of the non-missing values of ``x`` itself; see :class:`MedianSplit` to
    learn it on training rows and apply it elsewhere, and the module docstring for ties.
    """
    return MedianSplit().fit_transform(x)


# --------------------------------------------------------------------------- Spearman


def _spearman_pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """Return (rho, p, n) of the pairwise-complete observations of a and b.

    NaN rho and p when fewer than MIN_SPEARMAN_N complete pairs remain or either side is
    constant (the correlation is undefined; scipy would warn and return NaN).
    """
    ok = ~(np.isnan(a) | np.isnan(b))
    n = int(ok.sum())
    if n < MIN_SPEARMAN_N:
        return np.nan, np.nan, n
    a, b = a[ok], b[ok]
    if a.min() == a.max() or b.min() == b.max():
        return np.nan, np.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        res = stats.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue), n


def _finish(rows: list[dict], alpha: float) -> pd.DataFrame:
    """Return the long frame of rows with Holm-adjusted p over all rows and significance."""
    out = pd.DataFrame(rows)
    out["p_holm"] = holm_adjust(out["p"].to_numpy(dtype=float))
    out["significant"] = (out["p_holm"] < alpha).astype(bool)
    return out


def spearman_matrix(features: pd.DataFrame, markers: pd.DataFrame,
                    alpha: float = 0.05) -> pd.DataFrame:
    """Spearman correlation of every feature with every marker, Holm-corrected together.

    ``scipy.stats.spearmanr`` per (feature, marker) pair on its pairwise-complete rows (ties get
    average ranks; the p-value is scipy's t-distribution approximation, two-sided).

    Returns a long DataFrame, one row per pair in (feature, marker) order, with columns
    feature, marker, rho, p, n (complete pairs), p_holm (Holm over all pairs of this call
    whose p is defined), significant (p_holm < alpha). Pairs with fewer than 3 complete rows or a
    constant side have NaN rho, p and p_holm and are not significant.
    """
    features, markers = aligned_frames(features, markers)
    fcols = {c: numeric_column(features[c], c) for c in features.columns}
    mcols = {c: numeric_column(markers[c], c) for c in markers.columns}
    rows = []
    for f, a in fcols.items():
        for m, b in mcols.items():
            rho, p, n = _spearman_pair(a, b)
            rows.append({"feature": f, "marker": m, "rho": rho, "p": p, "n": n})
    if not rows:
        return pd.DataFrame(columns=["feature", "marker", "rho", "p", "n", "p_holm",
                                     "significant"])
    return _finish(rows, alpha)


# --------------------------------------------------------------------------- Wilcoxon


def _ranksum(x: np.ndarray, group: np.ndarray) -> tuple[float, float, int, int]:
    """Return (U of the high group, two-sided p, n_low, n_high) on the non-missing x.

    group: 0/1 with -1 for a missing group. NaN U and p when either group is empty.
    """
    ok = ~np.isnan(x) & (group >= 0)
    low, high = x[ok & (group == 0)], x[ok & (group == 1)]
    if low.size == 0 or high.size == 0:
        return np.nan, np.nan, int(low.size), int(high.size)
    res = stats.mannwhitneyu(high, low, alternative="two-sided")
    return float(res.statistic), float(res.pvalue), int(low.size), int(high.size)


def wilcoxon_groups(features: pd.DataFrame, markers: pd.DataFrame,
                    alpha: float = 0.05) -> pd.DataFrame:
    """Wilcoxon rank-sum test of each feature between the low and high groups of each marker.

    Each marker is median-split (:func:`median_split`: high = above the median, low = at or
    below it); each feature is compared between the two groups with the Wilcoxon rank-sum test
    in its Mann-Whitney U form, ``scipy.stats.mannwhitneyu(high, low, alternative="two-sided")``
    (scipy's default method: exact for small samples without ties, otherwise the normal
    approximation with tie and continuity correction). Patients missing the marker or the
    feature are left out of that pair.

    Returns a long DataFrame, one row per pair in (feature, marker) order, with columns
    feature, marker, statistic (U of the high group: > n_low * n_high / 2 when the feature
    tends to be larger in the high group), p, n_low, n_high, p_holm (Holm over all pairs of this
    call with a defined p), significant (p_holm < alpha). When a marker's split leaves a group
    empty (e.g. the marker is 0 for more than half of the patients *and* its maximum, or
    constant), statistic, p and p_holm are NaN and the pair is not significant.
    """
    features, markers = aligned_frames(features, markers)
    fcols = {c: numeric_column(features[c], c) for c in features.columns}
    groups = {}
    for m in markers.columns:
        numeric_column(markers[m], m)
        groups[m] = median_split(markers[m]).fillna(-1).to_numpy(dtype=int)
    rows = []
    for f, x in fcols.items():
        for m, g in groups.items():
            u, p, n_low, n_high = _ranksum(x, g)
            rows.append({"feature": f, "marker": m, "statistic": u, "p": p,
                         "n_low": n_low, "n_high": n_high})
    if not rows:
        cols = ["feature", "marker", "statistic", "p", "n_low", "n_high", "p_holm", "significant"]
        return pd.DataFrame(columns=cols)
    return _finish(rows, alpha)
