"""Pseudo-rotation invariance: pooling a filter's responses over right-angle rotations
(IBSI 2 manual, "rotation invariance").

A rotation of a (z, y, x) volume is a signed permutation of its axes with determinant +1:
24 in 3D, 4 in a 2D plane. Filtering the rotated image and rotating the response back equals
filtering with the rotated kernel; for separable kernels the rotated kernel is again separable
(per-axis kernels permuted and reversed), which is how Laws kernels and wavelets use it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from pipelines.filters.padding import check_choice

POOLINGS = ("max", "mean", "min")

#: a rotation: ``perm[a]`` is the source axis of output axis a, ``flip[a]`` reverses it
Rotation = tuple[tuple[int, int, int], tuple[bool, bool, bool]]


def rotations_3d() -> list[Rotation]:
    """Return the 24 proper right-angle rotations of 3D space as (perm, flip), identity first."""
    out = []
    for perm in itertools.permutations(range(3)):
        parity = _perm_sign(perm)
        for flip in itertools.product((False, True), repeat=3):
            if parity * (-1) ** sum(flip) == 1:
                out.append((perm, flip))
    out.sort(key=lambda r: (r != ((0, 1, 2), (False, False, False))))
    return out


def rotations_2d(slice_axis: int = 0) -> list[Rotation]:
    """Return the 4 in-plane right-angle rotations of the plane orthogonal to ``slice_axis``."""
    a, b = [ax for ax in range(3) if ax != slice_axis]
    ident = [0, 1, 2]
    swapped = list(ident)
    swapped[a], swapped[b] = b, a
    out = []
    for k in range(4):
        perm = tuple(swapped) if k % 2 else tuple(ident)
        flip = [False, False, False]
        if k == 1:
            flip[a] = True
        elif k == 2:
            flip[a] = flip[b] = True
        elif k == 3:
            flip[b] = True
        out.append((perm, tuple(flip)))
    return out


def _perm_sign(perm) -> int:
    sign, p = 1, list(perm)
    for i in range(len(p)):
        while p[i] != i:
            j = p[i]
            p[i], p[j] = p[j], p[i]
            sign = -sign
    return sign


def rotate_kernels(kernels, rotation: Rotation) -> tuple[np.ndarray, ...]:
    """Return the per-axis 1D kernels of a separable kernel rotated by ``rotation``.

    kernels: three 1D arrays, one per array axis (z, y, x), each of odd length (centre = middle).
    """
    perm, flip = rotation
    return tuple(
        kernels[perm[a]][::-1] if flip[a] else kernels[perm[a]] for a in range(3)
    )


def rotate_volume(volume: np.ndarray, rotation: Rotation) -> np.ndarray:
    """Return the (z, y, x) volume rotated by ``rotation`` (axes permuted, then reversed)."""
    perm, flip = rotation
    out = np.transpose(volume, perm)
    return np.flip(out, [a for a in range(3) if flip[a]]) if any(flip) else out


def unrotate_volume(volume: np.ndarray, rotation: Rotation) -> np.ndarray:
    """Return the volume rotated back: the inverse of ``rotate_volume``."""
    perm, flip = rotation
    out = np.flip(volume, [a for a in range(3) if flip[a]]) if any(flip) else volume
    return np.transpose(out, np.argsort(perm))


def pool(responses, pooling: str) -> np.ndarray:
    """Return the voxel-wise max, mean or min of an iterable of equally shaped responses."""
    check_choice(pooling, POOLINGS, "pooling")
    acc, n = None, 0
    for r in responses:
        n += 1
        if acc is None:
            acc = np.array(r, dtype=np.float64, copy=True)
        elif pooling == "max":
            np.maximum(acc, r, out=acc)
        elif pooling == "min":
            np.minimum(acc, r, out=acc)
        else:
            acc += r
    return acc / n if pooling == "mean" else acc


def pooled_over_rotations(volume: np.ndarray, apply: Callable[[np.ndarray], np.ndarray],
                          rotations: list[Rotation], pooling: str) -> np.ndarray:
    """Return ``apply`` pooled over rotations of the image (rotate, filter, rotate back)."""
    return pool(
        (unrotate_volume(apply(rotate_volume(volume, r)), r) for r in rotations), pooling
    )
