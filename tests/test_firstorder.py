"""Intensity-based statistics and intensity histogram features (IBSI 3.3, 3.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import agrees_with_reference, ibsi_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipelines.features.firstorder import (
    IH_FEATURES,
    STAT_FEATURES,
    histogram_features,
    intensity_histogram,
    intensity_statistics,
)


def _reference(prefixes: tuple[str, ...]) -> list:
    return ibsi_reference(lambda t: t.startswith(prefixes))


_agrees = agrees_with_reference


@pytest.fixture(scope="module")
def phantom(shared_reference):
    base = shared_reference / "ibsi" / "digital_phantom" / "nifti"
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "image" / "phantom.nii.gz")))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "mask" / "mask.nii.gz"))) > 0
    return img, mask


@pytest.mark.parametrize("row", _reference(("stat_",)))
def test_phantom_statistics(phantom, row):
    img, mask = phantom
    feats = intensity_statistics(img[mask])
    assert _agrees(feats[row["tag"]], row), (feats[row["tag"]], row["value"])
    assert STAT_FEATURES[row["tag"]] == row["ibsi_code"]


@pytest.mark.parametrize("row", _reference(("ih_",)))
def test_phantom_histogram(phantom, row):
    # IBSI uses the phantom's grey levels 1..6 directly as the discretised image
    img, mask = phantom
    feats = intensity_histogram(img[mask].astype(np.int32), 6)
    assert _agrees(feats[row["tag"]], row), (feats[row["tag"]], row["value"])
    assert IH_FEATURES[row["tag"]] == row["ibsi_code"]


def test_names_and_counts():
    feats = intensity_statistics(np.arange(10.0))
    assert list(feats) == list(STAT_FEATURES) and len(feats) == 18
    h = intensity_histogram(np.arange(1, 11), 10)
    assert list(h) == list(IH_FEATURES) and len(h) == 23


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e3, 1e3)))
def test_statistics_match_numpy(x):
    f = intensity_statistics(x)
    mean = x.mean()
    var = ((x - mean) ** 2).mean()
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    scale = max(1.0, np.abs(x).max())
    close = dict(rel=1e-9, abs=1e-9 * scale)
    assert f["stat_mean"] == pytest.approx(mean, **close)
    assert f["stat_var"] == pytest.approx(var, rel=1e-9, abs=1e-9 * scale**2)
    for name, ref in (("stat_median", p50), ("stat_p10", p10), ("stat_p90", p90),
                      ("stat_iqr", p75 - p25), ("stat_min", x.min()), ("stat_max", x.max())):
        assert f[name] == ref, name  # the same interpolation as numpy, bit for bit
    assert f["stat_mad"] == pytest.approx(np.abs(x - mean).mean(), **close)
    assert f["stat_medad"] == pytest.approx(np.abs(x - p50).mean(), **close)
    sub = x[(x >= p10) & (x <= p90)]
    if sub.size:
        assert f["stat_rmad"] == pytest.approx(np.abs(sub - sub.mean()).mean(), **close)
    else:
        assert math.isnan(f["stat_rmad"])
    assert f["stat_energy"] == pytest.approx((x * x).sum(), rel=1e-9, abs=1e-9 * scale**2)
    assert f["stat_rms"] == pytest.approx(math.sqrt((x * x).mean()), **close)
    if var > 1e-6 * scale**2:
        d = x - mean
        assert f["stat_skew"] == pytest.approx((d**3).mean() / var**1.5, rel=1e-6, abs=1e-6)
        assert f["stat_kurt"] == pytest.approx((d**4).mean() / var**2 - 3, rel=1e-6, abs=1e-6)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.int64, st.integers(1, 80), elements=st.integers(1, 12)))
def test_histogram_matches_expanded_levels(lev):
    """Histogram features agree with the same statistics computed on the level list itself."""
    h = intensity_histogram(lev, 12)
    s = intensity_statistics(lev)
    for name in ("mean", "var", "median", "min", "p10", "p90", "max", "iqr", "range", "mad",
                 "rmad", "medad", "cov", "qcod"):
        a, b = h[f"ih_{name}"], s[f"stat_{name}"]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), name
    p = np.bincount(lev, minlength=13)[1:] / lev.size
    assert h["ih_uniformity"] == pytest.approx((p**2).sum())
    nz = p[p > 0]
    assert h["ih_entropy"] == pytest.approx(-(nz * np.log2(nz)).sum(), abs=1e-12)


def test_constant_values():
    with np.errstate(all="raise"):
        f = intensity_statistics(np.full(7, 0.1))
        assert f["stat_mean"] == 0.1 and f["stat_median"] == 0.1 and f["stat_mad"] == 0
        h = intensity_histogram(np.full(7, 1), 32)
    assert f["stat_var"] == 0 and f["stat_skew"] == 0 and f["stat_kurt"] == 0
    assert f["stat_cov"] == 0 and f["stat_iqr"] == 0 and f["stat_rmad"] == 0
    assert h["ih_var"] == 0 and h["ih_skew"] == 0 and h["ih_kurt"] == 0
    assert h["ih_mode"] == 1 and h["ih_entropy"] == 0 and h["ih_uniformity"] == 1
    assert h["ih_min_grad"] == -7 and h["ih_min_grad_g"] == 1
    assert h["ih_max_grad"] == 0 and h["ih_max_grad_g"] == 3  # H' = -7, -3.5, 0, 0, ...


def test_undefined_ratios_are_nan():
    f = intensity_statistics(np.array([-1.0, 1.0]))
    assert math.isnan(f["stat_cov"]) and math.isnan(f["stat_qcod"])
    assert math.isnan(f["stat_rmad"])  # nothing lies in [P10, P90] = [-0.8, 0.8]
    g = intensity_statistics(np.zeros(3))
    assert math.isnan(g["stat_cov"]) and g["stat_var"] == 0


def test_single_level_histogram_has_no_gradient():
    h = intensity_histogram(np.ones(5, np.int32), 1)
    assert all(math.isnan(h[k]) for k in ("ih_max_grad", "ih_max_grad_g", "ih_min_grad",
                                          "ih_min_grad_g"))
    assert h["ih_mean"] == 1 and h["ih_range"] == 0


def test_mode_tie_goes_to_the_bin_nearest_the_mean_then_left():
    # counts 2, 0, 2 (levels 1 and 3 tie, mean 2 equidistant): the left one
    assert histogram_features(np.array([2, 0, 2]))["ih_mode"] == 1
    # counts 3, 1, 3, 0, 0: mean 2 -> levels 1 and 3 equidistant -> 1
    assert histogram_features(np.array([3, 1, 3, 0, 0]))["ih_mode"] == 1
    # counts 3, 0, 3, 2: mean 2.57 -> level 3 is nearer
    assert histogram_features(np.array([3, 0, 3, 2]))["ih_mode"] == 3


def test_histogram_refuses_float_levels():
    with pytest.raises(TypeError, match="discretise first"):
        intensity_histogram(np.array([1.0, 2.0]), 2)
    with pytest.raises(ValueError, match="outside"):
        intensity_histogram(np.array([0, 2]), 2)


def test_statistics_reject_empty_and_nonfinite():
    with pytest.raises(ValueError, match="empty"):
        intensity_statistics(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        intensity_statistics(np.array([1.0, np.nan]))
