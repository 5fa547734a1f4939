"""Laws kernels (IBSI 2 manual, "Laws kernels"; phase 1 tests 3.a-3.c).

A kernel name is two (2D) or three (3D) one-dimensional kernels, e.g. ``E5L5S5``; its letters go
to the x, y and z directions in that order (x, y in-plane for 2D), i.e. to array axes 2, 1, 0 of a
(z, y, x) volume. The filter is a true convolution with the normalised kernels. Rotation
invariance takes the voxel-wise maximum (or mean) over the right-angle rotations of the kernel
(24 in 3D, 4 in-plane in 2D; duplicate rotated kernels are applied once). The energy map is the
mean of |response| over a (2 delta + 1) window with the same boundary condition.
"""

from __future__ import annotations

import re

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
from pipelines.filters.rotation import POOLINGS, pool, rotate_kernels, rotations_2d, rotations_3d

#: the normalised 1D Laws kernels of IBSI 2 (unit L2 norm)
KERNELS: dict[str, np.ndarray] = {
    "L3": np.array([1.0, 2.0, 1.0]) / np.sqrt(6.0),
    "E3": np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0),
    "S3": np.array([-1.0, 2.0, -1.0]) / np.sqrt(6.0),
    "L5": np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / np.sqrt(70.0),
    "E5": np.array([-1.0, -2.0, 0.0, 2.0, 1.0]) / np.sqrt(10.0),
    "S5": np.array([-1.0, 0.0, 2.0, 0.0, -1.0]) / np.sqrt(6.0),
    "W5": np.array([-1.0, 2.0, 0.0, -2.0, 1.0]) / np.sqrt(10.0),
    "R5": np.array([1.0, -4.0, 6.0, -4.0, 1.0]) / np.sqrt(70.0),
}

_TOKEN = re.compile(r"[LESWR][35]")


def parse_kernel_name(name: str) -> list[str]:
    """Return the 1D kernel names of a Laws kernel name ("E5L5S5" -> ["E5", "L5", "S5"])."""
    if not isinstance(name, str):
        raise InputError(f"Laws kernel must be a name such as 'E5L5S5', got {name!r}")
    tokens = _TOKEN.findall(name.upper())
    if "".join(tokens) != name.upper() or len(tokens) not in (2, 3):
        raise InputError(
            f"Laws kernel {name!r} is not 2 or 3 of {', '.join(KERNELS)} (e.g. 'L5S5', 'E5L5S5')"
        )
    unknown = [t for t in tokens if t not in KERNELS]
    if unknown:
        raise InputError(f"Laws kernel {name!r}: unknown 1D kernel(s) {unknown}; "
                         f"use {', '.join(KERNELS)}")
    return tokens


def laws_axis_kernels(name: str, plane: str | None = None) -> tuple[np.ndarray, ...]:
    """Return the per-axis (z, y, x) 1D kernels of a Laws kernel ([1] on the off-plane axis)."""
    tokens = parse_kernel_name(name)
    if len(tokens) == 3:
        if plane is not None:
            raise InputError(f"Laws kernel {name!r} is 3D: use a 2-letter kernel for a 2D plane")
        return (KERNELS[tokens[2]], KERNELS[tokens[1]], KERNELS[tokens[0]])
    if plane is None:
        raise InputError(f"Laws kernel {name!r} is 2D: give plane='axial' (or coronal, sagittal)")
    slice_axis = PLANES[check_plane(plane)]
    in_plane = [a for a in (2, 1, 0) if a != slice_axis]  # x before y before z
    kernels = [np.ones(1), np.ones(1), np.ones(1)]
    for token, axis in zip(tokens, in_plane, strict=True):
        kernels[axis] = KERNELS[token]
    return tuple(kernels)


def separable_convolve(volume: np.ndarray, kernels, mode: str) -> np.ndarray:
    """Return the volume convolved with one 1D kernel per (z, y, x) axis (length-1 skipped)."""
    out = volume
    for axis, k in enumerate(kernels):
        if len(k) > 1 or k[0] != 1.0:
            out = ndimage.convolve1d(out, k, axis=axis, mode=mode)
    return out


def laws_filter(volume: np.ndarray, kernel: str, boundary: str = "mirror",
                rotation_invariant: bool = False, pooling: str = "max",
                energy_delta: int | None = None, plane: str | None = None) -> np.ndarray:
    """Return the Laws kernel response (or its energy map) of a volume.

    volume: (z, y, x); kernel: e.g. "E5L5S5" (3D) or "L5S5" with plane="axial" (2D);
    rotation_invariant: pool over right-angle kernel rotations with ``pooling`` (max, mean, min);
    energy_delta: None for the raw response, else the energy map's half-width in voxels (IBSI 2
    uses 7: a 15-voxel window). Returns float64 (z, y, x), intensity units.
    """
    vol = check_volume(volume)
    base = laws_axis_kernels(kernel, plane)
    mode = ndimage_mode(check_boundary(boundary))
    if pooling not in POOLINGS:
        raise InputError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    if rotation_invariant:
        rots = rotations_3d() if plane is None else rotations_2d(PLANES[plane])
        kernel_sets = [rotate_kernels(base, r) for r in rots]
        if pooling != "mean":  # max / min: a duplicate rotated kernel changes nothing
            kernel_sets = unique_kernel_sets(kernel_sets)
        response = pool((separable_convolve(vol, ks, mode) for ks in kernel_sets), pooling)
    else:
        response = separable_convolve(vol, base, mode)
    if energy_delta is None:
        return response
    return laws_energy(response, energy_delta, boundary, plane)


def laws_energy(response: np.ndarray, delta: int, boundary: str = "mirror",
                plane: str | None = None) -> np.ndarray:
    """Return the energy map: mean |response| over a (2 delta + 1) window, (z, y, x)."""
    d = check_positive(delta, "Laws energy delta (voxels)", integer=True)
    size = [2 * d + 1] * 3
    if plane is not None:
        size[PLANES[check_plane(plane)]] = 1
    return ndimage.uniform_filter(np.abs(response), size=size,
                                  mode=ndimage_mode(check_boundary(boundary)))


def unique_kernel_sets(kernel_sets) -> list[tuple[np.ndarray, ...]]:
    """Return the separable kernel sets whose full (outer-product) kernels differ."""
    seen: list[np.ndarray] = []
    out = []
    for ks in kernel_sets:
        full = np.einsum("i,j,k->ijk", *ks)
        if not any(f.shape == full.shape and np.allclose(f, full) for f in seen):
            seen.append(full)
            out.append(ks)
    return out
