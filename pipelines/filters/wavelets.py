"""Separable wavelets, undecimated (IBSI 2 manual, "separable wavelets" and "decomposed
separable wavelets"; phase 1 tests 5.a, 6.a, 7.a).

The filters are PyWavelets' decomposition filters (``dec_lo`` for L, ``dec_hi`` for H) applied as
true convolutions with no shift (scipy ``convolve1d``, origin 0; an even-length filter is centred
as if a trailing zero made it odd). A sub-band name has one letter per direction in the order x,
y, z (x, y in-plane for 2D), i.e. array axes 2, 1, 0 of a (z, y, x) volume. Level j is the
stationary (a trous) transform: the all-L sub-band of levels 1..j-1, then the requested
sub-band with the filters dilated by 2^(j-1) (zeros inserted between taps). Rotation invariance
averages (or max-pools) over the right-angle rotations of the whole filter chain.
"""

from __future__ import annotations

import numpy as np
import pywt

from pipelines.exceptions import InputError
from pipelines.filters.laws import separable_convolve
from pipelines.filters.padding import (
    PLANES,
    check_boundary,
    check_plane,
    check_positive,
    check_volume,
    ndimage_mode,
)
from pipelines.filters.rotation import POOLINGS, pool, rotate_kernels, rotations_2d, rotations_3d

#: PyWavelets families accepted: Haar, Daubechies, Coiflet (and Symlets, same construction)
FAMILIES = ("haar", "db", "coif", "sym")

Stage = tuple[np.ndarray, np.ndarray, np.ndarray]


def wavelet_filters(wavelet: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the (low-pass, high-pass) decomposition filters of a PyWavelets wavelet name."""
    try:
        w = pywt.Wavelet(str(wavelet))
    except ValueError:
        raise InputError(
            f"unknown wavelet {wavelet!r}: use a PyWavelets name such as 'haar', 'db2', 'db3', "
            "'coif1'"
        ) from None
    if w.family_name.lower().split()[0] not in ("haar", "daubechies", "coiflets", "symlets"):
        raise InputError(f"wavelet {wavelet!r} ({w.family_name}) is not Haar, Daubechies, "
                         "Coiflet or Symlet")
    return np.asarray(w.dec_lo, dtype=float), np.asarray(w.dec_hi, dtype=float)


def _odd(k: np.ndarray) -> np.ndarray:
    """Return a filter of odd length with the same scipy centring (trailing zero if even)."""
    return np.append(k, 0.0) if len(k) % 2 == 0 else k


def _dilate(k: np.ndarray, factor: int) -> np.ndarray:
    """Return an odd-length filter with factor - 1 zeros inserted between its taps."""
    if factor == 1:
        return k
    out = np.zeros((len(k) - 1) * factor + 1)
    out[::factor] = k
    return out


def check_subband(subband: str, plane: str | None) -> str:
    """Return the upper-case sub-band name, checked against the dimensionality."""
    sb = str(subband).upper()
    n = 3 if plane is None else 2
    if len(sb) != n or set(sb) - {"L", "H"}:
        raise InputError(
            f"sub-band {subband!r} must be {n} letters of L and H "
            f"({'e.g. LHL for 3D' if n == 3 else 'e.g. LH for a 2D plane'}), order x, y"
            + (", z" if n == 3 else "")
        )
    return sb


def wavelet_stages(wavelet: str, subband: str, level: int = 1,
                   plane: str | None = None) -> list[Stage]:
    """Return the separable filter stages of an undecimated sub-band, each (z, y, x) kernels."""
    lo, hi = (_odd(k) for k in wavelet_filters(wavelet))
    sb = check_subband(subband, plane)
    lev = check_positive(level, "wavelet level", integer=True)
    slice_axis = None if check_plane(plane) is None else PLANES[plane]
    axes = [a for a in (2, 1, 0) if a != slice_axis]  # x, y, z order
    stages = []
    for j in range(1, lev + 1):
        letters = sb if j == lev else "L" * len(sb)
        ks = [np.ones(1), np.ones(1), np.ones(1)]
        for letter, axis in zip(letters, axes, strict=True):
            ks[axis] = _dilate(lo if letter == "L" else hi, 2 ** (j - 1))
        stages.append(tuple(ks))
    return stages


def wavelet_filter(volume: np.ndarray, wavelet: str, subband: str, level: int = 1,
                   boundary: str = "mirror", rotation_invariant: bool = False,
                   pooling: str = "mean", plane: str | None = None) -> np.ndarray:
    """Return one undecimated separable-wavelet sub-band of a volume.

    volume: (z, y, x); wavelet: PyWavelets name (haar, db2, db3, coif1, ...); subband: letters L/H
    in x, y(, z) order; level: decomposition level (1 = no decomposition); plane: None (3D) or a 2D
    plane filtered slice by slice; rotation_invariant: pool over right-angle rotations with
    ``pooling`` (IBSI 2 uses the mean). Returns float64 (z, y, x), intensity units.
    """
    vol = check_volume(volume)
    stages = wavelet_stages(wavelet, subband, level, plane)
    mode = ndimage_mode(check_boundary(boundary))
    if pooling not in POOLINGS:
        raise InputError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    if not rotation_invariant:
        return _apply(vol, stages, mode)
    rots = rotations_3d() if plane is None else rotations_2d(PLANES[plane])
    chains = [[rotate_kernels(st, r) for st in stages] for r in rots]
    return pool((_apply(vol, ch, mode) for ch in chains), pooling)


def _apply(volume: np.ndarray, stages: list[Stage], mode: str) -> np.ndarray:
    out = volume
    for st in stages:
        out = separable_convolve(out, st, mode)
    return out


def all_subbands(plane: str | None = None) -> list[str]:
    """Return every sub-band name of one level: 8 in 3D (LLL..HHH), 4 in 2D (LL..HH)."""
    n = 3 if plane is None else 2
    return ["".join("LH"[(i >> (n - 1 - b)) & 1] for b in range(n)) for i in range(2 ** n)]
