"""Image preprocessing before the lake: geometry checks, resampling and intensity normalisation.

Each step is a small function; the ingest stage records the parameters of every step it applies
in the volume's attributes and the run log, so the preprocessing can be repeated exactly.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from pipelines.exceptions import InputError
from pipelines.limits import IngestLimits, check_voxels


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


def isotropic_grid_size(spacing_xyz, size_xyz, spacing_mm: float) -> tuple[int, ...]:
    """Return the (x, y, z) size of the isotropic grid that `isotropic_grid` makes."""
    extent = np.asarray(spacing_xyz, dtype=float) * np.asarray(size_xyz, dtype=float)
    return tuple(max(1, math.ceil(e / spacing_mm - 1e-6)) for e in extent)


def isotropic_grid(img: sitk.Image, spacing_mm: float, where: str = "image",
                   limits: IngestLimits | None = None) -> sitk.Image:
    """Return an empty reference image on an isotropic grid covering `img`'s physical extent.

    Same origin corner and direction; size = ceil(extent / spacing). The first voxel's centre is
    placed so that the new grid's outer boundary starts where the old one does. Raises InputError
    naming `where` if the grid has more voxels than `limits.max_voxels` (default 2**30).
    """
    old_sp = np.array(img.GetSpacing(), dtype=float)
    new_size = isotropic_grid_size(old_sp, img.GetSize(), spacing_mm)
    check_voxels(where, new_size, limits or IngestLimits(),
                 f"the grid resampled to {spacing_mm:g} mm", "use a coarser spacing")
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
    Outside the source image the value is 0. An input already of the output type is not cast
    (sitk.Cast copies even then: one volume more at the peak). An input already on the
    reference grid (`same_grid`) is returned as it is (cast if needed): every output voxel centre
    is a source voxel centre, so interpolating would only cost time (about 0.2 s per 10^7 voxels).
    """
    if kind not in ("image", "mask"):
        raise ValueError(f"unknown resampling kind {kind!r}")
    pixel, interpolator = ((sitk.sitkFloat32, sitk.sitkLinear) if kind == "image"
                           else (sitk.sitkUInt8, sitk.sitkNearestNeighbor))
    src = img if img.GetPixelID() == pixel else sitk.Cast(img, pixel)
    if same_grid(src, reference):
        return src
    return sitk.Resample(src, reference, sitk.Transform(), interpolator, 0, pixel)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Return True if two images have exactly the same voxel grid: size, spacing, origin and
    direction equal to the bit (no tolerance: a grid shifted by 1e-9 mm is resampled)."""
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
            and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection())


def unit_range_image(img: sitk.Image, where: str) -> tuple[sitk.Image, float, float]:
    """Return (`img` as float32 mapped linearly onto [0, 1], its minimum, its maximum).

    The arithmetic is float64 (ITK's ShiftScale), so that int32 values near 2**31 or float64
    values beyond float32's range keep every distinct level; only the [0, 1] result is float32
    (one new buffer, no other copy). Raises InputError naming `where` for NaN/infinite voxels.
    """
    check_finite(sitk.GetArrayViewFromImage(img), where)
    mm = sitk.MinimumMaximumImageFilter()
    mm.Execute(img)
    low, high = float(mm.GetMinimum()), float(mm.GetMaximum())
    scale = high - low
    if not np.isfinite(scale):
        raise InputError(f"{where}: intensity range {low:g}..{high:g} is too wide to normalise; "
                         "rescale the image before ingest")
    unit = sitk.ShiftScale(img, -low, 1.0 / scale if scale > 0 else 0.0, sitk.sitkFloat32)
    return unit, low, high


def normalise_unit_range(
    arr: np.ndarray, clip_percentiles: tuple[float, float] | None = None,
    source_range: tuple[float, float] | None = None, inplace: bool = False,
) -> tuple[np.ndarray, dict]:
    """Return the volume scaled to [0, 1] (float32) and the parameters used.

    Default (the paper's, seed 000 section 2.1): min-max over the whole volume. With
    `clip_percentiles=(lo, hi)`: the lo/hi percentiles of the non-zero voxels are mapped to 0/1 and
    values outside are clipped (robust to hot voxels).

    `source_range=(low, high)` says that `arr` holds (source - low) / (high - low), as made by
    `unit_range_image`: "non-zero" then means a source intensity of 0 and the returned low/high are
    in source units. `inplace=True` reuses a writable float32 `arr` instead of copying it.
    """
    a = np.asarray(arr)
    if not (inplace and a.dtype == np.float32 and a.flags.writeable):
        a = a.astype(np.float32)
    s_low, width, zero = 0.0, 1.0, 0.0  # array value v is source intensity s_low + v * width
    if source_range is not None:
        s_low, width = float(source_range[0]), float(source_range[1]) - float(source_range[0])
        if width > 0:
            zero = float(np.float32((0.0 - s_low) * (1.0 / width)))  # ShiftScale's source 0

    def to_source(v: float) -> float:
        return v if source_range is None else s_low + v * width

    if clip_percentiles is None:
        low, high = float(a.min()), float(a.max())
        method = "minmax"
    else:
        fg = a[a != zero]
        low, high = (float(v) for v in np.percentile(fg if fg.size else a, clip_percentiles,
                                                     overwrite_input=bool(fg.size)))
        del fg
        method = "percentile"
    scale = high - low
    if scale <= 0:
        a[...] = 0.0
    else:
        a -= low
        a /= scale
        np.clip(a, 0.0, 1.0, out=a)
    out = a
    params = {"method": method, "low": to_source(low), "high": to_source(high)}
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
                f"{where}: mask has labels other than 0/1 ({shown}); choose the ROI with --label "
                "N, or name regions of the labels with --regions (e.g. core=1,4 whole=1,2,4)"
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
