"""Intensity-volume histogram features (IBSI 3.5) against the digital phantom, the manual's
example IVH and hand-computed histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import agrees_with_reference, ibsi_reference

from pipelines.features.extract import compute_features
from pipelines.features.ivh import IVH_FEATURES, ivh_curve, ivh_features, ivh_from_histogram


def _reference() -> list:
    """One param per IVH row of the IBSI phantom reference (skipped if absent)."""
    return ibsi_reference(lambda r: r["tag"].startswith("ivh_"), full=True)


@pytest.mark.parametrize("row", _reference())
def test_phantom_features(phantom_levels, row):
    lev, mask = phantom_levels
    value = ivh_features(lev[mask])[row["tag"]]  # discrete intensities, w_d = 1, G = [1, 6]
    assert agrees_with_reference(value, row), (row["tag"], value, row["value"])
    assert IVH_FEATURES[row["tag"]] == row["ibsi_code"]


@pytest.mark.parametrize("row", _reference())
def test_phantom_through_compute_features(phantom_levels, row):
    """Bin size 1 from the ROI minimum keeps the phantom's intensities as they are."""
    lev, mask = phantom_levels
    value = compute_features(lev, mask, (2, 2, 2), ("ivh",), bin_size=1.0)[row["tag"]]
    assert agrees_with_reference(value, row), (row["tag"], value, row["value"])


def test_phantom_curve_equals_the_manual_table(phantom_levels):
    lev, mask = phantom_levels
    counts = np.bincount(lev[mask] - 1, minlength=6)
    intensity, gamma, nu = ivh_curve(counts, 1.0)
    np.testing.assert_array_equal(intensity, [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(gamma, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(nu, [1.000, 0.324, 0.324, 0.311, 0.095, 0.095], atol=5e-4)


def test_hand_computed_uniform_levels():
    f = ivh_features([1, 2, 3, 4])  # nu = 1, .75, .5, .25 at gamma = 0, 1/3, 2/3, 1
    assert list(f) == list(IVH_FEATURES)
    assert [f[f"ivh_v{x}"] for x in (10, 25, 50, 75, 90)] == [0.75, 0.75, 0.5, 0.25, 0.25]
    # no intensity holds <= 10 % of the volume: the first intensity no voxel reaches
    assert [f[f"ivh_i{x}"] for x in (10, 25, 50, 75, 90)] == [5, 4, 3, 2, 2]
    assert f["ivh_diff_v10_v90"] == 0.5 and f["ivh_diff_v25_v75"] == 0.5
    assert f["ivh_diff_i10_i90"] == 3 and f["ivh_diff_i25_i75"] == 2


def test_range_width_and_absent_intensities():
    # CT-like values on a 5-unit grid, total range wider than the ROI
    f = ivh_features([-10, -10, 0, 20], width=5.0, range_min=-20, range_max=20)
    # grid -20..20 (9 points, gamma k/8); nu: 1 up to -10, .5 from -5 to 0, .25 up to 20
    assert f["ivh_v10"] == 1.0  # gamma >= .1 first at k = 1 (-15)
    assert f["ivh_v50"] == 0.5  # k = 4 (0)
    assert f["ivh_v90"] == 0.25  # k = 8 (20)
    assert f["ivh_i50"] == -5 and f["ivh_i25"] == 5 and f["ivh_i10"] == 25
    with pytest.raises(ValueError, match="grid"):
        ivh_features([0.0, 2.5], width=1.0)
    with pytest.raises(ValueError, match="outside"):
        ivh_features([0, 30], range_max=20)


def test_single_intensity_range():
    f = ivh_from_histogram([7], 3.0)
    assert all(math.isnan(f[f"ivh_v{x}"]) for x in (10, 25, 50, 75, 90))
    assert f["ivh_i50"] == 4.0  # every voxel holds the only intensity


def test_compute_features_fbn_grid_is_the_levels():
    img = np.arange(8.0).reshape(2, 2, 2)
    f = compute_features(img, np.ones(img.shape, bool), (1, 1, 1), ("ivh",), bin_count=4)
    # levels 1 1 2 2 3 3 4 4 on G = [1, 4]
    assert f["ivh_i50"] == 3 and f["ivh_i75"] == 2 and f["ivh_i10"] == 5
    assert f["ivh_v50"] == 0.5 and f["ivh_v90"] == 0.25
