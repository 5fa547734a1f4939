"""Readers: one shared write-then-read round trip that every file format passes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.exceptions import InputError
from pipelines.imageio import read_image, spatial_metadata, to_array, world_to_voxel_matrix

FORMATS = ["nii.gz", "nii", "nrrd", "mha"]
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated 90 degrees about z


def asymmetric_image(dtype=np.int16) -> sitk.Image:
    arr = np.arange(3 * 4 * 5, dtype=dtype).reshape(3, 4, 5)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.75, 2.0))
    img.SetOrigin((-10.0, 4.0, 7.5))
    img.SetDirection(DIRECTION)
    return img


@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_keeps_voxels_and_geometry(tmp_path, ext):
    src = asymmetric_image()
    path = tmp_path / f"img.{ext}"
    sitk.WriteImage(src, str(path))
    back = read_image(path)
    np.testing.assert_array_equal(to_array(back), to_array(src))
    assert back.GetSpacing() == pytest.approx(src.GetSpacing())
    assert back.GetOrigin() == pytest.approx(src.GetOrigin())
    assert back.GetDirection() == pytest.approx(src.GetDirection())


@pytest.mark.parametrize("ext", ["nii.gz", "nrrd", "mha"])
def test_nan_voxels_survive_reading(tmp_path, ext):
    """SimpleITK's NIfTI reader turns NaN into 0; ours must not, so ingest can refuse them."""
    arr = np.ones((3, 4, 5), np.float32)
    arr[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / f"x.{ext}"))
    assert np.isnan(to_array(read_image(tmp_path / f"x.{ext}"))).sum() == 1


@pytest.mark.parametrize("ext", ["nii.gz", "nii", "nrrd"])
def test_truncated_file_is_an_input_error(tmp_path, ext):
    path = tmp_path / f"x.{ext}"
    sitk.WriteImage(asymmetric_image(np.float32), str(path))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="cannot read image"):
        read_image(path)


def test_world_to_voxel_inverts_itk_index_to_point():
    img = asymmetric_image()
    m = world_to_voxel_matrix(img)
    for idx in [(0, 0, 0), (4, 3, 2), (1, 2, 0)]:
        world = img.TransformIndexToPhysicalPoint(idx)
        zyx = m @ np.array([*world, 1.0])
        np.testing.assert_allclose(zyx[:3], idx[::-1], atol=1e-9)
    meta = spatial_metadata(img)
    assert meta["shape_zyx"] == [3, 4, 5] and meta["spacing_zyx"] == [2.0, 0.75, 0.5]
