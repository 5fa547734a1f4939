"""Neighbouring grey level dependence matrix (NGLDM) features, IBSI 1 section 3.11 (REK0; 3D).

For every ROI voxel k of level i, the dependence ``j_k`` is 1 plus the number of its 26
neighbours at Chebyshev distance 1 that lie in the ROI and whose level differs from i by at most
the coarseness ``alpha`` (default 0). Element (i - 1, j - 1) of the ``Ng x Nn`` matrix counts the
voxels of level i with dependence j (Nn = 27 in 3D, the largest possible dependence). Every ROI
voxel is a centre, so N_s = N_v (IBSI's definition, not the original one requiring complete
neighbourhoods).

One numba pass over the zero-padded level crop visits each of the 13 forward neighbours of a
voxel once and credits the pair to both voxels; the counts go straight into the (level,
dependence) histogram. Features are the GLSZM formulas with dependence in place of zone size
(:func:`pipelines.features.glszm.features_from_triplets`) plus dependence count energy.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from pipelines.features.discretise import checked_padded, padded_levels, raster_offsets
from pipelines.features.glszm import GLSZM_FEATURES, features_from_triplets

__all__ = ["ngldm_matrix", "ngldm_features", "ngldm_from_padded", "NGLDM_FEATURES"]

#: IBSI tags of the NGLDM features in IBSI order (values: IBSI codes).
NGLDM_FEATURES: dict[str, str] = {
    "ngl_lde": "SODN", "ngl_hde": "IMOQ", "ngl_lgce": "TL9H", "ngl_hgce": "OAE7",
    "ngl_ldlge": "EQ3F", "ngl_ldhge": "JA6D", "ngl_hdlge": "NBZI", "ngl_hdhge": "9QMG",
    "ngl_glnu": "FP8K", "ngl_glnu_norm": "5SPA", "ngl_dcnu": "Z87G", "ngl_dcnu_norm": "OKJI",
    "ngl_dc_perc": "6XV8", "ngl_gl_var": "1PFV", "ngl_dc_var": "DNX2", "ngl_dc_entr": "FCBV",
    "ngl_dc_energy": "CAS9",
}

#: GLSZM tag -> NGLDM tag (the first 16 formulas coincide, zone size -> dependence count).
_RENAME = dict(zip(GLSZM_FEATURES, list(NGLDM_FEATURES)[:16], strict=True))

_U = np.uint64


@nb.njit(cache=True, nogil=True)
def _dependence_kernel(L, offs, ng, alpha):  # pragma: no cover - numba
    """Return int64 (ng + 1, 28): voxel count per (level, dependence) of a padded level array.

    L: C-contiguous padded levels (zero border, 0 outside the ROI); offs: the 13 positive flat
    offsets; two ROI voxels are dependent if their levels differ by at most alpha.
    """
    lf = L.ravel()
    n = lf.size
    dep = np.zeros(n, np.uint8)
    nz, ny, nx = L.shape
    sy = _U(nx)
    sz = _U(ny * nx)
    uo = np.empty(13, np.uint64)
    for d in range(13):
        uo[d] = _U(offs[d])
    out = np.zeros((ng + 1, 28), np.int64)
    for z in range(_U(1), _U(nz - 1)):
        for y in range(_U(1), _U(ny - 1)):
            base = z * sz + y * sy
            for x in range(_U(1), _U(nx - 1)):
                p = base + x
                a = np.int64(lf[p])
                if a == 0:
                    continue
                c = dep[p] + 1
                for d in range(13):
                    q = p + uo[d]
                    b = np.int64(lf[q])
                    if b != 0 and abs(a - b) <= alpha:
                        c += 1
                        dep[q] += 1
                out[a, c] += 1  # every backward neighbour was visited before p
    return out


def ngldm_from_padded(L: np.ndarray, n_levels: int, alpha: int = 0) -> np.ndarray:
    """Return the 3D NGLDM, int64 (Ng, 27), of a padded level array (see ngldm_matrix)."""
    if int(alpha) != alpha or alpha < 0:
        raise ValueError(f"alpha must be a non-negative integer, got {alpha!r}")
    L = checked_padded(L, int(n_levels))
    return _dependence_kernel(L, raster_offsets(L.shape), int(n_levels), int(alpha))[1:, 1:]


def ngldm_matrix(levels, mask, n_levels: int, alpha: int = 0) -> np.ndarray:
    """Return the 3D NGLDM (Chebyshev distance 1), int64 array of shape (Ng, 27).

    ``levels``: integer 3D array of discretised levels 1..n_levels (TypeError for float input:
    discretise first); ``mask``: same shape, non-zero = ROI; ``alpha``: coarseness (levels).
    Element (i - 1, j - 1) counts ROI voxels of level i with dependence j: 1 + the number of
    their 26 neighbours in the ROI with a level within alpha of i. Columns past the largest
    dependence found are zero (they change no feature).
    """
    L = padded_levels(levels, mask, int(n_levels))
    return ngldm_from_padded(L, int(n_levels), alpha)


def ngldm_features(matrix, n_voxels: int | None = None) -> dict[str, float]:
    """Return the 17 IBSI NGLDM features (tags ``ngl_*``) of an (Ng, Nn) dependence matrix.

    ``matrix`` as from :func:`ngldm_matrix` (one 3D matrix, IBSI aggregation KOBO);
    ``n_voxels``: N_v, the ROI voxel count (default N_s, the matrix sum, as every ROI voxel
    is a centre). Units: emphases in levels^+-2 and/or dependences^+-2, non-uniformities in
    voxels, percentage and energy dimensionless, variances in levels^2 / dependences^2,
    entropy in bits. All NaN for an empty matrix.
    """
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"expected a (Ng, Nn) matrix, got shape {m.shape}")
    r, c = np.nonzero(m)
    cnt = m[r, c]
    ns = int(cnt.sum())
    nv = ns if n_voxels is None else int(n_voxels)
    f = {_RENAME[k]: v for k, v in features_from_triplets(r + 1, c + 1, cnt, nv).items()}
    p = cnt / ns if ns else np.zeros(0)
    f["ngl_dc_energy"] = float(p @ p) if ns else float("nan")
    return f
