"""One entry point for every quantifier family: :func:`compute_features`.

Pure: arrays in, a dict of floats out. The input is validated once, cropped once to the mask's
bounding box, discretised once into a zero-padded level crop, and every texture family reads
that same crop (GLCM, GLRLM, GLSZM, GLDZM, NGTDM and NGLDM each run one numba kernel over it).
Families are registered explicitly in :data:`REGISTRY` (name -> what it needs, how it is
computed), in the catalogue's (IBSI) order. Local intensity reads the image around the ROI with
the voxel spacing; shape features come from :func:`pipelines.features.shape.shape_features`
(imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines.exceptions import InputError
from pipelines.features import discretise as _d
from pipelines.features.firstorder import histogram_features, intensity_statistics
from pipelines.features.glcm import glcm_features, glcm_from_padded
from pipelines.features.gldzm import features_from_zones, gldzm_from_padded
from pipelines.features.glrlm import glrlm_features, glrlm_from_padded
from pipelines.features.glszm import features_from_triplets, zone_triplets, zones_from_padded
from pipelines.features.ivh import ivh_from_histogram
from pipelines.features.localintensity import local_intensity_features
from pipelines.features.ngldm import ngldm_features, ngldm_from_padded
from pipelines.features.ngtdm import ngtdm_features, ngtdm_from_padded

__all__ = ["compute_features", "FAMILIES", "ALL_FAMILIES", "REGISTRY", "MAX_TEXTURE_LEVELS",
           "MAX_HISTOGRAM_LEVELS"]

#: Largest number of grey levels the texture families accept (a GLCM stack of 13 Ng x Ng
#: matrices must fit in memory); typically hit by a fixed bin size far below the ROI's range.
MAX_TEXTURE_LEVELS = 1024
#: Largest number of histogram bins when only first-order / IVH features are asked for.
MAX_HISTOGRAM_LEVELS = 65535


@dataclass(frozen=True)
class _Roi:
    """What the families read: the checked image and mask, their crop, and the levels."""

    image: np.ndarray  # the whole image (local intensity reads around the ROI)
    mask: np.ndarray  # the whole boolean mask
    mask_c: np.ndarray  # the mask cropped to its bounding box
    spacing: tuple[float, float, float]
    aggregation: str
    values: np.ndarray | None = None  # ROI intensities
    levels: np.ndarray | None = None  # padded level crop (0 outside the ROI)
    hist: np.ndarray | None = None  # voxels per level, index = level (0 unused)
    n_levels: int = 0
    grid: tuple[float, float] = (1.0, 1.0)  # (intensity of level 1, step) for the IVH


def _firstorder(r: _Roi) -> dict[str, float]:
    return {**intensity_statistics(r.values), **histogram_features(r.hist[1:])}


def _glszm(r: _Roi) -> dict[str, float]:
    zl, zs = zones_from_padded(r.levels)
    return features_from_triplets(*zone_triplets(zl, zs), int(r.values.size))


def _gldzm(r: _Roi) -> dict[str, float]:
    zl, zd = gldzm_from_padded(r.levels)  # the mask is both intensity and morphological mask
    return features_from_zones(zl, zd, int(r.values.size))


def _shape(r: _Roi) -> dict[str, float]:
    from pipelines.features.shape import shape_features

    return shape_features(r.mask_c, r.spacing)


@dataclass(frozen=True)
class Family:
    """A registered family: what it needs and the function computing its {tag: value}."""

    compute: Callable[[_Roi], dict[str, float]]
    levels: bool = False  # reads the discretised levels
    texture: bool = False  # builds a texture matrix (MAX_TEXTURE_LEVELS applies)
    intensities: bool = False  # reads raw ROI intensities (checked finite)


#: Every family compute_features knows, in the catalogue's (IBSI) order.
REGISTRY: dict[str, Family] = {
    "localintensity": Family(
        lambda r: local_intensity_features(r.image, r.mask, r.spacing), intensities=True),
    "firstorder": Family(_firstorder, levels=True),
    "ivh": Family(lambda r: ivh_from_histogram(r.hist[1:], *r.grid), levels=True),
    "glcm": Family(lambda r: glcm_features(glcm_from_padded(r.levels, r.n_levels),
                                           r.aggregation), levels=True, texture=True),
    "glrlm": Family(lambda r: glrlm_features(glrlm_from_padded(r.levels, r.n_levels),
                                             r.aggregation), levels=True, texture=True),
    "glszm": Family(_glszm, levels=True, texture=True),
    "gldzm": Family(_gldzm, levels=True, texture=True),
    "ngtdm": Family(lambda r: ngtdm_features(*ngtdm_from_padded(r.levels, r.n_levels)),
                    levels=True, texture=True),
    "ngldm": Family(lambda r: ngldm_features(ngldm_from_padded(r.levels, r.n_levels)),
                    levels=True, texture=True),
    "shape": Family(_shape),
}

#: Every registered family name, in catalogue order.
ALL_FAMILIES = tuple(REGISTRY)
#: The default families of compute_features (the paper's quantifiers plus shape).
FAMILIES = ("firstorder", "glcm", "glszm", "ngtdm", "shape")


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
    bad = [f for f in fams if f not in REGISTRY]
    if bad:
        raise InputError(f"unknown feature families {bad}; choose from {ALL_FAMILIES}")
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
    (used by shape and local intensity only: texture features count voxels). Discretisation
    for the histogram, IVH and texture families: fixed bin size ``bin_size`` (IBSI FBS, bins
    from the ROI minimum) when given, else fixed bin number ``bin_count`` (IBSI FBN over the
    ROI's range). ``aggregation`` of the 13 3D GLCMs and GLRLMs: "averaged" or "merged".
    Families (:data:`ALL_FAMILIES`; default :data:`FAMILIES`): "localintensity" (2 ``loc_*``,
    image units, reads the image around the ROI), "firstorder" (18 ``stat_*`` + 23 ``ih_*``),
    "ivh" (14 ``ivh_*``; intensities are the FBN levels, or for FBS the lowest intensity of
    each bin, which is the intensity itself for integer images and bin size 1), "glcm" (25
    ``cm_*``), "glrlm" (16 ``rlm_*``), "glszm" (16 ``szm_*``), "gldzm" (16 ``dzm_*``; the mask
    is also the morphological mask), "ngtdm" (5 ``ngt_*``), "ngldm" (17 ``ngl_*``, distance 1,
    coarseness 0), "shape" (``morph_*`` from pipelines.features.shape). Values are floats,
    NaN where IBSI leaves a feature undefined. Raises InputError for invalid input (empty
    mask, shape mismatch, non-finite ROI intensities, bad settings).
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
    specs = [REGISTRY[f] for f in fams]
    roi = {"image": img, "mask": msk, "mask_c": msk_c, "spacing": sp, "aggregation": aggregation}
    if any(s.levels or s.intensities for s in specs):
        values = img_c[msk_c]
        lo, hi = float(values.min()), float(values.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError("the image has non-finite values (NaN or inf) inside the mask")
        roi["values"] = values
    if any(s.levels for s in specs):
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
        limit = MAX_TEXTURE_LEVELS if any(s.texture for s in specs) else MAX_HISTOGRAM_LEVELS
        if ng > limit:
            raise InputError(
                f"discretisation gives {ng} grey levels, above {limit}; "
                "use a larger bin_size or a smaller bin_count"
            )
        L, hist = _d.discretise_into(img_c, msk_c, params, 1, _d.level_dtype(ng))
        # IVH grid: FBS levels as the lowest intensity of their bin (the intensity itself for
        # integer images and bin size 1, IBSI's discrete case), FBN levels as they are
        grid = (params[0], float(bin_size)) if bin_size is not None else (1.0, 1.0)
        roi.update(levels=L, hist=hist, n_levels=ng, grid=grid)
    r = _Roi(**roi)
    parts = {f: REGISTRY[f].compute(r) for f in dict.fromkeys(fams)}
    out: dict[str, float] = {}
    for fam in fams:
        out.update(parts[fam])
    return out
