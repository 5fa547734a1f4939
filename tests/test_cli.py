"""The command line: thin commands over stage functions, clear errors, machine-readable output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.features.case import quantify_case
from pipelines.features.catalogue import feature_catalogue


def drlake(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)],
                          capture_output=True, text=True, encoding="utf-8")


def test_quantify_json_records_match_the_core(shared_reference):
    img = shared_reference / "pyradiomics" / "brain1_image.nrrd"
    msk = shared_reference / "pyradiomics" / "brain1_label.nrrd"
    r = drlake("quantify", img, msk, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert all(set(x) == {"name", "family", "ibsi_code", "aggregation", "value"} for x in rows)
    aggs = {x["family"]: x["aggregation"] for x in rows}
    assert aggs == {"firstorder": "", "glcm": "3D, averaged", "glszm": "3D", "ngtdm": "3D",
                    "shape": ""}
    names = {x["name"] for x in rows}
    families = {x["family"] for x in rows}
    assert families == {"firstorder", "glcm", "glszm", "ngtdm", "shape"}
    assert {"cm_contrast", "szm_lze", "ngt_coarseness", "morph_volume"} <= names
    direct = {x["name"]: x["value"] for x in quantify_case(img, msk)}
    for x in rows:
        if x["value"] is not None:
            assert x["value"] == pytest.approx(direct[x["name"]], rel=1e-12)
    assert names <= {c["name"] for c in feature_catalogue()}


def test_quantify_csv_and_bad_label(shared_reference):
    img = shared_reference / "pyradiomics" / "brain1_image.nrrd"
    msk = shared_reference / "pyradiomics" / "brain1_label.nrrd"
    r = drlake("quantify", img, msk, "--format", "csv", "--families", "glcm",
               "--aggregation", "merged", "--bin-size", "25")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "name,family,ibsi_code,aggregation,value" and len(lines) == 26
    assert all(",3D, merged," in line or '"3D, merged"' in line for line in lines[1:])
    r = drlake("quantify", img, msk, "--label", "3")
    assert r.returncode == 2 and "no voxel has label 3" in r.stderr
    assert "Traceback" not in r.stderr


def test_quantify_settings_preset_override_and_errors(shared_reference, tmp_path):
    base = shared_reference / "ibsi" / "digital_phantom" / "nifti"
    img, msk = base / "image" / "phantom.nii.gz", base / "mask" / "mask.nii.gz"
    r = drlake("quantify", img, msk, "--settings", "ibsi1-digital-phantom", "--families",
               "glcm,ngtdm", "--aggregation", "2.5D, merged", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {(x["family"], x["aggregation"]) for x in rows} == {("glcm", "2.5D, merged"),
                                                               ("ngtdm", "2.5D")}
    assert len(rows) == 25 + 5
    r = drlake("quantify", img, msk, "--settings", "ibsi1-ct-F")
    assert r.returncode == 2 and "unknown settings preset 'ibsi1-ct-F'" in r.stderr
    assert "ibsi1-ct-A" in r.stderr and "Traceback" not in r.stderr
    params = tmp_path / "params.yaml"
    params.write_text("setting:\n  binWidth: 25\n  normalize: true\n")
    r = drlake("quantify", img, msk, "--settings", params)
    assert r.returncode == 2 and "unsupported PyRadiomics settings: normalize" in r.stderr
