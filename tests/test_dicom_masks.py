"""DICOM masks: RTSTRUCT ROIs and SEG segments rasterised onto the image's grid, checked against
the IBSI CT phantom's own voxel mask, a brute-force point-in-polygon test and hand counts; bad
masks get one clear error; ingest takes them end to end."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_cohort_files
from dicom_writers import NEUTRAL, square, write_mr_series, write_rtstruct

from pipelines.dicom_masks import (
    find_dicom_mask,
    load_mask,
    mask_kind,
    rasterise_contours,
    read_mask,
    select_name,
)
from pipelines.exceptions import InputError
from pipelines.imageio import read_image, to_array
from pipelines.ingest import IngestSettings, ingest
from pipelines.lake import Lake

DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated 90 degrees about z


@pytest.fixture(scope="module")
def ct(shared_reference) -> dict:
    """Paths of the IBSI CT phantom (DICOM series, its RTSTRUCT, NIfTI image and mask)."""
    base = shared_reference / "ibsi" / "ct_phantom"
    rs = sorted((base / "dicom" / "mask").glob("*.dcm"))
    return {"image": base / "dicom" / "image", "mask_dir": base / "dicom" / "mask",
            "rs": rs[0], "nifti_image": base / "nifti" / "image" / "phantom.nii.gz",
            "nifti_mask": base / "nifti" / "mask" / "mask.nii.gz"}


def lake_snapshot(root: Path) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def reference_image(size=(24, 20, 6), spacing=(0.5, 0.75, 2.0), origin=(-10.0, 4.0, 7.5),
                    direction=DIRECTION) -> sitk.Image:
    img = sitk.Image(list(size), sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def slice_z(img: sitk.Image, k: int) -> float:
    """Return the world z (mm) of slice k of an image whose slices are axial."""
    return img.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, float(k)))[2]


def brute_force(img: sitk.Image, polys: list[np.ndarray], k: int) -> np.ndarray:
    """Return the even-odd fill of slice k: voxel centres inside an odd number of polygons."""
    from matplotlib.path import Path as MplPath

    nx, ny, nz = img.GetSize()
    out = np.zeros((nz, ny, nx), bool)
    centres = np.array([img.TransformIndexToPhysicalPoint((i, j, k))
                        for j in range(ny) for i in range(nx)])
    inside = np.zeros(len(centres), int)
    for poly in polys:
        inside += MplPath(poly[:, :2]).contains_points(centres[:, :2])
    out[k] = (inside % 2 == 1).reshape(ny, nx)
    return out


# ---- the acceptance test: the IBSI CT phantom ------------------------------------------------
def test_ct_phantom_rtstruct_rasterises_to_exactly_the_nifti_mask(ct):
    image = read_image(ct["image"])
    expected = to_array(read_image(ct["nifti_mask"]))
    assert expected.sum() == 125256
    for path in (ct["rs"], ct["mask_dir"]):  # the file, or the folder holding it
        mask = read_mask(path, image, roi="GTV-1", image_path=ct["image"])
        assert mask.GetSize() == image.GetSize() and mask.GetOrigin() == image.GetOrigin()
        assert mask.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(to_array(mask), expected)
    # on the NIfTI image's grid too (no DICOM UIDs to compare: geometry alone)
    mask = read_mask(ct["rs"], read_image(ct["nifti_image"]), roi="gtv-1")
    np.testing.assert_array_equal(to_array(mask), expected)


def test_mask_kinds(ct, tmp_path):
    assert mask_kind(ct["rs"]) == "rtstruct" and mask_kind(ct["mask_dir"]) == "rtstruct"
    assert mask_kind(ct["nifti_mask"]) == "labels"
    assert mask_kind(ct["image"]) == "labels"  # a DICOM series folder: a label series
    assert mask_kind(sorted(ct["image"].iterdir())[0]) == "labels"
    (tmp_path / "notes.txt").write_text("not dicom")
    assert find_dicom_mask(tmp_path / "notes.txt") is None


# ---- rasterisation: pure function --------------------------------------------------------------
def test_rasterisation_matches_brute_force_point_in_polygon_on_a_rotated_grid():
    img = reference_image()
    z = slice_z(img, 3)
    # a concave (L-shaped) polygon and an overlapping triangle, vertices off the voxel centres
    # (the grid covers x -10 .. 4.25 mm, y -7.5 .. 4 mm)
    ell = np.array([[-9.13, -6.63, z], [2.71, -6.63, z], [2.71, -3.29, z], [-4.33, -3.29, z],
                    [-4.33, 3.41, z], [-9.13, 3.41, z]])
    tri = np.array([[-7.07, -5.11, z], [3.93, -0.87, z], [-6.41, 2.77, z]])
    got = rasterise_contours([ell, tri], img)
    want = brute_force(img, [ell, tri], 3)
    assert want.sum() > 50
    np.testing.assert_array_equal(got, want)


def test_inner_contours_are_holes_even_odd():
    img = reference_image(size=(20, 20, 4), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0),
                          direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    z = slice_z(img, 1)
    outer = square(1.5, 1.5, 16.5, 16.5, z)   # voxel centres 2..16: 15 x 15
    hole = square(4.5, 4.5, 13.5, 13.5, z)    # 5..13: 9 x 9
    island = square(7.5, 7.5, 10.5, 10.5, z)  # 8..10: 3 x 3
    for order in ([outer, hole, island], [island, outer, hole]):
        m = rasterise_contours(order, img)
        assert m[1].sum() == 15 * 15 - 9 * 9 + 3 * 3
        assert m[1, 2, 2] and not m[1, 6, 6] and m[1, 9, 9]
        assert m[0].sum() == m[2].sum() == 0


def test_off_plane_contour_goes_to_the_nearest_slice_within_tolerance():
    img = reference_image()
    dz = img.GetSpacing()[2]
    base = np.array([[-8.1, -6.4, 0], [1.2, -6.4, 0], [1.2, 2.3, 0], [-8.1, 2.3, 0]])
    on = base + [0, 0, slice_z(img, 2)]
    near = base + [0, 0, slice_z(img, 2) + 0.2 * dz]
    np.testing.assert_array_equal(rasterise_contours([near], img), rasterise_contours([on], img))
    far = base + [0, 0, slice_z(img, 2) + 0.4 * dz]
    with pytest.raises(InputError, match=r"RS\.dcm: contour 1 lies 0\.80 mm from the nearest "
                       r"slice plane of the image \(tolerance 0\.50 mm\)"):
        rasterise_contours([far], img, "RS.dcm")
    tilted = on.copy()
    tilted[:2, 2] += 1.5 * dz
    with pytest.raises(InputError, match=r"contour 1 is not in a slice plane of the image"):
        rasterise_contours([tilted], img, "RS.dcm")
    outside = base + [0, 0, slice_z(img, 9)]
    with pytest.raises(InputError, match=r"contour 1 lies on slice 9, outside the image's 6"):
        rasterise_contours([outside], img, "RS.dcm")


# ---- RTSTRUCT files: ROI choice and references ---------------------------------------------------
@pytest.fixture
def series(tmp_path) -> dict:
    """A small MR series (6 slices of 20 x 24 voxels, 1 x 1 x 2 mm) and an RTSTRUCT on it."""
    arr = np.full((6, 20, 24), 100, np.int16)
    folder = tmp_path / "t1"
    uids = write_mr_series(folder, arr, spacing=(1.0, 1.0, 2.0), origin=(-5.0, -3.0, 10.0),
                           phi=NEUTRAL)
    z = [10.0 + 2 * k for k in range(6)]
    rois = {
        "GTV-1": [square(0.5, 0.5, 6.5, 4.5, z[2]), square(0.5, 0.5, 6.5, 4.5, z[3])],
        "gtv_mass": [square(-2.5, -1.5, 1.5, 2.5, z[1])],
        "Brainstem": [square(8.5, 8.5, 12.5, 12.5, z[4])],
        "BODY": [],
    }
    rs = write_rtstruct(tmp_path / "rs" / "RS.dcm", uids, rois)
    return {"image": folder, "img": read_image(folder), "rs": rs, "uids": uids,
            "tmp": tmp_path}


@pytest.mark.parametrize("roi, name, voxels", [
    ("GTV-1", "GTV-1", 2 * 6 * 4),
    ("gtv-1", "GTV-1", 2 * 6 * 4),
    ("GTV_Mass|GTV-1", "gtv_mass", 4 * 4),         # alternatives in order: the first found wins
    ("PTV|gtv-1|gtv_mass", "GTV-1", 2 * 6 * 4),
    (["nope", "BRAINSTEM"], "Brainstem", 4 * 4),
    ("brain.*", "Brainstem", 4 * 4),                # a regex matching the whole name
])
def test_roi_is_chosen_by_name_alternatives_or_regex(series, roi, name, voxels):
    mask, info = load_mask(series["rs"], series["img"], roi, series["image"])
    assert to_array(mask).sum() == voxels
    assert info["format"] == "rtstruct"
    assert info["roi_number"] == ["GTV-1", "gtv_mass", "Brainstem", "BODY"].index(name) + 1


def test_select_name_steps():
    names = ["GTV-1", "gtv-1", "GTV_Mass"]
    assert select_name(names, "gtv-1") == [1]           # exact first
    assert select_name(names, "Gtv-1") == [0, 1]        # then case-insensitive: ambiguous
    assert select_name(names, "x|gtv_mass|gtv-1") == [2]
    assert select_name(names, "gtv.*") == [0, 1, 2]
    assert select_name(names, "[") == []                # not a regex, not a name


def test_missing_roi_lists_the_rois_the_file_holds(series):
    with pytest.raises(InputError, match=r"RS\.dcm: no ROI matches 'PTV'; the file holds ROIs "
                       r"'GTV-1', 'gtv_mass', 'Brainstem', 'BODY'; choose one with a roi column "
                       r"in the manifest or --roi NAME"):
        read_mask(series["rs"], series["img"], "PTV", series["image"])


def test_no_roi_given_with_several_rois_lists_them(series):
    with pytest.raises(InputError, match=r"RS\.dcm: the file holds 4 ROIs \('GTV-1', .*'BODY'\);"
                       r" choose one"):
        read_mask(series["rs"], series["img"], None, series["image"])


def test_ambiguous_roi_is_an_error(series):
    with pytest.raises(InputError, match=r"'gtv.\*' matches 2 ROIs \('GTV-1', 'gtv_mass'\)"):
        read_mask(series["rs"], series["img"], "gtv.*", series["image"])


def test_roi_without_contours_is_an_error(series):
    with pytest.raises(InputError, match=r"RS\.dcm: ROI 'BODY' \(number 4\) has no closed "
                       r"contours; choose another ROI"):
        read_mask(series["rs"], series["img"], "BODY", series["image"])


@pytest.mark.parametrize("uid,value,message", [
    ("FrameOfReferenceUID", "1.2.3.4.5", r"its FrameOfReferenceUID 1\.2\.3\.4\.5 is not the "
     r"image's .*t1\); give the mask that was drawn on this image series"),
    ("SeriesInstanceUID", "1.2.3.4.6", r"ReferencedSeriesInstanceUID 1\.2\.3\.4\.6 is not the "
     r"image's SeriesInstanceUID"),
])
def test_rtstruct_of_another_series_says_so(series, uid, value, message):
    other = dict(series["uids"], **{uid: value})
    rs = write_rtstruct(series["tmp"] / "other" / "RS.dcm", other,
                        {"GTV-1": [square(0.5, 0.5, 6.5, 4.5, 14.0)]})
    with pytest.raises(InputError, match=r"RS\.dcm: the mask refers to another series: "
                       + message):
        read_mask(rs, series["img"], "GTV-1", series["image"])


def test_roi_outside_the_image_is_an_error(series):
    rs = write_rtstruct(series["tmp"] / "far" / "RS.dcm", series["uids"],
                        {"GTV-1": [square(500.5, 500.5, 506.5, 504.5, 14.0)]})
    with pytest.raises(InputError, match=r"the chosen ROI covers no voxel centre of"):
        read_mask(rs, series["img"], "GTV-1", series["image"])


def test_folder_with_two_structure_sets_is_an_error(series):
    write_rtstruct(series["rs"].parent / "RS2.dcm", series["uids"],
                   {"GTV-1": [square(0.5, 0.5, 6.5, 4.5, 14.0)]})
    (series["rs"].parent / "README.txt").write_text("exported\n")
    with pytest.raises(InputError, match=r"rs: the mask folder holds 2 RTSTRUCT/SEG files "
                       r"\(RS\.dcm \(RTSTRUCT\), RS2\.dcm \(RTSTRUCT\)\); give the one file"):
        read_mask(series["rs"].parent, series["img"], "GTV-1", series["image"])


# ---- DICOM SEG ---------------------------------------------------------------------------------
def write_seg(path: Path, image_folder: Path, segments: dict[str, np.ndarray],
              kind: str = "BINARY") -> Path:
    """Write a DICOM SEG (highdicom) of (z, y, x) masks on an image series' slices."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from pipelines.imageio import dicom_series_files

    sources = [pydicom.dcmread(f) for f in dicom_series_files(image_folder)]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, label in enumerate(segments, start=1)
    ]
    pixels = np.stack(list(segments.values()), axis=-1)
    pixels = pixels.astype(np.uint8) if kind == "BINARY" else pixels.astype(np.float32)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=kind,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="drlake tests",
        manufacturer_model_name="test", software_versions="0", device_serial_number="0",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


