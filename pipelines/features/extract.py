"""One entry point for every quantifier family: :func:`compute_features`.

Pure: arrays in, a dict of floats out. The input is validated once, cropped once to the mask's
bounding box, discretised once into a zero-padded level crop, and every texture family reads
that same crop (GLCM, GLSZM and NGTDM each run one numba kernel over it). Shape features come
from :func:`pipelines.features.shape.shape_features` (imported lazily).
"""

from __future__ import annotations

import math

import numpy as np

from pipelines.exceptions import InputError
from pipelines.features import discretise as _d
from pipelines.features.firstorder import histogram_features, intensity_statistics
from pipelines.features.glcm import glcm_features, glcm_from_padded
from pipelines.features.glszm import features_from_triplets, zone_triplets, zones_from_padded
from pipelines.features.ngtdm import ngtdm_features, ngtdm_from_padded

__all__ = ["compute_features", "FAMILIES", "MAX_TEXTURE_LEVELS", "MAX_HISTOGRAM_LEVELS"]

FAMILIES = ("firstorder", "glcm", "glszm", "ngtdm", "shape")

#: Largest number of grey levels the texture families accept (a GLCM stack of 13 Ng x Ng
#: matrices must fit in memory); typically hit by a fixed bin size far below the ROI's range.
MAX_TEXTURE_LEVELS = 1024
#: Largest number of histogram bins when only first-order features are asked for.
MAX_HISTOGRAM_LEVELS = 65535


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype == np.bool_ or not (
        np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)
    ):
        raise InputError(f"image must be an integer or float array, got dtype {img.dtype}")
    if img.ndim != 3:
        raise InputError(f"image must be 3D (z, y, x), got shape {img.shape}")
    return img


def _check_mask(mask, shape) -> np.ndarray:
    msk = np.asarray(mask)
    if msk.shape != shape:
        raise InputError(f"mask shape {msk.shape} differs from image shape {shape}")
    if msk.dtype == np.bool_:
        return msk
    if not (np.issubdtype(msk.dtype, np.integer) or np.issubdtype(msk.dtype, np.floating)):
        raise InputError(f"mask must be boolean or numeric (non-zero = ROI), got {msk.dtype}")
    return msk != 0


def _check_spacing(spacing) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as e:
        raise InputError(f"spacing must be 3 numbers (dz, dy, dx) in mm, got {spacing!r}") from e
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing must be 3 positive numbers (dz, dy, dx) in mm, got {spacing!r}")
    return sp


def _check_families(families) -> tuple[str, ...]:
    fams = (families,) if isinstance(families, str) else tuple(families)
    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        raise InputError(f"unknown feature families {bad}; choose from {FAMILIES}")
    return fams


def compute_features(
    image,
    mask,
    spacing,
    families=FAMILIES,
    bin_count: int | None = 32,
    bin_size: float | None = None,
    aggregation: str = "averaged",
) -> dict[str, float]:
    """Return IBSI features of the ROI as {IBSI tag: value}, families in the order given.

    ``image``: 3D (z, y, x) integer or float array; ``mask``: same shape, boolean or numeric
    (non-zero = ROI); ``spacing``: (dz, dy, dx) voxel size in mm in the array's axis order
    (used by shape only: texture features count voxels). Discretisation for the histogram and
    texture families: fixed bin size ``bin_size`` (IBSI FBS, bins from the ROI minimum) when
    given, else fixed bin number ``bin_count`` (IBSI FBN over the ROI's range). ``aggregation``
    of the 13 3D GLCMs: "averaged" or "merged". Families: "firstorder" (18 ``stat_*`` + 23
    ``ih_*``), "glcm" (25 ``cm_*``), "glszm" (16 ``szm_*``), "ngtdm" (5 ``ngt_*``), "shape"
    (``morph_*`` from pipelines.features.shape). Values are floats, NaN where IBSI leaves a
    feature undefined. Raises InputError for invalid input (empty mask, shape mismatch,
    non-finite ROI intensities, bad settings).
    """
    fams = _check_families(families)
    img = _check_image(image)
    msk = _check_mask(mask, img.shape)
    sp = _check_spacing(spacing)
    if aggregation not in ("averaged", "merged"):
        raise InputError(f"aggregation must be 'averaged' or 'merged', got {aggregation!r}")
    box = _d.bounding_box(msk)
    if box is None:
        raise InputError("the mask is empty: no ROI voxel to compute features on")
    img_c, msk_c = _d.kernel_image(img[box]), msk[box]  # views unless a dtype needs converting
    parts: dict[str, dict[str, float]] = {}
    texture = [f for f in fams if f in ("firstorder", "glcm", "glszm", "ngtdm")]
    if texture:
        values = img_c[msk_c]
        lo, hi = float(values.min()), float(values.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError("the image has non-finite values (NaN or inf) inside the mask")
        try:
            if bin_size is not None:
                params = _d.fbs_parameters(lo, hi, float(bin_size), None)
            elif bin_count is not None:
                params = _d.fbn_parameters(lo, hi, int(bin_count))
            else:
                raise ValueError("give bin_count or bin_size")
        except ValueError as e:
            raise InputError(f"discretisation: {e}") from e
        ng = params[3]
        limit = (MAX_TEXTURE_LEVELS if any(f != "firstorder" for f in texture)
                 else MAX_HISTOGRAM_LEVELS)
        if ng > limit:
            raise InputError(
                f"discretisation gives {ng} grey levels, above {limit}; "
                "use a larger bin_size or a smaller bin_count"
            )
        L, hist = _d.discretise_into(img_c, msk_c, params, 1, _d.level_dtype(ng))
        n_roi = int(values.size)
        if "firstorder" in texture:
            parts["firstorder"] = {**intensity_statistics(values), **histogram_features(hist[1:])}
        if "glcm" in texture:
            parts["glcm"] = glcm_features(glcm_from_padded(L, ng), aggregation)
        if "glszm" in texture:
            zl, zs = zones_from_padded(L)
            parts["glszm"] = features_from_triplets(*zone_triplets(zl, zs), n_roi)
        if "ngtdm" in texture:
            parts["ngtdm"] = ngtdm_features(*ngtdm_from_padded(L, ng))
    if "shape" in fams:
        from pipelines.features.shape import shape_features

        parts["shape"] = shape_features(msk_c, sp)
    out: dict[str, float] = {}
    for fam in fams:
        out.update(parts[fam])
    return out
