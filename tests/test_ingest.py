"""Ingest: real formats in, resampled and normalised volumes and validated tables out;
bad input gets one clear error and leaves the lake as it was; reingest is a no-op."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from conftest import ball, make_cohort_files, write_image
from dicom_writers import write_mr_series

from pipelines.exceptions import InputError
from pipelines.ingest import IngestSettings, ingest
from pipelines.lake import Lake


def lake_snapshot(lake: Lake) -> dict:
    """Return {relative path: (size, mtime_ns)} of every file in a local lake."""
    out = {}
    for dirpath, _, files in os.walk(lake.root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out[os.path.relpath(p, lake.root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def cohort(tmp_path):
    return make_cohort_files(tmp_path / "cohort", n=2)


def test_nifti_round_trip_through_the_lake(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 1000, size=(6, 7, 8)).astype(np.int16)
    arr[0, 0, 0], arr[-1, -1, -1] = 0, 1000
    mask = np.zeros_like(arr, dtype=np.uint8)
    mask[2:4, 2:5, 3:6] = 1
    origin = (-10.0, 20.0, 5.0)
    d = tmp_path / "c"
    write_image(d / "img.nii.gz", arr, (1, 1, 1), origin)
    write_image(d / "mask.nii.gz", mask, (1, 1, 1), origin)
    (d / "m.csv").write_text("patient_id,modality,image,mask\nP1,T1,img.nii.gz,mask.nii.gz\n")
    lake = Lake(tmp_path / "lake")
    ingest(d / "m.csv", lake, progress=False)
    rec = lake.read_volume("P1")
    # 1 mm input on a 1 mm grid: resampling is the identity; normalisation is min-max
    np.testing.assert_allclose(rec.images["T1"], arr / 1000.0, atol=1e-5)
    np.testing.assert_array_equal(rec.masks["T1"], mask)
    assert rec.attrs["origin_xyz"] == pytest.approx(origin)
    assert rec.attrs["spacing_zyx"] == [1.0, 1.0, 1.0]
    # world_to_voxel maps the world position of voxel (z=2, y=3, x=4) back to its index
    m = np.array(rec.attrs["world_to_voxel"])
    world = np.array([origin[0] + 4, origin[1] + 3, origin[2] + 2, 1.0])
    np.testing.assert_allclose(m @ world, [2, 3, 4, 1], atol=1e-9)


def test_asymmetric_axes_keep_their_order(tmp_path):
    """A volume with distinct sizes along z, y, x keeps them in (z, y, x) order with spacing."""
    arr = np.zeros((4, 6, 10), np.int16)
    arr[1, 2, 7] = 500
    mask = (arr > 0).astype(np.uint8)
    d = tmp_path / "c"
    write_image(d / "img.nrrd", arr, (1.0, 1.0, 2.0))
    write_image(d / "mask.nrrd", mask, (1.0, 1.0, 2.0))
    (d / "m.csv").write_text("patient_id,modality,image,mask\nP1,T1,img.nrrd,mask.nrrd\n")
    lake = Lake(tmp_path / "lake")
    ingest(d / "m.csv", lake, progress=False)
    rec = lake.read_volume("P1")
    assert rec.images["T1"].shape == (8, 6, 10)  # z doubled by 2 mm -> 1 mm
    z, y, x = np.unravel_index(np.argmax(rec.images["T1"]), rec.images["T1"].shape)
    assert (y, x) == (2, 7) and z in (2, 3)
    assert rec.masks["T1"][:, 2, 7].sum() == 2


@pytest.mark.parametrize("spacing", [(0.9, 0.9, 5.0), (0.5, 0.5, 3.0), (1.2, 1.2, 2.0)])
def test_sphere_volume_kept_after_anisotropic_resampling(tmp_path, spacing):
    radius = 20.0
    extent = 60.0
    shape = tuple(int(round(extent / s)) for s in spacing[::-1])
    mask = ball(shape, spacing, (30.0, 30.0, 30.0), radius)
    img = (100 + 50.0 * mask).astype(np.int16)
    d = tmp_path / "c"
    write_image(d / "img.nii.gz", img, spacing)
    write_image(d / "mask.nii.gz", mask, spacing)
    (d / "m.csv").write_text("patient_id,modality,image,mask\nS1,T1,img.nii.gz,mask.nii.gz\n")
    lake = Lake(tmp_path / "lake")
    ingest(d / "m.csv", lake, progress=False)
    vol = lake.read_volume("S1").masks["T1"].sum() * 1.0  # 1 mm^3 voxels
    expected = 4 / 3 * np.pi * radius**3
    assert abs(vol - expected) / expected < 0.02


def test_nrrd_ingest_of_brain1(tmp_path, shared_reference):
    d = shared_reference / "pyradiomics"
    m = tmp_path / "m.csv"
    m.write_text(
        "patient_id,modality,image,mask\n"
        f"brain1,T1,{d / 'brain1_image.nrrd'},{d / 'brain1_label.nrrd'}\n"
    )
    lake = Lake(tmp_path / "lake")
    ingest(m, lake, progress=False)
    rec = lake.read_volume("brain1")
    img = rec.images["T1"]
    assert img.dtype == np.float32 and img.min() == 0.0 and img.max() == pytest.approx(1.0)
    # 256 x 256 x 25 at 0.781 x 0.781 x 6.5 mm -> 1 mm: 200 x 200 x 163
    assert img.shape == (163, 200, 200)
    roi_mm3 = 4137 * 0.78125 * 0.78125 * 6.5
    assert abs(rec.masks["T1"].sum() - roi_mm3) / roi_mm3 < 0.05
    row = lake.read_table("patients").iloc[0]
    assert row["source_spacing_z"] == pytest.approx(6.5)


def write_dicom_series(folder: Path, arr: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> dict:
    """Write a (z, y, x) int16 array as an MR DICOM series (slice000.dcm, ...) with PHI; return
    the PHI values."""
    phi = {
        "PatientName": "Doe^Jane",
        "PatientID": "MRN-99812734",
        "PatientBirthDate": "19610417",
        "StudyDate": "20190312",
        "InstitutionName": "Saint Secret Hospital",
        "ReferringPhysicianName": "House^Gregory",
        "AccessionNumber": "ACC7765123",
    }
    write_mr_series(folder, arr, spacing, phi={**phi, "SeriesDescription": "T1 AX POST"},
                    file_name="slice{:03d}.dcm")
    return phi


def test_dicom_series_ingest_keeps_no_phi(tmp_path):
    rng = np.random.default_rng(3)
    shape = (10, 32, 32)
    mask = ball(shape, (0.8, 0.8, 2.5), (12.8, 12.8, 12.5), 7.0)
    arr = (rng.normal(300, 30, shape) + 400.0 * mask).astype(np.int16)
    phi = write_dicom_series(tmp_path / "dcm" / "t1", arr)
    write_image(tmp_path / "dcm" / "mask.nrrd", mask, (0.8, 0.8, 2.5))
    (tmp_path / "dcm" / "m.csv").write_text(
        "patient_id,modality,image,mask\nANON-1,T1CE,t1,mask.nrrd\n"
    )
    lake = Lake(tmp_path / "lake")
    ingest(tmp_path / "dcm" / "m.csv", lake, progress=False)
    rec = lake.read_volume("ANON-1")
    # free text (the series description too) never reaches the lake: Modality and typed
    # acquisition parameters only (the full PS3.15 check is tests/test_deidentify.py)
    header = rec.attrs["source"]["T1CE"]["dicom"]
    assert header["Modality"] == "MR" and "SeriesDescription" not in header
    assert rec.images["T1CE"].shape == (25, 26, 26)
    needles = [v.encode() for v in phi.values()] + [b"Doe", b"Jane", b"Secret", b"Gregory",
                                                    b"T1 AX POST"]
    for dirpath, _, files in os.walk(lake.root):
        for f in files:
            data = open(os.path.join(dirpath, f), "rb").read()
            for n in needles:
                assert n not in data, f"PHI {n!r} found in {f}"


def test_tables_are_ingested_and_validated(tmp_path, cohort):
    lake = Lake(tmp_path / "lake")
    s = ingest(cohort, lake, clinical=cohort.parent / "clinical.csv",
               immune=cohort.parent / "immune.csv", progress=False)
    assert s.ingested == ["P001", "P002"]
    imm = lake.read_table("immune_markers")
    assert sorted(imm["marker"].unique()) == ["macrophages_m2", "t_cells_cd8"]
    assert len(lake.read_table("clinical")) == 2
    runs = lake.runs()
    assert runs["stage"].tolist() == ["ingest"] and runs["status"].tolist() == ["ok"]


def test_reingest_is_a_noop_and_new_patient_adds_only_itself(tmp_path, cohort):
    lake = Lake(tmp_path / "lake")
    kw = dict(clinical=cohort.parent / "clinical.csv", progress=False)
    ingest(cohort, lake, **kw)
    snap = lake_snapshot(lake)
    s = ingest(cohort, lake, **kw)
    assert s.ingested == [] and s.skipped == ["P001", "P002"] and s.run_id is None
    assert lake_snapshot(lake) == snap
    # a third patient: only its volume is written, the others' files stay untouched
    bigger = make_cohort_files(cohort.parent, n=3)
    s = ingest(bigger, lake, **kw)
    assert s.ingested == ["P003"]
    after = lake_snapshot(lake)
    for k, v in snap.items():
        if k.startswith("volumes/P001") or k.startswith("volumes/P002"):
            assert after[k] == v
    assert sorted(lake.read_table("patients")["patient_id"]) == ["P001", "P002", "P003"]


def test_changed_settings_reingest(tmp_path, cohort):
    lake = Lake(tmp_path / "lake")
    ingest(cohort, lake, progress=False)
    s = ingest(cohort, lake, settings=IngestSettings(spacing_mm=2.0), progress=False)
    assert s.ingested == ["P001", "P002"]
    assert lake.read_volume("P001").attrs["spacing_zyx"] == [2.0, 2.0, 2.0]


# ---- bad input: one clear error, lake unchanged ----------------------------------------------
def _replace_line(path: Path, old: str, new: str):
    path.write_text(path.read_text().replace(old, new, 1))


def corrupt_truncated(c: Path):
    f = c / "P002" / "T2.nii.gz"
    f.write_bytes(f.read_bytes()[:200])
    return r"P002/T2.nii.gz: cannot read image"


def corrupt_garbage(c: Path):
    (c / "P002" / "T1.nii.gz").write_bytes(b"not an image at all")
    return r"P002/T1.nii.gz: cannot read image"


def corrupt_mask_space(c: Path):
    m = sitk.ReadImage(str(c / "P002" / "mask.nii.gz"))
    m.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(m, str(c / "P002" / "mask.nii.gz"))
    return r"P002/mask.nii.gz: mask is not on the grid of image .*T1.nii.gz: origin"


def corrupt_mask_spacing(c: Path):
    m = sitk.ReadImage(str(c / "P002" / "mask.nii.gz"))
    m.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(m, str(c / "P002" / "mask.nii.gz"))
    return r"P002/mask.nii.gz: mask is not on the grid .*spacing"


def corrupt_empty_mask(c: Path):
    m = sitk.ReadImage(str(c / "P002" / "mask.nii.gz"))
    sitk.WriteImage(m * 0, str(c / "P002" / "mask.nii.gz"))
    return r"P002/mask.nii.gz: mask is empty"


def corrupt_labels(c: Path):
    m = sitk.ReadImage(str(c / "P002" / "mask.nii.gz"))
    sitk.WriteImage(m * 2, str(c / "P002" / "mask.nii.gz"))
    return r"P002/mask.nii.gz: mask has labels other than 0/1 \(2\); choose the ROI with --label"


def corrupt_nan(c: Path):
    img = sitk.ReadImage(str(c / "P001" / "T1.nii.gz"), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(img)
    arr[3, 4, 5] = np.nan
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(c / "P001" / "T1.nii.gz"))
    return r"P001/T1.nii.gz: image has 1 NaN/infinite voxel"


def corrupt_missing_modality(c: Path):
    lines = (c / "manifest.csv").read_text().splitlines()
    (c / "manifest.csv").write_text("\n".join(lines[:-1]) + "\n")
    return r"manifest.csv: patient P002 has no T2 image \(every patient needs T1, T2\)"


def corrupt_duplicate_id(c: Path):
    lines = (c / "manifest.csv").read_text().splitlines()
    (c / "manifest.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
    return r"manifest.csv, line 6: duplicate patient id/modality P001 T1"


def corrupt_path_separator(c: Path):
    _replace_line(c / "manifest.csv", "P002,T1", "../P002,T1")
    return r"manifest.csv, line 4: invalid patient id '../P002'"


def corrupt_unknown_patient(c: Path):
    _replace_line(c / "clinical.csv", "P002,", "P999,")
    return r"clinical.csv, line 3: patient 'P999' is not in the manifest or the lake"


def corrupt_age(c: Path):
    _replace_line(c / "clinical.csv", "P002,41", "P002,forty-one")
    return r"clinical.csv: table clinical, column age, row 2 \(patient_id='P002'\): value " \
        r"'forty-one' is not a number"


def corrupt_survival_text(c: Path):
    _replace_line(c / "clinical.csv", ",310,", ",long,")
    return r"clinical.csv: .*column survival_days.*'long' is not a number"


def corrupt_event(c: Path):
    _replace_line(c / "clinical.csv", ",310,1", ",310,2")
    return r"clinical.csv: .*column event.*P002.*value '2' must be one of \[0, 1\]"


def corrupt_negative_survival(c: Path):
    _replace_line(c / "clinical.csv", ",310,", ",-5,")
    return r"clinical.csv: .*column survival_days.*P002.*'-5' must be >= 0"


def corrupt_duplicate_clinical(c: Path):
    lines = (c / "clinical.csv").read_text().splitlines()
    (c / "clinical.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
    return r"clinical.csv: table clinical: duplicate key \{'patient_id': 'P001'\}"


BAD_INPUTS = [
    corrupt_truncated, corrupt_garbage, corrupt_mask_space, corrupt_mask_spacing,
    corrupt_empty_mask, corrupt_labels, corrupt_nan, corrupt_missing_modality,
    corrupt_duplicate_id, corrupt_path_separator, corrupt_unknown_patient, corrupt_age,
    corrupt_survival_text, corrupt_event, corrupt_negative_survival, corrupt_duplicate_clinical,
]


@pytest.mark.parametrize("corrupt", BAD_INPUTS, ids=lambda f: f.__name__[8:])
def test_bad_input_gives_clear_error_and_leaves_lake_unchanged(tmp_path, corrupt):
    c = tmp_path / "cohort"
    manifest = make_cohort_files(c, n=2)
    lake = Lake(tmp_path / "lake")
    # a lake that already holds an earlier, good ingest of another patient
    other = make_cohort_files(tmp_path / "other", n=1)
    ingest(other, lake, progress=False)
    before = lake_snapshot(lake)
    pattern = corrupt(c)
    with pytest.raises(InputError, match=pattern):
        ingest(manifest, lake, clinical=c / "clinical.csv", progress=False)
    assert lake_snapshot(lake) == before


def test_label_option_selects_the_roi(tmp_path):
    c = tmp_path / "cohort"
    manifest = make_cohort_files(c, n=1)
    m = sitk.ReadImage(str(c / "P001" / "mask.nii.gz"))
    sitk.WriteImage(m * 2, str(c / "P001" / "mask.nii.gz"))
    lake = Lake(tmp_path / "lake")
    ingest(manifest, lake, settings=IngestSettings(label=2), progress=False)
    assert lake.read_volume("P001").masks["T1"].sum() > 0


def test_cli_error_is_one_line_without_traceback(tmp_path):
    import subprocess
    import sys

    c = tmp_path / "cohort"
    manifest = make_cohort_files(c, n=1)
    corrupt_empty_mask_p1 = sitk.ReadImage(str(c / "P001" / "mask.nii.gz"))
    sitk.WriteImage(corrupt_empty_mask_p1 * 0, str(c / "P001" / "mask.nii.gz"))
    r = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "ingest", str(manifest), "--lake",
         str(tmp_path / "lake")], capture_output=True, text=True, encoding="utf-8",
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "mask is empty" in errors[0]


def test_patients_table_matches_schema(tmp_path, cohort):
    from pipelines.schemas import validate

    lake = Lake(tmp_path / "lake")
    ingest(cohort, lake, progress=False)
    df = lake.read_table("patients")
    validate("patients", df)
    assert (df["mask_voxels"] > 0).all()
    assert isinstance(df, pd.DataFrame)


# ---- ingest as a Dask graph -------------------------------------------------------------------
def volumes_content(lake: Lake) -> dict:
    """Return {patient: (images, masks, attrs without run id)} of every volume in the lake."""
    out = {}
    for pid in sorted(lake.read_table("patients")["patient_id"]):
        v = lake.read_volume(pid)
        attrs = {k: val for k, val in v.attrs.items() if k != "run_id"}
        out[pid] = (v.images, v.masks, attrs)
    return out


def assert_same_volumes(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for pid in a:
        for x, y in zip(a[pid][:2], b[pid][:2], strict=True):
            assert x.keys() == y.keys()
            for mod in x:
                np.testing.assert_array_equal(x[mod], y[mod])
        assert a[pid][2] == b[pid][2]


def test_parallel_ingest_gives_the_same_lake_as_serial(tmp_path):
    from pipelines.scheduler import SchedulerSpec

    manifest = make_cohort_files(tmp_path / "c", n=4)
    serial, parallel = Lake(tmp_path / "serial"), Lake(tmp_path / "parallel")
    ingest(manifest, serial, sched=SchedulerSpec("sync"), progress=False)
    s = ingest(manifest, parallel, sched=SchedulerSpec("processes", 2), progress=False)
    assert sorted(s.ingested) == ["P001", "P002", "P003", "P004"]
    assert_same_volumes(volumes_content(serial), volumes_content(parallel))
    cols = ["patient_id", "mask_voxels", "regions", "fingerprint"]
    pd.testing.assert_frame_equal(serial.read_table("patients")[cols].sort_values("patient_id"),
                                  parallel.read_table("patients")[cols].sort_values("patient_id"))


def test_one_bad_patient_among_parallel_tasks_leaves_the_lake_as_it_was(tmp_path):
    from pipelines.scheduler import SchedulerSpec

    lake = Lake(tmp_path / "lake")
    ingest(make_cohort_files(tmp_path / "earlier", n=1), lake, progress=False)
    before = lake_snapshot(lake)
    c = tmp_path / "c"
    manifest = make_cohort_files(c, n=4)
    (c / "P003" / "T2.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"P003[/\\]T2.nii.gz"):
        ingest(manifest, lake, sched=SchedulerSpec("threads", 2), progress=False)
    assert lake_snapshot(lake) == before  # the other patients' staged volumes are gone too


def _start_cluster(tmp_path, workers: int = 2):
    """Start `dask scheduler` and `dask worker` processes on 127.0.0.1; return (address, procs)."""
    import json
    import subprocess
    import sys
    import time

    sfile = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sfile)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    deadline = time.time() + 60
    while not sfile.exists() and time.time() < deadline:
        time.sleep(0.2)
    address = json.loads(sfile.read_text())["address"]
    for _ in range(workers):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
    from distributed import Client

    with Client(address) as client:
        client.wait_for_workers(workers, timeout=60)
    return address, procs


def test_ingest_activations_and_quantify_on_a_real_cluster(tmp_path):
    """A scheduler and two worker processes started as a user would (`dask scheduler`,
    `dask worker`) run every stage; the lake is the same as a local run's."""
    from pipelines.encoder import EncoderSpec
    from pipelines.pipeline import run_activations, run_quantify
    from pipelines.scheduler import SchedulerSpec
    from pipelines.sql import connect

    manifest = make_cohort_files(tmp_path / "c", n=3)
    spec = EncoderSpec(blocks=(2, 2), seed=1)
    local, remote = Lake(tmp_path / "local"), Lake(tmp_path / "remote")
    ingest(manifest, local, sched=SchedulerSpec("sync"), progress=False)
    act = run_activations(local, spec, SchedulerSpec("sync"), progress=False)
    run_quantify(local, act["encoder"], sched=SchedulerSpec("sync"), progress=False)
    address, procs = _start_cluster(tmp_path)
    try:
        cluster = SchedulerSpec(address=address)
        s = ingest(manifest, remote, sched=cluster, progress=False)
        run_activations(remote, spec, cluster, progress=False)
        q = run_quantify(remote, act["encoder"], sched=cluster, progress=False)
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert len(s.ingested) == 3 and q["written"] == 6
    assert_same_volumes(volumes_content(local), volumes_content(remote))

    def features(lake):
        con = connect(lake)
        try:
            return con.execute("SELECT * EXCLUDE (run_id) FROM features ORDER BY ALL").df()
        finally:
            con.close()

    pd.testing.assert_frame_equal(features(local), features(remote), check_exact=True)
