"""NGLDM matrix and features (IBSI 3.11, 3D, Chebyshev distance 1) against the digital phantom,
the manual's matrix, a brute-force dependence count and a hand-computed cube."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from conftest import agrees_with_reference, ibsi_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipelines.features.ngldm import NGLDM_FEATURES, ngldm_features, ngldm_matrix


def _reference() -> list:
    """One param per 3D NGLDM row of the full IBSI phantom reference (skipped if absent)."""
    return ibsi_reference(
        lambda r: r["tag"].startswith("ngl_") and r["aggregation"] == "3D", full=True)


def test_phantom_matrix_equals_the_manual(phantom_levels, shared_reference):
    lev, mask = phantom_levels
    text = (shared_reference / "ibsi" / "manual" / "06_Digital_phantom_texture_matrices.rst")
    text = text.read_text(encoding="utf-8")
    start = text.index("Neighbouring grey level dependence matrix (3D)\n")
    section = text[start:text.index("\\FloatBarrier", start)]
    rows = re.findall(r"\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*(\d+)\s*\|", section)
    assert len(rows) == 25
    want = np.zeros((6, 27), np.int64)
    for i, j, n in rows:
        want[int(float(i)) - 1, int(float(j)) - 1] = int(n)
    np.testing.assert_array_equal(ngldm_matrix(lev, mask, 6), want)


@pytest.mark.parametrize("row", _reference())
def test_phantom_features(phantom_levels, row):
    lev, mask = phantom_levels
    name = row["tag"].removesuffix("_3D")
    value = ngldm_features(ngldm_matrix(lev, mask, 6), int(mask.sum()))[name]
    assert agrees_with_reference(value, row), (name, value, row["value"])
    assert NGLDM_FEATURES[name] == row["ibsi_code"]


def test_hand_computed_cube():
    """A uniform 3^3 cube: 8 corners depend on 8 voxels, 12 edges on 12, 6 faces on 18 and
    the centre on all 27."""
    m = ngldm_matrix(np.ones((3, 3, 3), np.int32), np.ones((3, 3, 3), bool), 1)
    want = np.zeros((1, 27), np.int64)
    want[0, [7, 11, 17, 26]] = [8, 12, 6, 1]
    np.testing.assert_array_equal(m, want)
    f = ngldm_features(m, 27)
    assert f["ngl_lde"] == pytest.approx((8 / 64 + 12 / 144 + 6 / 324 + 1 / 729) / 27)
    assert f["ngl_hde"] == pytest.approx((8 * 64 + 12 * 144 + 6 * 324 + 729) / 27)
    assert f["ngl_dcnu"] == pytest.approx((64 + 144 + 36 + 1) / 27)
    assert f["ngl_dc_energy"] == pytest.approx((64 + 144 + 36 + 1) / 27**2)
    assert f["ngl_dc_perc"] == 1 and f["ngl_gl_var"] == 0 and f["ngl_glnu"] == 27


def test_coarseness_and_roi_edge():
    lev = np.array([[[1, 2, 4, 4]]], np.int32)
    mask = np.array([[[True, True, True, False]]])
    np.testing.assert_array_equal(ngldm_matrix(lev, mask, 4)[:, :3],
                                  [[1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]])
    # alpha = 1: 1 ~ 2 depend, 4 does not, and the 4 outside the ROI never counts
    np.testing.assert_array_equal(ngldm_matrix(lev, mask, 4, alpha=1)[:, :3],
                                  [[0, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="alpha"):
        ngldm_matrix(lev, mask, 4, alpha=-1)


def _brute_force(lev: np.ndarray, mask: np.ndarray, ng: int, alpha: int) -> np.ndarray:
    out = np.zeros((ng, 27), np.int64)
    shape = lev.shape
    for p in itertools.product(*map(range, shape)):
        if not mask[p]:
            continue
        j = 0
        for o in itertools.product((-1, 0, 1), repeat=3):
            q = tuple(a + b for a, b in zip(p, o, strict=True))
            if all(0 <= c < n for c, n in zip(q, shape, strict=True)) and mask[q] \
                    and abs(int(lev[p]) - int(lev[q])) <= alpha:
                j += 1
        out[lev[p] - 1, j - 1] += 1
    return out


volumes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(np.int32, shape, elements=st.integers(1, 4)),
        hnp.arrays(np.bool_, shape, elements=st.booleans() | st.just(True)),
    )
).filter(lambda t: t[1].any())


@settings(max_examples=60, deadline=None)
@given(volumes, st.integers(0, 2))
def test_matrix_matches_brute_force(vol, alpha):
    lev, mask = vol
    np.testing.assert_array_equal(ngldm_matrix(lev, mask, 4, alpha),
                                  _brute_force(lev, mask, 4, alpha))


def test_literal_formulas_on_a_random_matrix():
    rng = np.random.default_rng(4)
    s = rng.integers(0, 5, (4, 27)).astype(float)
    ns = s.sum()
    i = np.arange(1, 5, dtype=float)[:, None]
    j = np.arange(1, 28, dtype=float)[None, :]
    p = s / ns
    f = ngldm_features(s.astype(np.int64))
    assert f["ngl_hdlge"] == pytest.approx((s * j**2 / i**2).sum() / ns)
    assert f["ngl_ldhge"] == pytest.approx((s * i**2 / j**2).sum() / ns)
    assert f["ngl_dc_var"] == pytest.approx((p * (j - (p * j).sum()) ** 2).sum())
    assert f["ngl_dc_entr"] == pytest.approx(-(p[p > 0] * np.log2(p[p > 0])).sum())
    assert f["ngl_dc_energy"] == pytest.approx((p**2).sum())
    assert f["ngl_dc_perc"] == 1.0
    assert ngldm_features(s.astype(np.int64), int(ns) * 2)["ngl_dc_perc"] == 0.5
