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
from pipelines.features.extract import FAMILIES, compute_features
from pipelines.imageio import read_image
from pipelines.preprocess import isotropic_grid, resample_onto, same_physical_space

__all__ = ["quantify_case"]


def quantify_case(
    image_path,
    mask_path,
    label: int = 1,
    bin_count: int | None = 32,
    bin_size: float | None = None,
    families=FAMILIES,
    aggregation: str = "averaged",
    resample_mm: float | None = None,
) -> list[dict]:
    """Return the features of one case as rows {name, family, ibsi_code, value}.

    ``image_path``/``mask_path``: image files SimpleITK reads (NIfTI, NRRD, MHA, ...) or
    one-series DICOM folders; the ROI is ``mask == label``. The image's own spacing is used
    (converted from SimpleITK's (x, y, z) to the array's (z, y, x)). Other arguments as in
    :func:`pipelines.features.extract.compute_features`. ``ibsi_code`` is "" for the non-IBSI
    features. ``resample_mm`` resamples image (linear) and ROI (nearest) to that isotropic
    spacing first; by default the image's own grid is used. Raises InputError for unreadable
    files, mismatched physical spaces or an empty ROI.
    """
    image = read_image(image_path)
    mask = read_image(mask_path)
    diff = same_physical_space(image, mask)
    if diff:
        raise InputError(f"{mask_path}: the mask is not on the image's voxel grid: {diff} "
                         "(resample it onto the image first)")
    roi_img = sitk.Cast(mask == label, sitk.sitkUInt8)
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
    cat = {row["name"]: row for row in feature_catalogue()}
    rows = []
    for name, value in feats.items():
        meta = cat.get(name, {})
        rows.append({"name": name, "family": meta.get("family", ""),
                     "ibsi_code": meta.get("ibsi_code", ""), "value": float(value)})
    return rows
