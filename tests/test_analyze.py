"""The analyze stage: results tables agree with direct library calls, planted effects are found
on a synthetic cohort, a null cohort stays quiet, and identical reruns are skipped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_rows
from scipy import stats

from pipelines.analyze import AnalyzeSettings, run_analyze
from pipelines.exceptions import InputError
from pipelines.lake import Lake
from pipelines.scheduler import SchedulerSpec
from pipelines.synth import make_tables

FAST = dict(trees=20, marker_trees=20, permutation_repeats=0, marker_cv="none", cv_repeats=2)
#: Two worker processes for the larger runs: every number is the same on any scheduler (each
#: task is seeded by the settings), and the forests take half the time on 2 cores.
TWO = SchedulerSpec("processes", 2)


def lake_from_tables(root, n: int, seed: int, effect_scale: float) -> Lake:
    """A lake with the synthetic cohort's tables and DRF-like features planted from its latent
    factors (a stand-in for the imaging path, which other tests cover)."""
    t = make_tables(n, seed=seed, effect_scale=effect_scale)
    lake = Lake(root)
    write_rows(lake, "clinical", t["clinical"])
    imm = t["immune"].melt(id_vars="patient_id", var_name="marker", value_name="value")
    write_rows(lake, "immune_markers", imm)
    lat = t["latent"].set_index("patient_id")
    rng = np.random.default_rng(seed + 1000)
    frames = []
    for mod, factor in (("T1CE", "tcell"), ("T2", "prolif")):
        for pid in lat.index:
            signal = effect_scale * lat.loc[pid, factor]
            rows = [(1, 0, "szm_lze", signal + rng.normal(0, 0.7)),
                    (1, 0, "cm_contrast", rng.normal()),
                    (0, 0, "morph_volume", rng.normal())]
            df = pd.DataFrame(rows, columns=["layer", "map", "feature", "value"])
            df.insert(0, "patient_id", pid)
            df.insert(1, "modality", mod)
            df.insert(2, "encoder", "enc")
            df.insert(3, "region", "roi")
            df["run_id"] = "r0"
            frames.append(df)
    write_rows(lake, "features", pd.concat(frames, ignore_index=True))  # one commit
    return lake


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    lake = lake_from_tables(tmp_path_factory.mktemp("planted") / "lake", 120, 0, 1.0)
    r = run_analyze(lake, AnalyzeSettings(**FAST), TWO, progress=False)
    return lake, r


def test_results_tables_are_written_with_the_run_id(planted):
    lake, r = planted
    for t in ("results_spearman", "results_wilcoxon", "results_survival", "results_classifier",
              "results_scores", "results_importance"):
        df = lake.read_table(t)
        assert len(df) and set(df["run_id"]) == {r["run_id"]}, t
    cls = lake.read_table("results_classifier")
    assert set(cls["feature_set"]) == {"R", "C", "I", "R+C", "R+I", "C+I", "R+C+I"}
    assert set(cls["evaluation"]) == {"repeated_cv", "loocv", "split"}
    assert (cls.loc[cls.evaluation.isin(["loocv", "repeated_cv"]), "n"] == 120).all()
    runs = lake.runs()
    assert runs.iloc[-1]["stage"] == "analyze" and runs.iloc[-1]["status"] == "ok"


def test_spearman_row_agrees_with_scipy_on_the_training_set(planted):
    lake, r = planted
    import json

    sp = lake.read_table("results_spearman")
    params = json.loads(lake.runs().iloc[-1]["parameters"])
    from pipelines.stats.splits import train_test_split_ids

    clin = lake.read_table("clinical")
    train, _ = train_test_split_ids(sorted(clin["patient_id"]), n_train=params["n_train_used"],
                                    seed=0)
    assert len(train) == round(120 * 100 / 151)
    imm = lake.read_table("immune_markers")
    x = imm[imm.marker == "t_cells_cd8"].set_index("patient_id")["value"].loc[train]
    from pipelines.sql import connect

    con = connect(lake)
    drf = con.execute("SELECT * FROM drf").df().set_index("patient_id").loc[train]
    con.close()
    rho, p = stats.spearmanr(drf["T1CE__szm_lze"], x)
    row = sp[(sp.modality == "T1CE") & (sp.feature == "szm_lze") & (sp.marker == "t_cells_cd8")]
    assert row["rho"].iloc[0] == pytest.approx(rho, abs=1e-12)
    assert row["p"].iloc[0] == pytest.approx(p, rel=1e-9)


def test_planted_associations_are_found(planted):
    lake, _ = planted
    sp = lake.read_table("results_spearman")
    sig = sp[sp.significant]
    pairs = set(zip(sig.modality, sig.feature, sig.marker, strict=True))
    assert ("T1CE", "szm_lze", "t_cells_cd8") in pairs
    assert ("T2", "szm_lze", "neutrophils") in pairs
    # null markers (independent of every latent factor) are never significant here
    nulls = {"b_cells_memory", "eosinophils", "mast_cells_resting", "plasma_cells"}
    assert not (set(sig.marker) & nulls)
    surv = lake.read_table("results_survival")
    assert surv.loc[(surv.kind == "clinical") & (surv.feature == "age"), "p"].iloc[0] < 0.05


def test_identical_rerun_is_skipped(planted):
    lake, r = planted
    again = run_analyze(lake, AnalyzeSettings(**FAST), SchedulerSpec("sync"), progress=False)
    assert again["skipped"] and again["run_id"] == r["run_id"]


def planted_frames(n: int, seed: int, effect_scale: float):
    """Return (features, markers) of the synthetic tables with latent-driven features."""
    t = make_tables(n, seed=seed, effect_scale=effect_scale)
    lat = t["latent"].set_index("patient_id")
    rng = np.random.default_rng(seed + 1000)
    feats = pd.DataFrame({
        "T1CE__szm_lze": effect_scale * lat["tcell"] + rng.normal(0, 0.7, n),
        "T2__szm_lze": effect_scale * lat["prolif"] + rng.normal(0, 0.7, n),
        "T1CE__cm_contrast": rng.normal(size=n), "T2__morph_volume": rng.normal(size=n)},
        index=lat.index)
    return feats, t["immune"].set_index("patient_id")


def test_family_wise_error_on_null_cohorts_and_power_on_planted_ones():
    """Fraction of seeds with any Holm-significant result: near/below alpha on null cohorts
    (latent effects zero), high on planted ones (the stage calls these same functions)."""
    from pipelines.stats.association import spearman_matrix, wilcoxon_groups

    seeds = range(20)
    null_hits, power_hits = 0, 0
    for s in seeds:
        f, m = planted_frames(100, 100 + s, 0.0)
        null_hits += bool(spearman_matrix(f, m)["significant"].any()
                          or wilcoxon_groups(f, m)["significant"].any())
        f, m = planted_frames(100, 100 + s, 1.0)
        sp = spearman_matrix(f, m)
        power_hits += bool(sp[(sp.feature == "T1CE__szm_lze")
                              & (sp.marker == "t_cells_cd8")]["significant"].iloc[0])
    # two tests per seed: FWER <= 2 x 5%; binomial(20, 0.10): P(X >= 6) < 1.2%
    assert null_hits <= 5, null_hits
    assert power_hits >= 16, power_hits


def test_strict_protocol_runs_and_is_recorded_and_marker_predictions_reproduce_the_auc(
        tmp_path):
    import json

    from sklearn.metrics import roc_auc_score

    from pipelines.sql import connect

    lake = lake_from_tables(tmp_path / "lake", 60, 3, 1.0)
    r = run_analyze(lake, AnalyzeSettings(**{**FAST, "protocol": "strict", "marker_cv": "oob"}),
                    TWO, progress=False)
    cls = lake.read_table("results_classifier")
    assert set(cls["protocol"]) == {"strict"} and r["n"] == 60
    con = connect(lake)
    auc = con.execute("SELECT * FROM results_marker_auc WHERE run_id = ?", [r["run_id"]]).df()
    rows = con.execute("SELECT * FROM results_marker_scores WHERE run_id = ?",
                       [r["run_id"]]).df()
    con.close()
    assert set(auc["evaluation"]) == {"oob", "split"} and set(auc["protocol"]) == {"strict"}
    assert set(rows["protocol"]) == {"strict"}
    # the Fig. 5 AUCs recomputed from the stored held-out predictions
    checked = 0
    for key, sub in rows.groupby(["marker", "modality", "evaluation"]):
        want = auc.set_index(["marker", "modality", "evaluation"]).loc[key]
        assert len(sub) == want["n"]
        if sub["label"].nunique() == 2:
            assert roc_auc_score(sub["label"], sub["score"]) == pytest.approx(want["auc"],
                                                                             abs=1e-12)
            checked += 1
    assert checked >= len(auc) // 2
    # the split rows are the test patients, once each; OOB rows are patients, once each
    n_train = json.loads(lake.runs().iloc[-1]["parameters"])["n_train_used"]
    split = rows[rows.evaluation == "split"].groupby(["marker", "modality"])["patient_id"]
    assert (split.nunique() == 60 - n_train).all() and (split.size() == 60 - n_train).all()
    oob = rows[rows.evaluation == "oob"].groupby(["marker", "modality"])["patient_id"]
    assert (oob.nunique() == oob.size()).all()


def test_score_survival_spearman_is_holm_corrected_per_evaluation(planted):
    from pipelines.stats.multiple_testing import holm_adjust

    lake, _ = planted
    cls = lake.read_table("results_classifier")
    for ev, sub in cls.groupby("evaluation"):
        np.testing.assert_allclose(sub["score_rho_p_holm"],
                                   holm_adjust(sub["score_rho_p"].to_numpy(float)), err_msg=ev)
        assert (sub["score_rho_p_holm"].dropna() >= sub["score_rho_p"].dropna()).all()


def test_strict_marker_paths_get_a_label_rule_not_all_patient_labels(monkeypatch):
    """Spy on the marker task: under strict every path gets the median rule, fitted on the
    rows each model trains on, never labels computed from all patients."""
    import pipelines.stats.classify as C
    from pipelines.analyze import _marker_task

    calls = []

    def spy(name, fn):
        def wrapped(X, y, *args, **kw):
            calls.append((name, y, kw.get("protocol")))
            return fn(X, y, *args, **kw)
        return wrapped

    for name in ("rf_oob", "rf_loocv", "rf_split"):
        monkeypatch.setattr(C, name, spy(name, getattr(C, name)))
    rng = np.random.default_rng(5)
    n = 30
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["T1__a", "T1__b", "T1__c"])
    values = pd.Series(rng.normal(size=n))
    train, test = np.arange(20), np.arange(20, n)
    for cv in ("oob", "loocv"):
        st = AnalyzeSettings(**{**FAST, "protocol": "strict", "marker_cv": cv, "marker_trees": 5})
        out = _marker_task(X, values, train, test, st, "m", "T1")
        assert {res.protocol for res in out["results"].values()} == {"strict"}
    assert {c[0] for c in calls} == {"rf_oob", "rf_loocv", "rf_split"}
    for _, y, protocol in calls:
        assert callable(y) and protocol == "strict"
        sub = np.arange(10)
        np.testing.assert_array_equal(y(sub), (values > values.iloc[:10].median()).astype(int))


def test_leave_pair_out_is_an_evaluation_of_the_survival_forests(tmp_path):
    """--lpo-pairs adds a leave-pair-out AUC per feature set beside the other evaluations (no
    per-patient scores: it scores pairs), recorded in the run's parameters and in the report."""
    import json

    from pipelines.report import build_report

    lake = lake_from_tables(tmp_path / "lake", 30, 3, 1.0)
    r = run_analyze(lake, AnalyzeSettings(**{**FAST, "cv_repeats": 0, "lpo_pairs": 25}),
                    TWO, progress=False)
    cls = lake.read_table("results_classifier")
    lpo = cls[cls["evaluation"] == "leave_pair_out"]
    assert set(lpo["feature_set"]) == set(cls.loc[cls["evaluation"] == "loocv", "feature_set"])
    assert ((lpo["auc_low95"] <= lpo["auc"]) & (lpo["auc"] <= lpo["auc_high95"])).all()
    assert lpo["auc"].between(0, 1).all() and (lpo["n"] == 30).all()
    scores = lake.read_table("results_scores")
    assert "leave_pair_out" not in set(scores["evaluation"]) and len(scores)
    params = json.loads(lake.runs().set_index("run_id").loc[r["run_id"], "parameters"])
    assert params["lpo_pairs"] == 25
    page = build_report(lake, run_id=r["run_id"]).read_text(encoding="utf-8")
    assert "leave-pair-out" in page
    with pytest.raises(InputError, match="lpo_pairs"):
        AnalyzeSettings(lpo_pairs=-1)
