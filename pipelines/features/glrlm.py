"""Grey level run length matrix (GLRLM) features, IBSI 1 section 3.7 (TP0I; 3D, 13 directions).

A run is a maximal sequence of consecutive ROI voxels with the same discretised grey level along
one of the 13 directions of :data:`pipelines.features.discretise.DIRECTIONS_XYZ`. Matrix d
(``Ng x Nr``) counts, for direction d, the runs of level i and length j (element (i - 1, j - 1)).
One numba pass per direction over the zero-padded level crop finds every run start (a voxel whose
predecessor along the direction has another level) and walks the run; the zero border stops
every walk, so no bounds checks are needed.

Features: the 16 IBSI GLRLM features, either averaged over the 13 directional matrices (ITBB,
"3D, averaged") or computed from their sum (IAZD, "3D, merged", with N_v summed over the 13
directions as IBSI asks). They are the GLSZM formulas with run length in place of zone size, so
they are computed by :func:`pipelines.features.glszm.features_from_triplets` on the non-zero
matrix entries.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from pipelines.features.discretise import checked_padded, padded_levels, raster_offsets
from pipelines.features.glszm import GLSZM_FEATURES, features_from_triplets

__all__ = ["glrlm_matrices", "glrlm_features", "glrlm_from_padded", "GLRLM_FEATURES"]

#: IBSI tags of the GLRLM features in IBSI order (values: IBSI codes).
GLRLM_FEATURES: dict[str, str] = {
    "rlm_sre": "22OV", "rlm_lre": "W4KF", "rlm_lgre": "V3SW", "rlm_hgre": "G3QZ",
    "rlm_srlge": "HTZT", "rlm_srhge": "GD3A", "rlm_lrlge": "IVPO", "rlm_lrhge": "3KUM",
    "rlm_glnu": "R5YN", "rlm_glnu_norm": "OVBL", "rlm_rlnu": "W92Y", "rlm_rlnu_norm": "IC23",
    "rlm_r_perc": "9ZK5", "rlm_gl_var": "8CE5", "rlm_rl_var": "SXLW", "rlm_rl_entr": "HJ9O",
}

#: GLSZM tag -> GLRLM tag (the formulas coincide, zone size -> run length).
_RENAME = dict(zip(GLSZM_FEATURES, GLRLM_FEATURES, strict=True))

_U = np.uint64


@nb.njit(cache=True, nogil=True)
def _run_kernel(L, offs, ng, nr):  # pragma: no cover - numba
    """Return run counts, int64 (13, ng + 1, nr + 1): [d, level, length] of a padded array.

    L: C-contiguous padded levels (zero border, 0 outside the ROI); offs: the 13 positive flat
    offsets; nr: an upper bound of the run length (the largest crop dimension).
    """
    nz, ny, nx = L.shape
    lf = L.ravel()
    out = np.zeros((13, ng + 1, nr + 1), np.int64)
    sy = _U(nx)
    sz = _U(ny * nx)
    for d in range(13):
        o = _U(offs[d])
        for z in range(_U(1), _U(nz - 1)):
            for y in range(_U(1), _U(ny - 1)):
                base = z * sz + y * sy
                for x in range(_U(1), _U(nx - 1)):
                    p = base + x
                    a = lf[p]
                    if a == 0 or lf[p - o] == a:
                        continue  # outside the ROI, or not the first voxel of its run
                    q = p + o
                    n = 1
                    while lf[q] == a:
                        n += 1
                        q += o
                    out[d, a, n] += 1
    return out


def glrlm_from_padded(L: np.ndarray, n_levels: int) -> np.ndarray:
    """Return the 13 GLRLMs, int64 (13, Ng, Nr), of a padded level array.

    ``L`` as made by :func:`pipelines.features.discretise.padded_levels` (zero border). Nr is
    the largest dimension of the unpadded crop (no run is longer); direction order is
    DIRECTIONS_XYZ.
    """
    ng = int(n_levels)
    L = checked_padded(L, ng)
    nr = max(L.shape) - 2
    return _run_kernel(L, raster_offsets(L.shape), ng, nr)[:, 1:, 1:]


def glrlm_matrices(levels, mask, n_levels: int) -> np.ndarray:
    """Return the 13 3D GLRLMs, int64 array of shape (13, Ng, Nr).

    ``levels``: integer 3D (z, y, x) array of discretised grey levels 1..n_levels (TypeError
    for float input: discretise first); ``mask``: same shape, non-zero = ROI. Matrix d belongs
    to direction ``DIRECTIONS_XYZ[d]``; element (i - 1, j - 1) counts runs of level i and
    length j voxels; Nr is the largest dimension of the mask's bounding box.
    """
    L = padded_levels(levels, mask, int(n_levels))
    return glrlm_from_padded(L, int(n_levels))


def glrlm_features(matrices, aggregation: str = "averaged") -> dict[str, float]:
    """Return the 16 IBSI GLRLM features (tags ``rlm_*``) of 13 directional run length matrices.

    ``matrices``: (13, Ng, Nr) counts as from :func:`glrlm_matrices` (one (Ng, Nr) matrix is
    accepted too). ``aggregation``: "averaged" (IBSI ITBB: features per direction, then their
    mean over directions that hold runs) or "merged" (IBSI IAZD: features of the summed matrix,
    N_v summed likewise). N_v of a direction is the number of ROI voxels, sum_ij j r_ij.
    Units: emphases in levels^+-2 and/or voxels^+-2, non-uniformities in runs, run percentage
    dimensionless, variances in levels^2 / voxels^2, entropy in bits. All NaN without runs.
    """
    m = np.asarray(matrices)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"expected (n, Ng, Nr) matrices, got shape {m.shape}")
    if aggregation == "merged":
        m = m.sum(axis=0, keepdims=True)
    elif aggregation != "averaged":
        raise ValueError(f"aggregation must be 'averaged' or 'merged', got {aggregation!r}")
    length = np.arange(1, m.shape[2] + 1)
    per_dir = []
    for md in m:
        r, c = np.nonzero(md)
        if r.size == 0:
            continue
        cnt = md[r, c]
        n_v = int(cnt @ length[c])
        per_dir.append(list(features_from_triplets(r + 1, c + 1, cnt, n_v).values()))
    if not per_dir:
        return dict.fromkeys(GLRLM_FEATURES, float("nan"))
    mean = np.mean(np.array(per_dir, dtype=np.float64), axis=0)
    return {_RENAME[k]: float(v) for k, v in zip(GLSZM_FEATURES, mean, strict=True)}
