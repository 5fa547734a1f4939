"""The HTML report: a lake with small synthetic but schema-valid results of one analyze run,
the page built from it, its sections, embedded PNG figures and self-containment."""

from __future__ import annotations

import base64
import re
import struct

import numpy as np
import pandas as pd
import pytest
from conftest import write_rows

from pipelines.exceptions import InputError, LakeError
from pipelines.lake import Lake
from pipelines.report import build_report
from pipelines.report import figures as F
from pipelines.report.build import results_sql
from pipelines.report.page import SECTIONS, cohort_summary
from pipelines.sql import CATALOGUE

MARKERS = ["b_cells_memory", "b_cells_naive", "dendritic_cells_activated",
           "dendritic_cells_resting", "eosinophils", "macrophages_m0", "macrophages_m1",
           "macrophages_m2", "mast_cells_activated", "mast_cells_resting", "monocytes",
           "neutrophils", "nk_cells_activated", "nk_cells_resting", "plasma_cells",
           "t_cells_cd4_memory_activated", "t_cells_cd4_memory_resting", "t_cells_cd4_naive",
           "t_cells_cd8", "t_cells_follicular_helper", "t_cells_gamma_delta",
           "t_cells_regulatory_tregs"]
MODALITIES = ["T1", "T1CE", "T2", "FLAIR"]
SETS = ["R", "C", "I", "R+C", "R+I", "C+I", "R+C+I"]
ENCODER = "cnn10x10-s0-a78e0e39"
PNG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
#: Figures of a full report: 2, 3, 4a, 4b, 4c, 4d, 5.
N_FIGURES = 7


def paper45() -> list[str]:
    cat = pd.read_csv(CATALOGUE)
    return list(cat.loc[cat["paper45"], "name"])


