"""Quantify one image + mask on disk: the I/O edge of the feature core.

:func:`quantify_case` reads any SimpleITK-readable file (NIfTI, NRRD, MHA, ...) or a folder
holding one DICOM series, checks that image and mask share their physical space, selects
``mask == label`` and returns :func:`pipelines.features.extract.compute_features` as catalogue
rows (name, family, IBSI code, value).
"""

from __future__ import annotations

import SimpleITK as sitk

from pipelines.exceptions import InputError
from pipelines.features.catalogue import feature_catalogue
from pipelines.features.extract import (
    FAMILIES,
    aggregation_label,
    compute_feature_sets,
    compute_features,
)
from pipelines.imageio import read_image
from pipelines.preprocess import isotropic_grid, resample_onto, same_physical_space

__all__ = ["processed_features", "quantify_case", "quantify_processed", "read_case"]


def quantify_case(
    image_path,
    mask_path,
    label: int = 1,
    bin_count: int | None = 32,
    bin_size: float | None = None,
    families=FAMILIES,
    aggregation: str = "averaged",
    resample_mm: float | None = None,
    settings=None,
    roi: str | None = None,
) -> list[dict]:
    """Return the features of one case as rows {name, family, ibsi_code, aggregation, value}.

    With ``settings`` (a :class:`pipelines.processing.ImageProcessing`) the whole IBSI chain of
    those settings runs and every other option but ``label`` is ignored (see
    :func:`quantify_processed`); without, the legacy options below apply.

    ``image_path``/``mask_path``: image files SimpleITK reads (NIfTI, NRRD, MHA, ...) or
    one-series DICOM folders, and the mask may be a DICOM RTSTRUCT (ROI chosen by `roi`) or SEG
    (segment `roi`); the ROI is ``mask == label``. The image's own spacing is used
    (converted from SimpleITK's (x, y, z) to the array's (z, y, x)). Other arguments as in
    :func:`pipelines.features.extract.compute_features`. ``ibsi_code`` is "" for the non-IBSI
    features. ``resample_mm`` resamples image (linear) and ROI (nearest) to that isotropic
    spacing first; by default the image's own grid is used. Raises InputError for unreadable
    files, mismatched physical spaces or an empty ROI.
    """
    if settings is not None:
        return quantify_processed(image_path, mask_path, settings, label, roi)[0]
    image, roi_img = read_case(image_path, mask_path, label, roi)
    if resample_mm is not None:
        grid = isotropic_grid(image, resample_mm)
        image = resample_onto(image, grid, "image")
        roi_img = resample_onto(roi_img, grid, "mask")
    arr = sitk.GetArrayViewFromImage(image)
    roi = sitk.GetArrayViewFromImage(roi_img) > 0
    if not roi.any():
        raise InputError(f"{mask_path}: no voxel has label {label}")
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    feats = compute_features(arr, roi, spacing, families=families, bin_count=bin_count,
                             bin_size=bin_size, aggregation=aggregation)
    label_of = {"averaged": "3D, averaged", "merged": "3D, merged"}[aggregation]
    return _records((name, aggregation_label(_family(name), label_of), value)
                    for name, value in feats.items())


def read_case(image_path, mask_path, label: int = 1,
              roi: str | None = None) -> tuple[sitk.Image, sitk.Image]:
    """Return (image, 0/1 uint8 ROI image ``mask == label``) read from disk, on one grid.

    A DICOM RTSTRUCT or SEG mask is rasterised on the image's grid (ROI / segment `roi`; its
    ROI is label 1). InputError for unreadable files or a mask on another voxel grid.
    """
    from pipelines.dicom_masks import load_mask

    image = read_image(image_path)
    mask, info = load_mask(mask_path, image, roi=roi, image_path=image_path)
    if info["format"] != "labels":
        label = 1
    diff = same_physical_space(image, mask)
    if diff:
        raise InputError(f"{mask_path}: the mask is not on the image's voxel grid: {diff} "
                         "(resample it onto the image first)")
    return image, sitk.Cast(mask == label, sitk.sitkUInt8)


def quantify_processed(image_path, mask_path, settings, label: int = 1, roi: str | None = None,
                       image_filter=None) -> tuple[list[dict], list[dict]]:
    """Return (feature rows, processing steps) of one case under IBSI settings.

    ``settings``: :class:`pipelines.processing.ImageProcessing`. Rows as :func:`quantify_case`,
    one per feature and aggregation (``aggregation`` in the IBSI tables' words, "" for
    whole-ROI features); steps: one dict per processing step applied (for the run log).
    Morphology and GLDZM distances read the morphological mask, everything else the
    re-segmented intensity mask (IBSI ECJF). ``image_filter`` (a
    :class:`pipelines.filters.bank.FilterSpec`): the features are those of the filter's
    response to the processed (interpolated, rounded) image, inside the masks that the
    unfiltered image gave (IBSI 2, phase 2).
    """
    image, roi_img = read_case(image_path, mask_path, label, roi)
    if not sitk.GetArrayViewFromImage(roi_img).any():
        raise InputError(f"{mask_path}: no voxel has label {label}")
    feats, steps = processed_features(image, roi_img, settings, where=str(image_path),
                                      image_filter=image_filter)
    return _records(feats), steps


def processed_features(image: sitk.Image, roi_img: sitk.Image, settings, where: str = "image",
                       image_filter=None) -> tuple[list[tuple[str, str, float]], list[dict]]:
    """Return ((IBSI tag, aggregation words, value) per feature, processing steps) of one image
    and 0/1 ROI image on the same grid under IBSI settings (see :func:`quantify_processed`).

    The one chain shared by ``drlake quantify`` and the quantify stage's ``--settings`` path.
    """
    from pipelines.processing import process

    p = process(image, roi_img, settings, where=where)
    lv = settings.texture_levels
    values = p.image
    filtered = []
    if image_filter is not None:
        values = image_filter.apply(p.image, p.spacing)
        filtered = [{"step": "filter", **image_filter.as_dict(), "sha256": image_filter.sha256}]
    feats = compute_feature_sets(
        values, p.intensity_mask, p.spacing, settings.families, settings.aggregations,
        bin_count=lv["bin_count"], bin_size=lv["bin_size"], min_value=lv["min_value"],
        morph_mask=p.morph_mask, ivh=settings.ivh_spec)
    steps = [*p.steps, *filtered, {"step": "features", "families": list(settings.families),
                        "aggregations": list(settings.aggregations),
                        "settings_sha256": settings.sha256}]
    return feats, steps


def _family(name: str) -> str:
    """Return the registry family computing a tag (for its aggregation words)."""
    prefixes = {"cm_": "glcm", "rlm_": "glrlm", "szm_": "glszm", "dzm_": "gldzm",
                "ngt_": "ngtdm", "ngl_": "ngldm"}
    return next((f for p, f in prefixes.items() if name.startswith(p)), "")


def _records(feats) -> list[dict]:
    """Return catalogue rows {name, family, ibsi_code, aggregation, value} of (tag, agg, v)."""
    cat = {row["name"]: row for row in feature_catalogue()}
    rows = []
    for name, agg, value in feats:
        meta = cat.get(name, {})
        rows.append({"name": name, "family": meta.get("family", ""),
                     "ibsi_code": meta.get("ibsi_code", ""), "aggregation": agg,
                     "value": float(value)})
    return rows