@pytest.mark.filterwarnings("ignore:The string")
def test_seg_of_the_ct_phantom_round_trips_to_the_same_voxels(ct, tmp_path):
    image = read_image(ct["image"])
    gtv = to_array(read_image(ct["nifti_mask"]))
    ring = np.zeros_like(gtv)
    ring[30, 50:60, 70:90] = 1
    seg = write_seg(tmp_path / "seg" / "SEG.dcm", ct["image"],
                    {"GTV": gtv, "ring": ring, "nothing": np.zeros_like(gtv)})
    assert mask_kind(seg) == "seg" and mask_kind(seg.parent) == "seg"
    for choice, want in ((1, gtv), ("1", gtv), ("gtv", gtv), ("Ring", ring), ("2", ring)):
        mask, info = load_mask(seg, image, choice, ct["image"])
        np.testing.assert_array_equal(to_array(mask), want)
        assert info["format"] == "seg"
    with pytest.raises(InputError, match=r"SEG\.dcm: segment 3 \('nothing'\) is empty \(no "
                       r"voxel\); choose another segment"):
        read_mask(seg, image, "nothing", ct["image"])
    with pytest.raises(InputError, match=r"SEG\.dcm: the file holds 3 segments \(1 'GTV', "
                       r"2 'ring', 3 'nothing'\); choose one"):
        read_mask(seg, image, None, ct["image"])
    with pytest.raises(InputError, match=r"SEG\.dcm: no segment number 7; the file holds "
                       r"segments 1 'GTV', 2 'ring', 3 'nothing'"):
        read_mask(seg, image, 7, ct["image"])


