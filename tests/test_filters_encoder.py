"""Filter banks as encoders: bank files, measured margins (a ROI crop grown by the margin gives
the whole-volume response inside the ROI), NIfTI export, and a lake run with a LoG + wavelet bank
beside the CNN in one SQL query, whose rerun computes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_cohort_files, write_image

from pipelines.activations import roi_crop_box
from pipelines.encoder import EncoderSpec, build_encoder, spec_from_options
from pipelines.exceptions import InputError
from pipelines.filters.bank import filter_spec
from pipelines.filters.encoder import (
    WHOLE_VOLUME,
    FilterEncoder,
    bank_from_dict,
    load_bank,
    response_radius,
    shipped_banks,
)
from pipelines.ingest import ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.scheduler import SchedulerSpec
from pipelines.sql import connect

SMALL_BANK = """
name = "log-wavelet"
[[filters]]
filter = "log"
sigma_mm = 1.5
[[filters]]
filter = "log"
sigma_mm = 3.0
[[filters]]
filter = "wavelet"
wavelet = "db3"
subband = "LLH"
level = 1
"""


def test_shipped_banks_load_with_their_maps():
    assert shipped_banks() == ["ibsi2-phase2", "pyradiomics"]
    py = load_bank("filters:pyradiomics")
    assert len(py.specs) == 5 + 8
    assert [s.filter for s in py.specs].count("wavelet") == 8
    assert {s.params["subband"] for s in py.specs if s.filter == "wavelet"} == {
        "LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH"}
    ibsi = load_bank("ibsi2-phase2")
    assert [s.filter for s in ibsi.specs] == ["mean", "log", "laws", "gabor", "wavelet",
                                              "wavelet", "simoncelli", "simoncelli"]
    assert [s.params["boundary"] for s in ibsi.specs] == ["mirror"] * 6 + ["periodic"] * 2


@pytest.mark.parametrize("suffix", [".toml", ".json", ".yaml"])
def test_bank_files_in_every_format_give_the_same_encoder(tmp_path, suffix):
    import tomllib

    import yaml

    doc = tomllib.loads(SMALL_BANK)
    path = tmp_path / f"bank{suffix}"
    path.write_text(SMALL_BANK if suffix == ".toml" else
                    json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc))
    enc = build_encoder(spec_from_options(weights=f"filters:{path}"))
    assert isinstance(enc, FilterEncoder)
    assert enc.name == f"filters-log-wavelet-{enc.identity_hash[:8]}"
    assert enc.identity_hash == bank_from_dict(doc, "x").sha256


def test_bad_bank_files_are_refused_naming_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[filters]]\nfilter = "lgo"\nsigma_mm = 1\n')
    with pytest.raises(InputError, match=r"bad.toml: unknown filter 'lgo'"):
        load_bank(str(bad))
    with pytest.raises(InputError, match="not found"):
        load_bank(str(tmp_path / "missing.toml"))
    (tmp_path / "b.txt").write_text("x")
    with pytest.raises(InputError, match="is a .toml, .yaml or .json file"):
        load_bank(str(tmp_path / "b.txt"))


def test_changing_a_parameter_changes_the_encoder_identity():
    a = bank_from_dict({"filters": [{"filter": "log", "sigma_mm": 1.0}]}, "a")
    b = bank_from_dict({"filters": [{"filter": "log", "sigma_mm": 1.5}]}, "a")
    c = bank_from_dict({"name": "other", "filters": [{"filter": "log", "sigma_mm": 1}]}, "c")
    assert a.sha256 != b.sha256 and a.sha256 == c.sha256  # the name is not part of the hash


@pytest.mark.parametrize("sigma, spacing, radius", [(1.0, 1.0, 4), (2.0, 1.0, 8), (2.0, 2.0, 4)])
def test_log_radius_is_truncate_sigma_in_voxels(sigma, spacing, radius):
    spec = filter_spec("log", {"sigma_mm": sigma, "boundary": "zero"})
    assert response_radius(spec, spacing) == radius


def test_fourier_filters_take_the_whole_volume():
    assert response_radius(filter_spec("simoncelli", {"level": 1})) == WHOLE_VOLUME


BANKS = {
    "log-laws-wavelet": [
        {"filter": "log", "sigma_mm": 2.0, "boundary": "mirror"},
        {"filter": "laws", "kernel": "L5E5E5", "energy_delta": 3, "rotation_invariant": True},
        {"filter": "wavelet", "wavelet": "db3", "subband": "HHH", "level": 2},
        {"filter": "mean", "support": 5, "boundary": "nearest"},
    ],
    "gabor": [{"filter": "gabor", "sigma_mm": 2.0, "lambda_mm": 2.0, "gamma": 1.5,
               "delta_theta": np.pi / 4, "planes": ["axial", "coronal", "sagittal"]}],
    "simoncelli": [{"filter": "simoncelli", "level": 1, "boundary": "mirror"}],
}


@pytest.mark.parametrize("name", list(BANKS))
def test_roi_crop_with_the_margin_equals_the_whole_volume_inside_the_roi(name):
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(40, 44, 48)).astype(np.float32)
    roi = np.zeros(vol.shape, bool)
    roi[14:24, 20:30, 8:20] = True  # near a face, so the crop is clipped there
    enc = FilterEncoder(bank_from_dict({"name": name, "filters": BANKS[name]}, name))
    whole = enc.activations(vol, spacing=(1.0, 1.0, 1.0))[0]
    box = roi_crop_box(roi, enc.margin(1.0), 1)
    sl = tuple(slice(a, b) for a, b in box)
    crop = enc.activations(vol[sl], spacing=(1.0, 1.0, 1.0))[0]
    inside = roi[sl]
    np.testing.assert_allclose(crop[:, inside], whole[(slice(None), *sl)][:, inside],
                               rtol=1e-5, atol=1e-5)
    if enc.margin(1.0) < WHOLE_VOLUME:  # a smaller crop would differ: the margin is needed
        box2 = roi_crop_box(roi, max(0, enc.margin(1.0) - 2), 1)
        sl2 = tuple(slice(a, b) for a, b in box2)
        small = enc.activations(vol[sl2], spacing=(1.0, 1.0, 1.0))[0]
        assert not np.allclose(small[:, roi[sl2]], whole[(slice(None), *sl2)][:, roi[sl2]],
                               atol=1e-5)


def test_drlake_filter_writes_each_response_on_the_image_grid(tmp_path):
    spacing = (1.0, 1.2, 2.0)
    arr = np.random.default_rng(0).normal(100, 10, (10, 20, 22)).astype(np.float32)
    img = write_image(tmp_path / "img.nii.gz", arr, spacing)
    bank = tmp_path / "bank.toml"
    bank.write_text(SMALL_BANK)
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "filter", str(img),
                        "--encoder", f"filters:{bank}", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "out").glob("*.nii.gz"))
    assert len(files) == 3 and files[0].name.startswith("00_log")
    ref = sitk.ReadImage(str(img))
    b = load_bank(str(bank))
    for f, spec in zip(files, b.specs, strict=True):
        out = sitk.ReadImage(str(f))
        assert out.GetSpacing() == ref.GetSpacing() and out.GetOrigin() == ref.GetOrigin()
        want = spec.apply(arr.astype(np.float64), tuple(reversed(spacing)))
        np.testing.assert_allclose(sitk.GetArrayFromImage(out), want, rtol=1e-5, atol=1e-4)


def test_a_bank_beside_the_cnn_in_sql_and_a_rerun_computes_nothing(tmp_path):
    manifest = make_cohort_files(tmp_path / "c", n=2)
    lake = Lake(tmp_path / "lake")
    ingest(manifest, lake, progress=False)
    bank_file = tmp_path / "bank.toml"
    bank_file.write_text(SMALL_BANK)
    cnn = run_activations(lake, EncoderSpec(blocks=(2, 2), seed=1), SchedulerSpec("sync"),
                          progress=False)
    run_quantify(lake, cnn["encoder"], sched=SchedulerSpec("sync"), progress=False)
    spec = spec_from_options(weights=f"filters:{bank_file}")
    flt = run_activations(lake, spec, SchedulerSpec("threads", 2), progress=False)
    q = run_quantify(lake, flt["encoder"], sched=SchedulerSpec("threads", 2), progress=False)
    assert flt["computed"] == 2 and q["written"] == 4
    con = connect(lake)
    try:
        per_enc = dict(con.execute(
            "SELECT encoder, count(DISTINCT feature) FROM features WHERE layer > 0 "
            "GROUP BY encoder").fetchall())
        maps = con.execute(
            "SELECT m.map_name, m.filter, f.value FROM features f JOIN encoder_maps m "
            "USING (encoder, layer, map) WHERE f.encoder = ? AND f.patient_id = 'P001' "
            "AND f.modality = 'T1' AND f.feature = 'stat_var' ORDER BY f.map",
            [flt["encoder"]]).df()
        fams = {r[0] for r in con.execute(
            "SELECT DISTINCT c.family FROM features f JOIN feature_catalogue c "
            "ON c.name = f.feature WHERE f.encoder = ? AND f.layer > 0",
            [flt["encoder"]]).fetchall()}
    finally:
        con.close()
    assert set(per_enc) == {cnn["encoder"], flt["encoder"]}
    assert per_enc[flt["encoder"]] < per_enc[cnn["encoder"]]  # intensity features only
    assert fams == {"firstorder"}
    assert list(maps["filter"]) == ["log", "log", "wavelet"]
    assert maps["map_name"].iloc[0].startswith("log(sigma_mm=1.5)")
    assert (maps["value"] > 0).all()
    again = run_activations(lake, spec, SchedulerSpec("sync"), progress=False)
    q2 = run_quantify(lake, flt["encoder"], sched=SchedulerSpec("sync"), progress=False)
    assert again["computed"] == 0 and q2["written"] == 0 and q2["skipped"] == 4
