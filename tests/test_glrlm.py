"""GLRLM matrices and features (IBSI 3.7, 3D, 13 directions) against the digital phantom, the
manual's matrices, a brute-force run count and a hand-computed line."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from conftest import agrees_with_reference, ibsi_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipelines.features.discretise import DIRECTIONS_XYZ
from pipelines.features.glrlm import GLRLM_FEATURES, glrlm_features, glrlm_matrices

SUFFIX = {"3D, averaged": ("_3D_avg", "averaged"), "3D, merged": ("_3D_comb", "merged")}


def _reference() -> list:
    """One param per 3D GLRLM row of the full IBSI phantom reference (skipped if absent)."""
    return ibsi_reference(
        lambda r: r["tag"].startswith("rlm_") and r["aggregation"] in SUFFIX, full=True)


def test_reference_has_both_aggregations():
    rows = [p.values[0] for p in _reference()]
    if rows == [None]:
        pytest.skip("no reference data")
    assert len(rows) == 32


def _manual_tables(shared_reference, title: str) -> list[set]:
    """Return the (level, length, count) triplet sets of one section of the manual."""
    text = (shared_reference / "ibsi" / "manual" / "06_Digital_phantom_texture_matrices.rst")
    text = text.read_text(encoding="utf-8")
    start = text.index(title + "\n")
    end = text.index("\\FloatBarrier", start)
    out = []
    for chunk in text[start:end].split(".. table::")[1:]:
        rows = re.findall(r"\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", chunk)
        out.append({(int(float(i)), int(float(j)), int(float(n))) for i, j, n in rows})
    return out


def _triplets(m: np.ndarray) -> set:
    return {(int(i) + 1, int(j) + 1, int(m[i, j])) for i, j in zip(*np.nonzero(m), strict=True)}


def test_phantom_matrices_equal_the_manual(phantom_levels, shared_reference):
    lev, mask = phantom_levels
    mats = glrlm_matrices(lev, mask, 6)
    assert mats.shape[:2] == (13, 6) and mats.dtype == np.int64
    manual = _manual_tables(shared_reference, "Grey level run length matrix (3D)")
    assert len(manual) == 13
    # the manual's direction captions are garbled in this copy: compare the 13 as a multiset
    assert sorted(map(sorted, map(_triplets, mats))) == sorted(map(sorted, manual))
    (merged,) = _manual_tables(shared_reference, "Grey level run length matrix (3D, merged)")
    assert _triplets(mats.sum(axis=0)) == merged


@pytest.mark.parametrize("row", _reference())
def test_phantom_features(phantom_levels, row):
    lev, mask = phantom_levels
    suffix, aggregation = SUFFIX[row["aggregation"]]
    name = row["tag"].removesuffix(suffix)
    value = glrlm_features(glrlm_matrices(lev, mask, 6), aggregation)[name]
    assert agrees_with_reference(value, row), (name, aggregation, value, row["value"])
    assert GLRLM_FEATURES[name] == row["ibsi_code"]


def test_hand_computed_line():
    """Levels 1 1 2 2 along x: two runs of 2 along x, four runs of 1 in the 12 other
    directions."""
    lev = np.array([[[1, 1, 2, 2]]], np.int32)
    mats = glrlm_matrices(lev, np.ones(lev.shape, bool), 2)
    x = DIRECTIONS_XYZ.index((1, 0, 0))
    assert mats.shape == (13, 2, 4)  # Nr: the longest possible run, the box's largest side
    np.testing.assert_array_equal(mats[x], [[0, 1, 0, 0], [0, 1, 0, 0]])
    for d in set(range(13)) - {x}:
        np.testing.assert_array_equal(mats[d], [[2, 0, 0, 0], [2, 0, 0, 0]])
    avg = glrlm_features(mats, "averaged")
    assert avg["rlm_sre"] == pytest.approx((0.25 + 12) / 13)
    assert avg["rlm_lre"] == pytest.approx((4 + 12) / 13)
    assert avg["rlm_r_perc"] == pytest.approx((0.5 + 12) / 13)
    assert avg["rlm_glnu"] == pytest.approx((1 + 12 * 2) / 13)  # (1 + 1) / 2 and (4 + 4) / 4
    assert avg["rlm_rl_entr"] == pytest.approx(1.0)  # two equally likely entries everywhere
    merged = glrlm_features(mats, "merged")  # level 1: 24 runs of 1, 1 of 2; level 2 the same
    assert merged["rlm_sre"] == pytest.approx((48 + 2 / 4) / 50)
    assert merged["rlm_lre"] == pytest.approx((48 + 2 * 4) / 50)
    assert merged["rlm_r_perc"] == pytest.approx(50 / 52)
    assert merged["rlm_rlnu"] == pytest.approx((48**2 + 2**2) / 50)
    assert merged["rlm_gl_var"] == pytest.approx(0.25)


def _brute_force_runs(lev: np.ndarray, mask: np.ndarray, ng: int) -> list[dict]:
    """Count runs direction by direction by walking every run from its first voxel."""
    out = []
    shape = np.array(lev.shape)
    for x, y, z in DIRECTIONS_XYZ:
        step = np.array((z, y, x))
        counts: dict = {}
        for p in itertools.product(*map(range, lev.shape)):
            p = np.array(p)
            if not mask[tuple(p)]:
                continue
            prev = p - step
            a = lev[tuple(p)]
            if (prev >= 0).all() and (prev < shape).all() and mask[tuple(prev)] \
                    and lev[tuple(prev)] == a:
                continue
            n, q = 1, p + step
            while (q >= 0).all() and (q < shape).all() and mask[tuple(q)] and lev[tuple(q)] == a:
                n, q = n + 1, q + step
            counts[(int(a), n)] = counts.get((int(a), n), 0) + 1
        out.append(counts)
    return out


volumes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(np.int32, shape, elements=st.integers(1, 3)),
        hnp.arrays(np.bool_, shape, elements=st.booleans() | st.just(True)),
    )
).filter(lambda t: t[1].any())


@settings(max_examples=60, deadline=None)
@given(volumes)
def test_matrices_match_brute_force(vol):
    lev, mask = vol
    mats = glrlm_matrices(lev, mask, 3)
    want = _brute_force_runs(lev, mask, 3)
    for d in range(13):
        got = {(i + 1, j + 1): int(mats[d, i, j]) for i, j in zip(*np.nonzero(mats[d]),
                                                                  strict=True)}
        assert got == want[d], DIRECTIONS_XYZ[d]
        assert sum(j * n for (_, j), n in got.items()) == mask.sum()  # every voxel in one run


def _literal(M: np.ndarray, nv: int) -> dict[str, float]:
    """The IBSI GLRLM definitions written out over one dense matrix."""
    r = M.astype(float)
    ns = r.sum()
    i = np.arange(1, r.shape[0] + 1, dtype=float)[:, None]
    j = np.arange(1, r.shape[1] + 1, dtype=float)[None, :]
    p = r / ns
    nzp = p[p > 0]
    return {
        "rlm_sre": (r / j**2).sum() / ns, "rlm_lre": (r * j**2).sum() / ns,
        "rlm_lgre": (r / i**2).sum() / ns, "rlm_hgre": (r * i**2).sum() / ns,
        "rlm_srlge": (r / (i**2 * j**2)).sum() / ns, "rlm_srhge": (r * i**2 / j**2).sum() / ns,
        "rlm_lrlge": (r * j**2 / i**2).sum() / ns, "rlm_lrhge": (r * i**2 * j**2).sum() / ns,
        "rlm_glnu": (r.sum(1) ** 2).sum() / ns, "rlm_glnu_norm": (r.sum(1) ** 2).sum() / ns**2,
        "rlm_rlnu": (r.sum(0) ** 2).sum() / ns, "rlm_rlnu_norm": (r.sum(0) ** 2).sum() / ns**2,
        "rlm_r_perc": ns / nv,
        "rlm_gl_var": (p * (i - (p * i).sum()) ** 2).sum(),
        "rlm_rl_var": (p * (j - (p * j).sum()) ** 2).sum(),
        "rlm_rl_entr": -(nzp * np.log2(nzp)).sum(),
    }


@settings(max_examples=40, deadline=None)
@given(volumes)
def test_features_match_literal_formulas(vol):
    lev, mask = vol
    mats = glrlm_matrices(lev, mask, 3)
    nv = int(mask.sum())
    per_dir = [_literal(m, nv) for m in mats]
    got = glrlm_features(mats, "averaged")
    assert list(got) == list(GLRLM_FEATURES)
    for k in got:
        assert got[k] == pytest.approx(np.mean([d[k] for d in per_dir]), rel=1e-9, abs=1e-12)
    merged = glrlm_features(mats, "merged")
    want = _literal(mats.sum(axis=0), 13 * nv)
    for k in merged:
        assert merged[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


def test_refuses_float_levels_and_bad_aggregation():
    with pytest.raises(TypeError, match="discretise first"):
        glrlm_matrices(np.ones((2, 2, 2)), np.ones((2, 2, 2), bool), 2)
    with pytest.raises(ValueError, match="aggregation"):
        glrlm_features(np.ones((13, 2, 2)), "mean")