@pytest.mark.filterwarnings("ignore:The string")
def test_seg_covering_a_few_slices_of_a_small_series(series):
    want = np.zeros((6, 20, 24), np.uint8)
    want[2, 3:9, 4:11] = 1
    want[4, 10:12, 1:3] = 1
    seg = write_seg(series["tmp"] / "SEG.dcm", series["image"], {"lesion": want})
    mask = read_mask(seg, series["img"], None, series["image"])  # the only segment
    np.testing.assert_array_equal(to_array(mask), want)
    # a fractional SEG: voxels of probability >= 0.5
    frac = want * np.float32(0.8)
    frac[2, 3, 4] = 0.3
    fractional = write_seg(series["tmp"] / "FRAC.dcm", series["image"], {"p": frac},
                           "FRACTIONAL")
    half = want.copy()
    half[2, 3, 4] = 0
    np.testing.assert_array_equal(to_array(read_mask(fractional, series["img"], "p")), half)
    # a SEG drawn on another series is refused
    other = series["tmp"] / "t2"
    write_mr_series(other, np.zeros((6, 20, 24), np.int16), spacing=(1.0, 1.0, 2.0),
                    origin=(-5.0, -3.0, 10.0), phi=NEUTRAL)
    with pytest.raises(InputError, match=r"SEG\.dcm: the mask refers to another series"):
        read_mask(seg, read_image(other), None, other)


