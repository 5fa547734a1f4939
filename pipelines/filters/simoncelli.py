"""Non-separable Simoncelli wavelets, undecimated (IBSI 2 manual, "non-separable
wavelets" and "decomposed non-separable wavelets"; phase 1 tests 8.a.1-8.a.3).

The band-pass filter is defined in the Fourier domain:

    psi_j(w) = cos(pi/2 log2(2 |w| / w_j))  for w_j / 4 <= |w| <= w_j,  0 elsewhere,
    w_j = 2^-(j-1)   (|w| = 1 is the Nyquist frequency),

on the centred frequency grid the IBSI 2 consensus maps use: along an axis of n voxels the
frequencies are (i - (n-1)/2) / ((n-1)/2), i = 0..n-1, i.e. exactly -1..1 (for even n this is
half a sample off the DFT grid; it reproduces 8.a.2 and 8.a.3 to 1e-5, the DFT grid does not).
The filter is isotropic, so it needs no rotation pooling. ``periodic`` boundaries filter the
volume as it is (the FFT's own circular boundary); other boundaries pad ``pad`` voxels per
side under the IBSI rule first.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from pipelines.exceptions import InputError
from pipelines.filters.padding import (
    PLANES,
    check_boundary,
    check_plane,
    check_positive,
    check_volume,
    pad,
)


def centred_frequencies(n: int) -> np.ndarray:
    """Return one axis's normalised frequencies in FFT order (1 = Nyquist), length n."""
    if n == 1:
        return np.zeros(1)
    c = (n - 1) / 2.0
    return sfft.ifftshift((np.arange(n) - c) / c)


def frequency_grids(shape, axes) -> list[np.ndarray]:
    """Return broadcastable normalised frequency grids (FFT order) for the given axes."""
    grids = []
    for a in axes:
        g = centred_frequencies(shape[a])
        view = [1] * len(shape)
        view[a] = shape[a]
        grids.append(g.reshape(view))
    return grids


def simoncelli_transfer(shape, level: int = 1, axes=(0, 1, 2)) -> np.ndarray:
    """Return the Simoncelli band-pass transfer function psi_level on a grid (FFT order)."""
    lev = check_positive(level, "Simoncelli level", integer=True)
    radius = np.sqrt(sum(g**2 for g in frequency_grids(shape, axes)))
    w = 2.0 ** -(lev - 1)
    out = np.zeros(np.broadcast_shapes(*[np.shape(radius)]))
    band = (radius >= w / 4) & (radius <= w)
    out[band] = np.cos(np.pi / 2 * np.log2(2 * radius[band] / w))
    return out


def fourier_filter(volume: np.ndarray, transfer, axes, boundary: str, pad_voxels) -> np.ndarray:
    """Return the real part of the volume filtered by ``transfer(shape)`` in the Fourier domain.

    transfer: a function of the (padded) shape returning the transfer function in FFT order;
    non-periodic boundaries pad ``pad_voxels`` per side of each filtered axis first.
    """
    check_boundary(boundary)
    if boundary == "periodic" or not pad_voxels:
        work, crop = volume, None
    else:
        widths = [(0, 0)] * 3
        for a in axes:
            widths[a] = (pad_voxels[a], pad_voxels[a])
        work = pad(volume, widths, boundary)
        crop = tuple(slice(w[0], w[0] + n) for w, n in zip(widths, volume.shape, strict=True))
    spec = sfft.fftn(work, axes=axes) * transfer(work.shape)
    out = sfft.ifftn(spec, axes=axes).real
    return out if crop is None else out[crop]


def filter_axes(plane: str | None) -> tuple[int, ...]:
    """Return the array axes a 3D (all) or 2D (in-plane) Fourier filter acts on."""
    if check_plane(plane) is None:
        return (0, 1, 2)
    return tuple(a for a in range(3) if a != PLANES[plane])


def default_pad(volume: np.ndarray, axes) -> tuple[int, int, int]:
    """Return the default padding per axis for non-periodic Fourier filtering: half the size."""
    return tuple(n // 2 if a in axes else 0 for a, n in enumerate(volume.shape))


def simoncelli_filter(volume: np.ndarray, level: int = 1, boundary: str = "periodic",
                      plane: str | None = None, pad_voxels=None) -> np.ndarray:
    """Return the Simoncelli band-pass response at a decomposition level.

    volume: (z, y, x); level: 1 = the highest band (Nyquist/4 .. Nyquist), each level halves it;
    plane: None (3D) or a 2D plane filtered slice by slice; pad_voxels: per-axis (z, y, x)
    padding for non-periodic boundaries (default half the size). Returns float64 (z, y, x).
    """
    vol = check_volume(volume)
    check_positive(level, "Simoncelli level", integer=True)
    axes = filter_axes(plane)
    if pad_voxels is None:
        pad_voxels = default_pad(vol, axes)
    elif len(tuple(pad_voxels)) != 3:
        raise InputError(f"pad_voxels must be three (z, y, x) voxel counts, got {pad_voxels!r}")
    return fourier_filter(vol, lambda s: simoncelli_transfer(s, level, axes), axes,
                          boundary, tuple(int(p) for p in pad_voxels))
