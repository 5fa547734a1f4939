"""Seed 004 evaluation: patient-grouped splits (no patient on both sides), k-fold coverage,
metrics and CIs, the RF features, and the evaluate stage (table, SQL view, determinism). The
slow test runs the whole method on a 45-patient synthetic cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from pipelines.exceptions import InputError
from pipelines.lake import Lake
from pipelines.spatial import SEED_REFERENCE
from pipelines.spatial.evaluate import (
    accuracy_ci,
    biopsy_split,
    cluster_bootstrap_auc_ci,
    grouped_kfold,
    grouped_split,
    make_splits,
    median_labels,
    metrics,
    patch_features,
)
from pipelines.spatial.stage import (
    spatial_evaluate,
    spatial_map,
    spatial_patches,
    spatial_train,
    synthetic_biopsy_lake,
)
from pipelines.spatial.train import TrainConfig
from pipelines.sql import connect


@pytest.fixture(scope="session")
def biopsy_lake(tmp_path_factory):
    """The 4-patient synthetic biopsy lake shared by the spatial tests (built once)."""
    return synthetic_biopsy_lake(tmp_path_factory.getbasetemp() / "spatial-cohort", 4, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def cohort_groups(n_patients=45, seed=0):
    """Patient ids with 2-6 biopsies each, like the seed's 150 biopsies of 45 patients."""
    rng = np.random.default_rng(seed)
    return np.repeat([f"P{i:02d}" for i in range(n_patients)], rng.integers(2, 7, n_patients))


def patients_of(groups, rows):
    return set(groups[rows])


# --------------------------------------------------------------------------- splits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_split_never_puts_a_patient_on_two_sides(seed):
    g = cohort_groups()
    s = grouped_split(g, seed=seed)
    tr, dv, te = (patients_of(g, p) for p in (s.train, s.dev, s.test))
    assert not (tr & dv) and not (tr & te) and not (dv & te)
    assert len(tr) == 27 and len(dv) == 9 and len(te) == 9  # 60/20/20 of 45 patients
    assert sorted(np.concatenate([s.train, s.dev, s.test])) == list(range(len(g)))


def test_grouped_split_depends_only_on_the_set_of_patients_and_seed():
    g = cohort_groups()
    perm = np.random.default_rng(9).permutation(len(g))
    a, b = grouped_split(g, seed=3), grouped_split(g[perm], seed=3)
    assert patients_of(g, a.test) == patients_of(g[perm], b.test)
    assert patients_of(g, a.test) != patients_of(g, grouped_split(g, seed=4).test)


def test_grouped_kfold_tests_every_row_once_and_keeps_patients_whole():
    g = cohort_groups()
    folds = grouped_kfold(g, k=5, seed=0)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(g)))
    for f in folds:
        tr, dv, te = (patients_of(g, p) for p in (f.train, f.dev, f.test))
        assert not (tr & dv) and not (tr & te) and not (dv & te)
        assert len(tr | dv | te) == 45


def test_biopsy_split_mixes_patients_which_is_why_it_is_only_a_comparison():
    g = cohort_groups()
    s = biopsy_split(len(g), seed=0)
    assert patients_of(g, s.train) & patients_of(g, s.test)
    assert len(s.test) == round(0.2 * len(g))


def test_make_splits_checks_its_arguments():
    g = cohort_groups(5)
    with pytest.raises(InputError, match="split must be"):
        make_splits(g, "random")
    with pytest.raises(InputError, match="k must be between"):
        make_splits(g, "grouped", "kfold", k=9)
    with pytest.raises(InputError, match="too few"):
        grouped_split(["a", "a", "b"])


# --------------------------------------------------------------------------- metrics


def test_accuracy_ci_is_the_wilson_interval():
    y = np.array([1] * 10 + [0] * 20)
    p = np.r_[np.full(7, 0.9), np.full(3, 0.1), np.full(15, 0.2), np.full(5, 0.8)]
    acc, lo, hi = accuracy_ci(y, p)
    ref_lo, ref_hi = proportion_confint(22, 30, alpha=0.05, method="wilson")
    assert acc == pytest.approx(22 / 30)
    assert (lo, hi) == pytest.approx((ref_lo, ref_hi), abs=1e-12)


