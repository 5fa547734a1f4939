"""GLSZM matrix and features (IBSI 3.8, 3D, 26-connectivity) against the digital phantom, cc3d,
and the IBSI definitions written out."""

from __future__ import annotations

import collections
import math
import re

import cc3d
import numpy as np
import pytest
from conftest import agrees_with_reference, ibsi_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipelines.features.discretise import padded_levels
from pipelines.features.glszm import (
    GLSZM_FEATURES,
    glszm_features,
    glszm_matrix,
    zones_from_padded,
)


def _reference() -> list:
    return ibsi_reference(lambda t: t.startswith("szm_"))


_agrees = agrees_with_reference


@pytest.fixture(scope="module")
def phantom(phantom_levels):
    return phantom_levels


def test_phantom_matrix_equals_the_manual(phantom, shared_reference):
    lev, mask = phantom
    text = (shared_reference / "ibsi" / "manual" / "06_Digital_phantom_texture_matrices.rst")
    text = text.read_text(encoding="utf-8")
    start = text.index("Grey level size zone matrix (3D)\n")
    section = text[start:text.index("\\FloatBarrier", start)]
    rows = re.findall(r"\|\s*([\d.]+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", section)
    assert len(rows) == 5
    m = glszm_matrix(lev, mask, 6)
    want = np.zeros((6, 50), np.int64)
    for i, s, n in rows:
        want[int(float(i)) - 1, int(s) - 1] = int(n)
    np.testing.assert_array_equal(m, want)


@pytest.mark.parametrize("row", _reference())
def test_phantom_features(phantom, row):
    lev, mask = phantom
    name = row["tag"].removesuffix("_3D")
    value = glszm_features(glszm_matrix(lev, mask, 6), int(mask.sum()))[name]
    assert _agrees(value, row), (name, value, row["value"])
    assert GLSZM_FEATURES[name] == row["ibsi_code"]


def _cc3d_zones(lev: np.ndarray, mask: np.ndarray) -> collections.Counter:
    labels = cc3d.connected_components(np.where(mask, lev, 0), connectivity=26)
    out = collections.Counter()
    for lab in range(1, int(labels.max()) + 1):
        sel = labels == lab
        out[(int(lev[sel][0]), int(sel.sum()))] += 1
    return out


volumes = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(np.int32, shape, elements=st.integers(1, 3)),
        hnp.arrays(np.bool_, shape, elements=st.booleans() | st.just(True)),
    )
).filter(lambda t: t[1].any())


@settings(max_examples=150, deadline=None)
@given(volumes)
def test_zones_equal_cc3d(vol):
    lev, mask = vol
    L = padded_levels(lev, mask, 3)
    zl, zs = zones_from_padded(L)
    assert collections.Counter(zip(zl.tolist(), zs.tolist(), strict=True)) == _cc3d_zones(
        lev, mask)
    assert zs.sum() == mask.sum()


def test_zones_equal_cc3d_on_a_larger_random_volume():
    rng = np.random.default_rng(7)
    lev = rng.integers(1, 5, (24, 30, 28)).astype(np.int32)
    mask = rng.random(lev.shape) < 0.8
    zl, zs = zones_from_padded(padded_levels(lev, mask, 4))
    assert collections.Counter(zip(zl.tolist(), zs.tolist(), strict=True)) == _cc3d_zones(
        lev, mask)


def _literal(matrix: np.ndarray, nv: int) -> dict[str, float]:
    """The IBSI GLSZM definitions written out over the dense matrix."""
    s = matrix.astype(float)
    ns = s.sum()
    ng, nz = s.shape
    i = np.arange(1, ng + 1, dtype=float)[:, None]
    j = np.arange(1, nz + 1, dtype=float)[None, :]
    p = s / ns
    nzp = p[p > 0]
    return {
        "szm_sze": (s / j**2).sum() / ns, "szm_lze": (s * j**2).sum() / ns,
        "szm_lgze": (s / i**2).sum() / ns, "szm_hgze": (s * i**2).sum() / ns,
        "szm_szlge": (s / (i**2 * j**2)).sum() / ns, "szm_szhge": (s * i**2 / j**2).sum() / ns,
        "szm_lzlge": (s * j**2 / i**2).sum() / ns, "szm_lzhge": (s * i**2 * j**2).sum() / ns,
        "szm_glnu": (s.sum(1) ** 2).sum() / ns, "szm_glnu_norm": (s.sum(1) ** 2).sum() / ns**2,
        "szm_zsnu": (s.sum(0) ** 2).sum() / ns, "szm_zsnu_norm": (s.sum(0) ** 2).sum() / ns**2,
        "szm_z_perc": ns / nv,
        "szm_gl_var": (p * (i - (p * i).sum()) ** 2).sum(),
        "szm_zs_var": (p * (j - (p * j).sum()) ** 2).sum(),
        "szm_zs_entr": -(nzp * np.log2(nzp)).sum(),
    }


@settings(max_examples=60, deadline=None)
@given(volumes)
def test_features_match_literal_formulas(vol):
    lev, mask = vol
    m = glszm_matrix(lev, mask, 3)
    got = glszm_features(m, int(mask.sum()))
    want = _literal(m, int(mask.sum()))
    assert list(got) == list(GLSZM_FEATURES)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_one_voxel_roi():
    lev = np.full((3, 3, 3), 2, np.int32)
    mask = np.zeros(lev.shape, bool)
    mask[0, 0, 0] = True  # also touches the array border
    m = glszm_matrix(lev, mask, 2)
    np.testing.assert_array_equal(m, [[0], [1]])
    f = glszm_features(m, 1)
    assert f["szm_sze"] == 1 and f["szm_lze"] == 1 and f["szm_z_perc"] == 1
    assert f["szm_gl_var"] == 0 and f["szm_zs_var"] == 0 and f["szm_zs_entr"] == 0
    assert f["szm_lgze"] == 0.25 and f["szm_hgze"] == 4


def test_diagonal_voxels_are_one_zone_and_holes_split_nothing():
    lev = np.ones((3, 3, 3), np.int32)
    mask = np.zeros(lev.shape, bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # corner-connected: one zone
    np.testing.assert_array_equal(glszm_matrix(lev, mask, 1), [[0, 0, 1]])
    hollow = np.ones((3, 3, 3), bool)
    hollow[1, 1, 1] = False  # a hole: the shell is still one zone of 26 voxels
    m = glszm_matrix(lev, hollow, 1)
    assert m.shape == (1, 26) and m[0, 25] == 1 and m.sum() == 1


def test_refuses_float_levels():
    with pytest.raises(TypeError, match="discretise first"):
        glszm_matrix(np.ones((2, 2, 2)), np.ones((2, 2, 2), bool), 2)


def test_levels_absent_from_the_roi_are_empty_rows():
    lev = np.array([[[1, 1, 4, 4]]], np.int32)
    m = glszm_matrix(lev, np.ones(lev.shape), 5)
    assert m.shape == (5, 2) and m[0, 1] == 1 and m[3, 1] == 1 and m.sum() == 2
    f = glszm_features(m, 4)
    assert math.isfinite(f["szm_gl_var"]) and f["szm_gl_var"] == pytest.approx(2.25)
