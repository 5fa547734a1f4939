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
from pipelines.features.gldzm import distance_map, features_from_zones, gldzm_from_padded
from pipelines.features.glrlm import glrlm_features, glrlm_from_padded
from pipelines.features.glszm import features_from_triplets, zone_triplets, zones_from_padded
from pipelines.features.ivh import ivh_from_histogram
from pipelines.features.localintensity import local_intensity_features
from pipelines.features.ngldm import ngldm_features, ngldm_from_padded
from pipelines.features.ngtdm import ngtdm_features, ngtdm_from_padded

__all__ = ["compute_features", "compute_feature_sets", "aggregation_label", "FAMILIES",
           "ALL_FAMILIES", "AGGREGATIONS", "REGISTRY", "MAX_TEXTURE_LEVELS",
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
    ivh_hist: np.ndarray | None = None  # IVH counts on their own grid (ivh= given)
    morph: np.ndarray | None = None  # the whole morphological mask (default: mask)
    box: tuple[slice, slice, slice] | None = None  # the intensity mask's bounding box


def _firstorder(r: _Roi) -> dict[str, float]:
    return {**intensity_statistics(r.values), **histogram_features(r.hist[1:])}


def _ivh(r: _Roi) -> dict[str, float]:
    if r.ivh_hist is not None:
        return ivh_from_histogram(r.ivh_hist, *r.grid)
    return ivh_from_histogram(r.hist[1:], *r.grid)


def _glszm(r: _Roi) -> dict[str, float]:
    if _planar(r):
        return _zone_family(r, lambda a, _: zones_from_padded(a), _szm_features)
    return _szm_features(zones_from_padded(r.levels), int(r.values.size))


def _szm_features(zones, n_voxels: int) -> dict[str, float]:
    return features_from_triplets(*zone_triplets(*zones), n_voxels)


def _gldzm(r: _Roi) -> dict[str, float]:
    if r.morph is None:  # the mask is both intensity and morphological mask
        if not _planar(r):
            return features_from_zones(*gldzm_from_padded(r.levels), int(r.values.size))
        d_all = _distance_crop(r.mask, r.box, True)
    else:
        d_all = _distance_crop(r.morph, r.box, _planar(r))
    if not _planar(r):
        return features_from_zones(*gldzm_from_padded(r.levels, d_all), int(r.values.size))
    return _zone_family(r, lambda a, k: gldzm_from_padded(a, _one_slice(d_all, k)),
                        lambda z, n: features_from_zones(*z, n))


def _shape(r: _Roi) -> dict[str, float]:
    from pipelines.features.shape import shape_features

    if r.morph is not None:
        return shape_features(r.morph, r.spacing)
    return shape_features(r.mask_c, r.spacing)


def _morph_intensity(r: _Roi) -> dict[str, float]:
    """IBSI intensity-based morphology: morphological mask geometry, intensity mask values."""
    from pipelines.features.shape import INTENSITY_FEATURES, shape_features

    morph = r.mask if r.morph is None else r.morph
    mbox = _d.bounding_box(morph)
    img = np.array(r.image[mbox], dtype=np.float64)
    img[~r.mask[mbox]] = np.nan  # outside the intensity mask: not an intensity (IBSI ECJF)
    return shape_features(morph[mbox], r.spacing, image=img, features=INTENSITY_FEATURES)


# --------------------------------------------------------------------------- 2D / 2.5D

#: Indices into DIRECTIONS_XYZ of the 4 in-plane (z = 0) directions, for 2D / 2.5D texture.
IN_PLANE = tuple(i for i, v in enumerate(_d.DIRECTIONS_XYZ) if v[2] == 0)
_LABELS = {"3D, averaged": "averaged", "3D, merged": "merged"}


def _planar(r: _Roi) -> bool:
    return r.aggregation.startswith("2")


def _one_slice(padded: np.ndarray, k: int) -> np.ndarray:
    """Return slice k (1-based in the padded array) alone, zero above and below: (3, Y, X)."""
    out = np.zeros((3, *padded.shape[1:]), dtype=padded.dtype)
    out[1] = padded[k]
    return out


def _slices(r: _Roi):
    """Yield (k, single-slice padded levels) for every slice holding ROI voxels."""
    for k in range(1, r.levels.shape[0] - 1):
        if r.levels[k].any():
            yield k, _one_slice(r.levels, k)


def _slice_mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Return the mean of each feature over slices, leaving out slices where it is undefined."""
    keys = list(rows[0])
    arr = np.array([[row[k] for k in keys] for row in rows], dtype=np.float64)
    ok = ~np.isnan(arr)
    n = ok.sum(axis=0)
    sums = np.where(ok, arr, 0.0).sum(axis=0)
    return {k: float(s / c) if c else math.nan for k, s, c in zip(keys, sums, n, strict=True)}


def _directional(r: _Roi, matrices: Callable, features: Callable) -> dict[str, float]:
    """Return GLCM / GLRLM features of one aggregation (IBSI 3D, 2D or 2.5D; ITBB, IAZD ...).

    ``matrices(padded, n_levels)`` -> (13, ...) stack; ``features(stack, "averaged"|"merged")``.
    2D: per slice over its 4 in-plane directions, averaged over slices ("2D, averaged": per
    direction; "2D, slice-merged": one merged matrix per slice). 2.5D: matrices summed over
    slices, then per direction ("direction-merged") or one merged matrix ("merged").
    """
    agg = r.aggregation
    if not _planar(r):
        return features(matrices(r.levels, r.n_levels), _LABELS[agg])
    per_slice = [matrices(a, r.n_levels)[list(IN_PLANE)] for _, a in _slices(r)]
    if agg.startswith("2D"):
        how = "averaged" if agg == "2D, averaged" else "merged"
        return _slice_mean([features(m, how) for m in per_slice])
    total = np.sum(per_slice, axis=0)
    return features(total, "averaged" if agg == "2.5D, direction-merged" else "merged")


def _zone_family(r: _Roi, per_slice: Callable, features: Callable) -> dict[str, float]:
    """Return a zone family's 2D (mean over slices) or 2.5D (zones of every slice) features.

    ``per_slice(padded slice, k)`` -> (levels, sizes or distances) per zone;
    ``features(zones, n_voxels)`` -> dict.
    """
    parts = [(per_slice(a, k), int(np.count_nonzero(a))) for k, a in _slices(r)]
    if r.aggregation.startswith("2D"):
        return _slice_mean([features(z, n) for z, n in parts])
    merged = tuple(np.concatenate([z[i] for z, _ in parts]) for i in range(2))
    return features(merged, sum(n for _, n in parts))


def _distance_crop(morph: np.ndarray, box, planar: bool) -> np.ndarray:
    """Return the GLDZM distance map (VMDZ) of the morphological mask on the padded level crop.

    ``morph``: whole bool mask; ``box``: the intensity mask's bounding box (inside morph's);
    planar: 4-connected in-plane distances per slice (2D / 2.5D), else 6-connected 3D.
    Shape: the box plus one voxel each side, as the level array.
    """
    mbox = _d.bounding_box(morph)
    mc = morph[mbox]
    if planar:
        dm = np.stack([distance_map(np.pad(s, 1)) for s in mc])
        dm = np.pad(dm, ((1, 1), (0, 0), (0, 0)))
    else:
        dm = distance_map(np.pad(mc, 1))
    off = [b.start - m.start for b, m in zip(box, mbox, strict=True)]
    return dm[tuple(slice(o, o + b.stop - b.start + 2) for o, b in zip(off, box, strict=True))]


def _glcm(r: _Roi) -> dict[str, float]:
    return _directional(r, glcm_from_padded, glcm_features)


def _glrlm(r: _Roi) -> dict[str, float]:
    return _directional(r, glrlm_from_padded, glrlm_features)


def _ngtdm(r: _Roi) -> dict[str, float]:
    if not _planar(r):
        return ngtdm_features(*ngtdm_from_padded(r.levels, r.n_levels))
    parts = [ngtdm_from_padded(a, r.n_levels) for _, a in _slices(r)]
    if r.aggregation.startswith("2D"):
        return _slice_mean([ngtdm_features(*p) for p in parts])
    return ngtdm_features(sum(p[0] for p in parts), sum(p[1] for p in parts))


def _ngldm(r: _Roi) -> dict[str, float]:
    if not _planar(r):
        return ngldm_features(ngldm_from_padded(r.levels, r.n_levels))
    parts = [ngldm_from_padded(a, r.n_levels) for _, a in _slices(r)]
    if r.aggregation.startswith("2D"):
        return _slice_mean([ngldm_features(p) for p in parts])
    return ngldm_features(sum(parts))


@dataclass(frozen=True)
class Family:
    """A registered family: what it needs and the function computing its {tag: value}."""

    compute: Callable[[_Roi], dict[str, float]]
    levels: bool = False  # reads the discretised levels
    texture: bool = False  # builds a texture matrix (MAX_TEXTURE_LEVELS applies)
    intensities: bool = False  # reads raw ROI intensities (checked finite)
    directional: bool = False  # per-direction matrices (averaged / merged aggregations)


#: Every family compute_features knows, in the catalogue's (IBSI) order.
REGISTRY: dict[str, Family] = {
    "localintensity": Family(
        lambda r: local_intensity_features(r.image, r.mask, r.spacing), intensities=True),
    "firstorder": Family(_firstorder, levels=True),
    "ivh": Family(_ivh, levels=True),
    "glcm": Family(_glcm, levels=True, texture=True, directional=True),
    "glrlm": Family(_glrlm, levels=True, texture=True, directional=True),
    "glszm": Family(_glszm, levels=True, texture=True),
    "gldzm": Family(_gldzm, levels=True, texture=True),
    "ngtdm": Family(_ngtdm, levels=True, texture=True),
    "ngldm": Family(_ngldm, levels=True, texture=True),
    "shape": Family(_shape),
    # centre of mass shift, integrated intensity, Moran's I, Geary's C (catalogue family
    # "shape"); Moran's I / Geary's C are O(n^2) in the ROI's voxels
    "morph_intensity": Family(_morph_intensity, intensities=True),
}

#: Every family name of the catalogue, in its order ("morph_intensity", registered too, is
#: part of the catalogue's "shape" family and asked for by name: it is O(n^2) in the ROI).
ALL_FAMILIES = tuple(f for f in REGISTRY if f != "morph_intensity")
#: Families with per-direction matrices: their features depend on the aggregation method.
DIRECTIONAL_FAMILIES = tuple(f for f, fam in REGISTRY.items() if fam.directional)
#: Texture families without directions (one 3D matrix, or per slice in 2D / merged in 2.5D).
ZONE_FAMILIES = tuple(f for f, fam in REGISTRY.items() if fam.texture and not fam.directional)
#: Aggregation methods, in the words of the IBSI reference tables; "averaged" and "merged"
#: are the 3D ones.
AGGREGATIONS = ("3D, averaged", "3D, merged", "2D, averaged", "2D, slice-merged",
                "2.5D, direction-merged", "2.5D, merged")
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


def _check_aggregation(aggregation: str) -> str:
    agg = {"averaged": "3D, averaged", "merged": "3D, merged"}.get(aggregation, aggregation)
    if agg not in AGGREGATIONS:
        raise InputError(f"aggregation must be 'averaged', 'merged' or one of {AGGREGATIONS}, "
                         f"got {aggregation!r}")
    return agg


def _ivh_grid(values: np.ndarray, spec: dict) -> tuple[np.ndarray, float, float]:
    """Return (counts, first grid intensity, step) of the IVH of ROI values (IBSI 3.5).

    ``spec``: {"method": "none" | "fbs" | "fbn", "bin_size", "bin_count", "range"}. "none":
    discrete intensities (w = 1), G = the re-segmentation range (open side: ROI min / max);
    "fbs": bins of bin_size from the range's lower bound (else the ROI minimum), intensities
    the bin centres, G up to the range's upper bound; "fbn": bin_count levels, G = [1, Ng].
    """
    lo, hi = float(values.min()), float(values.max())
    rng = spec.get("range") or (None, None)
    g0 = lo if rng[0] is None else float(rng[0])
    g1 = hi if rng[1] is None else float(rng[1])
    method = spec["method"]
    if method == "fbn":
        x0, num, den, ng = _d.fbn_parameters(lo, hi, int(spec["bin_count"]))
        lev = np.minimum(np.floor(num * (values - x0) / den) + 1, ng).astype(np.int64)
        return np.bincount(lev - 1, minlength=ng), 1.0, 1.0
    if method == "fbs":
        w = float(spec["bin_size"])
        lev = (np.floor((values - g0) / w) + 1).astype(np.int64)
        n = max(int(math.ceil((g1 - g0) / w - 1e-9)), int(lev.max()))
        return np.bincount(lev - 1, minlength=n), g0 + 0.5 * w, w
    if method == "none":
        k = np.rint(values - g0).astype(np.int64)
        if np.abs(values - g0 - k).max() > 1e-6:
            raise InputError("ivh 'none' needs discrete (integer) intensities; round them "
                             "(round_intensities) or choose ivh fbs / fbn")
        return np.bincount(k, minlength=int(round(g1 - g0)) + 1), g0, 1.0
    raise InputError(f"ivh method must be none, fbs or fbn, got {method!r}")


def compute_features(
    image,
    mask,
    spacing,
    families=FAMILIES,
    bin_count: int | None = 32,
    bin_size: float | None = None,
    aggregation: str = "averaged",
    *,
    min_value: float | None = None,
    morph_mask=None,
    ivh: dict | None = None,
) -> dict[str, float]:
    """Return IBSI features of the ROI as {IBSI tag: value}, families in the order given.

    ``image``: 3D (z, y, x) integer or float array; ``mask``: same shape, boolean or numeric
    (non-zero = ROI); ``spacing``: (dz, dy, dx) voxel size in mm in the array's axis order
    (used by shape and local intensity only: texture features count voxels). Discretisation
    for the histogram, IVH and texture families: fixed bin size ``bin_size`` (IBSI FBS, bins
    from the ROI minimum) when given, else fixed bin number ``bin_count`` (IBSI FBN over the
    ROI's range). ``aggregation`` of the 13 3D GLCMs and GLRLMs: "averaged" or "merged".
    ``min_value``: where FBS bins start (IBSI: the re-segmentation lower bound), default the
    ROI minimum. ``aggregation`` may also be one of :data:`AGGREGATIONS` (IBSI words): 2D
    texture per axial slice (first axis) averaged over slices, 2.5D merged over slices; the
    zone families (GLSZM, GLDZM, NGTDM, NGLDM) read only the dimension. ``morph_mask``: the
    IBSI morphological mask (shape, GLDZM distances, intensity morphology; default ``mask``,
    which is then the intensity mask only). ``ivh``: the IVH's own discretisation (see
    :func:`_ivh_grid`), default the texture levels.
    Families (:data:`ALL_FAMILIES` and "morph_intensity"; default :data:`FAMILIES`):
    "localintensity" (2 ``loc_*``, image units, reads the image around the ROI),
    "firstorder" (18 ``stat_*`` + 23 ``ih_*``),
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
    aggregation = _check_aggregation(aggregation)
    morph = None
    if morph_mask is not None:
        morph = _check_mask(morph_mask, img.shape)
        if (msk & ~morph).any():
            raise InputError("the intensity mask must lie inside the morphological mask")
    box = _d.bounding_box(msk)
    if box is None:
        raise InputError("the mask is empty: no ROI voxel to compute features on")
    img_c, msk_c = _d.kernel_image(img[box]), msk[box]  # views unless a dtype needs converting
    specs = [REGISTRY[f] for f in fams]
    roi = {"image": img, "mask": msk, "mask_c": msk_c, "spacing": sp, "aggregation": aggregation,
           "morph": morph, "box": box}
    if any(s.levels or s.intensities for s in specs):
        values = img_c[msk_c]
        lo, hi = float(values.min()), float(values.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError("the image has non-finite values (NaN or inf) inside the mask")
        roi["values"] = values
    if any(s.levels for s in specs):
        try:
            if bin_size is not None:
                params = _d.fbs_parameters(lo, hi, float(bin_size), min_value)
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
        if ivh is not None and "ivh" in fams:
            counts, start, step = _ivh_grid(values.astype(np.float64), ivh)
            roi.update(ivh_hist=counts, grid=(start, step))
    r = _Roi(**roi)
    parts = {f: REGISTRY[f].compute(r) for f in dict.fromkeys(fams)}
    out: dict[str, float] = {}
    for fam in fams:
        out.update(parts[fam])
    return out


def aggregation_label(family: str, aggregation: str) -> str:
    """Return the IBSI reference tables' aggregation words of a family's features.

    Directional families (GLCM, GLRLM): the aggregation itself ("3D, averaged", ...); zone
    families: its dimension ("3D", "2D", "2.5D"); whole-ROI families: "".
    """
    if family in DIRECTIONAL_FAMILIES:
        return aggregation
    if family in ZONE_FAMILIES:
        return aggregation.split(",")[0]
    return ""


def compute_feature_sets(image, mask, spacing, families=FAMILIES,
                         aggregations=("3D, averaged",), **kwargs) -> list[tuple[str, str, float]]:
    """Return (IBSI tag, aggregation words, value) for every family and asked aggregation.

    Each family is computed once per distinct :func:`aggregation_label` (whole-ROI families
    once, zone families once per dimension). ``aggregations``: :data:`AGGREGATIONS` entries
    ("averaged" / "merged" mean the 3D ones); other keywords as :func:`compute_features`.
    """
    fams = _check_families(families)
    aggs = tuple(dict.fromkeys(_check_aggregation(a) for a in aggregations))
    plan: dict[tuple[str, str], str] = {}  # (family, label) -> aggregation to compute with
    for fam in fams:
        for agg in aggs:
            plan.setdefault((fam, aggregation_label(fam, agg)), agg)
    by_agg: dict[str, list[str]] = {}
    for (fam, _), agg in plan.items():
        by_agg.setdefault(agg, []).append(fam)
    values = {agg: compute_features(image, mask, spacing, tuple(fs), aggregation=agg, **kwargs)
              for agg, fs in by_agg.items()}
    out = []
    for (fam, label), agg in plan.items():
        for tag in _family_tags(fam, values[agg]):
            out.append((tag, label, values[agg][tag]))
    return out


def _family_tags(family: str, values: dict[str, float]) -> list[str]:
    """Return the tags of ``values`` that belong to ``family`` (by tag prefix), in order."""
    prefix = {"localintensity": ("loc_",), "firstorder": ("stat_", "ih_"), "ivh": ("ivh_",),
              "glcm": ("cm_",), "glrlm": ("rlm_",), "glszm": ("szm_",), "gldzm": ("dzm_",),
              "ngtdm": ("ngt_",), "ngldm": ("ngl_",)}
    if family == "morph_intensity":
        from pipelines.features.shape import INTENSITY_FEATURES

        return [t for t in values if t in INTENSITY_FEATURES]
    if family == "shape":
        from pipelines.features.shape import INTENSITY_FEATURES

        return [t for t in values if t.startswith("morph_") and t not in INTENSITY_FEATURES]
    return [t for t in values if t.startswith(prefix[family])]
