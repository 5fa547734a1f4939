"""De-identification (DICOM PS3.15 basic profile): a DICOM series and RTSTRUCT carrying a
distinctive PHI string in every text attribute and a private tag go through ingest, and not one
of those strings is anywhere in the lake: raw bytes, decoded Zarr attributes and arrays, Parquet
cells and metadata, the run log. The header fields kept are typed; empty ones are null."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import zarr
from conftest import ball, write_image
from dicom_writers import PHI, phi_needles, square, write_mr_series, write_rtstruct

from pipelines.imageio import DICOM_ALLOWED_TAGS, dicom_allowed_header
from pipelines.ingest import ingest
from pipelines.lake import Lake

SHAPE, SPACING, ORIGIN = (8, 24, 24), (1.0, 1.0, 2.0), (-12.0, -12.0, 30.0)
ROI_NAME = "GTV_PHIROINAME"


def build_phi_cohort(root: Path) -> Path:
    """Write one patient: T1 (DICOM series + RTSTRUCT mask) and T2 (DICOM series + NRRD mask),
    PHI everywhere; return the manifest."""
    rng = np.random.default_rng(5)
    mask = ball(SHAPE, SPACING, (12.0, 12.0, 8.0), 6.0)
    arr = (rng.normal(300, 30, SHAPE) + 400.0 * mask).astype(np.int16)
    t1 = write_mr_series(root / "t1", arr, SPACING, ORIGIN)
    write_mr_series(root / "t2", arr[:, ::-1].copy(), SPACING, ORIGIN,
                    acquisition={"RepetitionTime": 6000.0, "EchoTime": 90.0})
    zs = [ORIGIN[2] + k * SPACING[2] for k in range(SHAPE[0])]
    contours = [square(-6.5, -6.5, 2.5, 2.5, z) for z in zs[2:7]]
    write_rtstruct(root / "rs" / "RS.dcm", t1, {ROI_NAME: contours, "BODY_PHIBODY": []},
                   phi=PHI)
    write_image(root / "t2mask.nrrd", mask[:, ::-1].copy(), SPACING, ORIGIN)
    manifest = root / "manifest.csv"
    manifest.write_text("patient_id,modality,image,mask,roi\n"
                        "ANON-7,T1,t1,rs,gtv_.*\n"
                        "ANON-7,T2,t2,t2mask.nrrd,\n")
    return manifest


def decoded_texts(root: Path):
    """Yield (where, text) for everything a reader of the lake gets back as text: Zarr
    attributes, Parquet cells, schemas and key-value metadata. Also checks that Zarr arrays hold
    numbers only."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if f == "zarr.json":
                yield str(p), p.read_text()
            elif f.endswith(".parquet"):
                pf = pq.ParquetFile(p)
                yield f"{p} (schema)", str(pf.schema_arrow)
                kv = pf.metadata.metadata or {}
                yield f"{p} (metadata)", " ".join(
                    (k + b" " + v).decode("utf-8", "replace") for k, v in kv.items())
                table = pf.read()
                for name in table.column_names:
                    yield f"{p}:{name}", " ".join(map(str, table.column(name).to_pylist()))
    n_arrays = 0
    for vol in (Path(root) / "volumes").glob("*.zarr"):
        group = zarr.open_group(str(vol), mode="r")
        yield f"{vol} (attrs)", json.dumps(dict(group.attrs))
        for path, node in group.members(max_depth=None):
            yield f"{vol}/{path} (attrs)", json.dumps(dict(node.attrs))
            if isinstance(node, zarr.Array):
                n_arrays += 1
                assert node.dtype.kind in "biuf", f"{vol}/{path}: non-numeric {node.dtype}"
    assert n_arrays > 0