def _holm(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    m = len(p)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def _association(rng, run_id: str, feats: list[str], n: int, wilcoxon: bool,
                 markers=MARKERS) -> pd.DataFrame:
    """Spearman or Wilcoxon rows for every sequence x feature x marker, a few of them strong."""
    rows = [(m, f, k) for m in MODALITIES for f in feats for k in markers]
    d = pd.DataFrame(rows, columns=["modality", "feature", "marker"])
    strong = (d["marker"].isin(["neutrophils", "t_cells_cd8"])
              & d["feature"].str.startswith("szm_"))
    rho = rng.uniform(-0.35, 0.35, len(d)) + np.where(strong, 0.6, 0.0)
    t = rho * np.sqrt((n - 2) / (1 - rho**2))
    from scipy import stats

    p = 2 * stats.t.sf(np.abs(t), n - 2)
    d.insert(0, "encoder", ENCODER)
    d.insert(0, "run_id", run_id)
    if wilcoxon:
        d["statistic"] = rng.uniform(100, 300, len(d))
        d["p"] = p
        d["n_low"], d["n_high"] = n // 2, n - n // 2
    else:
        d["rho"], d["p"], d["n"] = rho, p, n
    d["p_holm"] = _holm(p)
    d["significant"] = d["p_holm"] < 0.05
    d.loc[3, ["p", "p_holm"]] = np.nan  # one undefined cell (a constant feature)
    if not wilcoxon:
        d.loc[3, "rho"] = np.nan
    d.loc[3, "significant"] = False
    return d


def _survival(rng, run_id: str, feats: list[str], significant: bool) -> pd.DataFrame:
    rows = [("drf", m, f) for m in MODALITIES for f in feats[:10]]
    rows += [("clinical", None, "age"), ("clinical", None, "gender")]
    rows += [("immune", None, k) for k in MARKERS]
    d = pd.DataFrame(rows, columns=["kind", "modality", "feature"])
    n = len(d)
    d.insert(0, "run_id", run_id)
    d["n_low"], d["n_high"] = 14, 13
    d["median_low_days"] = rng.uniform(300, 700, n)
    d["median_high_days"] = rng.uniform(300, 700, n)
    d.loc[5, "median_high_days"] = np.nan  # median not reached
    d["logrank_stat"] = rng.uniform(0, 5, n)
    d["p"] = rng.uniform(0.01, 1, n)
    if significant:
        d.loc[[0, 40, 45], "p"] = [1e-6, 2e-5, 1e-4]
    d["hr"] = rng.uniform(0.3, 3, n)
    d["hr_low95"], d["hr_high95"] = d["hr"] * 0.6, d["hr"] * 1.7
    d["p_holm"] = _holm(d["p"].to_numpy())
    d["significant"] = d["p_holm"] < 0.05
    return d


def _classifier_rows(rng, run_id: str, clinical: pd.DataFrame, n_drf: int,
                     below_chance: bool = False):
    nfeat = {"R": n_drf, "C": 2, "I": len(MARKERS)}
    cls, scores, imp = [], [], []
    pids = list(clinical["patient_id"])
    test = pids[: len(pids) // 3]
    for s in SETS:
        k = sum(nfeat[p] for p in s.split("+"))
        names = ([f"{m}__{f}" for m in MODALITIES for f in paper45()] if "R" in s else [])
        names = names + (["age", "gender"] if "C" in s else []) + (MARKERS if "I" in s else [])
        for ev, ids in (("repeated_cv", pids), ("loocv", pids), ("split", test)):
            auc = float(rng.uniform(0.55, 0.8))
            if below_chance and ev == "loocv" and s == "C":
                auc = 0.03  # the 24-patient demo's pooled LOOCV AUC of the clinical set
            cls.append({"run_id": run_id, "feature_set": s, "evaluation": ev, "n": len(ids),
                        "n_features": k, "auc": auc, "auc_low95": max(auc - 0.1, 0.0),
                        "auc_high95": min(auc + 0.1, 1.0), "score_rho": 0.3,
                        "score_rho_p": 0.004, "score_rho_p_holm": 0.028, "logrank_p": 0.002,
                        "hr": 2.5, "hr_low95": 1.4, "hr_high95": 4.3, "protocol": "paper"})
            c = clinical.set_index("patient_id").loc[ids]
            score = np.clip(c["survival_days"] / 2000 + rng.normal(0, 0.2, len(ids)), 0, 1)
            scores.append(pd.DataFrame({
                "run_id": run_id, "feature_set": s, "evaluation": ev, "patient_id": ids,
                "score": score.to_numpy(), "label": (c["survival_days"] > 500).astype(int)
                .to_numpy(), "survival_days": c["survival_days"].to_numpy(),
                "event": c["event"].to_numpy(),
                "imputed_days": np.where(c["event"] == 1, c["survival_days"],
                                         c["survival_days"] * 1.3)}))
            imp.append(pd.DataFrame({
                "run_id": run_id, "feature_set": s, "evaluation": ev, "feature": names,
                "impurity": rng.dirichlet(np.ones(len(names))),
                "permutation_mean": rng.normal(0.0, 0.01, len(names)),
                "permutation_std": rng.uniform(0, 0.01, len(names))}))
    return pd.DataFrame(cls), pd.concat(scores), pd.concat(imp)


def _marker_auc(rng, run_id: str, feats: list[str], n: int) -> pd.DataFrame:
    rows = []
    for k in MARKERS:
        for m in MODALITIES:
            for ev, nn in (("loocv", n), ("split", n // 3)):
                auc = float(rng.uniform(0.3, 0.9))
                rows.append({"run_id": run_id, "marker": k, "modality": m, "evaluation": ev,
                             "n": nn, "auc": auc, "auc_low95": auc - 0.15,
                             "auc_high95": min(auc + 0.15, 1.0),
                             "top_feature": feats[int(rng.integers(len(feats)))],
                             "protocol": "paper"})
    return pd.DataFrame(rows)


def make_report_lake(root, n: int = 40, seed: int = 0, significant: bool = True,
                     small: bool = False, below_chance: bool = False,
                     marker_cv: str | None = None) -> tuple:
    """Write a lake with clinical and immune tables, an activations run and one analyze run
    whose results tables are synthetic but schema-valid; return (lake, analyze run id).

    Full size: 4 sequences x 45 DRFs x 22 markers (the paper's); small: 6 DRFs x 4 markers in
    the heatmaps, for tests that do not look at the figures.
    """
    rng = np.random.default_rng(seed)
    lake = Lake(root)
    pids = [f"P{i:03d}" for i in range(n)]
    clinical = pd.DataFrame({
        "patient_id": pids, "age": rng.uniform(19, 85, n).round(1),
        "gender": rng.choice(["M", "F"], n), "grade": rng.choice(["LGG", "GBM"], n),
        "survival_days": rng.integers(30, 2000, n).astype(float),
        "event": rng.integers(0, 2, n)})
    write_rows(lake, "clinical", clinical)
    imm = pd.DataFrame([(p, k, float(rng.uniform(0, 0.1)) * (rng.random() > 0.3))
                        for p in pids for k in MARKERS], columns=["patient_id", "marker", "value"])
    write_rows(lake, "immune_markers", imm)
    with lake.run("activations", {"encoder": {"blocks": [10, 10], "seed": 0}},
                  encoder_hash="a78e0e39" + "0" * 56):
        pass
    feats = paper45()
    assoc_feats, assoc_markers = (feats[::8], MARKERS[::6]) if small else (feats, MARKERS)
    params = {"encoder": ENCODER, "protocol": "paper", "seed": 0, "alpha": 0.05, "n": n,
              "n_train_used": round(n * 100 / 151)}
    if marker_cv is not None:  # runs before the option recorded no marker_cv (they used LOOCV)
        params["marker_cv"] = marker_cv
    with lake.run("analyze", params) as run:
        rid = run.run_id
        ntr = params["n_train_used"]
        for table, wilcoxon in (("results_spearman", False), ("results_wilcoxon", True)):
            write_rows(lake, table, _association(rng, rid, assoc_feats, ntr, wilcoxon,
                                                        assoc_markers), name=rid)
        write_rows(lake, "results_survival", _survival(rng, rid, feats, significant),
                                name=rid)
        cls, scores, imp = _classifier_rows(rng, rid, clinical, len(feats) * len(MODALITIES),
                                            below_chance)
        write_rows(lake, "results_classifier", cls, name=rid)
        write_rows(lake, "results_scores", scores, name=rid)
        write_rows(lake, "results_importance", imp, name=rid)
        write_rows(lake, "results_marker_auc", _marker_auc(rng, rid, feats, n), name=rid)
    return lake, rid


def png_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) from a PNG's IHDR chunk; fail if it is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """(lake, run id, HTML text, path) of a report of a full-size synthetic run."""
    root = tmp_path_factory.mktemp("report") / "lake"
    lake, rid = make_report_lake(root)
    path = build_report(lake)
    return lake, rid, path.read_text(encoding="utf-8"), path


def test_report_written_under_the_lake(report):
    lake, rid, _, path = report
    assert str(path) == lake.path("reports", rid, "index.html")
    assert path.stat().st_size > 10_000


def test_every_section_heading(report):
    _, _, html, _ = report
    for key, title in SECTIONS.items():
        if key in ("spatial", "encoders"):  # only with spatial results / an encoder study
            assert title not in html
            continue
        assert f"<h2>{title}</h2>" in html.replace("&ndash;", "–"), title


def test_one_png_per_figure_and_they_decode(report):
    _, _, html, _ = report
    images = PNG_RE.findall(html)
    assert len(images) == N_FIGURES
    for fig_id in ("fig2", "fig3", "fig4a", "fig4b", "fig4c", "fig4d", "fig5"):
        assert f'<figure id="{fig_id}">' in html
    for b64 in images:
        w, h = png_size(base64.b64decode(b64))
        assert w > 100 and h > 100


def test_self_contained(report):
    _, _, html, _ = report
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html
    assert not re.search(r'src="(?!data:)', html)


def test_content(report):
    _, rid, html, _ = report
    # Table 1
    assert "Male" in html and "Female" in html and "dead (censored)" in html
    assert "T Cells CD8" in html and "presence/absence" in html
    # Table 2: the three planted significant features, months stated
    assert "3 significant feature(s)" in html and "months" in html
    assert "T1-WI Mean" in html
    # provenance: run id, encoder hash, SQL of each table, time per stage
    assert html.count(rid) > 5
    assert "a78e0e39" + "0" * 56 in html
    for t in ("results_spearman", "results_marker_auc", "results_importance"):
        assert results_sql(t, rid).replace("'", "&#x27;") in html
    assert "Time per stage" in html and "activations" in html


def test_no_significant_survival_feature_is_said(tmp_path):
    lake, rid = make_report_lake(tmp_path / "lake", n=20, seed=1, significant=False,
                                 small=True)
    lake_runs = lake.runs()
    assert (lake_runs["stage"] == "analyze").sum() == 1
    out = build_report(lake, run_id=rid, out_dir=tmp_path / "out")
    html = out.read_text(encoding="utf-8")
    assert out == tmp_path / "out" / "index.html"
    assert "No feature is significantly associated with survival" in html
    assert "10 smallest p-values" in html


def test_errors(tmp_path):
    lake = Lake(tmp_path / "empty")
    with pytest.raises(LakeError, match="run log is empty"):
        build_report(lake)
    lake2, rid = make_report_lake(tmp_path / "lake", n=15, small=True)
    with pytest.raises(LakeError, match="no run"):
        build_report(lake2, run_id="analyze-nope")
    with pytest.raises(InputError, match="invalid run id"):
        build_report(lake2, run_id="../etc")
    act = lake2.runs().query("stage == 'activations'")["run_id"].iloc[0]
    with pytest.raises(InputError, match="analyze run"):
        build_report(lake2, run_id=act)


def test_cohort_summary_counts():
    clin = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "age": [20.0, 40.0, 60.0, 80.0],
                         "gender": ["M", "M", "F", "M"], "grade": ["LGG", "GBM", "GBM", "GBM"],
                         "survival_days": [100.0, 200.0, 300.0, 400.0], "event": [1, 0, 1, 1]})
    imm = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "marker": "t_cells_cd8",
                        "value": [0.0, 0.1, 0.2, 0.0]})
    s = cohort_summary(clin, imm).set_index("item")["value"]
    assert s["Male"] == "3" and s["Female"] == "1" and s["LGG"] == "1" and s["GBM"] == "3"
    assert s["median (min–max)"] == "50.0 (20.0–80.0)" and s["mean"] == "50.00"
    assert s["dead (censored)"] == "3 (1)"
    assert s["T Cells CD8"] == "2/2"


