"""NGTDM and its features (IBSI 3.10, 3D, distance 1) against the digital phantom, an explicit
neighbourhood loop and the IBSI definitions written out."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from conftest import agrees_with_reference, ibsi_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipelines.features.ngtdm import (
    COARSENESS_MAX,
    NGTDM_FEATURES,
    ngtdm_features,
    ngtdm_matrix,
)


def _reference() -> list:
    return ibsi_reference(lambda t: t.startswith("ngt_"))


_agrees = agrees_with_reference


@pytest.fixture(scope="module")
def phantom(phantom_levels):
    return phantom_levels


def test_phantom_matrix_equals_the_manual(phantom, shared_reference):
    lev, mask = phantom
    text = (shared_reference / "ibsi" / "manual" / "06_Digital_phantom_texture_matrices.rst")
    text = text.read_text(encoding="utf-8")
    start = text.index("Neighbourhood grey tone difference matrix (3D)\n")
    section = text[start:text.index("\\FloatBarrier", start)]
    rows = re.findall(r"\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*(\d+)\s*\|", section)
    assert len(rows) == 4
    s, n, p = ngtdm_matrix(lev, mask, 6)
    want_s, want_n = np.zeros(6), np.zeros(6, np.int64)
    for i, si, ni in rows:
        want_s[int(float(i)) - 1], want_n[int(float(i)) - 1] = float(si), int(ni)
    np.testing.assert_allclose(s, want_s, atol=5e-7)  # the manual prints 6 decimals
    np.testing.assert_array_equal(n, want_n)
    np.testing.assert_allclose(p, want_n / want_n.sum())


@pytest.mark.parametrize("row", _reference())
def test_phantom_features(phantom, row):
    lev, mask = phantom
    name = row["tag"].removesuffix("_3D")
    value = ngtdm_features(*ngtdm_matrix(lev, mask, 6))[name]
    assert _agrees(value, row), (name, value, row["value"])
    assert NGTDM_FEATURES[name] == row["ibsi_code"]


def _brute_force(lev: np.ndarray, mask: np.ndarray, ng: int):
    """s_i and n_i from an explicit loop over every voxel's 26-neighbourhood."""
    s, n = np.zeros(ng), np.zeros(ng, np.int64)
    nz, ny, nx = lev.shape
    for k, j, i in itertools.product(range(nz), range(ny), range(nx)):
        if not mask[k, j, i]:
            continue
        vals = [lev[k + a, j + b, i + c]
                for a, b, c in itertools.product((-1, 0, 1), repeat=3)
                if (a, b, c) != (0, 0, 0) and 0 <= k + a < nz and 0 <= j + b < ny
                and 0 <= i + c < nx and mask[k + a, j + b, i + c]]
        if vals:
            g = lev[k, j, i]
            s[g - 1] += abs(g - sum(vals) / len(vals))
            n[g - 1] += 1
    return s, n


volumes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(np.int32, shape, elements=st.integers(1, 5)),
        hnp.arrays(np.bool_, shape),
    )
).filter(lambda t: t[1].any())


@settings(max_examples=60, deadline=None)
@given(volumes)
def test_matrix_matches_brute_force(vol):
    lev, mask = vol
    s, n, p = ngtdm_matrix(lev, mask, 5)
    ws, wn = _brute_force(lev, mask, 5)
    np.testing.assert_allclose(s, ws, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(n, wn)


def _literal(s: np.ndarray, n: np.ndarray) -> dict[str, float]:
    """The IBSI NGTDM definitions written out with double loops over present levels."""
    nvc = n.sum()
    p = n / nvc
    lv = [i for i in range(len(s)) if p[i] > 0]
    ngp = len(lv)
    ps = sum(p[i] * s[i] for i in lv)
    pairs = [(a, b) for a in lv for b in lv]
    contrast = (sum(p[a] * p[b] * (a - b) ** 2 for a, b in pairs) / (ngp * (ngp - 1))
                * s.sum() / nvc) if ngp > 1 else 0.0
    den = sum(abs((a + 1) * p[a] - (b + 1) * p[b]) for a, b in pairs)
    return {
        "ngt_coarseness": 1 / ps if ps > 0 else COARSENESS_MAX,
        "ngt_contrast": contrast,
        "ngt_busyness": (ps / den if den > 0 else math.nan) if ngp > 1 else 0.0,
        "ngt_complexity": sum(abs(a - b) * (p[a] * s[a] + p[b] * s[b]) / (p[a] + p[b])
                              for a, b in pairs) / nvc,
        "ngt_strength": (sum((p[a] + p[b]) * (a - b) ** 2 for a, b in pairs) / s.sum()
                         if s.sum() > 0 else 0.0),
    }


@settings(max_examples=60, deadline=None)
@given(volumes)
def test_features_match_literal_formulas(vol):
    lev, mask = vol
    s, n, p = ngtdm_matrix(lev, mask, 5)
    got = ngtdm_features(s, n, p)
    assert list(got) == list(NGTDM_FEATURES)
    if n.sum() == 0:
        assert all(math.isnan(v) for v in got.values())
        return
    for k, v in _literal(s, n).items():
        assert (math.isnan(v) and math.isnan(got[k])) or got[k] == pytest.approx(
            v, rel=1e-9, abs=1e-12), k


def test_one_voxel_roi_has_no_neighbourhood():
    lev = np.ones((2, 2, 2), np.int32)
    mask = np.zeros(lev.shape, bool)
    mask[1, 1, 1] = True
    s, n, p = ngtdm_matrix(lev, mask, 3)
    assert not n.any() and not s.any() and not p.any()
    assert all(math.isnan(v) for v in ngtdm_features(s, n, p).values())


def test_constant_roi_uses_ibsi_limits():
    lev = np.full((3, 4, 5), 2, np.int32)
    f = ngtdm_features(*ngtdm_matrix(lev, np.ones(lev.shape), 4))
    assert f == {"ngt_coarseness": COARSENESS_MAX, "ngt_contrast": 0.0, "ngt_busyness": 0.0,
                 "ngt_complexity": 0.0, "ngt_strength": 0.0}


def test_neighbours_outside_the_roi_are_not_counted():
    lev = np.array([[[1, 9, 3]]], np.int32)
    mask = np.array([[[1, 0, 1]]], bool)  # the two ROI voxels are not neighbours
    s, n, _ = ngtdm_matrix(lev, mask, 9)
    assert not n.any()
    mask[0, 0, 1] = True
    s, n, _ = ngtdm_matrix(lev, mask, 9)
    # voxel 1: neighbour 9 -> 8; voxel 9: neighbours 1, 3 -> 7; voxel 3: neighbour 9 -> 6
    assert s[0] == 8 and s[2] == 6 and s[8] == 7 and n.sum() == 3


def test_large_level_count_uses_wide_packing():
    rng = np.random.default_rng(3)
    lev = rng.integers(1, 3000, (4, 5, 6)).astype(np.int32)
    mask = rng.random(lev.shape) < 0.7
    s, n, _ = ngtdm_matrix(lev, mask, 3000)
    ws, wn = _brute_force(lev, mask, 3000)
    np.testing.assert_allclose(s, ws, rtol=1e-12)
    np.testing.assert_array_equal(n, wn)


def test_refuses_float_levels():
    with pytest.raises(TypeError, match="discretise first"):
        ngtdm_matrix(np.ones((2, 2, 2)), np.ones((2, 2, 2), bool), 2)
