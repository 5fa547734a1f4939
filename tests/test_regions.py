"""Named mask regions: parsing and checks (pure), ingest of label masks with --regions (refusals
leave the lake as it was), and per-region DRFs of the 3-label synthetic cohort through SQL."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import zarr
from conftest import ball, make_cohort_files, write_image
from test_ingest_hardening import lake_digest

from pipelines.encoder import EncoderSpec
from pipelines.exceptions import InputError
from pipelines.ingest import IngestSettings, ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.regions import (
    check_region_labels,
    in_any_region,
    parse_regions,
    read_regions_file,
    region_masks,
    region_voxel_counts,
    regions_text,
    stored_labels,
    volume_regions,
)
from pipelines.scheduler import SchedulerSpec
from pipelines.sql import connect

BRATS = (("core", (1, 4)), ("whole", (1, 2, 4)), ("enhancing", (4,)))


# ---- pure -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [
    "core=1,4 whole=1,2,4 enhancing=4",
    "core=4,1;whole=1,2,4;enhancing=4",
    ["core=1,4", "whole=1,2,4", "enhancing=4"],
    "  core=1,4   whole=2,1,4,4 enhancing=4 ",
])
def test_parse_regions_keeps_order_and_sorts_labels(spec):
    assert parse_regions(spec) == BRATS
    assert parse_regions(regions_text(BRATS)) == BRATS


@pytest.mark.parametrize("spec, message", [
    ("core", "not NAME=LABELS"),
    ("core=", "has no label"),
    ("core=1 core=4", "named twice"),
    ("Core=1", "lower-case"),
    ("core=0", "outside 1..255"),
    ("core=256", "outside 1..255"),
    ("core=a", "not an integer"),
    ("", "no region given"),
])
def test_parse_regions_refuses_bad_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_regions(spec)


def test_regions_file_is_read_in_order(tmp_path):
    f = tmp_path / "regions.toml"
    f.write_text("[regions]\nwhole = [1, 2, 4]\ncore = [1, 4]\nenhancing = 4\n")
    assert read_regions_file(f) == (BRATS[1], BRATS[0], BRATS[2])
    (tmp_path / "bad.toml").write_text("core = [1]\n")
    with pytest.raises(InputError, match=r"bad.toml: no \[regions\] table"):
        read_regions_file(tmp_path / "bad.toml")


def test_stray_label_is_named_with_the_file():
    with pytest.raises(InputError, match=r"m.nii.gz: label\(s\) 3 belong to no region"):
        check_region_labels([0, 1, 3, 4], BRATS, "m.nii.gz")
    check_region_labels([0, 1, 2, 4], BRATS, "m.nii.gz")  # every label in some region


def test_region_masks_and_counts_on_a_tiny_label_map():
    labels = np.array([[[0, 1, 2], [4, 4, 2]]], np.uint8)
    m = region_masks(labels, BRATS)
    assert m.shape == (3, 1, 2, 3) and m.dtype == bool
    np.testing.assert_array_equal(m[0], np.isin(labels, [1, 4]))
    np.testing.assert_array_equal(m[1], labels > 0)
    np.testing.assert_array_equal(m[2], labels == 4)
    assert region_voxel_counts(labels, BRATS) == [3, 5, 2]


@pytest.mark.parametrize("seed", range(40))
def test_in_any_region_is_the_union_of_the_region_masks(seed):
    """Random small label maps, with and without labels that belong to no region (7)."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 9, 3))
    labels = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(0, 6))):
        labels[tuple(int(rng.integers(0, s)) for s in shape)] = rng.choice([1, 2, 4, 7])
    got = in_any_region(labels, BRATS)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, region_masks(labels, BRATS).any(axis=0))


