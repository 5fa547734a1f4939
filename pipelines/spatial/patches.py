"""Pure patch functions (seed 004): world mm -> voxel index, per-patient intensity
normalisation, in-plane patches around biopsy sites, and dihedral augmentation.

Conventions: volumes are stacks ``(C, z, y, x)`` float32 of co-registered sequences on the
lake's grid (1 mm isotropic by default). A patch is in-plane: ``(C * (2a + 1), 2r + 1, 2r + 1)``
for radius ``r`` (voxels) and ``a`` adjacent slices on each side, channels ordered
sequence-major (``T1@z-1, T1@z+0, T1@z+1, T1Gd@z-1, ...``), rows = y, columns = x. The seed's
17 x 17 x 9 input is ``r = 8, a = 0``; its 17 x 17 x 27 alternative is ``a = 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pipelines.exceptions import InputError

__all__ = [
    "BRAIN_FRACTION",
    "NORMALISATIONS",
    "brain_mask",
    "channel_names",
    "check_sites",
    "dihedral",
    "extract_patches",
    "nearest_voxel",
    "normalise_volume",
    "random_dihedral",
    "stack_volume",
    "world_to_index",
]

#: a site is "outside the brain" when the reference sequence there is below this fraction of
#: the reference's 99th percentile (background is Rician noise near 0 after min-max scaling)
BRAIN_FRACTION = 0.1

#: per-patient normalisations: none (the lake's [0, 1] min-max), or a robust z-score of each
#: sequence over the patient's brain, (value - median) / IQR
NORMALISATIONS = ("none", "brain-zscore")


# --------------------------------------------------------------------------- geometry


def world_to_index(points_xyz, world_to_voxel) -> np.ndarray:
    """Return continuous array indices (n, 3) ``(z, y, x)`` of world points (n, 3) ``(x, y, z)``.

    ``points_xyz``: LPS world coordinates in mm; ``world_to_voxel``: the volume's 4x4 matrix
    (attribute ``world_to_voxel``) mapping ``(x, y, z, 1)`` to ``(z, y, x, 1)``. Voxel centres sit
    at integer indices.
    """
    p = np.atleast_2d(np.asarray(points_xyz, dtype=float))
    m = np.asarray(world_to_voxel, dtype=float)
    if p.shape[1] != 3 or m.shape != (4, 4):
        raise InputError(f"need (n, 3) points and a 4x4 matrix, got {p.shape} and {m.shape}")
    homo = np.concatenate([p, np.ones((len(p), 1))], axis=1)
    return (homo @ m.T)[:, :3]


def nearest_voxel(index_zyx) -> np.ndarray:
    """Return the integer voxel (n, 3) ``(z, y, x)`` containing each continuous index
    (round half up, so a point on a boundary goes to the higher voxel on every axis)."""
    return np.floor(np.asarray(index_zyx, dtype=float) + 0.5).astype(np.int64)


# --------------------------------------------------------------------------- intensities


def brain_mask(reference: np.ndarray, fraction: float = BRAIN_FRACTION) -> np.ndarray:
    """Return a boolean (z, y, x) mask of voxels above ``fraction`` of the reference's 99th
    percentile: a crude head/brain mask, enough to tell tissue from background."""
    ref = np.asarray(reference, dtype=np.float32)
    return ref > fraction * float(np.percentile(ref, 99))


def normalise_volume(images: Mapping[str, np.ndarray], method: str = "brain-zscore",
                     region: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Return each sequence normalised per patient (float32, same shapes).

    ``method``: "none" returns the arrays unchanged (the lake's [0, 1] min-max scaling);
    "brain-zscore" maps each sequence to (value - median) / IQR over ``region`` (boolean
    (z, y, x); default :func:`brain_mask` of the first sequence), so that a patient's normal
    tissue sits near 0 whatever the scanner gain or hot voxels that drove the min-max scaling.
    A sequence with zero IQR in the region is only centred.
    """
    if method not in NORMALISATIONS:
        raise InputError(f"normalisation must be one of {NORMALISATIONS}, got {method!r}")
    out = {k: np.asarray(v, dtype=np.float32) for k, v in images.items()}
    if method == "none" or not out:
        return out
    if region is None:
        region = brain_mask(next(iter(out.values())))
    region = np.asarray(region, dtype=bool)
    if not region.any():
        raise InputError("normalisation region is empty (is the reference image blank?)")
    for k, v in out.items():
        q25, q50, q75 = np.percentile(v[region], [25, 50, 75])
        scale = q75 - q25 if q75 > q25 else 1.0
        out[k] = ((v - np.float32(q50)) / np.float32(scale)).astype(np.float32)
    return out


def stack_volume(images: Mapping[str, np.ndarray], sequences: Sequence[str]) -> np.ndarray:
    """Return the sequences stacked as a (C, z, y, x) float32 array in the given order."""
    missing = [s for s in sequences if s not in images]
    if missing:
        raise InputError(f"volume lacks sequence(s) {missing}; it has {sorted(images)}")
    shapes = {images[s].shape for s in sequences}
    if len(shapes) != 1:
        raise InputError(f"sequences are not on one grid: shapes {sorted(shapes)}")
    return np.stack([np.asarray(images[s], dtype=np.float32) for s in sequences])