def test_labels():
    assert F.marker_label("t_cells_cd4_memory_activated") == "T Cells CD4 Memory Activated"
    assert F.marker_label("macrophages_m1") == "Macrophages M1"
    assert F.feature_display("T1CE__cm_contrast", {"cm_contrast": "Contrast-GLCM"}) == \
        "T1-CE Contrast-GLCM"
    assert F.feature_display("age") == "Age"
    assert F.order_feature_sets(["R+C+I", "C", "R"]) == ["R", "C", "R+C+I"]
    assert F.order_modalities(["FLAIR", "T1", "X"]) == ["T1", "FLAIR", "X"]


def test_heatmap_is_sized_to_its_labels():
    rng = np.random.default_rng(0)
    small = _association(rng, "r", paper45()[:5], 30, False)
    small = small[small["modality"] == "T1"]
    full = _association(rng, "r", paper45(), 30, False)
    f_small, f_full = F.spearman_heatmap(small), F.spearman_heatmap(full)
    assert f_full.get_size_inches()[1] > 2 * f_small.get_size_inches()[1]
    # no tick labels overlap: rows are at least as tall as the font
    ax = f_full.axes[0]
    row_in = ax.get_position().height * f_full.get_size_inches()[1] / 45
    assert row_in >= F.FONT / 72