def test_stored_labels_keeps_labels_or_binarises():
    arr = np.array([[[0, 1, 2, 4]]], np.int16)
    kept, regions = stored_labels(arr, None, BRATS, "m")
    assert kept.dtype == np.uint8 and kept.tolist() == arr.tolist() and regions == BRATS
    binary, regions = stored_labels(arr, 4, None, "m")  # --label 4: one region, "roi"
    assert binary.tolist() == [[[0, 0, 0, 1]]] and regions == (("roi", (1,)),)
    with pytest.raises(InputError, match="not integer labels"):
        stored_labels(arr + 0.5, None, BRATS, "m")
    with pytest.raises(InputError, match="no voxel of any region"):
        stored_labels(np.zeros((1, 1, 2)), None, BRATS, "m")
    assert volume_regions({}) == (("roi", (1,)),)
    assert volume_regions({"regions": {"core": [1, 4]}}) == (("core", (1, 4)),)


def test_label_and_regions_together_are_refused():
    with pytest.raises(InputError, match="not both"):
        IngestSettings(label=1, regions="core=1")


# ---- ingest of label masks --------------------------------------------------------------------
def labelled_cohort(root, n=2):
    """Write n patients (T1, T2) whose masks are BraTS-like label maps: a core ball of label 1
    with an enhancing shell (4) inside an oedema ball (2); return the manifest."""
    shape, spacing = (12, 24, 24), (2.0, 2.0, 3.0)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        pid = f"P{i + 1:03d}"
        whole = ball(shape, spacing, (24, 24, 18), 14)
        core = ball(shape, spacing, (24, 24, 18), 10)
        inner = ball(shape, spacing, (24, 24, 18), 6)
        labels = np.where(core, np.where(inner, 1, 4), np.where(whole, 2, 0)).astype(np.uint8)
        mpath = write_image(root / pid / "labels.nii.gz", labels, spacing)
        for m in ("T1", "T2"):
            arr = (rng.normal(100, 20, shape) + 50.0 * labels).astype(np.int16)
            ipath = write_image(root / pid / f"{m}.nii.gz", arr, spacing)
            rows.append(f"{pid},{m},{ipath.relative_to(root)},{mpath.relative_to(root)}")
    manifest = root / "manifest.csv"
    manifest.write_text("patient_id,modality,image,mask\n" + "\n".join(rows) + "\n")
    return manifest


def test_label_mask_ingest_stores_labels_and_regions(tmp_path):
    manifest = labelled_cohort(tmp_path / "c")
    lake = Lake(tmp_path / "lake")
    ingest(manifest, lake, settings=IngestSettings(regions="core=1,4 whole=1,2,4 enhancing=4"),
           progress=False)
    g = zarr.open_group(str(tmp_path / "lake" / "volumes" / "P001.zarr"), mode="r")
    assert dict(g.attrs["regions"]) == {"core": [1, 4], "whole": [1, 2, 4], "enhancing": [4]}
    stored = g["masks"]["T1"][...]
    assert set(np.unique(stored).tolist()) == {0, 1, 2, 4}  # nearest neighbour keeps labels
    counts = g.attrs["region_voxels"]["T1"]
    assert counts["whole"] == int((stored > 0).sum()) > counts["core"] > counts["enhancing"] > 0
    pats = lake.read_table("patients")
    assert set(pats["regions"]) == {"core=1,4 whole=1,2,4 enhancing=4"}


@pytest.mark.parametrize("spec, message", [
    ("core=1,4 enhancing=4", r"labels.nii.gz: label\(s\) 2 belong to no region"),
    (None, "labels other than 0/1"),
])
def test_label_mask_that_regions_do_not_cover_is_refused(tmp_path, spec, message):
    manifest = labelled_cohort(tmp_path / "c", n=1)
    lake = Lake(tmp_path / "lake")
    with pytest.raises(InputError, match=message):
        ingest(manifest, lake, settings=IngestSettings(regions=spec), progress=False)
    assert lake_digest(tmp_path / "lake") is None  # a failed first ingest leaves nothing


def test_cli_names_the_file_of_an_unused_label_in_one_line(tmp_path):
    manifest = labelled_cohort(tmp_path / "c", n=1)
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", str(manifest),
                        "--lake", str(tmp_path / "lake"), "--regions", "core=1,4"],
                       capture_output=True, text=True, encoding="utf-8")
    assert r.returncode != 0
    err = [line for line in r.stderr.splitlines() if line.startswith("drlake:")]  # not tqdm
    assert len(err) == 1 and "labels.nii.gz" in err[0]
    assert "label(s) 2 belong to no region" in err[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "lake").exists()