def values(obj):
    """Yield every leaf value of a JSON-like object."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from values(v)
    else:
        yield obj


def test_no_phi_string_anywhere_in_the_lake(tmp_path):
    manifest = build_phi_cohort(tmp_path / "in")
    lake = Lake(tmp_path / "lake")
    ingest(manifest, lake, progress=False)
    rec = lake.read_volume("ANON-7")
    assert rec.masks["T1"].sum() > 0 and rec.masks["T2"].sum() > 0

    needles = phi_needles() + [b"PHIROINAME", b"PHIBODY"]
    assert b"PHISERIESDESC T1 post PHIMRN-4417" in needles and b"Zebediah" in needles
    n_files = 0
    for dirpath, _, files in os.walk(lake.root):
        for f in files:
            data = (Path(dirpath) / f).read_bytes()
            n_files += 1
            for n in needles:
                assert n not in data, f"PHI {n!r} in the bytes of {f}"
                assert n.lower() not in data.lower(), f"PHI {n!r} (any case) in {f}"
    assert n_files > 5
    n_texts = 0
    for where, text in decoded_texts(lake.root):
        n_texts += 1
        for n in needles:
            assert n.decode().casefold() not in text.casefold(), f"PHI {n!r} in {where}"
    assert n_texts > 10

    # the header fields kept: Modality and typed acquisition parameters, nothing else
    for mod, tr, te in (("T1", 2300.0, 2.98), ("T2", 6000.0, 90.0)):
        header = rec.attrs["source"][mod]["dicom"]
        assert header == {"Modality": "MR", "MRAcquisitionType": "3D",
                          "MagneticFieldStrength": 3.0, "RepetitionTime": tr, "EchoTime": te,
                          "InversionTime": 900.0, "FlipAngle": 9.0, "SliceThickness": 2.0}
    assert "None" not in list(values(rec.attrs))
    # the ROI is recorded by the selector the user gave and its number, never by its name
    assert rec.attrs["source"]["T1"]["mask"] == {"format": "rtstruct", "roi_number": 1,
                                                 "contours": 5, "roi": "gtv_.*"}


def test_empty_or_malformed_header_fields_are_null_not_the_string_none(tmp_path):
    folder = tmp_path / "t1"
    write_mr_series(folder, np.full((3, 8, 8), 10, np.int16), SPACING, ORIGIN)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        del ds.InversionTime                  # absent
        ds.EchoTime = None                    # present, empty
        ds.FlipAngle = ""                     # present, empty string
        ds.MRAcquisitionType = ""
        ds.MagneticFieldStrength = "3"        # a DS string: a number
        ds.save_as(f)
    header = dicom_allowed_header(folder)
    assert set(header) == set(DICOM_ALLOWED_TAGS)
    assert header["Modality"] == "MR" and header["MagneticFieldStrength"] == 3.0
    for tag in ("InversionTime", "EchoTime", "FlipAngle", "MRAcquisitionType"):
        assert header[tag] is None, tag
    assert json.loads(json.dumps(header))["EchoTime"] is None

    write_image(tmp_path / "mask.nrrd", np.ones((3, 8, 8), np.uint8), SPACING, ORIGIN)
    (tmp_path / "m.csv").write_text("patient_id,modality,image,mask\nA1,T1,t1,mask.nrrd\n")
    lake = Lake(tmp_path / "lake")
    ingest(tmp_path / "m.csv", lake, progress=False)
    rec = lake.read_volume("A1")
    assert rec.attrs["source"]["T1"]["dicom"]["EchoTime"] is None
    assert "None" not in list(values(rec.attrs))
    raw = (Path(lake.root) / "volumes" / "A1.zarr" / "zarr.json").read_text()
    assert '"EchoTime": null' in raw and '"None"' not in raw


@pytest.mark.parametrize("tag", ["SeriesDescription", "ProtocolName", "StudyDescription",
                                 "ImageComments", "InstitutionName", "PatientName"])
def test_free_text_is_not_in_the_allow_list(tag):
    assert tag not in DICOM_ALLOWED_TAGS
