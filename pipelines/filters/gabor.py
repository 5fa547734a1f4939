"""Gabor filters, 2D in-plane, applied slice by slice (IBSI 2 manual, "Gabor kernels";
phase 1 tests 4.a and 4.b).

The kernel in a plane with in-plane coordinates (x, y) in mm is

    g(x, y) = exp(-(u^2 + gamma^2 v^2) / (2 sigma^2)) exp(2 pi i u / lambda),
    u = x cos(theta) + y sin(theta),  v = -x sin(theta) + y cos(theta),

unnormalised (an impulse of height h gives a modulus peak of h), as in the IBSI 2 consensus
maps. In the axial plane x is array axis 2 and y array axis 1 of a (z, y, x) volume; in the
coronal plane (x, z); in the sagittal plane (y, z). The kernel is cut at ``truncate`` times the
largest envelope width (sigma or sigma / gamma). The response is a complex convolution (by FFT
over the padded slice); ``response`` picks its modulus (IBSI 2), real or imaginary part.
Orientation pooling averages (or max-pools) the responses at theta0 + k delta_theta over a full
turn; ``planes`` averages over several planes (IBSI 2's 3D rotation invariance: axial, coronal,
sagittal).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from pipelines.exceptions import InputError
from pipelines.filters.padding import (
    PLANES,
    check_boundary,
    check_choice,
    check_plane,
    check_positive,
    check_spacing,
    check_volume,
    pad,
)
from pipelines.filters.rotation import POOLINGS, pool

RESPONSES = ("modulus", "real", "imaginary")


def plane_axes(plane: str) -> tuple[int, int]:
    """Return the array axes (x-like, y-like) of a 2D plane in a (z, y, x) volume."""
    slice_axis = PLANES[check_plane(plane)]
    a, b = [ax for ax in (2, 1, 0) if ax != slice_axis]
    return a, b


def gabor_kernel(sigma_mm: float, lambda_mm: float, gamma: float, theta: float,
                 spacing_xy=(1.0, 1.0), truncate: float = 4.0) -> np.ndarray:
    """Return the complex 2D Gabor kernel, shape (ny, nx) = (rows along y, columns along x).

    sigma_mm, lambda_mm: envelope width and wavelength in mm; gamma: spatial aspect ratio;
    theta: orientation in radians (counter-clockwise from x towards y); spacing_xy: (x, y) mm.
    """
    s = check_positive(sigma_mm, "Gabor sigma (mm)")
    lam = check_positive(lambda_mm, "Gabor lambda (mm)")
    g = check_positive(gamma, "Gabor gamma")
    t = check_positive(truncate, "Gabor truncation (sigmas)")
    dx, dy = (float(v) for v in spacing_xy)
    width = t * max(s, s / g)
    rx, ry = int(np.floor(width / dx + 0.5)), int(np.floor(width / dy + 0.5))
    y = np.arange(-ry, ry + 1)[:, None] * dy
    x = np.arange(-rx, rx + 1)[None, :] * dx
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    return np.exp(-(u**2 + g**2 * v**2) / (2 * s**2)) * np.exp(2j * np.pi * u / lam)


def gabor_plane(volume: np.ndarray, kernels, plane: str, boundary: str):
    """Yield the complex convolution of every slice of a (z, y, x) volume with each 2D kernel.

    kernels: equally shaped (ny, nx) kernels; the padded volume is transformed once.
    """
    kernels = list(kernels)
    ax_x, ax_y = plane_axes(plane)
    ny, nx = kernels[0].shape
    ry, rx = ny // 2, nx // 2
    widths = [(0, 0)] * 3
    widths[ax_x], widths[ax_y] = (rx, rx), (ry, ry)
    padded = pad(volume, widths, boundary)
    axes = (min(ax_x, ax_y), max(ax_x, ax_y))
    rows_first = ax_y < ax_x  # kernel rows run along ax_y, columns along ax_x
    fshape = [sfft.next_fast_len(padded.shape[a] + (ny if a == ax_y else nx) - 1)
              for a in axes]
    fv = sfft.fft2(padded, s=fshape, axes=axes)
    expand = tuple(slice(None) if a in axes else None for a in range(3))
    crop = [slice(None)] * 3
    crop[ax_x] = slice(2 * rx, 2 * rx + volume.shape[ax_x])
    crop[ax_y] = slice(2 * ry, 2 * ry + volume.shape[ax_y])
    for kernel in kernels:
        fk = sfft.fft2(kernel if rows_first else kernel.T, s=fshape)
        # the 'valid' part of the full linear convolution is the original grid
        yield sfft.ifft2(fv * fk[expand], axes=axes)[tuple(crop)]


def gabor_filter(volume: np.ndarray, sigma_mm: float, lambda_mm: float, gamma: float,
                 theta: float = 0.0, spacing=(1.0, 1.0, 1.0), boundary: str = "mirror",
                 delta_theta: float | None = None, pooling: str = "mean",
                 planes=("axial",), response: str = "modulus",
                 truncate: float = 4.0) -> np.ndarray:
    """Return the Gabor response of a volume, pooled over orientations and averaged over planes.

    volume: (z, y, x); sigma_mm, lambda_mm: mm; gamma: aspect ratio; theta: radians; spacing:
    (z, y, x) mm; delta_theta: None for the single orientation theta, else pool (``pooling``)
    over theta + k delta_theta, k = 0 .. 2 pi / delta_theta - 1; planes: the 2D planes whose
    responses are averaged (("axial",) for IBSI 2's 2D, all three for its 3D); response:
    modulus, real or imaginary. Returns float64 (z, y, x), intensity units.
    """
    vol = check_volume(volume)
    sp = check_spacing(spacing)
    check_boundary(boundary)
    check_choice(response, RESPONSES, "Gabor response")
    check_choice(pooling, POOLINGS, "pooling")
    if isinstance(planes, str):
        planes = (planes,)
    if not planes:
        raise InputError("Gabor planes must name at least one of axial, coronal, sagittal")
    for p in planes:
        check_plane(p)
    thetas = gabor_orientations(theta, delta_theta)
    per_plane = []
    for p in planes:
        ax_x, ax_y = plane_axes(p)
        kernels = [gabor_kernel(sigma_mm, lambda_mm, gamma, t, (sp[ax_x], sp[ax_y]), truncate)
                   for t in thetas]
        per_plane.append(pool((_part(r, response)
                               for r in gabor_plane(vol, kernels, p, boundary)), pooling))
    return pool(per_plane, "mean")


def gabor_orientations(theta: float, delta_theta: float | None) -> list[float]:
    """Return the orientations (radians) pooled: [theta], or a full turn in delta_theta steps."""
    try:
        theta = float(theta)
    except (TypeError, ValueError):
        raise InputError(f"Gabor theta must be an angle in radians, got {theta!r}") from None
    if delta_theta is None:
        return [theta]
    d = check_positive(delta_theta, "Gabor delta_theta (radians)")
    n = int(round(2 * np.pi / d))
    if n < 1 or not np.isclose(n * d, 2 * np.pi):
        raise InputError(f"Gabor delta_theta must divide a full turn (2 pi / n), got {d!r}")
    return [theta + k * d for k in range(n)]


def _part(z: np.ndarray, response: str) -> np.ndarray:
    if response == "modulus":
        return np.abs(z)
    return z.real if response == "real" else z.imag
