"""`drlake run --settings`: the IBSI chain of `drlake quantify` as the quantify stage over a lake.

The identity encoder's fragments equal `drlake quantify` of the source files (same preset),
every family lands in the long ``features`` table, and the settings are hashed into fragments
and recorded in the run log."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_cohort_files
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.encoder import EncoderSpec
from pipelines.features.case import quantify_processed
from pipelines.ingest import ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.processing import load_settings
from pipelines.quantify import QuantifySettings, fragment_hash, source_intensities
from pipelines.scheduler import SchedulerSpec

SYNC = SchedulerSpec("sync")
#: IBSI tag prefixes of every IBSI 1 family (morph_ holds shape and intensity morphology)
FAMILY_PREFIXES = ("morph_", "loc_", "stat_", "ih_", "ivh_", "cm_", "rlm_", "szm_", "dzm_",
                   "ngt_", "ngl_")


@pytest.fixture(scope="module")
def native_lake(tmp_path_factory):
    """A lake of one patient whose int16 image is on a 1 mm grid (ingest keeps its grid)."""
    root = tmp_path_factory.mktemp("settings")
    manifest = make_cohort_files(root / "cohort", n=1, modalities=("T1",), shape=(20, 28, 28),
                                 spacing=(1.0, 1.0, 1.0))
    lk = Lake(root / "lake")
    ingest(manifest, lk, progress=False)
    run_activations(lk, EncoderSpec(weights="identity"), SYNC, progress=False)
    return lk, root / "cohort"


def _features(lk: Lake):
    df = lk.read_table("features")
    return df[df["run_id"].isin(lk.ok_run_ids())]


def test_source_intensities_recover_the_integer_source(native_lake):
    import SimpleITK as sitk

    lk, cohort = native_lake
    attrs = lk.volume_attrs("P001")
    unit = lk.read_volume("P001").images["T1"]
    got = source_intensities(unit, attrs, "T1")
    want = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / "P001" / "T1.nii.gz")))
    np.testing.assert_array_equal(got, want.astype(np.float64))


def test_identity_with_ct_preset_equals_drlake_quantify_of_the_files(native_lake):
    lk, cohort = native_lake
    s = load_settings("ibsi1-ct-C")
    q = run_quantify(lk, "identity", QuantifySettings(processing=s), SYNC, progress=False)
    assert q["written"] == 1
    df = _features(lk)
    got = dict(zip(df["feature"], df["value"], strict=True))
    rows, _ = quantify_processed(cohort / "P001" / "T1.nii.gz", cohort / "P001" / "mask.nii.gz",
                                 s)
    assert len(got) == len(rows) == len(df)  # one row per feature and aggregation, no more
    for r in rows:
        name = f"{r['name']}|{r['aggregation']}" if r["aggregation"] else r["name"]
        v = got[name]
        if np.isnan(r["value"]):
            assert np.isnan(v), name
        else:
            assert v == pytest.approx(r["value"], rel=1e-9, abs=1e-12), name
    for prefix in FAMILY_PREFIXES:
        assert any(f.startswith(prefix) for f in df["feature"]), prefix
    assert set(df["region"]) == {"roi"} and set(df["layer"]) == {1} and set(df["map"]) == {0}


def test_settings_are_hashed_into_fragments_and_recorded_in_the_run_log(native_lake):
    lk, _ = native_lake
    c, d = load_settings("ibsi1-ct-C"), load_settings("ibsi1-ct-D")
    hc = fragment_hash(QuantifySettings(processing=c), "fp", "T1")
    assert hc != fragment_hash(QuantifySettings(processing=d), "fp", "T1")
    assert hc != fragment_hash(QuantifySettings(), "fp", "T1")
    # the default settings keep the hash they had before processing settings existed
    assert "processing" not in QuantifySettings().as_dict()
    run_quantify(lk, "identity", QuantifySettings(processing=c), SYNC, progress=False)
    again = run_quantify(lk, "identity", QuantifySettings(processing=c), SYNC, progress=False)
    assert again["written"] == 0 and again["skipped"] == 1  # rerun with the same settings
    runs = lk.read_table("runs")
    rid = _features(lk)["run_id"].iloc[0]  # the run that wrote the fragment
    made = runs[(runs["run_id"] == rid) & (runs["status"] == "ok")]
    params = json.loads(made["parameters"].iloc[0])
    assert params["settings"]["processing"]["sha256"] == c.sha256
    assert params["settings"]["processing"]["resegment_range"] == [-1000.0, 400.0]


def test_drlake_run_settings_file_gives_every_family(native_lake, tmp_path):
    lk, _ = native_lake
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\ninterpolation:\n  spacing: [2.0, 2.0, 2.0]\n"
                 "  round_intensities: true\ndiscretisation:\n  discretisation: fbs\n"
                 "  bin_size: 20\nfeatures:\n  aggregations: ['3D, merged']\n"
                 "  families: all\n")
    res = CliRunner().invoke(app, ["run", "--lake", str(lk.root), "--encoder", "identity",
                                   "--settings", str(f), "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    assert "settings mine" in res.output
    df = _features(lk)
    mine = df[df["fragment_hash"] == df["fragment_hash"].iloc[-1]]
    for prefix in FAMILY_PREFIXES:
        assert any(n.startswith(prefix) for n in mine["feature"]), prefix
    assert not any("|" in n for n in mine["feature"])  # one aggregation: plain IBSI tags
    bad = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--lake", str(lk.root),
                          "--encoder", "identity", "--settings", str(tmp_path / "missing.toml")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.toml" in bad.stderr and "Traceback" not in bad.stderr


def test_cnn_maps_go_through_the_same_chain(native_lake):
    import SimpleITK as sitk

    from pipelines.features.case import processed_features

    lk, _ = native_lake
    act = run_activations(lk, EncoderSpec(blocks=(2, 2), seed=3), SYNC, progress=False)
    s = load_settings("paper").with_options(families=("firstorder", "glcm", "ngldm"))
    run_quantify(lk, act["encoder"], QuantifySettings(processing=s), SYNC, progress=False)
    df = _features(lk)
    df = df[df["encoder"] == act["encoder"]]
    assert sorted(set(zip(df["layer"], df["map"], strict=True))) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert any(f.startswith("ngl_") for f in df["feature"])
    group = lk.activations(act["encoder"], "P001").open()
    g = group["T1"]
    a, m = g["layer2"][1].astype(np.float64), g["mask2"][0].astype(np.uint8)
    sp = group.attrs["per_modality"]["T1"]["layers"][1]["spacing_mm"]
    assert sp == 2.0  # stride 2 on the 1 mm grid
    img, roi = sitk.GetImageFromArray(a), sitk.GetImageFromArray(m)
    img.SetSpacing((sp,) * 3)
    roi.SetSpacing((sp,) * 3)
    want = {t: v for t, _, v in processed_features(img, roi, s)[0]}
    got = df[(df["layer"] == 2) & (df["map"] == 1)].set_index("feature")["value"]
    for t, v in want.items():
        assert got[t] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), t


def _ct_lake(tmp_path):
    from test_ibsi_ct_phantom import NIFTI

    from pipelines.ingest import IngestSettings

    m = tmp_path / "m.csv"
    m.write_text("patient_id,modality,image,mask\n"
                 f"phantom,CT,{NIFTI / 'image' / 'phantom.nii.gz'},"
                 f"{NIFTI / 'mask' / 'mask.nii.gz'}\n")
    lk = Lake(tmp_path / "lake")
    ingest(m, lk, settings=IngestSettings(spacing_mm=None), progress=False)
    run_activations(lk, EncoderSpec(weights="identity"), SYNC, progress=False)
    return lk


def _ct_reference_misses(lk: Lake, config: str) -> tuple[int, list]:
    """Return (reference values checked, misses) of the lake's features for one configuration."""
    import csv

    from test_ibsi_ct_phantom import CT_CSV, ct_tag

    df = _features(lk)
    got = dict(zip(df["feature"], df["value"], strict=True))
    n, misses = 0, []
    with CT_CSV.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["config"] != config or not r["value"]:
                continue
            tag, agg, ref = ct_tag(r), r["aggregation"], float(r["value"])
            v = got.get(f"{tag}|{agg}", got.get(tag))
            n += 1
            if v is None:
                misses.append((tag, agg, None, ref))
            elif r["tolerance"]:
                if not abs(v - ref) <= float(r["tolerance"]):
                    misses.append((tag, agg, v, ref))
            elif float(f"{v:.3g}") != float(f"{ref:.3g}"):
                misses.append((tag, agg, v, ref))
    return n, misses