def test_spatial_section_when_views_have_rows(tmp_path, monkeypatch):
    """Spatial results (another stage's views) get a section with their table and maps."""
    import pipelines.sql as sql

    lake, rid = make_report_lake(tmp_path / "lake", n=15, small=True)
    fig = F.Figure(figsize=(2, 2))
    fig.add_subplot().imshow(np.random.default_rng(0).random((17, 17)))
    (tmp_path / "lake" / "spatial").mkdir()
    (tmp_path / "lake" / "spatial" / "P001.png").write_bytes(F.figure_png(fig, dpi=50))
    real_connect = sql.connect

    def connect_with_spatial(lk, **kw):
        con = real_connect(lk, **kw)
        con.execute("CREATE OR REPLACE VIEW results_spatial AS SELECT 'spatial-1' AS run_id, "
                    "'CD3D' AS gene, 0.71 AS auc, 48 AS n_biopsies")
        con.execute("CREATE OR REPLACE VIEW results_spatial_maps AS SELECT 'spatial-1' AS run_id, "
                    "'P001' AS patient_id, 'spatial/P001.png' AS png_path UNION ALL SELECT "
                    "'spatial-1', 'P002', 'spatial/missing.png'")
        return con

    monkeypatch.setattr(sql, "connect", connect_with_spatial)
    html = build_report(lake, out_dir=tmp_path / "out").read_text(encoding="utf-8")
    assert f"<h2>{SECTIONS['spatial']}</h2>" in html
    assert "CD3D" in html and "n_biopsies" in html
    assert "SELECT * FROM results_spatial WHERE run_id = &#x27;spatial-1&#x27;" in html
    assert '<figure id="spatial-map-1">' in html and "spatial-map-2" not in html
    assert len(PNG_RE.findall(html)) == N_FIGURES + 1


