"""Grey level distance zone matrix (GLDZM) features, IBSI 1 section 3.9 (VMDZ; 3D).

Zones are those of the GLSZM: maximal 26-connected groups of ROI voxels (intensity mask) with the
same discretised level. The distance of a voxel to the ROI edge is its city-block (6-connected)
distance to the nearest voxel outside the **morphological** mask, the image border counting as
outside, so voxels on the edge have distance 1; this equals IBSI's iterative 6-connected erosion
(each erosion adds 1). A zone's distance is the smallest distance of its voxels. Element
(i - 1, j - 1) of the ``Ng x Nd`` matrix counts zones of level i and distance j (Nd: largest zone
distance).

The distance map is one exact two-pass chamfer transform (scipy ``distance_transform_cdt``,
taxicab); zones and their minimum distances come from one numba union-find pass over the
zero-padded level crop, the one :mod:`pipelines.features.glszm` uses for zone sizes. Features are
the GLSZM formulas with zone distance in place of zone size
(:func:`pipelines.features.glszm.features_from_triplets`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipelines.features.discretise import bounding_box, checked_padded, padded_levels
from pipelines.features.discretise import raster_offsets as _raster_offsets
from pipelines.features.glszm import (
    GLSZM_FEATURES,
    _merge_table,
    _same_level_mask,
    _zone_kernel,
    features_from_triplets,
    zone_triplets,
)

__all__ = ["gldzm_matrix", "gldzm_features", "gldzm_from_padded", "distance_map",
           "GLDZM_FEATURES"]

#: IBSI tags of the GLDZM features in IBSI order (values: IBSI codes).
GLDZM_FEATURES: dict[str, str] = {
    "dzm_sde": "0GBI", "dzm_lde": "MB4I", "dzm_lgze": "S1RA", "dzm_hgze": "K26C",
    "dzm_sdlge": "RUVG", "dzm_sdhge": "DKNJ", "dzm_ldlge": "A7WM", "dzm_ldhge": "KLTH",
    "dzm_glnu": "VFT7", "dzm_glnu_norm": "7HP3", "dzm_zdnu": "V294", "dzm_zdnu_norm": "IATH",
    "dzm_z_perc": "VIWW", "dzm_gl_var": "QK93", "dzm_zd_var": "7WT1", "dzm_zd_entr": "GBDU",
}

#: GLSZM tag -> GLDZM tag (the formulas coincide, zone size -> zone distance).
_RENAME = dict(zip(GLSZM_FEATURES, GLDZM_FEATURES, strict=True))


def distance_map(morph_padded: np.ndarray) -> np.ndarray:
    """Return int32 distances to the ROI edge (6-connectivity), same shape as the input.

    ``morph_padded``: boolean morphological mask with a False border at least one voxel wide
    (the image border counts as outside the ROI). ROI voxels touching the outside through a
    face get 1, voxels outside 0 (IBSI VMDZ: iterated 6-connected erosion).
    """
    m = np.asarray(morph_padded, dtype=bool)
    return ndimage.distance_transform_cdt(m, metric="taxicab").astype(np.int32, copy=False)


def gldzm_from_padded(L: np.ndarray, D: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (levels, distances) of every 26-connected zone of a padded level array.

    ``L``: level crop with a zero border (see padded_levels), 0 = outside the intensity mask;
    ``D``: int distance map of the same shape (:func:`distance_map` of the morphological mask);
    default: the distance map of ``L > 0``. One entry per zone: int32 level, int64 distance.
    """
    L = checked_padded(L)
    if D is None:
        D = distance_map(L > 0)
    D = np.ascontiguousarray(D, dtype=np.int64)
    if D.shape != L.shape:
        raise ValueError(f"distance map {D.shape} differs from the level array {L.shape}")
    offs = _raster_offsets(L.shape)
    nrep, rep = _merge_table()
    same = _same_level_mask(L, offs)
    zl, _, zd = _zone_kernel(L, D, same, offs, nrep, rep, int(np.count_nonzero(L)))
    return zl, zd


def gldzm_matrix(levels, mask, n_levels: int, morph_mask=None) -> np.ndarray:
    """Return the 3D GLDZM, int64 array of shape (Ng, Nd): zones of level i and distance j.

    ``levels``: integer 3D array of discretised levels 1..n_levels (TypeError for float input);
    ``mask``: same shape, non-zero = ROI intensity mask (defines the zones); ``morph_mask``:
    same shape, the morphological mask the distances are measured in (default ``mask``).
    Row i - 1 is level i, column j - 1 distance j voxels (edge voxels: 1); Nd is the largest
    zone distance.
    """
    msk = np.asarray(mask) != 0
    morph = msk if morph_mask is None else np.asarray(morph_mask) != 0
    if morph.shape != msk.shape:
        raise ValueError(f"morph_mask {morph.shape} differs from mask {msk.shape}")
    L = padded_levels(levels, msk, int(n_levels))
    box = bounding_box(msk)
    D = distance_map(np.pad(morph, 1))
    D = D[tuple(slice(s.start, s.stop + 2) for s in box)]  # padded box of the intensity mask
    zl, zd = gldzm_from_padded(L, D)
    gl, dist, cnt = zone_triplets(zl, zd)
    if dist.min() < 1:
        raise ValueError("the intensity mask has voxels outside the morphological mask")
    out = np.zeros((int(n_levels), int(dist.max())), dtype=np.int64)
    out[gl - 1, dist - 1] = cnt
    return out


def features_from_zones(zl: np.ndarray, zd: np.ndarray, n_voxels: int) -> dict[str, float]:
    """Return the 16 GLDZM features from per-zone levels and distances (as gldzm_from_padded)."""
    f = features_from_triplets(*zone_triplets(zl, zd), int(n_voxels))
    return {_RENAME[k]: v for k, v in f.items()}


def gldzm_features(matrix, n_voxels: int) -> dict[str, float]:
    """Return the 16 IBSI GLDZM features (tags ``dzm_*``) of an (Ng, Nd) distance zone matrix.

    ``matrix`` as from :func:`gldzm_matrix` (one 3D matrix, IBSI aggregation KOBO);
    ``n_voxels``: number of voxels of the intensity mask (for zone percentage). Units:
    emphases in levels^+-2 and/or voxels^+-2 (distances in voxels), non-uniformities in zones,
    zone percentage dimensionless, variances in levels^2 / voxels^2, entropy in bits.
    """
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"expected a (Ng, Nd) matrix, got shape {m.shape}")
    r, c = np.nonzero(m)
    f = features_from_triplets(r + 1, c + 1, m[r, c], int(n_voxels))
    return {_RENAME[k]: v for k, v in f.items()}