@pytest.mark.parametrize("config", [
    "C", *(pytest.param(c, marks=pytest.mark.slow) for c in "ABDE")])
def test_ct_phantom_through_the_lake_matches_every_reference_value(shared_reference, tmp_path,
                                                                   config):
    """`drlake ingest --spacing native` + `drlake run --encoder identity --settings ibsi1-ct-X`
    reproduce the manual's CT phantom values, as `drlake quantify` of the files does."""
    lk = _ct_lake(tmp_path)
    assert lk.volume_attrs("phantom")["spacing_zyx"][0] != lk.volume_attrs("phantom")[
        "spacing_zyx"][1]  # the native, anisotropic grid was kept
    run_quantify(lk, "identity", QuantifySettings(processing=load_settings(f"ibsi1-ct-{config}")),
                 SYNC, progress=False)
    n, misses = _ct_reference_misses(lk, config)
    assert n > 200 and misses == []


def test_native_grid_is_refused_where_it_would_be_misread(shared_reference, tmp_path):
    from pipelines.exceptions import InputError

    lk = _ct_lake(tmp_path)
    with pytest.raises(InputError, match="anisotropic"):
        run_quantify(lk, "identity", QuantifySettings(), SYNC, progress=False)
    with pytest.raises(InputError, match="isotropic grid"):
        run_activations(lk, EncoderSpec(blocks=(2, 2)), SYNC, progress=False)