def test_failed_run_is_reported_without_its_uncommitted_rows(tmp_path):
    lake, ok_rid = make_report_lake(tmp_path / "lake", n=15, small=True)
    with pytest.raises(RuntimeError), lake.run("analyze", {"encoder": ENCODER}) as run:
        failed = run.run_id
        sp = _association(np.random.default_rng(0), failed, paper45()[:3], 10, False,
                          MARKERS[:2])
        write_rows(lake, "results_spearman", sp, name=failed)
        raise RuntimeError("boom")
    html = build_report(lake, run_id=failed, out_dir=tmp_path / "out").read_text(encoding="utf-8")
    assert "status is &#x27;failed&#x27; (RuntimeError: boom)" in html
    # what a failed run wrote is not visible: its report has no rows to show
    assert len(lake.read_table("results_spearman", committed=False).query(
        "run_id == @failed")) == len(sp)
    assert f"No rows in results_spearman for run {failed}" in html
    assert f"No rows in results_classifier for run {failed}" in html
    # the default is still the latest successful run
    html = build_report(lake, out_dir=tmp_path / "ok").read_text(encoding="utf-8")
    assert f"<h1>drlake report: {ok_rid}</h1>" in html and "status is" not in html


def test_remote_lake_needs_out_dir():
    with pytest.raises(InputError, match="pass out_dir"):
        build_report(Lake("memory://drlake-report-test"))


def test_small_n_and_below_chance_auc_are_not_findings(tmp_path):
    lake, rid = make_report_lake(tmp_path / "lake", n=24, seed=2, small=True, below_chance=True)
    html = build_report(lake, run_id=rid, out_dir=tmp_path / "out").read_text(encoding="utf-8")
    assert "n = 24 patients is too small for a stable AUC" in html
    assert "Pooled LOOCV AUCs below chance with their whole 95% CI: C (0.03)" in html
    assert "not an inverted one" in html
    assert "n = 24 patients is too small for stable marker AUCs" in html
    # the recommended estimate comes first in the classifier table, the Holm p is shown
    table = html[html.index("All classifier results"):]
    assert table.index("repeated_cv") < table.index("loocv") < table.index("split")
    assert "ρ p (Holm)" in table and "0.028" in table


def test_no_small_n_warning_at_the_papers_size(tmp_path):
    lake, rid = make_report_lake(tmp_path / "lake", n=151, seed=3, small=True)
    html = build_report(lake, run_id=rid, out_dir=tmp_path / "out").read_text(encoding="utf-8")
    assert "patients is too small for a stable AUC" not in html
    assert "too small for stable marker AUCs" not in html
    assert "below chance with" not in html


