"""Filter responses of one image written as NIfTI files on the image's own grid, for viewing.

The I/O edge of the filter core: `drlake filter IMAGE --encoder filters:NAME_OR_FILE --out DIR`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.filters.bank import FilterBank
from pipelines.imageio import read_image

__all__ = ["write_filter_responses"]


def _file_stem(index: int, label: str) -> str:
    """Return a file-system-safe stem of a map: its index and its label's safe characters."""
    return f"{index:02d}_" + re.sub(r"[^A-Za-z0-9._=+-]+", "_", label).strip("_")


def write_filter_responses(image_path, bank: FilterBank, out_dir) -> list[Path]:
    """Write every filter response of an image as float32 NIfTI on its grid; return the paths.

    The image is filtered as it is (its own voxel spacing, (z, y, x) mm, for the filters whose
    parameters are in mm), with no resampling or normalisation. Files are named
    ``<index>_<map label>.nii.gz`` in bank order.
    """
    img = read_image(image_path)
    vol = sitk.GetArrayFromImage(img).astype(np.float64)
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(bank.specs):
        resp = sitk.GetImageFromArray(spec.apply(vol, spacing).astype(np.float32))
        resp.CopyInformation(img)
        path = out / f"{_file_stem(i, spec.label)}.nii.gz"
        tmp = path.with_name("." + path.name)  # never a half-written file under the final name
        sitk.WriteImage(resp, str(tmp))
        tmp.replace(path)
        paths.append(path)
    return paths
