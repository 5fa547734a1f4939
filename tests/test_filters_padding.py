"""Boundary conditions and pseudo-rotations shared by the filters (IBSI 2 manual)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipelines.exceptions import InputError
from pipelines.filters.padding import BOUNDARIES, ndimage_mode, pad
from pipelines.filters.rotation import (
    pool,
    rotate_volume,
    rotations_2d,
    rotations_3d,
    unrotate_volume,
)


@pytest.mark.parametrize("boundary, expected", [
    ("zero", [0, 0, 1, 2, 3, 4, 0, 0]),
    ("nearest", [1, 1, 1, 2, 3, 4, 4, 4]),
    ("periodic", [3, 4, 1, 2, 3, 4, 1, 2]),
    ("mirror", [2, 1, 1, 2, 3, 4, 4, 3]),
])
def test_numpy_and_scipy_pad_alike(boundary, expected):
    row = np.array([1.0, 2.0, 3.0, 4.0])
    assert pad(row, 2, boundary).tolist() == expected
    # scipy filters with the mapped mode see the same padding: a delta two voxels off reads it
    for lag in (2, -2):
        delta = np.zeros(5)
        delta[2 - lag] = 1.0
        got = ndimage.correlate1d(row, delta, mode=ndimage_mode(boundary))
        assert got.tolist() == (expected[:4] if lag == 2 else expected[4:])


def test_unknown_boundary_lists_the_four():
    with pytest.raises(InputError, match=", ".join(BOUNDARIES)):
        ndimage_mode("symmetric")


def test_rotations_are_24_distinct_proper_rotations():
    vol = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    cube = np.random.default_rng(0).normal(size=(3, 3, 3))
    seen = set()
    for r in rotations_3d():
        assert np.array_equal(unrotate_volume(rotate_volume(vol, r), r), vol)
        seen.add(rotate_volume(cube, r).tobytes())
        perm, flip = r
        m = np.zeros((3, 3))
        for a in range(3):
            m[a, perm[a]] = -1 if flip[a] else 1
        assert np.linalg.det(m) == pytest.approx(1.0)
    assert len(seen) == 24


def test_2d_rotations_are_rot90_in_plane():
    img = np.random.default_rng(0).normal(size=(2, 4, 4))
    got = [rotate_volume(img, r) for r in rotations_2d(0)]
    for k in range(4):
        assert any(np.array_equal(g, np.rot90(img, k, axes=(1, 2))) for g in got)


def test_pool():
    a, b = np.array([1.0, 4.0]), np.array([3.0, 2.0])
    assert pool([a, b], "max").tolist() == [3, 4]
    assert pool([a, b], "mean").tolist() == [2, 3]
    with pytest.raises(InputError, match="pooling"):
        pool([a], "median")
