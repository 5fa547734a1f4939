"""GLDZM matrix and features (IBSI 3.9, 3D, 26-connected zones, 6-connected distance) against
the digital phantom, the manual's matrix, IBSI's iterated erosion with cc3d zones, and hand-made
volumes."""

from __future__ import annotations

import collections
import re

import cc3d
import numpy as np
import pytest
from conftest import agrees_with_reference, ibsi_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from pipelines.features.discretise import padded_levels
from pipelines.features.gldzm import (
    GLDZM_FEATURES,
    distance_map,
    gldzm_features,
    gldzm_from_padded,
    gldzm_matrix,
)


def _reference() -> list:
    """One param per 3D GLDZM row of the full IBSI phantom reference (skipped if absent)."""
    return ibsi_reference(
        lambda r: r["tag"].startswith("dzm_") and r["aggregation"] == "3D", full=True)


def test_phantom_matrix_equals_the_manual(phantom_levels, shared_reference):
    lev, mask = phantom_levels
    text = (shared_reference / "ibsi" / "manual" / "06_Digital_phantom_texture_matrices.rst")
    text = text.read_text(encoding="utf-8")
    start = text.index("Grey level distance zone matrix (3D)\n")
    section = text[start:text.index("\\FloatBarrier", start)]
    rows = re.findall(r"\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*(\d+)\s*\|", section)
    assert len(rows) == 4
    want = np.zeros((6, 1), np.int64)
    for i, d, n in rows:
        want[int(float(i)) - 1, int(float(d)) - 1] = int(n)
    np.testing.assert_array_equal(gldzm_matrix(lev, mask, 6), want)


@pytest.mark.parametrize("row", _reference())
def test_phantom_features(phantom_levels, row):
    lev, mask = phantom_levels
    name = row["tag"].removesuffix("_3D")
    value = gldzm_features(gldzm_matrix(lev, mask, 6), int(mask.sum()))[name]
    assert agrees_with_reference(value, row), (name, value, row["value"])
    assert GLDZM_FEATURES[name] == row["ibsi_code"]


def test_hand_computed_cube_with_a_core():
    """5^3 cube of level 1 with a level-2 centre: shells at distance 1, 2, 3."""
    lev = np.ones((5, 5, 5), np.int32)
    lev[2, 2, 2] = 2
    mask = np.ones(lev.shape, bool)
    d = distance_map(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    assert d[0, 0, 0] == 1 and d[1, 2, 2] == 2 and d[2, 2, 2] == 3 and d[1, 1, 1] == 2
    m = gldzm_matrix(lev, mask, 2)
    np.testing.assert_array_equal(m, [[1, 0, 0], [0, 0, 1]])
    f = gldzm_features(m, 125)
    assert f["dzm_sde"] == pytest.approx((1 + 1 / 9) / 2)
    assert f["dzm_lde"] == pytest.approx((1 + 9) / 2)
    assert f["dzm_lgze"] == pytest.approx((1 + 1 / 4) / 2)
    assert f["dzm_z_perc"] == pytest.approx(2 / 125)
    assert f["dzm_zd_var"] == pytest.approx(1.0)  # distances 1 and 3 around their mean 2
    assert f["dzm_zd_entr"] == pytest.approx(1.0)


def test_distance_uses_the_morphological_mask():
    lev = np.ones((7, 7, 7), np.int32)
    morph = np.ones(lev.shape, bool)
    inner = np.zeros(lev.shape, bool)
    inner[2:5, 2:5, 2:5] = True  # intensity mask: the central 3^3 block
    np.testing.assert_array_equal(gldzm_matrix(lev, inner, 1), [[1]])  # its own edge: 1
    np.testing.assert_array_equal(gldzm_matrix(lev, inner, 1, morph_mask=morph), [[0, 0, 1]])
    with pytest.raises(ValueError, match="outside the morphological mask"):
        gldzm_matrix(lev, morph, 1, morph_mask=inner)


def _erosion_distance(mask: np.ndarray) -> np.ndarray:
    """IBSI's definition: erode with the 6-connected element until empty, adding 1 each time."""
    dist = np.zeros(mask.shape, np.int64)
    cur = np.pad(mask, 1)
    cross = ndimage.generate_binary_structure(3, 1)
    while cur.any():
        dist += cur[1:-1, 1:-1, 1:-1]
        cur = ndimage.binary_erosion(cur, cross, border_value=0)
    return dist


def _cc3d_zones(lev: np.ndarray, mask: np.ndarray, dist: np.ndarray) -> collections.Counter:
    labels = cc3d.connected_components(np.where(mask, lev, 0), connectivity=26)
    out = collections.Counter()
    for lab in range(1, int(labels.max()) + 1):
        sel = labels == lab
        out[(int(lev[sel][0]), int(dist[sel].min()))] += 1
    return out


volumes = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(np.int32, shape, elements=st.integers(1, 3)),
        hnp.arrays(np.bool_, shape, elements=st.booleans() | st.just(True) | st.just(True)),
    )
).filter(lambda t: t[1].any())


@settings(max_examples=100, deadline=None)
@given(volumes)
def test_zones_and_distances_equal_erosion_and_cc3d(vol):
    lev, mask = vol
    dist = _erosion_distance(mask)
    np.testing.assert_array_equal(distance_map(np.pad(mask, 1))[1:-1, 1:-1, 1:-1], dist)
    zl, zd = gldzm_from_padded(padded_levels(lev, mask, 3))
    got = collections.Counter(zip(zl.tolist(), zd.tolist(), strict=True))
    assert got == _cc3d_zones(lev, mask, dist)


def test_larger_random_volume_with_deep_zones():
    rng = np.random.default_rng(3)
    lev = np.where(rng.random((20, 24, 22)) < 0.9, 1, rng.integers(1, 4, (20, 24, 22)))
    lev = lev.astype(np.int32)
    mask = ndimage.binary_dilation(rng.random(lev.shape) < 0.3, iterations=2)
    dist = _erosion_distance(mask)
    assert dist.max() >= 3
    zl, zd = gldzm_from_padded(padded_levels(lev, mask, 3))
    got = collections.Counter(zip(zl.tolist(), zd.tolist(), strict=True))
    assert got == _cc3d_zones(lev, mask, dist)


def test_features_are_the_zone_formulas():
    m = np.array([[2, 0, 1], [0, 3, 0]])
    f = gldzm_features(m, 40)
    assert list(f) == list(GLDZM_FEATURES)
    ns = 6
    assert f["dzm_sde"] == pytest.approx((2 + 3 / 4 + 1 / 9) / ns)
    assert f["dzm_ldhge"] == pytest.approx((2 + 9 + 3 * 4 * 4) / ns)
    assert f["dzm_zdnu"] == pytest.approx((2**2 + 3**2 + 1**2) / ns)
    assert f["dzm_glnu_norm"] == pytest.approx((3**2 + 3**2) / ns**2)
    assert f["dzm_z_perc"] == pytest.approx(6 / 40)