# ---- the 3-label synthetic cohort through SQL ------------------------------------------------
@pytest.fixture(scope="module")
def synth_region_lake(tmp_path_factory):
    """A 3-patient synthetic cohort (BraTS labels) ingested with its regions.toml and
    quantified with a small seeded encoder."""
    from pipelines.synth import make_cohort

    root = tmp_path_factory.mktemp("regions")
    paths = make_cohort(root / "cohort", n_patients=3, seed=3, size="small", biopsy_patients=0,
                        progress=False)
    lake = Lake(root / "lake")
    ingest(paths["manifest"], lake, clinical=paths["clinical"], immune=paths["immune"],
           settings=IngestSettings(regions=read_regions_file(paths["regions"])), progress=False)
    act = run_activations(lake, EncoderSpec(blocks=(3, 3), seed=1), SchedulerSpec("sync"),
                          progress=False)
    run_quantify(lake, act["encoder"], sched=SchedulerSpec("threads", 2), progress=False)
    # another cohort with binary masks (region roi) whose ids sort first, as the demo's biopsy one
    ingest(make_cohort_files(root / "other", n=1), lake, settings=IngestSettings(cohort="bio"),
           progress=False)
    return lake, paths, act["encoder"]


def test_synthetic_masks_have_the_three_brats_labels(synth_region_lake):
    _, paths, _ = synth_region_lake
    truth = json.loads(open(paths["ground_truth"]).read())
    assert truth["regions"] == {"core": [1, 4], "whole": [1, 2, 4], "enhancing": [4]}
    seen = set()
    for files in paths["images"].values():
        seen |= set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(files["mask"]))).tolist())
    assert seen == {0, 1, 2, 4}


def test_per_region_drfs_through_sql(synth_region_lake):
    lake, _, enc = synth_region_lake
    con = connect(lake)
    try:
        counts = dict(con.execute(
            "SELECT region, count(*) FROM drf_long GROUP BY region").fetchall())
        drf = con.execute("SELECT * FROM drf WHERE encoder = ? ORDER BY region, patient_id",
                          [enc]).df()
    finally:
        con.close()
    assert set(counts) == {"core", "whole", "enhancing"}
    assert counts["core"] == counts["whole"] == 3 * 4 * 45  # patients x sequences x DRFs
    assert 0 < counts["enhancing"] <= counts["core"]
    assert set(drf["region"]) == {"core", "whole", "enhancing"}
    core = drf[drf.region == "core"].set_index("patient_id")
    whole = drf[drf.region == "whole"].set_index("patient_id")
    # the whole tumour (with oedema) is larger than the core, and its texture differs
    assert (whole["T1__morph_volume"] > core["T1__morph_volume"]).all()
    assert not np.allclose(whole["T2__cm_contrast"], core["T2__cm_contrast"])


def test_core_shape_is_the_volume_of_labels_1_and_4(synth_region_lake):
    lake, _, enc = synth_region_lake
    con = connect(lake)
    try:
        got = dict(con.execute(
            "SELECT patient_id, value FROM features WHERE region = 'core' AND modality = 'T1' "
            "AND feature = 'morph_volume' AND encoder = ?", [enc]).fetchall())
    finally:
        con.close()
    from pipelines.features.shape import shape_features

    for pid, value in got.items():
        vol = lake.read_volume(pid, ["T1"])
        core = np.isin(vol.masks["T1"], [1, 4])
        spacing = tuple(vol.attrs["spacing_zyx"])
        ref = shape_features(core, spacing, features=("morph_volume",))["morph_volume"]
        assert value == pytest.approx(ref, rel=1e-9)


def test_analyze_takes_the_primary_region_unless_told(synth_region_lake):
    from pipelines.analyze import analysed_region

    lake, _, enc = synth_region_lake
    con = connect(lake)
    try:
        assert analysed_region(con, enc, None) == "core"  # first of regions.toml
        assert analysed_region(con, enc, "whole") == "whole"
        with pytest.raises(InputError, match="no features for region 'necrosis'"):
            analysed_region(con, enc, "necrosis")
    finally:
        con.close()
