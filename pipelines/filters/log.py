"""The Laplacian of Gaussian filter (IBSI 2 manual, "Laplacian of Gaussian"; tests 2.a-2.c).

The response is the sum of the Gaussian's second derivatives along each filtered axis, in
voxel units (no sigma^2 or spacing^2 scaling), which is what the IBSI 2 consensus maps hold;
sigma is given in mm and divided by the spacing of each axis. The kernel is truncated at
``truncate`` sigmas: support 1 + 2 floor(truncate * sigma + 0.5) voxels, as in IBSI 2.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipelines.filters.padding import (
    PLANES,
    check_boundary,
    check_plane,
    check_positive,
    check_spacing,
    check_volume,
    ndimage_mode,
)


def log_filter(volume: np.ndarray, sigma_mm: float, spacing=(1.0, 1.0, 1.0),
               truncate: float = 4.0, boundary: str = "mirror",
               plane: str | None = None) -> np.ndarray:
    """Return the Laplacian-of-Gaussian response of a volume.

    volume: (z, y, x); sigma_mm: Gaussian width in mm; spacing: (z, y, x) mm; truncate: kernel
    half-width in sigmas; plane: None (3D) or a 2D plane filtered slice by slice (the off-plane
    axis is neither smoothed nor differentiated). Returns float64 (z, y, x), intensity units
    per voxel^2.
    """
    vol = check_volume(volume)
    sigmas = log_sigmas_voxels(sigma_mm, spacing, plane)
    trunc = check_positive(truncate, "LoG truncation (sigmas)")
    mode = ndimage_mode(check_boundary(boundary))
    axes = [a for a in range(3) if sigmas[a] > 0]
    out = np.zeros_like(vol)
    for a in axes:
        order = [0, 0, 0]
        order[a] = 2
        out += ndimage.gaussian_filter(vol, sigmas, order=order, mode=mode, truncate=trunc)
    return out


def log_sigmas_voxels(sigma_mm: float, spacing, plane: str | None) -> tuple[float, float, float]:
    """Return the LoG sigma of each (z, y, x) axis in voxels (0 on the off-plane axis of 2D)."""
    s = check_positive(sigma_mm, "LoG sigma (mm)")
    sp = check_spacing(spacing)
    sig = [s / d for d in sp]
    if check_plane(plane) is not None:
        sig[PLANES[plane]] = 0.0
    return tuple(sig)
