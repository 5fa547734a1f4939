"""Shared fixtures: the read-only reference data and small image cohorts written on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk


def find_reference() -> Path:
    """Return the shared reference data folder: $DRLAKE_REFERENCE, else ../shared/reference
    next to the project, else /work/shared/reference."""
    import os

    candidates = [os.environ.get("DRLAKE_REFERENCE"),
                  Path(__file__).resolve().parents[1].parent / "shared" / "reference",
                  "/work/shared/reference"]
    for c in candidates:
        if c and Path(c).exists():
            return Path(c)
    return Path(candidates[1])


REFERENCE = find_reference()
IBSI_CSV = REFERENCE / "ibsi" / "ibsi1_digital_phantom_reference_3D_subset.csv"
IBSI_FULL_CSV = REFERENCE / "ibsi" / "ibsi1_digital_phantom_reference.csv"


def ibsi_reference(keep, full: bool = False) -> list:
    """Return pytest params, one per row of the IBSI phantom reference (the 3D subset, or with
    `full` every aggregation) that passes keep(tag), or keep(row) with `full`; a single skipped
    param where the reference data is absent."""
    import csv

    path = IBSI_FULL_CSV if full else IBSI_CSV
    if not path.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason="no reference data"))]
    with path.open(newline="", encoding="utf-8") as f:
        return [pytest.param(r, id=r["tag"]) for r in csv.DictReader(f)
                if keep(r if full else r["tag"])]


def agrees_with_reference(value: float, row: dict) -> bool:
    """Return True if value matches the reference row to its tolerance, else to the 3
    significant figures the reference gives."""
    ref = float(row["value"])
    if row["tolerance"]:
        return abs(value - ref) <= float(row["tolerance"])
    return float(f"{value:.3g}") == float(f"{ref:.3g}")


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """Path to ../shared/reference (read-only); skips the test where it is absent."""
    if not REFERENCE.exists():
        pytest.skip(f"reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def phantom_levels(shared_reference):
    """Return the IBSI digital phantom as (int32 grey levels (z, y, x), boolean ROI mask)."""
    base = shared_reference / "ibsi" / "digital_phantom" / "nifti"
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "image" / "phantom.nii.gz")))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "mask" / "mask.nii.gz"))) > 0
    return img.astype(np.int32), mask


def write_image(path: Path, arr: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction=None) -> Path:
    """Write a (z, y, x) array as an image file with ITK (x, y, z) spacing and origin."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    if direction is not None:
        img.SetDirection([float(d) for d in direction])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def ball(shape_zyx, spacing_xyz, centre_mm, radius_mm) -> np.ndarray:
    """Return a uint8 (z, y, x) mask of a ball given in mm (voxel centres at index * spacing)."""
    z, y, x = np.indices(shape_zyx, dtype=float)
    sx, sy, sz = spacing_xyz
    cx, cy, cz = centre_mm
    d2 = (x * sx - cx) ** 2 + (y * sy - cy) ** 2 + (z * sz - cz) ** 2
    return (d2 <= radius_mm**2).astype(np.uint8)


def make_cohort_files(root: Path, n: int = 2, modalities=("T1", "T2"), seed: int = 0,
                      shape=(12, 24, 24), spacing=(2.0, 2.0, 3.0)) -> Path:
    """Write a tiny cohort (images, masks, manifest, clinical, immune) and return the manifest."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pid = f"P{i + 1:03d}"
        mask = ball(shape, spacing, (24, 24, 18), 10)
        mpath = write_image(root / pid / "mask.nii.gz", mask, spacing)
        for m in modalities:
            arr = (rng.normal(100, 20, shape) + 200.0 * mask).astype(np.int16)
            ipath = write_image(root / pid / f"{m}.nii.gz", arr, spacing)
            rows.append(f"{pid},{m},{ipath.relative_to(root)},{mpath.relative_to(root)}")
    manifest = root / "manifest.csv"
    manifest.write_text("patient_id,modality,image,mask\n" + "\n".join(rows) + "\n")
    clin = ["patient_id,age,gender,grade,survival_days,event"]
    imm = ["patient_id,T Cells CD8,Macrophages M2"]
    for i in range(n):
        pid = f"P{i + 1:03d}"
        clin.append(f"{pid},{40 + i},{'MF'[i % 2]},{('LGG', 'GBM')[i % 2]},{300 + 10 * i},{i % 2}")
        imm.append(f"{pid},{0.01 * i:.3f},0.1")
    (root / "clinical.csv").write_text("\n".join(clin) + "\n")
    (root / "immune.csv").write_text("\n".join(imm) + "\n")
    return manifest


def write_rows(lake, table, data, name=None, partition=None, metadata=None):
    """Write test rows into a lake table and mark each run id they carry as an ``ok`` run, so
    that readers (which show only rows of ok runs) see them. `name`, `partition` and `metadata`
    are accepted for the old call shape and ignored (Delta tables have no file names)."""
    import datetime as dt

    import pandas as pd

    from pipelines.lake import RunLog

    df = data if isinstance(data, pd.DataFrame) else data.to_pandas()
    lake.append_rows(table, df)
    if "run_id" in df.columns and table != "runs":
        # run ids the run log knows keep their own status (a running or failed run stays so)
        known = set(lake.run_events()["run_id"])
        for rid in sorted(set(df["run_id"]) - known):
            stage = "analyze" if table.startswith("results_") else "test"
            RunLog(lake=lake, run_id=rid, stage=stage, parameters={}, input_fingerprints={},
                   encoder_hash=None, started_at=dt.datetime.now(dt.UTC)).write("ok")


@pytest.fixture
def s3_server(monkeypatch):
    """A loopback S3 server (moto) in its own process, with bucket ``drlake``; yields the AWS
    environment that points clients at it (also set in this process). A separate process,
    because delta-rs holds the GIL while it waits for an in-process server's answer."""
    import socket
    import subprocess
    import sys
    import time

    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # fsspec caches filesystem instances by their arguments: one made for an earlier test's
    # server would still point at that server's (now closed) port
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3").create_bucket(Bucket="drlake")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield env
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
