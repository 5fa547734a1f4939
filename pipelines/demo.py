"""`drlake demo`: the whole pipeline on a small synthetic cohort, end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.encoder import EncoderSpec
from pipelines.ingest import IngestSettings, ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.quantify import QuantifySettings
from pipelines.regions import read_regions_file, regions_text
from pipelines.scheduler import SchedulerSpec
from pipelines.sql import connect

#: Held-out biopsy patients whose probability maps the demo draws (a map costs about 1.3 s).
DEMO_MAPS = 3


def _cohort_matches(workdir: Path, patients: int, seed: int, biopsy_patients: int) -> bool:
    """Return True if `workdir` holds a complete small synthetic cohort with these settings."""
    import json

    truth = workdir / "ground_truth.json"
    if not all((workdir / f).exists() for f in ("manifest.csv", "regions.toml")) \
            or not truth.exists():
        return False
    try:
        g = json.loads(truth.read_text())
    except json.JSONDecodeError:
        return False
    bio = g.get("biopsy") or {}
    return (g.get("seed"), g.get("n_patients"), g.get("size"), g.get("effect_scale"),
            bio.get("n_patients", 0)) == (seed, patients, "small", 1.0, biopsy_patients)


def _spatial_line(ev: dict) -> str:
    """Return a one-line summary of a spatial evaluation's AUCs."""
    df = ev.get("results")
    if df is None or len(df) == 0:
        return "no result"
    df = df[df["split"] == "grouped"]
    return ", ".join(f"{r.model} AUC {r.auc:.2f} [{r.auc_low95:.2f}, {r.auc_high95:.2f}]"
                     for r in df.itertuples())


