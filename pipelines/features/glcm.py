"""Grey level co-occurrence matrix (GLCM) features, IBSI 1 section 3.6 (3D, Chebyshev distance 1).

Matrices: one symmetric ``Ng x Ng`` count matrix per direction of
:data:`pipelines.features.discretise.DIRECTIONS_XYZ` (13 in 3D); element (i, j) counts ROI
voxel pairs at that offset (both voxels in the ROI) with levels i and j, in both orders
(``M = M+ + M+^T``). Level i is row/column ``i - 1``.

Features: the 25 IBSI GLCM features, either averaged over the 13 directional matrices (ITBB,
"3D, averaged") or computed from their sum (IAZD, "3D, merged"). Directions without any voxel
pair (e.g. a one-voxel-thick ROI) are left out of the average; with none at all every feature
is NaN. Features IBSI leaves undefined (correlation and information correlation 1 when only one
grey level occurs) are NaN; an averaged feature is the mean over the directions where it is
defined (NaN if it is defined in none).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from pipelines.features.discretise import checked_padded, padded_levels, raster_offsets

__all__ = ["glcm_matrices", "glcm_features", "GLCM_FEATURES"]

#: IBSI tags of the GLCM features in IBSI order (values: IBSI codes).
GLCM_FEATURES: dict[str, str] = {
    "cm_joint_max": "GYBY", "cm_joint_avg": "60VM", "cm_joint_var": "UR99",
    "cm_joint_entr": "TU9B", "cm_diff_avg": "TF7R", "cm_diff_var": "D3YU",
    "cm_diff_entr": "NTRS", "cm_sum_avg": "ZGXS", "cm_sum_var": "OEEB", "cm_sum_entr": "P6QZ",
    "cm_energy": "8ZQL", "cm_contrast": "ACUI", "cm_dissimilarity": "8S9J",
    "cm_inv_diff": "IB1Z", "cm_inv_diff_norm": "NDRX", "cm_inv_diff_mom": "WF0Z",
    "cm_inv_diff_mom_norm": "1QCO", "cm_inv_var": "E8JP", "cm_corr": "NI2N",
    "cm_auto_corr": "QWB0", "cm_clust_tend": "DG8W", "cm_clust_shade": "7NFM",
    "cm_clust_prom": "AE86", "cm_info_corr1": "R8DG", "cm_info_corr2": "JN9H",
}

_U = np.uint64


@nb.njit(cache=True, nogil=True)
def _glcm_kernel(L, offs, ng):  # pragma: no cover - numba
    """Return forward co-occurrence counts, int32 (13, ng + 1, ng + 1), of a padded level array.

    L: C-contiguous (Z, Y, X) levels, 0 outside the ROI and on the 1-voxel border; offs: the 13
    positive flat offsets. Entry [d, a, b] counts ROI voxels p of level a whose neighbour
    p + offs[d] has level b (b = 0: neighbour outside the ROI). Unsigned indices keep numba
    from emitting negative-index wraparound code.
    """
    nz, ny, nx = L.shape
    lf = L.ravel()
    g1 = _U(ng + 1)
    gg = g1 * g1
    counts = np.zeros(13 * (ng + 1) * (ng + 1), np.int32)
    uo = np.empty(13, np.uint64)
    for d in range(13):
        uo[d] = _U(offs[d])
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
                row = _U(a) * g1
                for d in range(13):
                    counts[_U(d) * gg + row + _U(lf[p + uo[d]])] += 1
    return counts.reshape(13, ng + 1, ng + 1)


def glcm_from_padded(L: np.ndarray, n_levels: int) -> np.ndarray:
    """Return the 13 symmetric GLCMs, int64 (13, Ng, Ng), of a padded level array.

    ``L`` as made by :func:`pipelines.features.discretise.padded_levels` (C-contiguous, zero
    border). Direction order is DIRECTIONS_XYZ.
    """
    L = checked_padded(L, n_levels)
    c = _glcm_kernel(L, raster_offsets(L.shape), int(n_levels))[:, 1:, 1:].astype(np.int64)
    return c + c.transpose(0, 2, 1)


def glcm_matrices(levels, mask, n_levels: int) -> np.ndarray:
    """Return the 13 symmetric 3D GLCMs (distance 1), int64 array of shape (13, Ng, Ng).

    ``levels``: integer 3D (z, y, x) array of discretised grey levels 1..n_levels (TypeError for
    float input: discretise first); ``mask``: same shape, non-zero = ROI. Matrix d belongs to
    direction ``DIRECTIONS_XYZ[d]`` (x, y, z notation); element (i - 1, j - 1) counts voxel
    pairs of levels (i, j) in both orders (IBSI: M = M+ + M+^T).
    """
    L = padded_levels(levels, mask, int(n_levels))
    return glcm_from_padded(L, int(n_levels))


# --------------------------------------------------------------------------- features

_NAMES = tuple(GLCM_FEATURES)


@nb.njit(cache=True, nogil=True)
def _feature_kernel(P):  # pragma: no cover - numba
    """Return float64 (k, 25): the IBSI GLCM features (GLCM_FEATURES order) of each P[k].

    P: (k, Ng, Ng) float64, each matrix symmetric and summing to 1 (IBSI p_ij). With
    p_i = row marginal, mu = sum i p_i, p_{i-j,d} and p_{i+j,s} the diagonal and cross-diagonal
    probabilities (d = |i - j| in 0..Ng-1, s = i + j in 2..2Ng); NaN where a feature divides
    0 by 0 (correlation and information correlation 1 with a single grey level).
    """
    nk, ng, _ = P.shape
    out = np.empty((nk, 25), np.float64)
    pi = np.empty(ng)
    pd = np.empty(ng)
    ps = np.empty(2 * ng - 1)
    for k in range(nk):
        pi[:] = 0.0
        pd[:] = 0.0
        ps[:] = 0.0
        jmax = 0.0
        hxy = 0.0
        energy = 0.0
        auto = 0.0
        for i in range(ng):
            for j in range(ng):
                p = P[k, i, j]
                if p > 0.0:
                    pi[i] += p
                    pd[abs(i - j)] += p
                    ps[i + j] += p
                    if p > jmax:
                        jmax = p
                    hxy -= p * math.log2(p)
                    energy += p * p
                    auto += (i + 1.0) * (j + 1.0) * p
        mu = 0.0
        hx = 0.0
        for i in range(ng):
            mu += (i + 1.0) * pi[i]
            if pi[i] > 0.0:
                hx -= pi[i] * math.log2(pi[i])
        var = 0.0
        for i in range(ng):
            var += (i + 1.0 - mu) ** 2 * pi[i]
        d_avg = 0.0
        d_ent = 0.0
        contrast = 0.0
        inv_d = 0.0
        inv_dn = 0.0
        inv_dm = 0.0
        inv_dmn = 0.0
        inv_var = 0.0
        for d in range(ng):
            q = pd[d]
            d_avg += d * q
            contrast += d * d * q
            inv_d += q / (1.0 + d)
            inv_dn += q / (1.0 + d / ng)
            inv_dm += q / (1.0 + d * d)
            inv_dmn += q / (1.0 + (d / ng) ** 2)
            if d > 0:
                inv_var += q / (d * d)
            if q > 0.0:
                d_ent -= q * math.log2(q)
        d_var = 0.0
        for d in range(ng):
            d_var += (d - d_avg) ** 2 * pd[d]
        s_avg = 0.0
        s_ent = 0.0
        for t in range(2 * ng - 1):
            q = ps[t]
            s_avg += (t + 2.0) * q
            if q > 0.0:
                s_ent -= q * math.log2(q)
        s_var = 0.0
        c_tend = 0.0
        c_shade = 0.0
        c_prom = 0.0
        for t in range(2 * ng - 1):
            q = ps[t]
            s_var += (t + 2.0 - s_avg) ** 2 * q
            e = t + 2.0 - 2.0 * mu
            e2 = e * e
            c_tend += e2 * q
            c_shade += e2 * e * q
            c_prom += e2 * e2 * q
        corr = (auto - mu * mu) / var if var > 0.0 else np.nan
        info1 = (hxy - 2.0 * hx) / hx if hx > 0.0 else np.nan
        mi = max(2.0 * hx - hxy, 0.0)  # HXY1 = HXY2 = 2 HX for a symmetric matrix
        info2 = math.sqrt(max(1.0 - math.exp(-2.0 * mi), 0.0))
        o = out[k]
        o[0] = jmax
        o[1] = mu
        o[2] = var
        o[3] = hxy
        o[4] = d_avg
        o[5] = d_var
        o[6] = d_ent
        o[7] = s_avg
        o[8] = s_var
        o[9] = s_ent
        o[10] = energy
        o[11] = contrast
        o[12] = d_avg
        o[13] = inv_d
        o[14] = inv_dn
        o[15] = inv_dm
        o[16] = inv_dmn
        o[17] = inv_var
        o[18] = corr
        o[19] = auto
        o[20] = c_tend
        o[21] = c_shade
        o[22] = c_prom
        o[23] = info1
        o[24] = info2
    return out


def glcm_features(matrices, aggregation: str = "averaged") -> dict[str, float]:
    """Return the 25 IBSI GLCM features (tags ``cm_*``, dimensionless or in grey levels).

    ``matrices``: (13, Ng, Ng) symmetric co-occurrence counts as from :func:`glcm_matrices` (a
    single (Ng, Ng) matrix is accepted too). ``aggregation``: "averaged" (IBSI ITBB: features
    per direction, then the mean over directions that have pairs) or "merged" (IBSI IAZD:
    features of the summed matrix). NaN where IBSI leaves a feature undefined.
    """
    m = np.asarray(matrices, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1] != m.shape[2]:
        raise ValueError(f"expected (n, Ng, Ng) matrices, got shape {m.shape}")
    if aggregation == "merged":
        m = m.sum(axis=0, keepdims=True)
    elif aggregation != "averaged":
        raise ValueError(f"aggregation must be 'averaged' or 'merged', got {aggregation!r}")
    totals = m.sum(axis=(1, 2))
    keep = totals > 0
    if not keep.any():
        return dict.fromkeys(GLCM_FEATURES, float("nan"))
    values = _feature_kernel(np.ascontiguousarray(m[keep] / totals[keep, None, None]))
    ok = ~np.isnan(values)
    n_ok = ok.sum(axis=0)
    sums = np.where(ok, values, 0.0).sum(axis=0)
    mean = [float(s / n) if n else float("nan") for s, n in zip(sums, n_ok, strict=True)]
    return dict(zip(_NAMES, mean, strict=True))
