"""Median splits, Spearman and Wilcoxon heatmaps against direct scipy calls (ties, missing
values, constant columns), Holm over the whole heatmap, and a planted association."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipelines.exceptions import InputError
from pipelines.stats.association import (
    MedianSplit,
    median_split,
    spearman_matrix,
    split_at,
    wilcoxon_groups,
)
from pipelines.stats.multiple_testing import holm_adjust


@pytest.fixture
def frames():
    """40 patients, 4 features with ties and NaNs, 3 markers (one mostly zero, with ties)."""
    rng = np.random.default_rng(7)
    n = 40
    idx = pd.Index([f"P{i:03d}" for i in range(n)], name="patient")
    latent = rng.normal(size=n)
    feats = pd.DataFrame({
        "f_signal": np.round(latent + 0.3 * rng.normal(size=n), 1),  # ties from rounding
        "f_int": rng.integers(0, 5, n).astype(float),               # heavy ties
        "f_nan": rng.normal(size=n),
        "f_noise": rng.normal(size=n),
    }, index=idx)
    feats.iloc[[2, 5, 11], 2] = np.nan
    marks = pd.DataFrame({
        "m_signal": latent + 0.5 * rng.normal(size=n),
        "m_sparse": np.where(rng.uniform(size=n) < 0.6, 0.0, rng.uniform(0, 0.2, n)),
        "m_tied": rng.integers(0, 3, n).astype(float),
    }, index=idx)
    marks.iloc[[3, 5], 0] = np.nan
    return feats, marks


# --------------------------------------------------------------------------- median split


def test_median_split_ties_odd_nan_and_mostly_zero():
    # even n with ties at the median (2): values equal to the median are low
    assert median_split([1, 2, 2, 3]).tolist() == [0, 0, 0, 1]
    # odd n: the median patient is low
    assert median_split([3.0, 1.0, 2.0]).tolist() == [1, 0, 0]
    s = median_split(pd.Series([1.0, np.nan, 5.0, 3.0], index=list("abcd")))
    assert s.dtype == "Int64" and list(s.index) == list("abcd")
    assert s.isna().tolist() == [False, True, False, False]
    assert s.dropna().tolist() == [0, 1, 0]  # median of (1, 3, 5) = 3
    # CIBERSORT-like marker: median 0, so zero vs non-zero
    assert median_split([0, 0, 0, 0.1, 0.3]).tolist() == [0, 0, 0, 1, 1]
    # more than half at the maximum: the high group is empty
    assert median_split([0, 0, 0, 0]).tolist() == [0, 0, 0, 0]


def test_median_split_fit_on_train_apply_to_test():
    split = MedianSplit().fit([1.0, 2.0, 3.0, 4.0, np.nan])
    assert split.threshold_ == 2.5
    assert split.transform([0.0, 2.5, 2.6, np.nan]).tolist() == [0, 0, 1, pd.NA]
    assert split_at([1.0, 2.0], np.nan).isna().all()


# --------------------------------------------------------------------------- Spearman


def test_spearman_matches_scipy_pairwise_complete(frames):
    feats, marks = frames
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = spearman_matrix(feats, marks)
    assert list(out.columns) == ["feature", "marker", "rho", "p", "n", "p_holm", "significant"]
    assert len(out) == feats.shape[1] * marks.shape[1]
    for row in out.itertuples():
        a, b = feats[row.feature], marks[row.marker]
        ok = a.notna() & b.notna()
        ref = stats.spearmanr(a[ok], b[ok])
        assert row.n == ok.sum()
        assert row.rho == pytest.approx(ref.statistic, abs=1e-12)
        assert row.p == pytest.approx(ref.pvalue, abs=1e-12)
    np.testing.assert_allclose(out["p_holm"], holm_adjust(out["p"].to_numpy()))
    assert (out["significant"] == (out["p_holm"] < 0.05)).all()
    top = out.set_index(["feature", "marker"]).loc[("f_signal", "m_signal")]
    assert top.rho > 0.6 and top.significant


def test_spearman_constant_and_too_short_columns_give_nan_without_warning(frames):
    feats, marks = frames
    feats = feats.assign(f_const=1.0, f_short=np.nan)
    feats.iloc[:2, feats.columns.get_loc("f_short")] = [1.0, 2.0]  # 2 values, rows 0 and 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning must not escape
        out = spearman_matrix(feats, marks).set_index(["feature", "marker"])
    for f in ("f_const", "f_short"):
        sub = out.loc[f]
        assert sub[["rho", "p", "p_holm"]].isna().all().all()
        assert not sub["significant"].any()
    assert out.loc["f_short", "n"].tolist() == [2, 2, 2]  # n < 3: rho undefined
    # Holm counts only the defined p-values
    defined = out["p"].dropna()
    np.testing.assert_allclose(out["p_holm"].dropna(), holm_adjust(defined.to_numpy()))


def test_alignment_by_patient_id(frames):
    feats, marks = frames
    shuffled = marks.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(spearman_matrix(feats, marks), spearman_matrix(feats, shuffled))
    with pytest.raises(InputError, match="join"):
        spearman_matrix(feats, marks.iloc[1:])
    with pytest.raises(InputError, match="not numeric"):
        spearman_matrix(feats.assign(f_txt="a"), marks)


# --------------------------------------------------------------------------- Wilcoxon


def test_wilcoxon_matches_mannwhitneyu(frames):
    feats, marks = frames
    out = wilcoxon_groups(feats, marks)
    assert list(out.columns) == ["feature", "marker", "statistic", "p", "n_low", "n_high",
                                 "p_holm", "significant"]
    for row in out.itertuples():
        g = median_split(marks[row.marker])
        x = feats[row.feature]
        high = x[(g == 1).fillna(False) & x.notna()]
        low = x[(g == 0).fillna(False) & x.notna()]
        ref = stats.mannwhitneyu(high, low, alternative="two-sided")
        assert (row.n_low, row.n_high) == (len(low), len(high))
        assert row.statistic == pytest.approx(ref.statistic, abs=1e-12)
        assert row.p == pytest.approx(ref.pvalue, abs=1e-12)
    np.testing.assert_allclose(out["p_holm"], holm_adjust(out["p"].to_numpy()))
    top = out.set_index(["feature", "marker"]).loc[("f_signal", "m_signal")]
    assert top.significant and top.statistic > top.n_low * top.n_high / 2


def test_wilcoxon_empty_group_is_nan_and_left_out_of_holm(frames):
    feats, marks = frames
    marks = marks.assign(m_zero=0.0)
    out = wilcoxon_groups(feats, marks)
    zero = out[out["marker"] == "m_zero"]
    assert (zero["n_high"] == 0).all() and (zero["n_low"] > 0).all()
    assert zero[["statistic", "p", "p_holm"]].isna().all().all()
    assert not zero["significant"].any()
    rest = out[out["marker"] != "m_zero"]
    np.testing.assert_allclose(rest["p_holm"], holm_adjust(rest["p"].to_numpy()))


def test_null_markers_are_rarely_significant():
    rng = np.random.default_rng(11)
    feats = pd.DataFrame(rng.normal(size=(60, 20)))
    marks = pd.DataFrame(rng.normal(size=(60, 5)))
    assert spearman_matrix(feats, marks)["significant"].sum() == 0
    assert wilcoxon_groups(feats, marks)["significant"].sum() == 0
