"""The mean filter (IBSI 2 manual, "mean filter"; phase 1 tests 1.a and 1.b)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipelines.exceptions import InputError
from pipelines.filters.padding import (
    PLANES,
    check_boundary,
    check_plane,
    check_positive,
    check_volume,
    ndimage_mode,
)


def mean_filter(volume: np.ndarray, support: int = 15, boundary: str = "zero",
                plane: str | None = None) -> np.ndarray:
    """Return the mean of every (support^3, or support^2 in a 2D plane) neighbourhood.

    volume: (z, y, x), any real dtype; support: odd side of the window in voxels; boundary: an
    IBSI boundary condition; plane: None for 3D or "axial" / "coronal" / "sagittal" for a 2D
    filter applied slice by slice. Returns float64, shape (z, y, x), intensity units.
    """
    vol = check_volume(volume)
    size = mean_window(support, plane)
    return ndimage.uniform_filter(vol, size=size, mode=ndimage_mode(check_boundary(boundary)))


def mean_window(support: int, plane: str | None) -> tuple[int, int, int]:
    """Return the (z, y, x) window of a mean filter of odd ``support`` voxels (1 off-plane)."""
    m = check_positive(support, "mean filter support", integer=True)
    if m % 2 == 0:
        raise InputError(f"mean filter support must be odd (the window is centred), got {m}")
    size = [m, m, m]
    if check_plane(plane) is not None:
        size[PLANES[plane]] = 1
    return tuple(size)
