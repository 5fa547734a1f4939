"""GLCM matrices and features (IBSI 3.6, 3D, distance 1) against the digital phantom, a
literal implementation of the IBSI formulas, and a brute-force co-occurrence count."""

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

from pipelines.features.discretise import DIRECTIONS_XYZ
from pipelines.features.glcm import GLCM_FEATURES, glcm_features, glcm_matrices

SUFFIX = {"3D, averaged": ("_3D_avg", "averaged"), "3D, merged": ("_3D_comb", "merged")}


def _reference() -> list:
    return ibsi_reference(lambda t: t.startswith("cm_"))


_agrees = agrees_with_reference


@pytest.fixture(scope="module")
def phantom(phantom_levels):
    return phantom_levels


def _manual_tables(shared_reference, title: str, ng: int = 6) -> list[np.ndarray]:
    """Return the (i, j, n) tables of one section of the manual's phantom-matrix chapter."""
    text = (shared_reference / "ibsi" / "manual" / "06_Digital_phantom_texture_matrices.rst")
    text = text.read_text(encoding="utf-8")
    start = text.index(title + "\n")
    end = text.index("\\FloatBarrier", start)
    tables = []
    for chunk in text[start:end].split(".. table::")[1:]:
        m = np.zeros((ng, ng), np.int64)
        for i, j, n in re.findall(r"\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", chunk):
            m[int(float(i)) - 1, int(float(j)) - 1] = int(n)
        tables.append(m)
    return tables


def test_phantom_directional_matrices_equal_the_manual(phantom, shared_reference):
    lev, mask = phantom
    mats = glcm_matrices(lev, mask, 6)
    assert mats.shape == (13, 6, 6) and mats.dtype == np.int64
    manual = _manual_tables(shared_reference, "Grey level co-occurrence matrix (3D)")
    assert len(manual) == 13
    # the manual's direction captions are garbled in this copy: compare the 13 as a multiset
    assert sorted(m.tobytes() for m in mats) == sorted(m.tobytes() for m in manual)
    for m in mats:
        np.testing.assert_array_equal(m, m.T)


def test_phantom_merged_matrix_equals_the_manual(phantom, shared_reference):
    lev, mask = phantom
    (merged,) = _manual_tables(shared_reference, "Grey level co-occurrence matrix (3D, merged)")
    np.testing.assert_array_equal(glcm_matrices(lev, mask, 6).sum(axis=0), merged)


@pytest.mark.parametrize("row", _reference())
def test_phantom_features(phantom, row):
    lev, mask = phantom
    suffix, aggregation = SUFFIX[row["aggregation"]]
    name = row["tag"].removesuffix(suffix)
    value = glcm_features(glcm_matrices(lev, mask, 6), aggregation)[name]
    assert _agrees(value, row), (name, aggregation, value, row["value"])
    assert GLCM_FEATURES[name] == row["ibsi_code"]


# --------------------------------------------------------------------------- brute force


def _brute_force_glcm(lev: np.ndarray, mask: np.ndarray, ng: int) -> np.ndarray:
    """Count pairs direction by direction with explicit voxel loops."""
    out = np.zeros((13, ng, ng), np.int64)
    nz, ny, nx = lev.shape
    for d, (x, y, z) in enumerate(DIRECTIONS_XYZ):
        for k, j, i in itertools.product(range(nz), range(ny), range(nx)):
            k2, j2, i2 = k + z, j + y, i + x
            if not (0 <= k2 < nz and 0 <= j2 < ny and 0 <= i2 < nx):
                continue
            if mask[k, j, i] and mask[k2, j2, i2]:
                a, b = lev[k, j, i] - 1, lev[k2, j2, i2] - 1
                out[d, a, b] += 1
                out[d, b, a] += 1
    return out


volumes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(np.int32, shape, elements=st.integers(1, 4)),
        hnp.arrays(np.bool_, shape),
    )
).filter(lambda t: t[1].any())


@settings(max_examples=60, deadline=None)
@given(volumes)
def test_matrices_match_brute_force(vol):
    lev, mask = vol
    np.testing.assert_array_equal(glcm_matrices(lev, mask, 4), _brute_force_glcm(lev, mask, 4))


