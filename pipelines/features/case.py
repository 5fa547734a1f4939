"""Quantify one image + mask on disk: the I/O edge of the feature core.

:func:`quantify_case` reads any SimpleITK-readable file (NIfTI, NRRD, MHA, ...) or a folder
holding one DICOM series, checks that image and mask share their physical space, selects
``mask == label`` and returns :func:`pipelines.features.extract.compute_features` as catalogue
rows (name, family, IBSI code, value).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.exceptions import InputError
from pipelines.features.catalogue import feature_catalogue
from pipelines.features.extract import FAMILIES, compute_features

__all__ = ["read_image", "check_same_space", "quantify_case"]


def read_image(path) -> sitk.Image:
    """Return the 3D image at ``path``: a SimpleITK-readable file or a one-series DICOM folder.

    Raises InputError if the path is missing, unreadable, not 3D, or a folder without exactly
    one DICOM series.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    try:
        if p.is_dir():
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p))
            if len(ids) != 1:
                raise InputError(
                    f"{p}: expected a folder with one DICOM series, found {len(ids)}"
                    + (f" ({', '.join(ids)}); point to one series' folder" if ids else "")
                )
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p), ids[0]))
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(p))
    except RuntimeError as e:  # SimpleITK's error type for unreadable input
        raise InputError(f"{p}: cannot read image ({str(e).strip().splitlines()[-1]})") from e
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{p}: expected a 3D scalar image, got {img.GetDimension()}D with "
            f"{img.GetNumberOfComponentsPerPixel()} component(s)"
        )
    return img


def check_same_space(image: sitk.Image, mask: sitk.Image, what: str = "mask",
                     tol: float = 1e-4) -> None:
    """Raise InputError unless ``mask`` has the image's size, spacing, origin and direction.

    Spacing and origin are compared in mm with a relative/absolute tolerance ``tol`` (scaled by
    the spacing for the origin), direction cosines with absolute tolerance ``tol``.
    """
    checks = []
    if image.GetSize() != mask.GetSize():
        checks.append(f"size {mask.GetSize()} vs image {image.GetSize()}")
    sp_i, sp_m = np.array(image.GetSpacing()), np.array(mask.GetSpacing())
    if not np.allclose(sp_i, sp_m, rtol=tol, atol=0.0):
        checks.append(f"spacing {tuple(sp_m)} vs image {tuple(sp_i)}")
    if not np.allclose(image.GetOrigin(), mask.GetOrigin(), rtol=0.0, atol=tol * sp_i.max()):
        checks.append(f"origin {mask.GetOrigin()} vs image {image.GetOrigin()}")
    if not np.allclose(image.GetDirection(), mask.GetDirection(), rtol=0.0, atol=tol):
        checks.append(f"direction {mask.GetDirection()} vs image {image.GetDirection()}")
    if checks:
        raise InputError(
            f"the {what} is not on the image's voxel grid: " + "; ".join(checks)
            + " (resample it onto the image first)"
        )


def quantify_case(
    image_path,
    mask_path,
    label: int = 1,
    bin_count: int | None = 32,
    bin_size: float | None = None,
    families=FAMILIES,
    aggregation: str = "averaged",
) -> list[dict]:
    """Return the features of one case as rows {name, family, ibsi_code, value}.

    ``image_path``/``mask_path``: image files SimpleITK reads (NIfTI, NRRD, MHA, ...) or
    one-series DICOM folders; the ROI is ``mask == label``. The image's own spacing is used
    (converted from SimpleITK's (x, y, z) to the array's (z, y, x)). Other arguments as in
    :func:`pipelines.features.extract.compute_features`. ``ibsi_code`` is "" for the non-IBSI
    features. Raises InputError for unreadable files, mismatched physical spaces or an empty ROI.
    """
    image = read_image(image_path)
    mask = read_image(mask_path)
    check_same_space(image, mask)
    arr = sitk.GetArrayViewFromImage(image)
    roi = sitk.GetArrayViewFromImage(mask) == label
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
