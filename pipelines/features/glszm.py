"""Grey level size zone matrix (GLSZM) features, IBSI 1 section 3.8 (3D, 26-connectivity).

A zone is a maximal 26-connected group of ROI voxels with the same discretised grey level.
Element (i - 1, j - 1) of the ``Ng x Nz`` matrix counts zones of level i and size j voxels (Nz:
largest zone). Zones are labelled by one numba pass over the zero-padded crop of the level array
(union-find over provisional labels, in raster order); each voxel merges only with one
representative per connected group of its 13 already-visited same-level neighbours (a constant
8192-entry table), since mutually adjacent visited neighbours are already in one zone. It gives
exactly the zones of ``cc3d.connected_components(levels, connectivity=26)`` (tested against it),
2.5-3.5 times faster than cc3d plus the size/level bookkeeping on the benchmark ROIs (e.g. 2.5 vs
6.7 ms for the 200k-voxel sphere, single thread).

Features are computed from the list of (level, size, count) triplets of the non-zero matrix
entries, so a huge largest zone costs nothing.
"""

from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np

from pipelines.features.discretise import (
    RASTER_VECTORS,
    checked_padded,
    padded_levels,
    raster_offsets,
)

__all__ = ["glszm_matrix", "glszm_features", "GLSZM_FEATURES"]

#: IBSI tags of the GLSZM features in IBSI order (values: IBSI codes).
GLSZM_FEATURES: dict[str, str] = {
    "szm_sze": "5QRC", "szm_lze": "48P8", "szm_lgze": "XMSY", "szm_hgze": "5GN9",
    "szm_szlge": "5RAI", "szm_szhge": "HW1V", "szm_lzlge": "YH51", "szm_lzhge": "J17V",
    "szm_glnu": "JNSA", "szm_glnu_norm": "Y1RO", "szm_zsnu": "4JP3", "szm_zsnu_norm": "VB3A",
    "szm_z_perc": "P30P", "szm_gl_var": "BYLV", "szm_zs_var": "3NSA", "szm_zs_entr": "GU8N",
}

_U = np.uint64


@nb.njit(cache=True)
def _build_merge_table(vec):  # pragma: no cover - numba
    """Return (nrep int8 (8192,), rep int8 (8192, 8)) for the 13 backward neighbours -vec[d].

    For a bit mask m of same-level backward neighbours, rep[m, :nrep[m]] lists one neighbour
    per connected group (26-adjacency among the neighbours themselves).
    """
    nd = vec.shape[0]
    adj = np.zeros((nd, nd), np.bool_)
    for i in range(nd):
        for j in range(nd):
            if i != j:
                ok = True
                for c in range(3):
                    if abs(vec[i, c] - vec[j, c]) > 1:
                        ok = False
                adj[i, j] = ok
    nm = 1 << nd
    nrep = np.zeros(nm, np.int8)
    rep = np.zeros((nm, 8), np.int8)
    comp = np.empty(nd, np.int64)
    stack = np.empty(nd, np.int64)
    for m in range(nm):
        comp[:] = -1
        ncomp = 0
        for i in range(nd):
            if (m >> i) & 1 and comp[i] < 0:
                rep[m, ncomp] = i
                comp[i] = ncomp
                top = 1
                stack[0] = i
                while top > 0:
                    top -= 1
                    u = stack[top]
                    for w in range(nd):
                        if adj[u, w] and (m >> w) & 1 and comp[w] < 0:
                            comp[w] = ncomp
                            stack[top] = w
                            top += 1
                ncomp += 1
        nrep[m] = ncomp
    return nrep, rep


@lru_cache(maxsize=1)
def _merge_table() -> tuple[np.ndarray, np.ndarray]:
    nrep, rep = _build_merge_table(RASTER_VECTORS)
    nrep.setflags(write=False)
    rep.setflags(write=False)
    return nrep, rep


