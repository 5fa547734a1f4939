"""Image preprocessing before the lake: geometry checks, resampling and intensity normalisation.

Each step is a small function; the ingest stage records the parameters of every step it applies
in the volume's attributes and the run log, so the preprocessing can be repeated exactly.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from pipelines.exceptions import InputError


def same_physical_space(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> str | None:
    """Return None if two images share one voxel grid in physical space, else what differs.

    Compared: size, spacing (relative tol), origin (tol in mm, scaled by spacing) and direction.
    """
    if a.GetSize() != b.GetSize():
        return f"size {b.GetSize()} differs from the image's {a.GetSize()}"
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if not np.allclose(sa, sb, rtol=tol, atol=0):
        return f"spacing {tuple(sb.round(4))} mm differs from the image's {tuple(sa.round(4))} mm"
    oa, ob = np.array(a.GetOrigin()), np.array(b.GetOrigin())
    if np.max(np.abs(oa - ob)) > tol * max(1.0, float(sa.max())) * 10:
        return f"origin {tuple(ob.round(3))} mm differs from the image's {tuple(oa.round(3))} mm"
    da, db = np.array(a.GetDirection()), np.array(b.GetDirection())
    if np.max(np.abs(da - db)) > tol:
        return "direction (orientation) differs from the image's"
    return None


def isotropic_grid(img: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Return an empty reference image on an isotropic grid covering `img`'s physical extent.

    Same origin corner and direction; size = ceil(extent / spacing). The first voxel's centre is
    placed so that the new grid's outer boundary starts where the old one does.
    """
    old_sp = np.array(img.GetSpacing(), dtype=float)
    old_size = np.array(img.GetSize(), dtype=float)
    extent = old_sp * old_size
    new_size = [max(1, math.ceil(e / spacing_mm - 1e-6)) for e in extent]
    direction = np.array(img.GetDirection()).reshape(3, 3)
    # outer corner of the old grid, then half a new voxel inwards
    corner = np.array(img.GetOrigin()) - direction @ (old_sp / 2)
    new_origin = corner + direction @ np.full(3, spacing_mm / 2)
    ref = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    ref.SetSpacing([spacing_mm] * 3)
    ref.SetOrigin([float(v) for v in new_origin])
    ref.SetDirection(img.GetDirection())
    return ref


def resample_onto(img: sitk.Image, reference: sitk.Image, kind: str) -> sitk.Image:
    """Return `img` resampled onto `reference`'s grid.

    kind "image": linear interpolation to float32; kind "mask": nearest neighbour, uint8.
    Outside the source image the value is 0.
    """
    if kind == "image":
        return sitk.Resample(
            sitk.Cast(img, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear,
            0.0, sitk.sitkFloat32,
        )
    if kind == "mask":
        return sitk.Resample(
            sitk.Cast(img, sitk.sitkUInt8), reference, sitk.Transform(),
            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8,
        )
    raise ValueError(f"unknown resampling kind {kind!r}")


def normalise_unit_range(
    arr: np.ndarray, clip_percentiles: tuple[float, float] | None = None
) -> tuple[np.ndarray, dict]:
    """Return the volume scaled to [0, 1] (float32) and the parameters used.

    Default (the paper's, seed 000 section 2.1): min-max over the whole volume. With
    `clip_percentiles=(lo, hi)`: the lo/hi percentiles of the non-zero voxels are mapped to 0/1 and
    values outside are clipped (robust to hot voxels).
    """
    a = np.asarray(arr, dtype=np.float32)
    if clip_percentiles is None:
        low, high = float(a.min()), float(a.max())
        method = "minmax"
    else:
        fg = a[a != 0]
        fg = fg if fg.size else a.ravel()
        low, high = (float(v) for v in np.percentile(fg, clip_percentiles))
        method = "percentile"
    scale = high - low
    if scale <= 0:
        out = np.zeros_like(a)
    else:
        out = np.clip((a - low) / scale, 0.0, 1.0).astype(np.float32)
    params = {"method": method, "low": low, "high": high}
    if clip_percentiles is not None:
        params["percentiles"] = list(clip_percentiles)
    return out, params


def binary_mask(arr: np.ndarray, label: int | None, where: str) -> np.ndarray:
    """Return the ROI of a label image as a boolean array.

    With label None the mask must hold only 0 and 1; otherwise voxels equal to `label` are the
    ROI. Raises InputError naming `where` for other labels or an empty ROI.
    """
    values = np.unique(arr)
    if label is None:
        extra = [v for v in values.tolist() if v not in (0, 1)]
        if extra:
            shown = ", ".join(str(v) for v in extra[:6])
            raise InputError(
                f"{where}: mask has labels other than 0/1 ({shown}); choose the ROI with --label"
            )
        roi = arr == 1
    else:
        if label not in values:
            raise InputError(f"{where}: mask has no voxel with label {label}")
        roi = arr == label
    if not roi.any():
        raise InputError(f"{where}: mask is empty (no ROI voxel)")
    return roi


def check_finite(arr: np.ndarray, where: str) -> None:
    """Raise InputError naming `where` if the array holds NaN or infinite voxels."""
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            n = int(bad.sum())
            raise InputError(f"{where}: image has {n} NaN/infinite voxel(s)")
