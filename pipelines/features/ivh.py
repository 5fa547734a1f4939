"""Intensity-volume histogram (IVH) features, IBSI 1 section 3.5 (P88C; 3D, DHQ4).

The IVH is evaluated on a regular grid of discretised intensities ``i_k = min(G) + k w_d``,
k = 0..K, spanning the total range G (intensities absent from the ROI included). For each grid
intensity, the volume fraction ``nu_k`` is the fraction of ROI voxels with intensity >= i_k and
the intensity fraction is ``gamma_k = (i_k - min G) / (max G - min G)``.

* ``ivh_vX`` (BC2M): the largest volume fraction whose intensity fraction is >= X %.
* ``ivh_iX`` (GBPN): the smallest grid intensity whose volume fraction is <= X %; where none is
  (more than X % of the voxels have the maximum intensity) it is ``max(G) + w_d``, the first
  intensity no voxel reaches (MIRP's convention for G = [1, Ng]).
* ``ivh_diff_vA_vB`` (DDTU) = vA - vB, ``ivh_diff_iA_iB`` (CNV2) = iA - iB.

The area under the IVH curve (9CMM) is not computed: the manual gives no reference value and
advises against its use. With a single-intensity range (max G = min G) gamma is undefined and
every V feature is NaN.

Which intensities: for already discrete intensities (CT, the IBSI digital phantom) the image's
own values with w_d = 1 and G = [ROI min, ROI max] (or a re-segmentation range); after fixed
bin number discretisation the levels 1..Ng (G = [1, Ng]); after fixed bin size discretisation
the bin centres ``x0 + (k - 0.5) w`` (IBSI, continuous calibrated intensities).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ivh_features", "ivh_from_histogram", "ivh_curve", "IVH_FEATURES"]

_FRACTIONS = (10, 25, 50, 75, 90)

#: IBSI tags of the IVH features (values: IBSI codes; one code per feature kind).
IVH_FEATURES: dict[str, str] = {
    **{f"ivh_v{x}": "BC2M" for x in _FRACTIONS},
    **{f"ivh_i{x}": "GBPN" for x in _FRACTIONS},
    "ivh_diff_v10_v90": "DDTU", "ivh_diff_v25_v75": "DDTU",
    "ivh_diff_i10_i90": "CNV2", "ivh_diff_i25_i75": "CNV2",
}


def ivh_curve(counts, start: float, width: float = 1.0):
    """Return (intensity, gamma, nu), float64 arrays (K + 1,), of a histogram on a grid.

    ``counts``: voxel counts (K + 1,) at the grid intensities ``start + k width`` (the whole
    range G, zeros for absent intensities). gamma is NaN for a one-point grid.
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or n.sum() <= 0 or (n < 0).any():
        raise ValueError("counts must be a non-empty 1D histogram with at least one voxel")
    k = np.arange(n.size, dtype=np.float64)
    intensity = start + k * width
    gamma = k / (n.size - 1) if n.size > 1 else np.full(1, np.nan)
    below = np.concatenate(([0.0], np.cumsum(n)[:-1]))  # voxels with intensity < i_k
    nu = 1.0 - below / n.sum()
    return intensity, gamma, nu


def ivh_from_histogram(counts, start: float, width: float = 1.0) -> dict[str, float]:
    """Return the 14 IBSI IVH features (tags ``ivh_*``) of a histogram on a regular grid.

    ``counts``: voxel counts (K + 1,) at the grid intensities ``start + k width`` covering the
    total range G. V features are volume fractions (dimensionless), I features and their
    differences are in the grid's intensity units.
    """
    intensity, gamma, nu = ivh_curve(counts, start, width)
    # gamma can land a rounding error below an exact fraction (e.g. 0.9 on a 1/K grid)
    tol = 1e-9
    out: dict[str, float] = {}
    v: dict[int, float] = {}
    ix: dict[int, float] = {}
    for x in _FRACTIONS:
        sel = gamma >= x / 100 - tol
        v[x] = float(nu[sel].max()) if sel.any() else float("nan")
        out[f"ivh_v{x}"] = v[x]
    for x in _FRACTIONS:
        sel = nu <= x / 100 + tol
        ix[x] = float(intensity[sel].min()) if sel.any() else float(intensity[-1] + width)
        out[f"ivh_i{x}"] = ix[x]
    out["ivh_diff_v10_v90"] = v[10] - v[90]
    out["ivh_diff_v25_v75"] = v[25] - v[75]
    out["ivh_diff_i10_i90"] = ix[10] - ix[90]
    out["ivh_diff_i25_i75"] = ix[25] - ix[75]
    return out


def ivh_features(values, width: float = 1.0, range_min: float | None = None,
                 range_max: float | None = None) -> dict[str, float]:
    """Return the 14 IBSI IVH features (tags ``ivh_*``) of discretised ROI intensities.

    ``values``: 1D (or any shape, flattened) ROI intensities already on a grid of step
    ``width`` (w_d) from ``range_min`` (default: the ROI minimum), e.g. CT HU or the levels of
    a discretised ROI; ``range_min``/``range_max``: the total range G (default: ROI min/max).
    Units as in :func:`ivh_from_histogram`. ValueError for values off the grid or outside G.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError("values must be a non-empty array of finite intensities")
    if not (width > 0 and math.isfinite(width)):
        raise ValueError(f"width must be a positive finite number, got {width}")
    g0 = float(x.min()) if range_min is None else float(range_min)
    g1 = float(x.max()) if range_max is None else float(range_max)
    if x.min() < g0 or x.max() > g1:
        raise ValueError(f"ROI intensities {x.min()}..{x.max()} lie outside the range "
                         f"[{g0}, {g1}]")
    kf = (x - g0) / width
    k = np.rint(kf)
    if np.abs(kf - k).max() > 1e-6:
        raise ValueError("values are not on the grid range_min + k * width: discretise first")
    n_grid = int(round((g1 - g0) / width)) + 1
    counts = np.bincount(k.astype(np.int64), minlength=n_grid)
    return ivh_from_histogram(counts, g0, width)