# --------------------------------------------------------------------------- literal formulas


def _literal_features(M: np.ndarray) -> dict[str, float]:
    """The IBSI GLCM definitions written out with explicit sums over i, j (one matrix)."""
    P = M / M.sum()
    ng = P.shape[0]
    rng = range(ng)
    lv = np.arange(1, ng + 1)
    pi = P.sum(axis=1)
    mu = sum(lv[i] * pi[i] for i in rng)
    var = sum((lv[i] - mu) ** 2 * pi[i] for i in rng)
    pd = [sum(P[i, j] for i in rng for j in rng if abs(i - j) == k) for k in rng]
    ps = {k: sum(P[i, j] for i in rng for j in rng if lv[i] + lv[j] == k)
          for k in range(2, 2 * ng + 1)}
    d_avg = sum(k * pd[k] for k in rng)
    s_avg = sum(k * q for k, q in ps.items())
    hxy = -sum(P[i, j] * math.log2(P[i, j]) for i in rng for j in rng if P[i, j] > 0)
    hx = -sum(pi[i] * math.log2(pi[i]) for i in rng if pi[i] > 0)
    hxy1 = -sum(P[i, j] * math.log2(pi[i] * pi[j]) for i in rng for j in rng if P[i, j] > 0)
    hxy2 = -sum(pi[i] * pi[j] * math.log2(pi[i] * pi[j]) for i in rng for j in rng
                if pi[i] * pi[j] > 0)
    auto = sum(lv[i] * lv[j] * P[i, j] for i in rng for j in rng)
    return {
        "cm_joint_max": P.max(),
        "cm_joint_avg": sum(lv[i] * P[i, j] for i in rng for j in rng),
        "cm_joint_var": sum((lv[i] - mu) ** 2 * P[i, j] for i in rng for j in rng),
        "cm_joint_entr": hxy,
        "cm_diff_avg": d_avg,
        "cm_diff_var": sum((k - d_avg) ** 2 * pd[k] for k in rng),
        "cm_diff_entr": -sum(q * math.log2(q) for q in pd if q > 0),
        "cm_sum_avg": s_avg,
        "cm_sum_var": sum((k - s_avg) ** 2 * q for k, q in ps.items()),
        "cm_sum_entr": -sum(q * math.log2(q) for q in ps.values() if q > 0),
        "cm_energy": (P**2).sum(),
        "cm_contrast": sum((lv[i] - lv[j]) ** 2 * P[i, j] for i in rng for j in rng),
        "cm_dissimilarity": sum(abs(lv[i] - lv[j]) * P[i, j] for i in rng for j in rng),
        "cm_inv_diff": sum(P[i, j] / (1 + abs(i - j)) for i in rng for j in rng),
        "cm_inv_diff_norm": sum(P[i, j] / (1 + abs(i - j) / ng) for i in rng for j in rng),
        "cm_inv_diff_mom": sum(P[i, j] / (1 + (i - j) ** 2) for i in rng for j in rng),
        "cm_inv_diff_mom_norm": sum(P[i, j] / (1 + (i - j) ** 2 / ng**2)
                                    for i in rng for j in rng),
        "cm_inv_var": 2 * sum(P[i, j] / (i - j) ** 2 for i in rng for j in rng if j > i),
        "cm_corr": (auto - mu * mu) / var if var > 0 else math.nan,
        "cm_auto_corr": auto,
        "cm_clust_tend": sum((lv[i] + lv[j] - 2 * mu) ** 2 * P[i, j] for i in rng for j in rng),
        "cm_clust_shade": sum((lv[i] + lv[j] - 2 * mu) ** 3 * P[i, j]
                              for i in rng for j in rng),
        "cm_clust_prom": sum((lv[i] + lv[j] - 2 * mu) ** 4 * P[i, j] for i in rng for j in rng),
        "cm_info_corr1": (hxy - hxy1) / hx if hx > 0 else math.nan,
        "cm_info_corr2": math.sqrt(max(0.0, 1 - math.exp(-2 * (hxy2 - hxy)))),
    }