# ---- ingest ------------------------------------------------------------------------------------
def test_ingest_ct_phantom_with_its_rtstruct_equals_the_nifti_mask(ct, tmp_path):
    (tmp_path / "dicom.csv").write_text(
        f"patient_id,modality,image,mask\nCT1,CT,{ct['image']},{ct['rs']}\n")
    (tmp_path / "nifti.csv").write_text(
        f"patient_id,modality,image,mask\nCT1,CT,{ct['nifti_image']},{ct['nifti_mask']}\n")
    a, b = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    ingest(tmp_path / "dicom.csv", a, settings=IngestSettings(roi="GTV-1"), progress=False)
    ingest(tmp_path / "nifti.csv", b, progress=False)
    got, want = a.read_volume("CT1"), b.read_volume("CT1")
    assert want.masks["CT"].sum() > 100_000
    np.testing.assert_array_equal(got.masks["CT"], want.masks["CT"])
    assert (a.read_table("patients")["mask_voxels"].tolist()
            == b.read_table("patients")["mask_voxels"].tolist())
    src = got.attrs["source"]["CT"]
    assert src["roi_voxels"] == 125256
    assert src["mask"] == {"format": "rtstruct", "roi_number": 1, "contours": 26, "roi": "GTV-1"}
    assert src["dicom"]["Modality"] == "CT"