@pytest.mark.parametrize("marker_cv, said", [
    (None, "the paper's pooled leave-one-out (one forest per patient and cell)"),
    ("oob", "out-of-bag predictions of one forest per cell (the default"),
    ("loocv", "the paper's pooled leave-one-out (one forest per patient and cell)")])
def test_the_marker_heatmap_says_which_estimate_ran(tmp_path, marker_cv, said):
    lake, rid = make_report_lake(tmp_path / "lake", n=20, seed=2, small=True,
                                 marker_cv=marker_cv)
    html = build_report(lake, run_id=rid, out_dir=tmp_path / "out").read_text(encoding="utf-8")
    assert f"Cross-validated estimate of this run: {said}".replace("'", "&#x27;") in html
    assert f"marker heatmap estimate <code>{marker_cv or 'loocv'}</code>" in html


def test_encoder_study_section_only_when_a_study_ran(tmp_path):
    lake, rid = make_report_lake(tmp_path / "lake", n=20, seed=2, small=True)
    html = build_report(lake, run_id=rid, out_dir=tmp_path / "a").read_text(encoding="utf-8")
    assert "Which encoder finds the biology" not in html
    rows = []
    for enc, kind, seen in (("cnn10x10-s0-aaaaaaaa", "seeded", None), ("ssl-s0", "trained", 20)):
        rows.append({"run_id": "compare-encoders-x", "encoder": enc, "kind": kind,
                     "region": "roi", "patient_set": "all", "n": 20, "n_seen": seen,
                     "n_drf": 180, "n_significant": 3, "planted_pairs": 8,
                     "detected_pairs": 2, "power": 0.25, "true_hits": 3, "false_positives": 0,
                     "null_markers_hit": 0, "n_null_markers": 18, "planted_max_rho": 0.6,
                     "null_max_rho": 0.4, "separation_auc": 0.7, "auc": 0.6,
                     "auc_low95": 0.4, "auc_high95": 0.8, "stability_partner": None,
                     "stability_median_rho": None, "stability_frac_stable": None})
    write_rows(lake, "results_encoder_study", pd.DataFrame(rows), name="compare-x")
    # the latest report reads the lake as it is now; the run's own snapshot predates the study
    html = build_report(lake, out_dir=tmp_path / "b").read_text(encoding="utf-8")
    assert "Which encoder finds the biology" in html
    assert "ssl-s0" in html and "in-sample" in html
    html = build_report(lake, run_id=rid, out_dir=tmp_path / "c").read_text(encoding="utf-8")
    assert "Which encoder finds the biology" not in html


def test_report_of_a_run_is_rebuilt_from_its_own_snapshot(tmp_path):
    lake, rid = make_report_lake(tmp_path / "lake", n=15, small=True)
    versions = lake.table_versions()
    # later runs change the cohort tables the page reads
    clin = lake.read_table("clinical")
    lake.upsert_table("clinical", clin.assign(age=0.5))  # every age changed
    from pipelines.report.build import read_report_data

    old = read_report_data(lake, rid)
    assert old.snapshot and old.snapshot.startswith(rid)
    # the versions the run recorded when it committed (the run log itself moves on: its own
    # 'ok' event is the next version)
    versions.pop("runs")
    assert {t: old.table_versions[t] for t in versions} == versions
    assert old.clinical["age"].min() >= 19 and len(old.clinical) == 15
    now = read_report_data(lake)
    assert now.snapshot is None and set(now.clinical["age"]) == {0.5}
    assert now.table_versions["clinical"] > old.table_versions["clinical"]
    html = build_report(lake, run_id=rid, out_dir=tmp_path / "old").read_text(encoding="utf-8")
    assert "Lake snapshot" in html and f"rebuilt from the snapshot of run {rid}" in html
    assert f"drlake sql --as-of {rid}" in html
    assert f"<th>clinical</th><td>version {versions['clinical']}</td>" in html