def _same(a: float, b: float, abs_tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=abs_tol)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 6)).map(
    lambda t: (t[0], t[1], t[1])), elements=st.integers(0, 20)))
def test_features_match_literal_formulas(raw):
    mats = raw + raw.transpose(0, 2, 1)  # symmetric, as GLCMs are
    if not (mats.sum(axis=(1, 2)) > 0).all():
        return
    for aggregation in ("averaged", "merged"):
        got = glcm_features(mats, aggregation)
        if aggregation == "merged":
            want = _literal_features(mats.sum(axis=0))
        else:
            per = [_literal_features(m) for m in mats]
            want = {}
            for k in GLCM_FEATURES:
                vals = [p[k] for p in per if not math.isnan(p[k])]
                want[k] = sum(vals) / len(vals) if vals else math.nan
        for k in GLCM_FEATURES:
            # info_corr2 = sqrt(1 - exp(-2 MI)) turns rounding of MI ~ 1e-16 into ~1e-8
            tol = 1e-6 if k == "cm_info_corr2" else 1e-9
            assert _same(got[k], want[k], tol), (aggregation, k, got[k], want[k])


# --------------------------------------------------------------------------- edge cases


def test_names_order_and_ibsi_identities(phantom):
    lev, mask = phantom
    f = glcm_features(glcm_matrices(lev, mask, 6), "merged")
    assert list(f) == list(GLCM_FEATURES) and len(f) == 25
    assert f["cm_sum_avg"] == pytest.approx(2 * f["cm_joint_avg"])
    assert f["cm_diff_avg"] == f["cm_dissimilarity"]
    assert f["cm_sum_var"] == pytest.approx(f["cm_clust_tend"])


def test_refuses_float_levels():
    with pytest.raises(TypeError, match="discretise first"):
        glcm_matrices(np.ones((2, 2, 2)), np.ones((2, 2, 2), bool), 2)


def test_one_voxel_roi_is_all_nan():
    lev = np.ones((3, 3, 3), np.int32)
    mask = np.zeros(lev.shape, bool)
    mask[1, 1, 1] = True
    mats = glcm_matrices(lev, mask, 4)
    assert not mats.any()
    for agg in ("averaged", "merged"):
        assert all(math.isnan(v) for v in glcm_features(mats, agg).values())


def test_constant_roi():
    lev = np.full((2, 3, 4), 2, np.int32)
    f = glcm_features(glcm_matrices(lev, np.ones(lev.shape), 3), "averaged")
    assert math.isnan(f["cm_corr"]) and math.isnan(f["cm_info_corr1"])
    assert f["cm_joint_max"] == 1 and f["cm_joint_avg"] == 2 and f["cm_joint_var"] == 0
    assert f["cm_contrast"] == 0 and f["cm_inv_var"] == 0 and f["cm_info_corr2"] == 0
    assert f["cm_energy"] == 1 and f["cm_joint_entr"] == 0


def test_flat_roi_uses_only_directions_with_pairs():
    lev = np.array([[[1, 2, 1, 2]]], np.int32)  # a line along x: only (1,0,0) has pairs
    mats = glcm_matrices(lev, np.ones(lev.shape), 2)
    assert [int(m.sum()) for m in mats].count(0) == 12
    assert glcm_features(mats, "averaged") == glcm_features(mats, "merged")


def test_bad_aggregation():
    with pytest.raises(ValueError, match="aggregation"):
        glcm_features(np.ones((13, 2, 2)), "mean")


@settings(max_examples=30, deadline=None)
@given(volumes, st.permutations((0, 1, 2)))
def test_averaged_and_merged_invariant_to_transposing_axes(vol, perm):
    lev, mask = vol
    a = glcm_matrices(lev, mask, 4)
    b = glcm_matrices(lev.transpose(perm), mask.transpose(perm), 4)
    assert sorted(m.tobytes() for m in a) == sorted(m.tobytes() for m in b)
    for agg in ("averaged", "merged"):
        fa, fb = glcm_features(a, agg), glcm_features(b, agg)
        assert all(_same(fa[k], fb[k]) for k in fa)