@nb.njit(cache=True, nogil=True)
def _same_level_mask(L, offs):  # pragma: no cover - numba
    """Return uint16 (n,) bit masks: bit d of voxel p is set if L[p] == L[p - offs[d]]."""
    lf = L.ravel()
    n = lf.size
    out = np.zeros(n, np.uint16)
    for d in range(13):
        o = offs[d]
        a = lf[o:]
        b = lf[: n - o]
        m = out[o:]
        bit = np.uint16(1 << d)
        for i in range(n - o):
            m[i] |= np.uint16(a[i] == b[i]) * bit
    return out


@nb.njit(cache=True, inline="always")
def _find(eq, x):  # pragma: no cover - numba
    while eq[x] != x:
        eq[x] = eq[eq[x]]
        x = eq[x]
    return x


@nb.njit(cache=True, nogil=True)
def _zone_kernel(L, D, same, offs, nrep, rep, n_roi):  # pragma: no cover - numba
    """Return (zone levels int32 (Nz,), zone sizes int64 (Nz,), minimum of D over each zone
    int64 (Nz,)) of a padded level array; D: an integer map of L's shape (GLDZM's distances)."""
    nz, ny, nx = L.shape
    lf = L.ravel()
    df = D.ravel()
    uo = np.empty(13, np.uint64)
    for d in range(13):
        uo[d] = _U(offs[d])
    label = np.empty(lf.size, np.uint32)
    eq = np.empty(n_roi + 1, np.uint32)
    cnt = np.zeros(n_roi + 1, np.int64)
    dmin = np.empty(n_roi + 1, np.int64)
    lvl = np.empty(n_roi + 1, np.int32)
    nlab = np.uint32(0)
    sy = _U(nx)
    sz = _U(ny * nx)
    for z in range(_U(1), _U(nz - 1)):
        for y in range(_U(1), _U(ny - 1)):
            base = z * sz + y * sy
            for x in range(_U(1), _U(nx - 1)):
                p = base + x
                a = lf[p]
                if a == 0:
                    continue
                m = same[p]
                k = nrep[m]
                if k == 0:
                    lab = nlab
                    eq[lab] = lab
                    lvl[lab] = a
                    dmin[lab] = df[p]
                    nlab += np.uint32(1)
                else:
                    lab = _find(eq, label[p - uo[rep[m, 0]]])
                    for t in range(1, k):
                        r = _find(eq, label[p - uo[rep[m, t]]])
                        if r != lab:
                            if r < lab:
                                eq[lab] = r
                                lab = r
                            else:
                                eq[r] = lab
                    if df[p] < dmin[lab]:
                        dmin[lab] = df[p]
                label[p] = lab
                cnt[lab] += 1
    size = np.zeros(nlab, np.int64)
    nzones = 0
    for lab in range(nlab):  # roots have the smallest label of their zone: one forward pass
        r = _find(eq, np.uint32(lab))
        size[r] += cnt[lab]
        if dmin[lab] < dmin[r]:
            dmin[r] = dmin[lab]
        if r == lab:
            nzones += 1
    zl = np.empty(nzones, np.int32)
    zs = np.empty(nzones, np.int64)
    zd = np.empty(nzones, np.int64)
    j = 0
    for lab in range(nlab):
        if eq[lab] == lab:
            zl[j] = lvl[lab]
            zs[j] = size[lab]
            zd[j] = dmin[lab]
            j += 1
    return zl, zs, zd


