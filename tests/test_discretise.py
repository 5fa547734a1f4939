"""IBSI discretisation (fixed bin number / size) and the level-array helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipelines.features.discretise import (
    DIRECTIONS_XYZ,
    RASTER_VECTORS,
    bounding_box,
    checked_padded,
    discretise_fixed_bin_number,
    discretise_fixed_bin_size,
    level_dtype,
    padded_levels,
    raster_offsets,
    require_levels,
)


def _fbn_reference(x: np.ndarray, n: int) -> np.ndarray:
    """Literal IBSI K15C on a 1D float64 array."""
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.ones(x.shape, np.int64)
    lev = np.floor(n * (x - lo) / (hi - lo)).astype(np.int64) + 1
    lev[x == hi] = n
    return np.minimum(lev, n)


def test_fbn_small_example():
    img = np.array([[[0.0, 1.0, 2.0, 3.0, 4.0]]])
    mask = np.array([[[1, 1, 1, 1, 0]]], dtype=bool)
    levels, info = discretise_fixed_bin_number(img, mask, n_bins=3)
    # range 0..3, width 1: 0 -> 1, 1 -> 2, 2 -> 3, 3 (max) -> 3; outside the mask -> 0
    np.testing.assert_array_equal(levels, [[[1, 2, 3, 3, 0]]])
    assert levels.dtype == np.int32 and levels.shape == img.shape
    assert info["method"] == "fixed_bin_number"
    assert info["n_bins"] == 3 and info["n_levels"] == 3 and info["bin_size"] is None
    assert info["roi_min"] == 0.0 and info["roi_max"] == 3.0


def test_fbn_constant_roi_is_all_one():
    img = np.full((3, 3, 3), 7.5)
    mask = np.zeros(img.shape, bool)
    mask[1] = True
    levels, info = discretise_fixed_bin_number(img, mask, 32)
    assert set(np.unique(levels[mask])) == {1}
    assert not levels[~mask].any()
    assert info["roi_min"] == info["roi_max"] == 7.5


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, (3, 4, 5), elements=st.floats(-1e4, 1e4, allow_nan=False)),
    st.integers(1, 64),
)
def test_fbn_matches_literal_formula(img, n):
    mask = np.ones(img.shape, bool)
    mask[0, 0, 0] = False
    levels, _ = discretise_fixed_bin_number(img, mask, n)
    np.testing.assert_array_equal(levels[mask], _fbn_reference(img[mask], n))
    assert levels[0, 0, 0] == 0
    assert levels[mask].max() == (n if np.ptp(img[mask]) > 0 else 1)


def test_fbn_integer_image():
    img = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    levels, _ = discretise_fixed_bin_number(img, np.ones(img.shape), 4)
    np.testing.assert_array_equal(levels.ravel(), _fbn_reference(np.arange(24.0), 4))


def test_fbs_default_minimum_and_set_minimum():
    img = np.array([[[10.0, 12.4, 12.5, 17.0, 40.0]]])
    mask = np.array([[[1, 1, 1, 1, 0]]])
    levels, info = discretise_fixed_bin_size(img, mask, bin_size=2.5)
    np.testing.assert_array_equal(levels, [[[1, 1, 2, 3, 0]]])
    assert info["method"] == "fixed_bin_size" and info["bin_size"] == 2.5
    assert info["min_value"] == 10.0 and info["n_levels"] == 3
    levels, info = discretise_fixed_bin_size(img, mask, bin_size=2.5, min_value=5.0)
    np.testing.assert_array_equal(levels, [[[3, 3, 4, 5, 0]]])
    assert info["n_levels"] == 5


def test_fbs_phantom_levels_unchanged_with_unit_bins():
    img = np.array([[[1, 3, 4, 6]]], dtype=np.int16)
    levels, info = discretise_fixed_bin_size(img, np.ones(img.shape), 1.0)
    np.testing.assert_array_equal(levels, img)
    assert info["n_levels"] == 6


def test_fbs_rejects_min_value_above_roi_minimum():
    with pytest.raises(ValueError, match="re-segment"):
        discretise_fixed_bin_size(np.ones((1, 1, 2)), np.ones((1, 1, 2)), 1.0, min_value=2.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_fbs_rejects_bad_bin_size(bad):
    with pytest.raises(ValueError, match="bin_size"):
        discretise_fixed_bin_size(np.ones((1, 1, 2)), np.ones((1, 1, 2)), bad)


def test_empty_mask_and_nonfinite_are_errors():
    img = np.zeros((2, 2, 2))
    with pytest.raises(ValueError, match="empty"):
        discretise_fixed_bin_number(img, np.zeros(img.shape, bool))
    img[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        discretise_fixed_bin_number(img, np.ones(img.shape, bool))


def test_shape_mismatch_and_bad_dtype():
    with pytest.raises(ValueError, match="same shape"):
        discretise_fixed_bin_number(np.zeros((2, 2, 2)), np.ones((2, 2, 3)))
    with pytest.raises(TypeError):
        discretise_fixed_bin_number(np.zeros((2, 2, 2), bool), np.ones((2, 2, 2)))


def test_require_levels_refuses_float():
    with pytest.raises(TypeError, match="discretise first"):
        require_levels(np.ones((2, 2, 2)))
    with pytest.raises(TypeError, match="discretise first"):
        require_levels(np.ones((2, 2, 2), bool))
    assert require_levels(np.ones(3, np.uint8)).dtype == np.uint8


def test_padded_levels_crops_and_pads():
    lev = np.zeros((5, 6, 7), np.int32)
    mask = np.zeros(lev.shape, bool)
    mask[1:3, 2:5, 6] = True
    lev[mask] = 3
    lev[0, 0, 0] = 99  # outside the mask: ignored
    out = padded_levels(lev, mask, 4)
    assert out.shape == (2 + 2, 3 + 2, 1 + 2) and out.dtype == np.uint8
    assert out[1:-1, 1:-1, 1:-1].min() == 3 and out.sum() == 3 * 6
    with pytest.raises(ValueError, match="outside 1..2"):
        padded_levels(lev, mask, 2)
    with pytest.raises(ValueError, match="empty"):
        padded_levels(lev, np.zeros(lev.shape, bool), 4)


def test_level_dtype():
    assert level_dtype(32) == np.uint8 and level_dtype(255) == np.uint8
    assert level_dtype(256) == np.uint16 and level_dtype(70000) == np.uint32


def test_bounding_box():
    m = np.zeros((4, 5, 6), bool)
    assert bounding_box(m) is None
    m[1, 2, 3] = m[2, 4, 5] = True
    assert bounding_box(m) == (slice(1, 3), slice(2, 5), slice(3, 6))


def test_directions_and_offsets():
    assert len(set(DIRECTIONS_XYZ)) == 13
    vecs = {tuple(v) for v in RASTER_VECTORS}
    # every 26-neighbour offset is exactly one direction or its opposite
    all26 = {(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)} - {(0, 0, 0)}
    assert vecs | {(-a, -b, -c) for a, b, c in vecs} == all26
    offs = raster_offsets((4, 5, 6))
    assert (offs > 0).all() and len(set(offs.tolist())) == 13


def test_checked_padded_guards_the_kernels():
    L = np.zeros((3, 4, 5), np.uint8)
    L[1, 1:3, 1:4] = 2
    assert checked_padded(L, 2) is L
    with pytest.raises(ValueError, match="exceed"):
        checked_padded(L, 1)
    with pytest.raises(ValueError, match="zero border"):
        checked_padded(np.ones((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="unsigned"):
        checked_padded(L.astype(np.int32))
