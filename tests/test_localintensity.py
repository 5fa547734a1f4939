"""Local intensity peaks (IBSI 3.2: local VJGA, global 0F91) against the digital phantom, a
brute-force spherical mean and hand-computed rows."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import agrees_with_reference, ibsi_reference

from pipelines.features.localintensity import (
    LOCAL_INTENSITY_FEATURES,
    PEAK_RADIUS_MM,
    local_intensity_features,
    sphere_offsets,
)


def _reference() -> list:
    """One param per local intensity row of the IBSI phantom reference (skipped if absent)."""
    return ibsi_reference(lambda r: r["tag"].startswith("loc_"), full=True)


@pytest.fixture(scope="module")
def phantom(shared_reference):
    """The phantom with its own spacing (2 mm): the peaks depend on it."""
    base = shared_reference / "ibsi" / "digital_phantom" / "nifti"
    img = sitk.ReadImage(str(base / "image" / "phantom.nii.gz"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "mask" / "mask.nii.gz"))) > 0
    return sitk.GetArrayFromImage(img), mask, img.GetSpacing()[::-1]


@pytest.mark.parametrize("row", _reference())
def test_phantom_features(phantom, row):
    img, mask, spacing = phantom
    value = local_intensity_features(img, mask, spacing)[row["tag"]]
    assert agrees_with_reference(value, row), (row["tag"], value, row["value"])
    assert LOCAL_INTENSITY_FEATURES[row["tag"]] == row["ibsi_code"]


def test_radius_is_that_of_a_1_cm3_sphere():
    assert 4 / 3 * math.pi * PEAK_RADIUS_MM**3 == pytest.approx(1000.0)
    assert PEAK_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)


def test_sphere_offsets_by_brute_force():
    for spacing in [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (3.0, 0.8, 0.8), (6.5, 0.78, 0.78)]:
        got = {tuple(o) for o in sphere_offsets(spacing).tolist()}
        want = {o for o in itertools.product(range(-10, 11), repeat=3)
                if sum((a * s) ** 2 for a, s in zip(o, spacing, strict=True)) <= 6.2035**2}
        assert got == want, spacing
    assert len(sphere_offsets((2.0, 2.0, 2.0))) == 123  # |d|^2 <= 9 at 2 mm


def test_hand_computed_row():
    """Spacing 5 mm along x, 10 mm across: the sphere is the voxel and its two x neighbours
    (those inside the image)."""
    img = np.array([[[0.0, 3.0, 9.0, 0.0]]])
    sp = (10.0, 10.0, 5.0)
    every = np.ones(img.shape, bool)
    f = local_intensity_features(img, every, sp)
    assert f["loc_peak_loc"] == pytest.approx(4.0)  # around the 9: (3 + 9 + 0) / 3
    assert f["loc_peak_glob"] == pytest.approx(4.5)  # around the last 0: (9 + 0) / 2
    first3 = every.copy()
    first3[0, 0, 3] = False  # the last voxel is no centre any more but still a neighbour
    f = local_intensity_features(img, first3, sp)
    assert f["loc_peak_loc"] == pytest.approx(4.0) and f["loc_peak_glob"] == pytest.approx(4.0)


def test_several_maxima_take_the_highest_peak():
    img = np.zeros((1, 1, 7))
    img[0, 0, [1, 5]] = 10.0
    img[0, 0, 6] = 8.0
    f = local_intensity_features(img, np.ones(img.shape, bool), (10.0, 10.0, 5.0))
    assert f["loc_peak_loc"] == pytest.approx(18 / 3)  # the 10 next to the 8 wins


def _brute_force(img, mask, spacing):
    offs = sphere_offsets(spacing)
    peaks = {}
    for p in map(tuple, np.argwhere(mask)):
        vals = [img[q] for q in (tuple(np.add(p, o)) for o in offs)
                if all(0 <= c < n for c, n in zip(q, img.shape, strict=True))
                and math.isfinite(img[q])]
        peaks[p] = float(np.mean(vals))
    vmax = img[mask].max()
    local = max(v for p, v in peaks.items() if img[p] == vmax)
    return local, max(peaks.values())


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.2, 0.9), (2.0, 2.0, 2.0)])
def test_random_images_match_brute_force(spacing):
    rng = np.random.default_rng(int(spacing[1] * 10))
    img = rng.integers(0, 50, (9, 12, 11)).astype(np.float64)
    img[0, 0, 0] = np.nan  # outside the ROI: left out of the means
    mask = np.zeros(img.shape, bool)
    mask[1:8, 3:12, 0:6] = rng.random((7, 9, 6)) < 0.5  # touches two image borders
    local, glob = _brute_force(img, mask, spacing)
    f = local_intensity_features(img, mask, spacing)
    assert f["loc_peak_loc"] == pytest.approx(local, rel=1e-12)
    assert f["loc_peak_glob"] == pytest.approx(glob, rel=1e-9)


def test_errors():
    img = np.ones((3, 3, 3))
    with pytest.raises(ValueError, match="empty"):
        local_intensity_features(img, np.zeros(img.shape, bool), (1, 1, 1))
    img[1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        local_intensity_features(img, np.ones(img.shape, bool), (1, 1, 1))


def test_roi_far_from_the_border_matches_brute_force():
    """Every sphere lies inside the image and is finite: the constant-count path."""
    rng = np.random.default_rng(11)
    img = rng.normal(100, 20, (22, 22, 22))
    mask = np.zeros(img.shape, bool)
    mask[8:14, 8:14, 8:14] = rng.random((6, 6, 6)) < 0.6
    local, glob = _brute_force(img, mask, (1.0, 1.0, 1.0))
    f = local_intensity_features(img, mask, (1.0, 1.0, 1.0))
    assert f["loc_peak_loc"] == pytest.approx(local, rel=1e-12)
    assert f["loc_peak_glob"] == pytest.approx(glob, rel=1e-9)