def zones_from_padded(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (levels, sizes) of every 26-connected zone of a padded level array.

    ``L``: level crop with a zero border (see padded_levels), 0 = outside the ROI. Both outputs
    have one entry per zone (int32 levels, int64 voxel counts).
    """
    L = checked_padded(L)
    offs = raster_offsets(L.shape)
    nrep, rep = _merge_table()
    same = _same_level_mask(L, offs)
    zl, zs, _ = _zone_kernel(L, L, same, offs, nrep, rep, int(np.count_nonzero(L)))
    return zl, zs


def zone_triplets(zl: np.ndarray, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (level, size, count) int64 arrays of the distinct (level, size) pairs of zones."""
    base = int(zs.max()) + 1
    keys, counts = np.unique(zl.astype(np.int64) * base + zs, return_counts=True)
    return keys // base, keys % base, counts.astype(np.int64)


def glszm_matrix(levels, mask, n_levels: int) -> np.ndarray:
    """Return the 3D GLSZM, int64 array of shape (Ng, Nz): zones of level i and size j voxels.

    ``levels``: integer 3D array of discretised levels 1..n_levels (TypeError for float input:
    discretise first); ``mask``: same shape, non-zero = ROI. Row i - 1 is level i, column j - 1
    is size j; Nz is the largest zone size. Zones use 26-connectivity (IBSI 3D).
    """
    L = padded_levels(levels, mask, int(n_levels))
    zl, zs = zones_from_padded(L)
    gl, sz, cnt = zone_triplets(zl, zs)
    out = np.zeros((int(n_levels), int(zs.max())), dtype=np.int64)
    out[gl - 1, sz - 1] = cnt
    return out


# --------------------------------------------------------------------------- features


def features_from_triplets(gl, sz, cnt, n_voxels: int) -> dict[str, float]:
    """Return the 16 IBSI GLSZM features from the non-zero matrix entries.

    ``gl``, ``sz``, ``cnt``: 1D arrays of level, zone size (voxels) and zone count of each
    non-zero GLSZM element; ``n_voxels``: ROI voxel count N_v. All features dimensionless
    (zone size variance in voxels^2).
    """
    i = np.asarray(gl, dtype=np.float64)
    j = np.asarray(sz, dtype=np.float64)
    s = np.asarray(cnt, dtype=np.float64)
    ns = s.sum()
    if ns <= 0:
        return dict.fromkeys(GLSZM_FEATURES, float("nan"))
    p = s / ns
    i2, j2 = i * i, j * j
    _, inv_i = np.unique(i, return_inverse=True)
    _, inv_j = np.unique(j, return_inverse=True)
    s_i = np.bincount(inv_i, weights=s)
    s_j = np.bincount(inv_j, weights=s)
    mu_i = p @ i
    mu_j = p @ j
    return {
        "szm_sze": float(p @ (1.0 / j2)),
        "szm_lze": float(p @ j2),
        "szm_lgze": float(p @ (1.0 / i2)),
        "szm_hgze": float(p @ i2),
        "szm_szlge": float(p @ (1.0 / (i2 * j2))),
        "szm_szhge": float(p @ (i2 / j2)),
        "szm_lzlge": float(p @ (j2 / i2)),
        "szm_lzhge": float(p @ (i2 * j2)),
        "szm_glnu": float(s_i @ s_i / ns),
        "szm_glnu_norm": float(s_i @ s_i / ns**2),
        "szm_zsnu": float(s_j @ s_j / ns),
        "szm_zsnu_norm": float(s_j @ s_j / ns**2),
        "szm_z_perc": float(ns / n_voxels),
        "szm_gl_var": float(p @ (i - mu_i) ** 2),
        "szm_zs_var": float(p @ (j - mu_j) ** 2),
        "szm_zs_entr": float(-(p @ np.log2(p))),
    }


def glszm_features(matrix, n_voxels: int) -> dict[str, float]:
    """Return the 16 IBSI GLSZM features (tags ``szm_*``) of a (Ng, Nz) size zone matrix.

    ``matrix`` as from :func:`glszm_matrix` (row i - 1: level i, column j - 1: size j; one 3D
    matrix, IBSI aggregation KOBO); ``n_voxels``: number of ROI voxels (for zone percentage).
    Units as in the catalogue (emphases in levels^+-2 and/or voxels^+-2, entropy in bits).
    """
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"expected a (Ng, Nz) matrix, got shape {m.shape}")
    r, c = np.nonzero(m)
    return features_from_triplets(r + 1, c + 1, m[r, c], int(n_voxels))
