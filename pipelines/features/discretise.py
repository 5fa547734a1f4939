"""Intensity discretisation (IBSI 1, "Intensity discretisation") and the level-array helpers the
texture families share.

Pure functions on numpy arrays: no I/O, no module state besides constants.

* Fixed bin number (FBN, IBSI K15C): ``floor(Ng * (x - min) / (max - min)) + 1`` over the ROI's
  own range, the ROI maximum mapped to ``Ng``; a constant ROI gets level 1 everywhere.
* Fixed bin size (FBS, IBSI Q3RU): ``floor((x - min_value) / w) + 1`` with ``min_value`` the
  lower bound of the re-segmentation range when given, else the ROI minimum.

Both write level 0 outside the mask. Both formulas are evaluated by one numba kernel, so the
public functions and :func:`pipelines.features.extract.compute_features` (which discretises
straight into a zero-padded crop) give identical levels.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = [
    "discretise_fixed_bin_number",
    "discretise_fixed_bin_size",
    "require_levels",
    "level_dtype",
    "padded_levels",
    "raster_offsets",
    "DIRECTIONS_XYZ",
]

#: The 13 unique 3D direction vectors of a Chebyshev-distance-1 neighbourhood, in the IBSI
#: manual's order and its (x, y, z) notation (x = last array axis, z = first).
DIRECTIONS_XYZ: tuple[tuple[int, int, int], ...] = (
    (0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (0, 1, -1), (1, 0, 1), (1, 0, -1),
    (1, 1, 0), (1, -1, 0), (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1),
)


def _raster_vectors() -> np.ndarray:
    """Return the 13 directions as (dz, dy, dx) rows, each flipped to point forward in C order."""
    out = []
    for x, y, z in DIRECTIONS_XYZ:
        v = (z, y, x)
        if v < (0, 0, 0):  # lexicographic: the vector points backwards in raster order
            v = (-z, -y, -x)
        out.append(v)
    return np.array(out, dtype=np.int64)


#: (13, 3) int64 (dz, dy, dx) of DIRECTIONS_XYZ, each oriented so its flat offset is positive.
RASTER_VECTORS = _raster_vectors()


def raster_offsets(padded_shape: tuple[int, int, int]) -> np.ndarray:
    """Return the 13 positive flat offsets of RASTER_VECTORS in a C-ordered array of this shape.

    int64 array of shape (13,); element d is ``dz * Y * X + dy * X + dx`` for direction d.
    """
    _, ny, nx = padded_shape
    return RASTER_VECTORS @ np.array([ny * nx, nx, 1], dtype=np.int64)


def level_dtype(n_levels: int) -> type:
    """Return the smallest unsigned dtype holding levels 0..n_levels (uint8, uint16 or uint32)."""
    if n_levels <= 255:
        return np.uint8
    if n_levels <= 65535:
        return np.uint16
    return np.uint32


def require_levels(levels, name: str = "levels") -> np.ndarray:
    """Return ``levels`` as an integer ndarray; raise TypeError for float (non-discretised) input.

    Texture matrices are defined on discretised grey levels only (IBSI section 2.7).
    """
    arr = np.asarray(levels)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must be an integer array of discretised grey levels, got dtype {arr.dtype}; "
            "discretise first (discretise_fixed_bin_number / discretise_fixed_bin_size)"
        )
    return arr


# --------------------------------------------------------------------------- kernel


@nb.njit(cache=True, nogil=True)
def _fill_levels(img, mask, out, pad, lo, num, den, n_max):  # pragma: no cover - numba
    """Write ``floor(num * (x - lo) / den) + 1`` (clipped to n_max) for ROI voxels into out.

    img, mask: (Z, Y, X); out: (Z + 2 pad, Y + 2 pad, X + 2 pad), zero-initialised.
    Returns the histogram of the written levels, int64 (n_max + 1,) (index = level).
    """
    hist = np.zeros(n_max + 1, np.int64)
    nz, ny, nx = img.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if mask[z, y, x]:
                    v = math.floor(num * (np.float64(img[z, y, x]) - lo) / den) + 1.0
                    if v > n_max:
                        v = n_max
                    lev = np.int64(v)
                    out[z + pad, y + pad, x + pad] = lev
                    hist[lev] += 1
    return hist


# --------------------------------------------------------------------------- helpers


def kernel_image(img: np.ndarray) -> np.ndarray:
    """Return a real-valued image in a dtype the numba kernels take (TypeError otherwise).

    Native byte order is enforced (big-endian arrays are byte-swapped) and float16 / long
    double become float32 / float64; other integer and float arrays pass through uncopied.
    """
    if img.dtype == np.bool_ or not (
        np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)
    ):
        raise TypeError(f"image must be an integer or float array, got {img.dtype}")
    if img.dtype == np.float16:
        return img.astype(np.float32)
    if np.issubdtype(img.dtype, np.floating) and img.dtype.itemsize > 8:
        return img.astype(np.float64)
    if not img.dtype.isnative:
        return img.astype(img.dtype.newbyteorder("="))
    return img


def _as_image_mask(image, mask) -> tuple[np.ndarray, np.ndarray]:
    """Return (image, boolean mask) as arrays of one 3D shape; ValueError otherwise."""
    img = np.asarray(image)
    msk = np.asarray(mask)
    if img.ndim != 3 or img.shape != msk.shape:
        raise ValueError(f"image {img.shape} and mask {msk.shape} must be 3D of the same shape")
    img = kernel_image(img)
    if msk.dtype != np.bool_:
        msk = msk != 0
    return img, msk


def _roi_range(img: np.ndarray, msk: np.ndarray) -> tuple[float, float]:
    """Return (min, max) of the ROI intensities as floats; ValueError if empty or non-finite."""
    values = img[msk]
    if values.size == 0:
        raise ValueError("the mask is empty: nothing to discretise")
    lo, hi = float(values.min()), float(values.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("the image has non-finite values (NaN or inf) inside the mask")
    return lo, hi


def fbn_parameters(lo: float, hi: float, n_bins: int) -> tuple[float, float, float, int]:
    """Return the kernel parameters (lo, num, den, n_levels) of IBSI fixed bin number."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if hi > lo:
        return lo, float(n_bins), hi - lo, int(n_bins)
    return lo, 0.0, 1.0, int(n_bins)  # constant ROI: every voxel gets level 1


