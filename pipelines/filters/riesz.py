"""Riesz transforms of filter responses (IBSI 2 manual, "Riesz transform"; phase 1 tests
9.a, 9.b.1 and 10.b.1 only: the steered variants 9.b.2, 10.a, 10.b.2 have no consensus map).

The Riesz transform of order l = (l_x, l_y, l_z), L = l_x + l_y + l_z, has transfer function

    R_l(w) = (-i)^L sqrt(L! / (l_x! l_y! l_z!)) w_x^l_x w_y^l_y w_z^l_z / |w|^L   (0 at w = 0),

with x, y, z the array axes 2, 1, 0 of a (z, y, x) volume. ``riesz_log`` applies it to a LoG
response on the DFT frequency grid after padding (tests 9.a, 9.b.1); ``riesz_simoncelli``
multiplies it into the Simoncelli transfer function on that filter's grid (test 10.b.1; its
consensus map is reproduced with nearest padding, not zero). R_l is Hermitian for every order
(except on the Nyquist bin of an even-sized axis for odd orders), so the response of a real
volume is real; taking the real part drops FFT round-off and that one bin.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft

from pipelines.exceptions import InputError
from pipelines.filters.log import log_filter
from pipelines.filters.padding import check_boundary, check_volume
from pipelines.filters.simoncelli import (
    default_pad,
    fourier_filter,
    frequency_grids,
    simoncelli_transfer,
)


def check_order(order) -> tuple[int, int, int]:
    """Return a Riesz order (l_x, l_y, l_z) as three non-negative ints, not all zero."""
    try:
        o = tuple(int(v) for v in order)
    except (TypeError, ValueError):
        raise InputError(
            f"Riesz order must be three integers (l_x, l_y, l_z), got {order!r}"
        ) from None
    if len(o) != 3 or min(o) < 0 or sum(o) == 0 or any(int(v) != v for v in order):
        raise InputError(f"Riesz order must be three non-negative integers (l_x, l_y, l_z), "
                         f"not all zero, e.g. (1, 0, 0); got {order!r}")
    return o


def riesz_transfer(grids_zyx, order) -> np.ndarray:
    """Return the Riesz transfer function on broadcastable (z, y, x) frequency grids."""
    lx, ly, lz = check_order(order)
    total = lx + ly + lz
    wz, wy, wx = grids_zyx
    norm = np.sqrt(wz**2 + wy**2 + wx**2)
    coef = (-1j) ** total * math.sqrt(
        math.factorial(total) / (math.factorial(lx) * math.factorial(ly) * math.factorial(lz))
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        h = coef * wx**lx * wy**ly * wz**lz / norm**total
    return np.where(norm > 0, h, 0.0)


def dft_grids(shape) -> list[np.ndarray]:
    """Return broadcastable DFT frequency grids (radians per voxel, FFT order), (z, y, x)."""
    out = []
    for a, n in enumerate(shape):
        view = [1, 1, 1]
        view[a] = n
        out.append((2 * np.pi * sfft.fftfreq(n)).reshape(view))
    return out


def riesz_transform(volume: np.ndarray, order, boundary: str = "zero",
                    pad_voxels=None) -> np.ndarray:
    """Return the real part of the Riesz transform of a (z, y, x) volume (float64, same units).

    boundary and pad_voxels (z, y, x per side; default half the size) set the padding before
    the FFT; periodic uses none.
    """
    vol = check_volume(volume)
    check_boundary(boundary)
    axes = (0, 1, 2)
    pads = default_pad(vol, axes) if pad_voxels is None else tuple(int(p) for p in pad_voxels)
    return fourier_filter(vol, lambda s: riesz_transfer(dft_grids(s), order), axes,
                          boundary, pads)


def riesz_log(volume: np.ndarray, sigma_mm: float, order, spacing=(1.0, 1.0, 1.0),
              truncate: float = 4.0, boundary: str = "zero", pad_voxels=None) -> np.ndarray:
    """Return the Riesz transform (order (l_x, l_y, l_z)) of the 3D LoG response, (z, y, x)."""
    response = log_filter(volume, sigma_mm, spacing, truncate, boundary)
    return riesz_transform(response, order, boundary, pad_voxels)


def riesz_simoncelli(volume: np.ndarray, level: int, order, boundary: str = "periodic",
                     pad_voxels=None) -> np.ndarray:
    """Return the Riesz transform (order (l_x, l_y, l_z)) of the 3D Simoncelli band, (z, y, x).

    Both transfer functions are taken on the Simoncelli filter's centred frequency grid.
    """
    vol = check_volume(volume)
    check_order(order)
    axes = (0, 1, 2)
    pads = default_pad(vol, axes) if pad_voxels is None else tuple(int(p) for p in pad_voxels)

    def transfer(shape):
        return simoncelli_transfer(shape, level, axes) * riesz_transfer(
            frequency_grids(shape, axes), order)

    return fourier_filter(vol, transfer, axes, boundary, pads)