def truth_vs_found(truth: dict, spearman: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Return one row per immune marker: planted (its latent driver and weight, or null), the
    strongest DRF correlation found (|rho|, p, Holm p) and whether it is Holm-significant.

    truth: the synthetic cohort's ground_truth.json; spearman: one run's results_spearman rows.
    """
    rows = []
    for marker, spec in truth["immune"].items():
        d = spearman[(spearman["marker"] == marker) & spearman["p"].notna()]
        best = d.loc[d["p"].idxmin()] if len(d) else None
        rows.append({
            "marker": marker,
            "planted": f"{spec['driver']} x {spec['weight']:+g}" if spec["driver"] else "null",
            "best_abs_rho": abs(best["rho"]) if best is not None else float("nan"),
            "min_p": best["p"] if best is not None else float("nan"),
            "min_p_holm": d["p_holm"].min() if len(d) else float("nan"),
            "found": bool(len(d) and d["p_holm"].min() < alpha),
        })
    return pd.DataFrame(rows).sort_values(["planted", "min_p"]).reset_index(drop=True)


def holm_critical_rho(n: int, tests: int, alpha: float = 0.05) -> float:
    """Return the |Spearman rho| that reaches Holm significance as the first of `tests` p-values
    at n patients (t approximation, two-sided): the smallest effect a heatmap can show."""
    from scipy import stats

    t = stats.t.isf(alpha / (2 * tests), n - 2)
    return float(t / np.sqrt(n - 2 + t * t))


def _truth_lines(lake: Lake, run_id: str, truth_path: Path) -> list[str]:
    """Return the demo's summary of what was planted beside what the analysis found."""
    import json

    truth = json.loads(Path(truth_path).read_text())
    sp = lake.read_table("results_spearman")
    sp = sp[sp["run_id"] == run_id]
    table = truth_vs_found(truth, sp)
    planted = table[table["planted"] != "null"]
    null = table[table["planted"] == "null"]
    n = int(sp["n"].max()) if len(sp) else 0
    crit = holm_critical_rho(n, len(sp)) if n > 3 and len(sp) else float("nan")
    lines = ["ground truth beside what was found (DRF-marker Spearman, training set):"]
    lines += ["  " + ln for ln in planted.to_string(
        index=False, float_format=lambda v: f"{v:.3g}").splitlines()]
    lines.append(
        f"  planted markers found (Holm): {int(planted['found'].sum())}/{len(planted)}; "
        f"null markers found: {int(null['found'].sum())}/{len(null)} (a false positive each)")
    paper = holm_critical_rho(100, len(sp)) if len(sp) else float("nan")
    lines.append(
        f"  with n = {n} training patients and {len(sp)} tests, Holm needs |rho| > {crit:.2f}, "
        f"while the planted effects are |rho| ~ 0.4-0.7 (as in the paper): too few patients "
        f"to show them after correction. At the paper's 100 training patients Holm needs "
        f"|rho| > {paper:.2f}: see the paper-size check below, or run the same commands on "
        "`drlake synth --patients 151` (benchmarks/power.py measures the power)")
    return lines


def paper_size_check(lake: Lake, encoder: str, truth_path: Path, n_patients: int = 151,
                     n_train: int = 100, trees: int = 50, seed: int = 0) -> dict:
    """Return the seed-000 statistics on a paper-sized cohort extended from the demo's images.

    The lake's image patients keep their DRFs; the others of a ``n_patients`` synthetic cohort
    of the same seed get DRFs drawn from the DRF-latent relation measured on them
    (:func:`pipelines.synth.extrapolate.extrapolated_drfs`) and the generator's markers and
    survival. Returns ``table`` (:func:`truth_vs_found` of the training-split Spearman, Holm
    over the whole heatmap), ``n_train``, ``tests``, ``measured`` (image patients) and
    ``survival`` (the DRF survival forest's repeated stratified 5 x 10 CV AUC, a
    ``ClassifierResult``).
    """
    import json

    from pipelines.analyze import load_cohort
    from pipelines.stats.association import spearman_matrix
    from pipelines.stats.classify import rf_repeated_cv
    from pipelines.stats.splits import train_test_split_ids
    from pipelines.stats.survival import survival_labels
    from pipelines.synth import make_tables
    from pipelines.synth.extrapolate import extrapolated_drfs

    truth = json.loads(Path(truth_path).read_text())
    data = load_cohort(lake, encoder)
    tables = make_tables(n_patients, seed=truth["seed"], effect_scale=truth["effect_scale"])
    latent = tables["latent"].set_index("patient_id")
    immune = tables["immune"].set_index("patient_id").astype(float)
    clinical = tables["clinical"].set_index("patient_id")
    lake_markers = data.markers.loc[:, immune.columns]
    if not set(data.ids) <= set(immune.index) or not np.allclose(
            lake_markers.to_numpy(), immune.loc[data.ids].to_numpy(), equal_nan=True):
        raise ValueError(f"{lake.url}: the lake's patients are not the synthetic cohort of "
                         f"{truth_path}")
    drf = extrapolated_drfs(data.drf, latent.loc[data.ids], latent, seed=seed)
    train, _ = train_test_split_ids(list(drf.index), n_train=n_train, seed=seed)
    sp = spearman_matrix(drf.loc[train], immune.loc[train])
    y = survival_labels(clinical["survival_days"].astype(float), clinical["event"].astype(int))
    surv = rf_repeated_cv(drf, y, seed=seed, n_estimators=trees)
    return {"table": truth_vs_found(truth, sp), "n_train": len(train), "tests": len(sp),
            "measured": len(data.ids), "n": len(drf), "survival": surv}


def _paper_size_lines(check: dict) -> list[str]:
    """Return the demo's summary of :func:`paper_size_check`."""
    table, s = check["table"], check["survival"]
    planted = table[table["planted"] != "null"]
    null = table[table["planted"] == "null"]
    crit = holm_critical_rho(check["n_train"], check["tests"])
    lines = [
        f"the same statistics at the paper's size: {check['n']} patients, {check['measured']} "
        f"with images (above) and {check['n'] - check['measured']} whose DRFs are drawn from "
        "the DRF-latent relation measured on them (no images; markers and survival from the "
        "generator)",
        f"  training split {check['n_train']}, {check['tests']} tests: Holm needs |rho| > "
        f"{crit:.2f}"]
    lines += ["  " + ln for ln in planted.to_string(
        index=False, float_format=lambda v: f"{v:.3g}").splitlines()]
    lines.append(
        f"  planted markers found (Holm): {int(planted['found'].sum())}/{len(planted)}; "
        f"null markers found: {int(null['found'].sum())}/{len(null)}")
    lines.append(
        f"  survival forest on the DRFs, repeated stratified 5 x 10 CV: AUC {s.auc:.2f} "
        f"({s.auc_low95:.2f}-{s.auc_high95:.2f}), n = {s.n}")
    return lines


def run_demo(
    workdir: Path,
    lake_url: str,
    patients: int = 24,
    biopsy_patients: int = 45,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> dict:
    """Synthesise a small cohort into `workdir`, ingest it into the lake and run every stage.

    Returns a dict of what was produced (paths and counts). Rerunning reuses the cohort files
    when they exist for the same settings and skips lake work that is already done.
    """
    from pipelines.synth import make_cohort

    t0 = time.perf_counter()
    workdir = Path(workdir)
    echo(f"[1/7] synthetic cohort: {patients} patients (+{biopsy_patients} biopsy) -> {workdir}")
    if _cohort_matches(workdir, patients, seed, biopsy_patients):
        echo("      reusing the cohort files already there (same size, seed and counts)")
    else:
        make_cohort(
            workdir, n_patients=patients, seed=seed, size="small", biopsy_patients=biopsy_patients
        )
    lake = Lake(lake_url)
    echo(f"[2/7] ingest -> {lake.url}")
    regions = read_regions_file(workdir / "regions.toml")
    main = ingest(
        workdir / "manifest.csv",
        lake,
        clinical=workdir / "clinical.csv",
        immune=workdir / "immune.csv",
        expression=workdir / "expression.tsv",
        settings=IngestSettings(cohort="main", regions=regions),
    )
    echo(f"      main cohort: {main}; mask regions {regions_text(regions)}")
    out = {"cohort": str(workdir), "lake": lake.url, "ingest": str(main)}
    if biopsy_patients > 0:
        bio = ingest(
            workdir / "biopsy" / "manifest.csv",
            lake,
            biopsies=workdir / "biopsy" / "biopsies.csv",
            settings=IngestSettings(cohort="biopsy"),
        )
        echo(f"      biopsy cohort: {bio}")
        out["ingest_biopsy"] = str(bio)
    echo("[3/7] activations: seeded 3D CNN, 2 blocks x 10 maps, on every sequence's ROI crop")
    act = run_activations(lake, EncoderSpec(), SchedulerSpec(), cohort="main")
    echo(f"      encoder {act['encoder']}: {act['computed']} computed, {act['skipped']} unchanged")
    echo("[4/7] quantify: first-order, GLCM, GLSZM, NGTDM per map (32 levels) + shape")
    q = run_quantify(lake, act["encoder"], QuantifySettings(), SchedulerSpec(), cohort="main")
    echo(f"      {q['written']} fragment(s) written, {q['skipped']} unchanged")
    con = connect(lake)
    try:
        drf = con.execute("SELECT * FROM drf WHERE encoder = ? ORDER BY region, patient_id",
                          [act["encoder"]]).df()
        per_region = con.execute(
            "SELECT region, count(DISTINCT patient_id) AS patients, count(*) AS values "
            "FROM drf_long WHERE encoder = ? GROUP BY region ORDER BY region",
            [act["encoder"]]).df()
    finally:
        con.close()
    n_feat = drf.shape[1] - 3
    echo(f"DRF table: {drf['patient_id'].nunique()} patients x {n_feat} features "
         f"(45 per sequence) per mask region; first rows:")
    echo(drf.iloc[:3, :6].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    echo("DRFs per region (SELECT region, count(*) FROM drf_long GROUP BY region):")
    echo(per_region.to_string(index=False))
    out.update(encoder=act["encoder"], drf_shape=(drf["patient_id"].nunique(), n_feat),
               regions=per_region["region"].tolist())
    echo("[5/7] analyze: correlations, Wilcoxon, log-rank, random forests (demo-sized forests)")
    from pipelines.analyze import AnalyzeSettings, run_analyze

    an = run_analyze(lake, AnalyzeSettings(encoder=act["encoder"], trees=50, marker_trees=50,
                                           marker_cv="oob", permutation_repeats=1,
                                           cv_repeats=3),
                     SchedulerSpec("processes"))
    echo(f"      {an.get('message') or 'unchanged: ' + an['run_id']}")
    for line in _truth_lines(lake, an["run_id"], workdir / "ground_truth.json"):
        echo("      " + line)
    check = paper_size_check(lake, act["encoder"], workdir / "ground_truth.json", seed=seed)
    for line in _paper_size_lines(check):
        echo("      " + line)
    out["paper_size_check"] = check
    if biopsy_patients > 0:
        echo("[6/7] spatial (seed 004): biopsy patches, patient-grouped CNN, probability maps")
        from pipelines.spatial.stage import (
            load_model,
            spatial_evaluate,
            spatial_map,
            spatial_patches,
            spatial_train,
        )

        spatial_patches(lake)
        model = spatial_train(lake)
        ev = spatial_evaluate(lake, evaluation="kfold", rf_trees=100)
        held_out = load_model(lake, model["model"])[1]["patients"].get("test") or None
        maps = spatial_map(lake, model["model"], truth_dir=workdir / "biopsy" / "truth",
                           patients=held_out[:DEMO_MAPS] if held_out else None)
        rho = maps["rho_vs_truth"].median() if "rho_vs_truth" in maps else float("nan")
        echo(f"      model {model['model']}; grouped k-fold: {_spatial_line(ev)}; "
             f"{len(maps)} map(s) of held-out patients drawn, Spearman rho with the true "
             f"infiltration field (median) {rho:.2f}")
        res = ev.get("results")
        if res is None or not (res["auc_low95"] > 0.5).any():
            echo(f"      no 95% CI above 0.5: {biopsy_patients} biopsy patients are too few to "
                 "tell the model from chance (at seed 0 the default 45 give a CI above 0.5); "
                 "`python benchmarks/spatial.py` runs the same stage with every evaluation")
    echo("[7/7] report")
    from pipelines.report import build_report

    page = build_report(lake, run_id=an["run_id"])
    echo(f"      report: {page}")
    out.update(analyze_run=an["run_id"], report=str(page))
    echo(f"done in {time.perf_counter() - t0:.1f} s; lake at {lake.url}")
    layout = lake.describe_layout()
    echo(f"  volumes: {layout['volumes']}")
    echo(f"  tables:  {layout['tables']}  (runs: `drlake runs --lake {lake_url}`)")
    echo(f"  query:   drlake sql --lake {lake_url} \"SELECT * FROM drf LIMIT 5\"")
    return out