def fbs_parameters(lo: float, hi: float, bin_size: float,
                   min_value: float | None) -> tuple[float, float, float, int]:
    """Return the kernel parameters (lo, num, den, n_levels) of IBSI fixed bin size."""
    if not (bin_size > 0 and math.isfinite(bin_size)):
        raise ValueError(f"bin_size must be a positive finite number, got {bin_size}")
    x0 = lo if min_value is None else float(min_value)
    if x0 > lo:
        raise ValueError(
            f"min_value {x0} is above the ROI minimum {lo}; re-segment the ROI to the range "
            "first (IBSI: min_value is the lower bound of the re-segmentation range)"
        )
    n_levels = int(math.floor((hi - x0) / bin_size)) + 1
    return x0, 1.0, float(bin_size), n_levels


def discretise_into(img: np.ndarray, msk: np.ndarray, params, pad: int, dtype) -> tuple:
    """Return (levels, histogram) discretising img inside msk with kernel ``params``.

    levels: (Z + 2 pad, Y + 2 pad, X + 2 pad) array of ``dtype``, 0 outside the mask;
    histogram: int64 (n_levels + 1,) voxel count per level (index 0 unused).
    """
    lo, num, den, n_levels = params
    shape = tuple(s + 2 * pad for s in img.shape)
    out = np.zeros(shape, dtype=dtype)
    hist = _fill_levels(img, msk, out, pad, lo, num, den, n_levels)
    return out, hist


def _info(method: str, n_levels: int, lo: float, hi: float, **extra) -> dict:
    return {"method": method, "n_levels": n_levels, "roi_min": lo, "roi_max": hi, **extra}


# --------------------------------------------------------------------------- public


def discretise_fixed_bin_number(image, mask, n_bins: int = 32) -> tuple[np.ndarray, dict]:
    """Return (levels, info): IBSI fixed-bin-number discretisation (K15C) of the ROI.

    ``image`` and ``mask`` are 3D arrays of one shape (mask: non-zero = ROI). ``levels`` is an
    int32 array of that shape with levels 1..n_bins inside the ROI (ROI max -> n_bins; a
    constant ROI -> 1) and 0 outside. ``info`` records method, n_bins, bin_size (None), the ROI
    min/max in image units and n_levels (= n_bins).
    """
    img, msk = _as_image_mask(image, mask)
    lo, hi = _roi_range(img, msk)
    params = fbn_parameters(lo, hi, int(n_bins))
    levels, _ = discretise_into(img, msk, params, 0, np.int32)
    return levels, _info("fixed_bin_number", params[3], lo, hi, n_bins=int(n_bins),
                         bin_size=None, min_value=lo)


