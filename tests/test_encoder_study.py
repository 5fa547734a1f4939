"""The encoder study (issue 18): planted power vs null false positives on hand-made data, encoder
families and seed partners, the leakage split into all / unseen patients, and one end-to-end
run over a tiny lake into results_encoder_study."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_cohort_files
from typer.testing import CliRunner

from pipelines import encoder_study as es
from pipelines.encoder import EncoderSpec
from pipelines.encoder_training import TrainSettings, train_encoder
from pipelines.exceptions import InputError
from pipelines.ingest import ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.scheduler import SchedulerSpec
from pipelines.sql import connect

TRUTH = {
    "texture_drivers": {"tcell": {"sequences": ["T1"]}, "prolif": {"sequences": ["T2"]}},
    "immune": {"t_cells_cd8": {"driver": "tcell", "weight": 1.6},
               "neutrophils": {"driver": "prolif", "weight": 1.4},
               "macrophages_m2": {"driver": None, "weight": 0.0},
               "monocytes": {"driver": None, "weight": 0.0}},
    "null_markers": ["macrophages_m2", "monocytes"],
}


@pytest.fixture
def truth_file(tmp_path):
    p = tmp_path / "ground_truth.json"
    p.write_text(json.dumps(TRUTH))
    return p


def test_read_truth_lists_planted_pairs_and_nulls(truth_file, tmp_path):
    t = es.read_truth(truth_file)
    assert t.planted == (("neutrophils", "T2"), ("t_cells_cd8", "T1"))
    assert t.null_markers == ("macrophages_m2", "monocytes")
    assert t.real_markers == ("neutrophils", "t_cells_cd8")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(InputError, match="not a drlake ground truth"):
        es.read_truth(bad)
    with pytest.raises(InputError, match="not found"):
        es.read_truth(tmp_path / "none.json")


def planted_frames(n=60, seed=0):
    """DRFs where T1__a tracks t_cells_cd8 and nothing tracks the rest."""
    rng = np.random.default_rng(seed)
    idx = [f"P{i:03d}" for i in range(n)]
    cd8 = rng.normal(size=n)
    markers = pd.DataFrame({"t_cells_cd8": cd8, "neutrophils": rng.normal(size=n),
                            "macrophages_m2": rng.normal(size=n),
                            "monocytes": rng.normal(size=n)}, index=idx)
    drf = pd.DataFrame({"T1__a": cd8 + 0.2 * rng.normal(size=n), "T1__b": rng.normal(size=n),
                        "T2__a": rng.normal(size=n), "T2__b": rng.normal(size=n)}, index=idx)
    return drf, markers


def test_association_metrics_count_power_and_false_positives(truth_file):
    drf, markers = planted_frames()
    m = es.association_metrics(drf, markers, es.read_truth(truth_file))
    assert m["planted_pairs"] == 2 and m["detected_pairs"] == 1 and m["power"] == 0.5
    assert m["true_hits"] == 1 and m["false_positives"] == 0 and m["null_markers_hit"] == 0
    assert m["n_null_markers"] == 2 and m["n_drf"] == 4
    assert m["planted_max_rho"] > m["null_max_rho"]
    assert 0.5 < m["separation_auc"] <= 1
    # a "null" marker that tracks a DRF is a false positive
    leaky = markers.assign(monocytes=drf["T2__b"])
    m2 = es.association_metrics(drf, leaky, es.read_truth(truth_file))
    assert m2["false_positives"] == 1 and m2["null_markers_hit"] == 1
    # without a truth only the counts
    assert set(es.association_metrics(drf, markers, None)) == {"n_drf", "n_significant"}


def test_encoder_kinds_and_seed_partners():
    models = {"ssl-a": {"settings": {"seed": 0, "lr": 1}, "architecture": {"blocks": [2]}},
              "ssl-b": {"settings": {"seed": 1, "lr": 1}, "architecture": {"blocks": [2]}},
              "ssl-c": {"settings": {"seed": 2, "lr": 5}, "architecture": {"blocks": [2]}}}
    names = ["cnn10x10-s0-0123abcd", "cnn10x10-s1-89abcdef", "cnn3x3-s1-00000000", "identity",
             "filters-pyradiomics-0123abcd", "cnn10x10-w-0123abcd", "ssl-a", "ssl-b", "ssl-c"]
    kinds = {n: es.encoder_kind(n, models) for n in names}
    assert [kinds[n]["kind"] for n in names] == [
        "seeded", "seeded", "seeded", "identity", "filters", "checkpoint", "trained", "trained",
        "trained"]
    partners = es.seed_partners(kinds)
    assert partners == {"cnn10x10-s0-0123abcd": "cnn10x10-s1-89abcdef",
                        "cnn10x10-s1-89abcdef": "cnn10x10-s0-0123abcd",
                        "ssl-a": "ssl-b", "ssl-b": "ssl-a"}


def test_seed_stability_is_one_for_monotone_copies_and_low_for_noise():
    drf, _ = planted_frames()
    same = es.seed_stability(drf, 3 * drf + 1)
    assert same == {"stability_median_rho": pytest.approx(1.0), "stability_frac_stable": 1.0}
    other, _ = planted_frames(seed=9)
    low = es.seed_stability(drf, other)
    assert abs(low["stability_median_rho"]) < 0.5 and low["stability_frac_stable"] == 0.0


def test_patient_sets_leave_out_what_any_trained_encoder_saw():
    ids = [f"P{i}" for i in range(6)]
    models = {"t0": {"split": {"train": ["P0", "P1"], "validation": ["P2"]}},
              "t1": {"split": {"train": ["P0", "P3"], "validation": ["P1"]}}}
    kinds = {"t0": {"kind": "trained"}, "t1": {"kind": "trained"}, "identity": {"kind":
                                                                                "identity"}}
    sets, seen = es.patient_sets(ids, kinds, models)
    assert sets == {"all": ids, "unseen": ["P4", "P5"]}
    assert seen == {"t0": {"P0", "P1", "P2"}, "t1": {"P0", "P1", "P3"}}
    only = {"identity": {"kind": "identity"}}
    assert es.patient_sets(ids, only, {})[0] == {"all": ids}


@pytest.fixture(scope="module")
def study_lake(tmp_path_factory):
    """A 12-patient tiny lake with two seeded encoders, identity and two trained ones."""
    root = tmp_path_factory.mktemp("study")
    manifest = make_cohort_files(root / "cohort", n=12, seed=3)
    lk = Lake(root / "lake")
    ingest(manifest, lk, clinical=root / "cohort" / "clinical.csv",
           immune=root / "cohort" / "immune.csv", progress=False)
    tiny = dict(blocks=(1, 1), crop=16, crops_per_sequence=1, epochs=1, batch_size=8)
    for seed in (0, 1):
        train_encoder(lk, f"ssl-{seed}", TrainSettings(seed=seed, **tiny), progress=False,
                      train_patients=["P001", "P002", "P003", "P004"])
    from pipelines.encoder_training import trained_spec

    specs = [EncoderSpec(blocks=(1, 1), seed=0), EncoderSpec(blocks=(1, 1), seed=1),
             EncoderSpec(weights="identity"), trained_spec(lk, "ssl-0"), trained_spec(lk, "ssl-1")]
    sched = SchedulerSpec("threads", 2)
    for spec in specs:
        act = run_activations(lk, spec, sched, progress=False)
        run_quantify(lk, act["encoder"], sched=sched, progress=False)
    return lk


def test_study_end_to_end_writes_results_and_names_leakage(study_lake, tmp_path):
    truth = tmp_path / "gt.json"
    truth.write_text(json.dumps({
        "texture_drivers": {"tcell": {"sequences": ["T1", "T2"]}},
        "immune": {"t_cells_cd8": {"driver": "tcell"}, "macrophages_m2": {"driver": None}},
        "null_markers": ["macrophages_m2"]}))
    r = es.run_encoder_study(study_lake, es.StudySettings(trees=50, cv_repeats=1), truth=truth)
    df = r["table"]
    assert set(df["kind"]) == {"seeded", "identity", "trained"} and len(df) == 5
    assert set(df["patient_set"]) == {"all"}  # 8 unseen patients < 10: no unseen rows
    assert any("in-sample" in n for n in r["notes"])
    assert any("unseen by every trained encoder" in n for n in r["notes"])
    trained = df[df["kind"] == "trained"]
    assert set(trained["n_seen"]) == {4} and df.loc[df["kind"] != "trained", "n_seen"].isna().all()
    assert set(trained["stability_partner"]) == {"ssl-0", "ssl-1"}
    seeded = df[df["kind"] == "seeded"]
    assert seeded["stability_median_rho"].between(-1, 1).all()
    assert df.loc[df["kind"] == "identity", "stability_partner"].isna().all()
    assert (df["planted_pairs"] == 2).all() and (df["n_null_markers"] == 1).all()
    assert df["auc"].between(0, 1).all() and (df["auc_low95"] <= df["auc"]).all()
    con = connect(study_lake)
    try:
        stored = con.execute("SELECT * FROM results_encoder_study").df()
    finally:
        con.close()
    assert len(stored) == 5 and set(stored["run_id"]) == {r["run_id"]}
    text = es.format_study(df)
    assert "survival AUC" in text and "ssl-0" in text


def test_study_unseen_rows_when_enough_patients_were_held_out(study_lake, monkeypatch):
    monkeypatch.setattr(es, "MIN_PATIENTS", 5)
    r = es.run_encoder_study(study_lake, es.StudySettings(trees=50, cv_repeats=1))
    df = r["table"]
    unseen = df[df["patient_set"] == "unseen"]
    assert len(unseen) == 5 and (unseen["n"] == 8).all()
    assert (unseen.loc[unseen["kind"] == "trained", "n_seen"] == 0).all()
    assert df["power"].isna().all()  # no truth given
    assert any("no --truth" in n for n in r["notes"])


def test_study_cli_and_unknown_encoder(study_lake):
    from pipelines.encoder_cli import app

    res = CliRunner().invoke(app, ["compare-encoders", "--lake", study_lake.root,
                                   "--trees", "20", "--cv-repeats", "1",
                                   "--encoders", "identity,ssl-0"])
    assert res.exit_code == 0, res.output
    assert "identity" in res.output and "results_encoder_study" in res.output
    with pytest.raises(InputError, match="no features for encoder"):
        es.run_encoder_study(study_lake, es.StudySettings(encoders=("nope",)))
