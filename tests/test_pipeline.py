"""Activations -> quantify -> DRF on a tiny cohort: exact, incremental, crash-safe, and the same
on a LocalCluster as locally."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import make_cohort_files

from pipelines.encoder import EncoderSpec
from pipelines.features.catalogue import preset
from pipelines.features.extract import compute_features
from pipelines.ingest import ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.quantify import PAPER_SHAPE, QuantifySettings
from pipelines.scheduler import SchedulerSpec
from pipelines.sql import connect

SMALL = EncoderSpec(blocks=(3, 3), seed=1)  # 6 maps keep the test fast; same code path as 10,10


@pytest.fixture
def lake(tmp_path):
    manifest = make_cohort_files(tmp_path / "cohort", n=3)
    lk = Lake(tmp_path / "lake")
    ingest(manifest, lk, clinical=tmp_path / "cohort" / "clinical.csv", progress=False)
    return lk


def features_frame(lk: Lake) -> pd.DataFrame:
    con = connect(lk)
    try:
        df = con.execute("SELECT * EXCLUDE (run_id) FROM features").df()
    finally:
        con.close()
    return df.sort_values(["patient_id", "modality", "layer", "map", "feature"]).reset_index(
        drop=True)


def test_pipeline_end_to_end_and_drf_shape(lake):
    act = run_activations(lake, SMALL, SchedulerSpec("sync"), progress=False)
    q = run_quantify(lake, act["encoder"], sched=SchedulerSpec("threads", 2), progress=False)
    assert q["written"] == 6 and q["skipped"] == 0
    df = features_frame(lake)
    assert set(df["layer"]) == {0, 1, 2} and set(df["map"]) == {0, 1, 2}
    assert not df.duplicated(["patient_id", "modality", "region", "layer", "map",
                              "feature"]).any()
    assert set(df["region"]) == {"roi"}  # a binary mask: one region
    con = connect(lake)
    drf = con.execute("SELECT * FROM drf ORDER BY patient_id").df()
    con.close()
    assert drf.shape == (3, 3 + 2 * 45)
    assert {"T1__cm_contrast", "T2__morph_volume", "T2__ih_entropy"} <= set(drf.columns)
    assert drf.drop(columns=["patient_id", "encoder", "region"]).notna().all().all()
    # the DRF is the mean over every map of every layer
    sel = df[(df.patient_id == "P001") & (df.modality == "T1") & (df.feature == "cm_contrast")]
    assert drf.loc[0, "T1__cm_contrast"] == pytest.approx(sel["value"].mean(), rel=1e-12)
    assert len(sel) == 6
    assert len(preset("paper45")) == 45


def test_rerun_skips_and_changed_settings_recompute(lake):
    act = run_activations(lake, SMALL, SchedulerSpec("sync"), progress=False)
    run_quantify(lake, act["encoder"], sched=SchedulerSpec("sync"), progress=False)
    before = features_frame(lake)
    again = run_activations(lake, SMALL, SchedulerSpec("sync"), progress=False)
    assert again["computed"] == 0 and again["skipped"] == 3
    q = run_quantify(lake, act["encoder"], sched=SchedulerSpec("sync"), progress=False)
    assert q["written"] == 0 and q["skipped"] == 6
    pd.testing.assert_frame_equal(features_frame(lake), before)
    q = run_quantify(lake, act["encoder"], QuantifySettings(bin_count=16),
                     sched=SchedulerSpec("sync"), progress=False)
    assert q["written"] == 6
    assert len(features_frame(lake)) == len(before)  # replaced, not duplicated


def test_sql_as_of_returns_the_rows_a_rerun_with_new_settings_replaced(lake):
    import subprocess
    import sys

    from pipelines.sql import run_query

    act = run_activations(lake, SMALL, SchedulerSpec("sync"), progress=False)
    first = run_quantify(lake, act["encoder"], sched=SchedulerSpec("sync"), progress=False)
    old = features_frame(lake)
    second = run_quantify(lake, act["encoder"], QuantifySettings(bin_count=16),
                          sched=SchedulerSpec("sync"), progress=False)
    new = features_frame(lake)
    key = ["patient_id", "modality", "layer", "map", "feature"]
    changed = old.merge(new, on=key, suffixes=("_old", "_new"))
    assert len(changed) == len(old) and (changed.value_old != changed.value_new).any()
    query = ("SELECT patient_id, modality, layer, map, feature, value FROM features "
             "ORDER BY ALL")
    want = old[key + ["value"]].sort_values(key).reset_index(drop=True)
    # by run id, by lake version (the N-th ok run) and by timestamp
    runs = lake.runs()
    ok = runs[runs.status == "ok"].reset_index(drop=True)
    n = int(ok.index[ok.run_id == first["run_id"]][0])
    at = ok.loc[n, "ended_at"].isoformat()
    for as_of in (first["run_id"], str(n), at):
        got = run_query(lake, query, as_of=as_of)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    now = run_query(lake, query, as_of=second["run_id"])
    pd.testing.assert_frame_equal(now, new[key + ["value"]].sort_values(key).reset_index(
        drop=True), check_dtype=False)
    # the command line too, and a clear error for an unknown snapshot
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", "--lake", str(lake.root),
                        "--as-of", first["run_id"], "--format", "csv",
                        "SELECT count(*) AS n, sum(value) AS s FROM features"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n_rows, total = r.stdout.splitlines()[-1].split(",")
    assert int(n_rows) == len(old) and float(total) == pytest.approx(old.value.sum(), rel=1e-9)
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", "--lake", str(lake.root),
                        "--as-of", "999", "SELECT 1"], capture_output=True, text=True)
    assert r.returncode == 2 and "no version 999" in r.stderr and "Traceback" not in r.stderr


def test_forced_rerun_is_bit_identical(lake):
    act = run_activations(lake, SMALL, SchedulerSpec("sync"), progress=False)
    run_quantify(lake, act["encoder"], sched=SchedulerSpec("sync"), progress=False)
    first = features_frame(lake)
    run_activations(lake, SMALL, SchedulerSpec("threads", 2), force=True, progress=False)
    run_quantify(lake, act["encoder"], sched=SchedulerSpec("processes", 2), force=True,
                 progress=False)
    pd.testing.assert_frame_equal(features_frame(lake), first, check_exact=True)


def test_failed_task_commits_nothing_and_rerun_completes(lake):
    act = run_activations(lake, SMALL, SchedulerSpec("sync"), progress=False)
    enc = act["encoder"]
    broken = lake.path("activations", enc, "P002.zarr", "T2", "layer2")
    backup = broken + ".bak"
    shutil.move(broken, backup)
    before = lake.table("features").version()
    with pytest.raises(Exception):  # noqa: B017 - whatever zarr raises for the missing array
        run_quantify(lake, enc, sched=SchedulerSpec("sync"), progress=False)
    # the stage is one commit: the fragments its other tasks wrote are not visible
    assert lake.table("features").version() == before
    assert features_frame(lake).empty
    runs = lake.runs()
    assert runs["status"].iloc[-1] == "failed"
    shutil.move(backup, broken)
    q = run_quantify(lake, enc, sched=SchedulerSpec("sync"), progress=False)
    assert q["written"] == 6
    df = features_frame(lake)
    assert not df.duplicated(["patient_id", "modality", "layer", "map", "feature"]).any()
    assert set(zip(df.patient_id, df.modality, strict=True)) == {
        (p, m) for p in ("P001", "P002", "P003") for m in ("T1", "T2")}
    # a second run writes nothing new and commits nothing
    v = lake.table("features").version()
    assert run_quantify(lake, enc, sched=SchedulerSpec("sync"), progress=False)["written"] == 0
    assert lake.table("features").version() == v


def test_identity_encoder_equals_the_core_on_the_lake_volume(tmp_path, shared_reference):
    d = shared_reference / "pyradiomics"
    m = tmp_path / "m.csv"
    m.write_text("patient_id,modality,image,mask\n"
                 f"brain1,T1,{d / 'brain1_image.nrrd'},{d / 'brain1_label.nrrd'}\n")
    lk = Lake(tmp_path / "lake")
    ingest(m, lk, progress=False)
    act = run_activations(lk, EncoderSpec(weights="identity"), SchedulerSpec("sync"),
                          progress=False)
    assert act["encoder"] == "identity"
    run_quantify(lk, "identity", sched=SchedulerSpec("sync"), progress=False)
    df = features_frame(lk)
    vol = lk.read_volume("brain1")
    mask = vol.masks["T1"].astype(bool)
    direct = compute_features(vol.images["T1"], mask, (1.0, 1.0, 1.0),
                              families=("firstorder", "glcm", "glszm", "ngtdm", "shape"))
    got = dict(zip(df["feature"], df["value"], strict=True))
    for name in PAPER_SHAPE:
        assert got[name] == pytest.approx(direct[name], rel=1e-9)
    texture = {k: v for k, v in direct.items() if not k.startswith("morph_")}
    assert set(texture) <= set(got)
    for k, v in texture.items():
        if np.isnan(v):
            assert np.isnan(got[k]) or got[k] is None
        else:
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k



def test_local_cluster_gives_identical_features(lake):
    from distributed import LocalCluster

    act = run_activations(lake, SMALL, SchedulerSpec("sync"), progress=False)
    run_quantify(lake, act["encoder"], sched=SchedulerSpec("sync"), progress=False)
    local = features_frame(lake)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        run_activations(lake, SMALL, SchedulerSpec(address=cluster.scheduler_address),
                        force=True, progress=False)
        q = run_quantify(lake, act["encoder"], sched=SchedulerSpec(
            address=cluster.scheduler_address), force=True, progress=False)
    assert q["written"] == 6
    pd.testing.assert_frame_equal(features_frame(lake), local, check_exact=True)


def test_demo_truth_table_and_holm_critical_rho():
    from scipy import stats

    from pipelines.demo import holm_critical_rho, truth_vs_found

    r = holm_critical_rho(100, 3960)
    t = r * np.sqrt(98 / (1 - r * r))
    assert 2 * stats.t.sf(t, 98) * 3960 == pytest.approx(0.05, rel=1e-9)
    truth = {"immune": {"a": {"driver": "tcell", "weight": 1.6},
                        "b": {"driver": None, "weight": 0.0}}}
    sp = pd.DataFrame({"marker": ["a", "a", "b"], "rho": [0.2, -0.9, 0.5],
                       "p": [0.3, 1e-6, 0.01], "p_holm": [0.6, 3e-6, 0.03]})
    got = truth_vs_found(truth, sp).set_index("marker")
    assert got.loc["a", "found"] and got.loc["a", "best_abs_rho"] == pytest.approx(0.9)
    assert got.loc["b", "planted"] == "null" and got.loc["b", "found"]  # a false positive