def discretise_fixed_bin_size(image, mask, bin_size: float,
                              min_value: float | None = None) -> tuple[np.ndarray, dict]:
    """Return (levels, info): IBSI fixed-bin-size discretisation (Q3RU) of the ROI.

    Bins of width ``bin_size`` (image units) start at ``min_value`` (the re-segmentation lower
    bound; default the ROI minimum, which IBSI asks to report). ``levels``: int32, same shape,
    1.. inside the ROI and 0 outside. ``info`` records method, bin_size, min_value, the ROI
    min/max and n_levels (the level of the ROI maximum). ValueError if min_value exceeds the
    ROI minimum.
    """
    img, msk = _as_image_mask(image, mask)
    lo, hi = _roi_range(img, msk)
    params = fbs_parameters(lo, hi, float(bin_size), min_value)
    levels, _ = discretise_into(img, msk, params, 0, np.int32)
    return levels, _info("fixed_bin_size", params[3], lo, hi, n_bins=None,
                         bin_size=float(bin_size), min_value=params[0])


def padded_levels(levels, mask, n_levels: int) -> np.ndarray:
    """Return the ROI's levels cropped to the mask's bounding box and zero-padded by one voxel.

    ``levels``: integer 3D array (TypeError for float input), ``mask``: same shape (non-zero =
    ROI). Output dtype is :func:`level_dtype` (n_levels); voxels outside the mask are 0.
    ValueError if the mask is empty or a ROI level lies outside 1..n_levels.
    """
    lev = require_levels(levels)
    msk = np.asarray(mask)
    if lev.ndim != 3 or lev.shape != msk.shape:
        raise ValueError(f"levels {lev.shape} and mask {msk.shape} must be 3D of the same shape")
    if msk.dtype != np.bool_:
        msk = msk != 0
    box = bounding_box(msk)
    if box is None:
        raise ValueError("the mask is empty")
    lev, msk = lev[box], msk[box]
    inside = lev[msk]
    if inside.min() < 1 or inside.max() > n_levels:
        raise ValueError(
            f"ROI levels span {inside.min()}..{inside.max()}, outside 1..{n_levels}"
        )
    out = np.zeros(tuple(s + 2 for s in lev.shape), dtype=level_dtype(n_levels))
    out[1:-1, 1:-1, 1:-1][msk] = inside
    return out


def checked_padded(L: np.ndarray, n_levels: int | None = None) -> np.ndarray:
    """Return ``L`` as a C-contiguous unsigned level array the texture kernels may index.

    The kernels read without bounds checks, so this verifies what they rely on: 3D, unsigned,
    every level <= n_levels (when given) and a zero one-voxel border. ValueError otherwise.
    """
    if L.ndim != 3 or L.dtype.kind != "u" or min(L.shape) < 3:
        raise ValueError(f"expected a padded 3D unsigned level array, got {L.dtype} {L.shape}")
    L = np.ascontiguousarray(L)
    if n_levels is not None and int(L.max()) > n_levels:
        raise ValueError(f"levels up to {int(L.max())} exceed n_levels = {n_levels}")
    if L[[0, -1]].any() or L[:, [0, -1]].any() or L[:, :, [0, -1]].any():
        raise ValueError("the level array needs a zero border one voxel wide (padded_levels)")
    return L


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Return the slices of the smallest box holding every True voxel of a 3D bool mask.

    None for an empty mask. Cost: one pass over the mask plus one over its z-extent.
    """
    nz = mask.shape[0]
    zs = np.flatnonzero(mask.reshape(nz, -1).any(axis=1))
    if zs.size == 0:
        return None
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    yx = mask[z0:z1].any(axis=0)
    ys = np.flatnonzero(yx.any(axis=1))
    xs = np.flatnonzero(yx.any(axis=0))
    return slice(z0, z1), slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1)
