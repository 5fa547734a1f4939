"""IBSI 2 boundary conditions and the input checks every filter shares
(IBSI 2 manual, "boundary conditions").

Volumes are numpy arrays indexed (z, y, x), as drlake stores them; spacing is (z, y, x) in mm.
The four IBSI boundary conditions map to scipy.ndimage and numpy.pad modes as checked against the
IBSI 2 phase-1 reference maps (shared/reference/ibsi2/manual/implementation_notes.md):

| IBSI     | scipy.ndimage          | numpy.pad   | padding of ``a b c d``  |
| zero     | ``constant`` (cval 0)  | ``constant``| ``0 0 | a b c d | 0 0`` |
| nearest  | ``nearest``            | ``edge``    | ``a a | a b c d | d d`` |
| periodic | ``wrap``               | ``wrap``    | ``c d | a b c d | a b`` |
| mirror   | ``reflect``            | ``symmetric``| ``b a | a b c d | d c`` |

scipy's own ``mirror`` mode (edge voxel not repeated) is *not* the IBSI mirror: it fails 2.b.
"""

from __future__ import annotations

import numpy as np

from pipelines.exceptions import InputError

BOUNDARIES = ("zero", "nearest", "periodic", "mirror")

_NDIMAGE_MODE = {"zero": "constant", "nearest": "nearest", "periodic": "wrap", "mirror": "reflect"}
_NUMPY_MODE = {"zero": "constant", "nearest": "edge", "periodic": "wrap", "mirror": "symmetric"}

#: array axis of each spatial direction in a (z, y, x) volume
AXIS = {"x": 2, "y": 1, "z": 0}

#: the slice axis of each 2D plane: a 2D filter runs in-plane on every slice along it
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}


def check_boundary(boundary: str) -> str:
    """Return the IBSI boundary condition name, checked."""
    if boundary not in BOUNDARIES:
        raise InputError(
            f"unknown boundary condition {boundary!r}: use one of {', '.join(BOUNDARIES)}"
        )
    return boundary


def ndimage_mode(boundary: str) -> str:
    """Return the scipy.ndimage ``mode`` that implements an IBSI boundary condition."""
    return _NDIMAGE_MODE[check_boundary(boundary)]


def numpy_mode(boundary: str) -> str:
    """Return the numpy.pad ``mode`` that implements an IBSI boundary condition."""
    return _NUMPY_MODE[check_boundary(boundary)]


def pad(volume: np.ndarray, widths, boundary: str) -> np.ndarray:
    """Return the volume padded by ``widths`` (numpy.pad widths, voxels) under an IBSI boundary.

    Widths larger than the volume repeat the rule (mirror and periodic stay exact).
    """
    return np.pad(volume, widths, mode=numpy_mode(boundary))


def check_volume(volume, name: str = "volume") -> np.ndarray:
    """Return the volume as a float64 (z, y, x) array, checked: 3D, real, finite, non-empty."""
    arr = np.asarray(volume)
    if arr.ndim != 3:
        raise InputError(
            f"{name} must be a 3D (z, y, x) array, got shape {arr.shape}; "
            "add a leading axis of length 1 for a single 2D image"
        )
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} holds NaN or infinite voxels: fill or mask them before filtering")
    return arr


def check_spacing(spacing) -> tuple[float, float, float]:
    """Return the voxel spacing as three positive floats (z, y, x), mm."""
    try:
        sp = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=float), (3,)))
    except (TypeError, ValueError):
        raise InputError(
            f"spacing must be one number or three (z, y, x) in mm, got {spacing!r}"
        ) from None
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing must be positive and finite (mm), got {spacing!r}")
    return sp


def check_plane(plane: str | None) -> str | None:
    """Return the 2D plane name (axial, coronal, sagittal) or None for 3D, checked."""
    if plane is not None and plane not in PLANES:
        raise InputError(
            f"unknown plane {plane!r}: use one of {', '.join(PLANES)} (2D) or None (3D)"
        )
    return plane


def check_choice(value, choices, what: str):
    """Return value if it is one of choices, else raise an InputError listing them."""
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}: use one of {', '.join(map(str, choices))}")
    return value


def check_positive(value, what: str, integer: bool = False):
    """Return value as a positive float (or int), else raise an InputError naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0 or (integer and v != int(v)):
        kind = "a positive integer" if integer else "a positive number"
        raise InputError(f"{what} must be {kind}, got {value!r}")
    return int(v) if integer else v