def channel_names(sequences: Sequence[str], adjacent: int = 0) -> list[str]:
    """Return the channel names of a patch, e.g. ``["T1@z+0", ...]`` or with ``adjacent=1``
    ``["T1@z-1", "T1@z+0", "T1@z+1", "T1Gd@z-1", ...]``."""
    return [f"{s}@z{d:+d}" for s in sequences for d in range(-adjacent, adjacent + 1)]


# --------------------------------------------------------------------------- patches


def check_sites(centres_zyx, shape_zyx, ids: Sequence[str], radius: int = 8, adjacent: int = 0,
                reference: np.ndarray | None = None, brain_fraction: float = BRAIN_FRACTION,
                points_xyz=None) -> None:
    """Raise InputError naming the first biopsy whose patch cannot be cut.

    A site fails when its voxel ``centres_zyx`` (n, 3 int) is outside the volume of shape
    ``shape_zyx``, when the patch (``radius`` in-plane, ``adjacent`` slices) would extend past
    the volume, or, given ``reference`` (a (z, y, x) sequence such as T1), when the reference at
    the site is below ``brain_fraction`` of its 99th percentile (outside the brain).
    ``points_xyz`` (world mm), when given, is quoted in the message.
    """
    c = np.asarray(centres_zyx, dtype=np.int64).reshape(-1, 3)
    shape = np.asarray(shape_zyx, dtype=np.int64)
    reach = np.array([adjacent, radius, radius])
    dims = tuple(int(v) for v in shape)
    thresh = None
    if reference is not None:
        thresh = brain_fraction * float(np.percentile(reference, 99))
    for i, v in enumerate(c):
        where = f"biopsy {ids[i]}"
        if points_xyz is not None:
            x, y, z = np.asarray(points_xyz, dtype=float)[i]
            where += f" at ({x:.1f}, {y:.1f}, {z:.1f}) mm"
        where += f", voxel (z, y, x) = ({v[0]}, {v[1]}, {v[2]})"
        if np.any(v < 0) or np.any(v >= shape):
            raise InputError(f"{where} is outside the volume of shape {dims}; check the "
                             "biopsy coordinates are LPS mm in this patient's image space")
        if np.any(v - reach < 0) or np.any(v + reach >= shape):
            raise InputError(
                f"{where}: the {2 * radius + 1} x {2 * radius + 1} patch"
                + (f" with {adjacent} adjacent slice(s)" if adjacent else "")
                + f" extends outside the volume of shape {dims}; the site is too close "
                "to the edge (use a smaller radius or drop the biopsy)")
        if thresh is not None and reference[tuple(v)] <= thresh:
            raise InputError(
                f"{where} is outside the brain (reference intensity "
                f"{float(reference[tuple(v)]):.3f} <= {thresh:.3f}); check the coordinates "
                "and the registration")


def extract_patches(stack: np.ndarray, centres_zyx, radius: int = 8,
                    adjacent: int = 0) -> np.ndarray:
    """Return patches (n, C * (2 * adjacent + 1), 2r + 1, 2r + 1) float32 around voxel centres.

    ``stack``: (C, z, y, x); ``centres_zyx``: (n, 3) int voxel indices whose patches fit inside
    the volume (see :func:`check_sites`; this function does not pad). Patch ``[k, c, i, j]`` is
    ``stack[s, z + d, y - r + i, x - r + j]`` with channel ``c = s * (2a + 1) + (d + a)``.
    """
    st = np.asarray(stack, dtype=np.float32)
    if st.ndim != 4:
        raise InputError(f"stack must be (C, z, y, x), got shape {st.shape}")
    c = np.asarray(centres_zyx, dtype=np.int64).reshape(-1, 3)
    r, a = int(radius), int(adjacent)
    if r < 0 or a < 0:
        raise InputError(f"radius and adjacent must be >= 0, got {radius}, {adjacent}")
    n_ch, side = st.shape[0] * (2 * a + 1), 2 * r + 1
    out = np.empty((len(c), n_ch, side, side), dtype=np.float32)
    for k, (z, y, x) in enumerate(c):
        block = st[:, z - a:z + a + 1, y - r:y + r + 1, x - r:x + r + 1]
        if block.shape[1:] != (2 * a + 1, side, side) or min(z - a, y - r, x - r) < 0:
            raise InputError(f"patch at voxel ({z}, {y}, {x}) extends outside the volume "
                             f"{st.shape[1:]}")
        out[k] = block.reshape(n_ch, side, side)
    return out


# --------------------------------------------------------------------------- augmentation


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """Return ``x`` (..., H, W) under dihedral transform ``k`` in 0..7: rotation by
    ``(k % 4) * 90`` degrees in the (H, W) plane, then a left-right flip when ``k >= 4``.
    The eight transforms are the square's symmetries; ``k = 0`` is the identity. The centre
    pixel of an odd-sized patch never moves."""
    if not 0 <= int(k) < 8:
        raise InputError(f"dihedral transform index must be in 0..7, got {k}")
    out = np.rot90(x, int(k) % 4, axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def random_dihedral(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a copy of ``batch`` (n, C, H, W) with one random dihedral transform (90-degree
    rotations and flips, uniform over the 8) drawn per sample from ``rng``. The same rotation is
    applied to every channel of a sample, so sequences and adjacent slices stay aligned."""
    b = np.asarray(batch)
    ks = rng.integers(0, 8, size=len(b))
    out = np.empty_like(b)
    for k in np.unique(ks):
        sel = ks == k
        out[sel] = dihedral(b[sel], int(k))
    return out