def test_manifest_roi_column_wins_over_the_roi_option(series, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(f"patient_id,modality,image,mask,roi\nX1,T1,{series['image']},"
                 f"{series['rs'].parent},brainstem\n")
    lake = Lake(tmp_path / "lake")
    ingest(m, lake, settings=IngestSettings(roi="GTV-1"), progress=False)
    rec = lake.read_volume("X1")
    assert rec.attrs["source"]["T1"]["mask"]["roi_number"] == 3
    assert rec.attrs["source"]["T1"]["roi_voxels"] == 16
    # the same manifest again with another --roi: the row's choice is unchanged, nothing to do
    s = ingest(m, lake, settings=IngestSettings(roi="BODY"), progress=False)
    assert s.skipped == ["X1"]
    # another ROI in the row: re-ingested
    m.write_text(m.read_text().replace(",brainstem", ",GTV-1"))
    assert ingest(m, lake, progress=False).ingested == ["X1"]
    assert lake.read_volume("X1").attrs["source"]["T1"]["roi_voxels"] == 48


def test_bad_roi_leaves_the_lake_unchanged(series, tmp_path):
    lake = Lake(tmp_path / "lake")
    ingest(make_cohort_files(tmp_path / "other", n=1, modalities=("T1",)), lake, progress=False)
    before = lake_snapshot(lake.root)
    m = tmp_path / "m.csv"
    m.write_text(f"patient_id,modality,image,mask\nX1,T1,{series['image']},{series['rs']}\n")
    with pytest.raises(InputError, match=r"RS\.dcm: no ROI matches 'PTV'; the file holds ROIs "
                       r"'GTV-1', 'gtv_mass', 'Brainstem', 'BODY'"):
        ingest(m, lake, settings=IngestSettings(roi="PTV"), progress=False)
    with pytest.raises(InputError, match=r"ROI 'BODY' \(number 4\) has no closed contours"):
        ingest(m, lake, settings=IngestSettings(roi="BODY"), progress=False)
    assert lake_snapshot(lake.root) == before


def test_roi_option_does_not_reingest_label_image_masks(tmp_path):
    manifest = make_cohort_files(tmp_path / "c", n=1)
    lake = Lake(tmp_path / "lake")
    ingest(manifest, lake, progress=False)
    assert ingest(manifest, lake, settings=IngestSettings(roi="GTV"), progress=False).skipped \
        == ["P001"]


def test_cli_roi_option_error_is_one_line(ct, tmp_path):
    import subprocess
    import sys

    m = tmp_path / "m.csv"
    m.write_text(f"patient_id,modality,image,mask\nCT1,CT,{ct['image']},{ct['mask_dir']}\n")
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", str(m), "--lake",
                        str(tmp_path / "lake"), "--roi", "PTV|CTV"],
                       capture_output=True, text=True, encoding="utf-8")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "no ROI matches 'PTV|CTV'; the file holds ROIs 'GTV-1'" in errors[0]
    assert not (tmp_path / "lake").exists()
