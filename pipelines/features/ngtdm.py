"""Neighbourhood grey tone difference matrix (NGTDM) features, IBSI 1 section 3.10 (3D).

For every ROI voxel k of level i, the neighbourhood is its 26 neighbours at Chebyshev distance 1
that lie in the ROI (IBSI: neighbours outside the ROI are not counted, the centre is excluded).
Voxels with at least one such neighbour contribute ``|i - mean level of the neighbours|`` to
``s_i`` and 1 to ``n_i``; ``p_i = n_i / N_vc`` with ``N_vc = sum n_i``.

Implementation: separable 3x3x3 box sums of the zero-padded level array and of the ROI
indicator, packed into one integer array, give every voxel's neighbour sum S and count W in
three vectorisable passes; ``|i W - S|`` is accumulated exactly in integers per (i, W) and
divided by W once per pair at the end.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from pipelines.features.discretise import checked_padded, padded_levels

__all__ = ["ngtdm_matrix", "ngtdm_features", "NGTDM_FEATURES"]

#: IBSI tags of the NGTDM features in IBSI order (values: IBSI codes).
NGTDM_FEATURES: dict[str, str] = {
    "ngt_coarseness": "QCDE", "ngt_contrast": "65HE", "ngt_busyness": "NQ30",
    "ngt_complexity": "HDEZ", "ngt_strength": "1X9X",
}

#: IBSI's arbitrary cap on coarseness when sum(p_i s_i) = 0.
COARSENESS_MAX = 1.0e6


@nb.njit(cache=True, nogil=True)
def _box3(src, dst, step):  # pragma: no cover - numba
    """dst[i] = src[i - step] + src[i] + src[i + step] for step <= i < n - step."""
    n = src.size
    a0 = src[: n - 2 * step]
    a1 = src[step : n - step]
    a2 = src[2 * step :]
    d = dst[step : n - step]
    for i in range(n - 2 * step):
        d[i] = a0[i] + a1[i] + a2[i]


@nb.njit(cache=True, nogil=True)
def _ngtdm_kernel(L, P, Q, shift, ng):  # pragma: no cover - numba
    """Return (acc, cnt) int64 (ng + 1, 27): sum of |i W - S| and voxel count per (level i, W).

    L: C-contiguous padded levels (zero border); P, Q: work arrays of L.size of a signed type
    wide enough for ``27 * ng + (27 << shift)``, with 27 * ng < 2**shift. Each voxel is packed
    as ``level + (in ROI) << shift`` so one box sum yields both S and W + 1.
    """
    nz, ny, nx = L.shape
    lf = L.ravel()
    n = lf.size
    mult = np.int64(1) << shift
    for i in range(n):
        v = np.int64(lf[i])
        P[i] = v + mult if v > 0 else 0
    _box3(P, Q, 1)
    _box3(Q, P, nx)
    step = ny * nx
    a0 = P[: n - 2 * step]
    a1 = P[step : n - step]
    a2 = P[2 * step :]
    lv = lf[step : n - step]
    low = mult - 1
    acc = np.zeros((ng + 1, 27), np.int64)
    cnt = np.zeros((ng + 1, 27), np.int64)
    for j in range(n - 2 * step):
        a = np.int64(lv[j])
        if a == 0:
            continue
        q = np.int64(a0[j]) + np.int64(a1[j]) + np.int64(a2[j])
        w = (q >> shift) - 1  # neighbours in the ROI, centre excluded
        s = (q & low) - a
        acc[a, w] += abs(a * w - s)
        cnt[a, w] += 1
    return acc, cnt


def ngtdm_from_padded(L: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (s, n) float64/int64 arrays (Ng,) of the NGTDM of a padded level array."""
    ng = int(n_levels)
    L = checked_padded(L, ng)
    if 27 * ng < (1 << 15):
        P = np.empty(L.size, np.int32)
        shift = 16
    else:
        P = np.empty(L.size, np.int64)
        shift = 32
    Q = np.zeros_like(P)
    acc, cnt = _ngtdm_kernel(L, P, Q, shift, ng)
    w = np.arange(1, 27, dtype=np.float64)
    s = acc[1:, 1:] @ (1.0 / w)
    n = cnt[1:, 1:].sum(axis=1)
    return s, n


def ngtdm_matrix(levels, mask, n_levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the 3D NGTDM (s, n, p), each an array of shape (Ng,) indexed by level - 1.

    ``levels``: integer 3D array of discretised levels 1..n_levels (TypeError for float input:
    discretise first); ``mask``: same shape, non-zero = ROI. s: float64 sums of absolute
    differences to the neighbourhood mean (grey levels); n: int64 counts of voxels with at
    least one ROI neighbour; p = n / sum(n) (all zero if no voxel has a neighbour).
    """
    L = padded_levels(levels, mask, int(n_levels))
    s, n = ngtdm_from_padded(L, int(n_levels))
    total = n.sum()
    p = n / total if total > 0 else np.zeros(n.shape)
    return s, n, p


def ngtdm_features(s, n, p=None) -> dict[str, float]:
    """Return the 5 IBSI NGTDM features (tags ``ngt_*``) of an NGTDM.

    ``s``, ``n`` (and optionally ``p``, else n / sum n): arrays (Ng,) as from
    :func:`ngtdm_matrix` (one 3D matrix, IBSI aggregation KOBO); units: coarseness
    levels^-1, contrast levels^3, busyness dimensionless, complexity levels^2, strength levels.
    Coarseness is capped at 1e6 when sum(p s) = 0, contrast and busyness
    are 0 with a single grey level and strength is 0 when sum(s) = 0 (all as IBSI defines).
    Every feature is NaN when no ROI voxel has a neighbour in the ROI (N_vc = 0), and busyness
    is NaN in the degenerate case where its denominator vanishes with several grey levels.
    """
    s = np.asarray(s, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    nvc = n.sum()
    if nvc <= 0:
        return dict.fromkeys(NGTDM_FEATURES, float("nan"))
    p = n / nvc if p is None else np.asarray(p, dtype=np.float64)
    ok = p > 0
    i = np.arange(1, s.size + 1, dtype=np.float64)[ok]
    pv, sv = p[ok], s[ok]
    ngp = int(ok.sum())
    ps = float(pv @ sv)
    s_tot = float(s.sum())
    di = i[:, None] - i[None, :]
    pp = pv[:, None] + pv[None, :]
    coarseness = 1.0 / ps if ps > 0 else COARSENESS_MAX
    if ngp > 1:
        contrast = float(pv @ (di * di) @ pv) / (ngp * (ngp - 1)) * s_tot / nvc
        ip = i * pv
        den = float(np.abs(ip[:, None] - ip[None, :]).sum())
        busyness = ps / den if den > 0 else float("nan")
    else:
        contrast = 0.0
        busyness = 0.0
    psv = pv * sv
    complexity = float((np.abs(di) * (psv[:, None] + psv[None, :]) / pp).sum()) / nvc
    strength = float((pp * di * di).sum()) / s_tot if s_tot > 0 else 0.0
    return {
        "ngt_coarseness": float(coarseness),
        "ngt_contrast": float(contrast),
        "ngt_busyness": float(busyness),
        "ngt_complexity": complexity,
        "ngt_strength": strength,
    }