@pytest.mark.parametrize("text, want", [("native", None), ("NATIVE", None), ("1.5", 1.5)])
def test_ingest_spacing_option(text, want):
    from pipelines.cli import _spacing

    assert _spacing(text) == want


def test_ingest_spacing_option_refuses_words():
    from pipelines.cli import _spacing
    from pipelines.exceptions import InputError

    with pytest.raises(InputError, match="native"):
        _spacing("fine")


def test_drlake_run_ingests_at_the_native_grid_and_quantifies_in_one_command(tmp_path):
    """`drlake run MANIFEST --spacing native --encoder identity --settings ibsi1-ct-C`."""
    from test_ibsi_ct_phantom import NIFTI

    if not NIFTI.exists():
        pytest.skip("no CT phantom")
    m = tmp_path / "m.csv"
    m.write_text("patient_id,modality,image,mask\n"
                 f"phantom,CT,{NIFTI / 'image' / 'phantom.nii.gz'},"
                 f"{NIFTI / 'mask' / 'mask.nii.gz'}\n")
    lake = tmp_path / "lake"
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(m), "--lake", str(lake),
                        "--spacing", "native", "--encoder", "identity", "--settings",
                        "ibsi1-ct-C", "--scheduler", "sync"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n, misses = _ct_reference_misses(Lake(lake), "C")
    assert n > 200 and misses == []
    bad = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--lake", str(lake),
                          "--spacing", "native"], capture_output=True, text=True)
    assert bad.returncode == 2 and "MANIFEST" in bad.stderr