def test_metrics_and_cluster_bootstrap():
    rng = np.random.default_rng(0)
    g = cohort_groups()
    y = rng.integers(0, 2, len(g))
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, len(g)), 0, 1)
    m = metrics(y, p)
    assert m["auc_low95"] < m["auc"] < m["auc_high95"] and m["n"] == len(g)
    auc, lo, hi = cluster_bootstrap_auc_ci(y, p, g, n_boot=300)
    assert auc == pytest.approx(m["auc"]) and lo < auc < hi
    with pytest.raises(InputError, match="needs the patient"):
        metrics(y, p, ci_method="cluster-bootstrap")


def test_median_labels_from_reference_rows():
    lab, thr = median_labels([1.0, 2.0, 3.0, 10.0, 20.0], reference_idx=[0, 1, 2])
    assert thr == 2.0 and lab.tolist() == [0, 0, 1, 1, 1]


def test_patch_features_one_column_per_sequence_and_feature():
    X = np.random.default_rng(0).random((3, 2, 17, 17)).astype(np.float32)
    X[2, 1] = 0.5  # a flat patch still gives a row
    F = patch_features(X, ["T1", "rCBV"])
    assert F.shape[0] == 3 and F.shape[1] % 2 == 0
    assert any(c.startswith("rCBV__") for c in F.columns)
    assert "T1__stat_mean" in F.columns or any(c.startswith("T1__") for c in F.columns)


# --------------------------------------------------------------------------- the stage


def test_evaluate_stage_writes_results_and_is_deterministic(biopsy_lake):
    lake = Lake(biopsy_lake["lake"])
    ps = spatial_patches(lake)["patch_set"]
    cfg = TrainConfig(epochs=2, patience=2, seed=0, threads=1)
    a = spatial_evaluate(lake, ps, cfg, split="biopsy", evaluation="kfold", folds=2,
                         rf_trees=50)
    df = a["results"]
    assert len(df) == 4  # (grouped, biopsy) x (cnn, rf)
    assert set(df["split"]) == {"grouped", "biopsy"} and set(df["model"]) == {"cnn", "rf"}
    assert (df["n_test"] == len(lake.read_table("biopsies"))).all()  # k-fold tests every row
    assert len(a["difference"]) == 2
    b = spatial_evaluate(lake, ps, cfg, split="biopsy", evaluation="kfold", folds=2,
                         rf_trees=50)["results"]
    cols = ["accuracy", "auc", "auc_low95", "auc_high95"]
    pd.testing.assert_frame_equal(df[cols], b[cols])
    con = connect(lake)
    try:
        n = con.execute("SELECT count(*) FROM results_spatial WHERE run_id = ?",
                        [a["run_id"]]).fetchone()[0]
        n_patches = con.execute("SELECT count(*) FROM spatial_patches").fetchone()[0]
    finally:
        con.close()
    assert n == 4 and n_patches >= len(df)


# --------------------------------------------------------------------------- paper scale


@pytest.mark.slow
def test_paper_scale_grouped_auc_and_map(tmp_path_factory):
    """45 patients (~160 biopsies, the seed's size): grouped 5-fold CNN AUC CI above 0.5, and
    held-out maps correlate with the true infiltration field. Several minutes on 2 cores."""
    paths = synthetic_biopsy_lake(tmp_path_factory.getbasetemp() / "spatial-45", 45, seed=0)
    lake = Lake(paths["lake"])
    ps = spatial_patches(lake)["patch_set"]
    cfg = TrainConfig(seed=0, threads=1)
    out = spatial_evaluate(lake, ps, cfg, split="grouped", evaluation="kfold", rf=True)
    df = out["results"].set_index("model")
    print(df[["auc", "auc_low95", "auc_high95", "accuracy"]], SEED_REFERENCE)
    assert df.loc["cnn", "auc_low95"] > 0.5
    assert df.loc["cnn", "auc"] > SEED_REFERENCE["auc"] + 0.1
    spatial_train(lake, ps, cfg)
    maps = spatial_map(lake, f"small-{ps}-s0", slices="all", truth_dir=paths["truth_dir"],
                       tta=False, png=False)
    assert maps["heldout"].all() and len(maps) == 9
    assert maps["rho_vs_truth"].median() > 0.3
