"""The report stage: `build_report(lake, run_id=None, out_dir=None) -> Path`.

Reads one analysis run's results through the SQL views (every query filtered by the run id and
shown on the page so that a reader can reproduce each table), draws the figures of seed 000
(:mod:`pipelines.report.figures`), and writes one self-contained HTML page
(:mod:`pipelines.report.page`) to ``<lake>/reports/<run_id>/index.html`` or ``out_dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipelines.exceptions import DrlakeError, InputError, LakeError
from pipelines.lake import Lake
from pipelines.report import figures as F
from pipelines.report import page as P

RESULT_TABLES = ("results_spearman", "results_wilcoxon", "results_survival",
                 "results_classifier", "results_scores", "results_importance",
                 "results_marker_auc")
SPATIAL_TABLES = ("results_spatial", "results_spatial_maps")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_SPATIAL_MAPS = 24


def _quote(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def results_sql(table: str, run_id: str) -> str:
    """Return the SQL that reads one run's rows of a results table (shown on the page)."""
    return f"SELECT * FROM {table} WHERE run_id = {_quote(run_id)}"


def cohort_sql(table: str, run_id: str) -> str:
    """Return the SQL of the cohort table restricted to the run's patients when it scored any."""
    return (f"SELECT * FROM {table} WHERE patient_id IN (SELECT DISTINCT patient_id FROM "
            f"results_scores WHERE run_id = {_quote(run_id)}) OR NOT EXISTS (SELECT 1 FROM "
            f"results_scores WHERE run_id = {_quote(run_id)})")


# --------------------------------------------------------------------------- choosing the run


def select_run(runs: pd.DataFrame, run_id: str | None = None) -> pd.Series:
    """Return the run-log row of `run_id`, or of the latest successful analyze run if None."""
    if run_id is not None:
        if not RUN_ID_RE.fullmatch(str(run_id)) or ".." in str(run_id):
            raise InputError(f"invalid run id {run_id!r}")
        row = runs[runs["run_id"] == run_id]
        if row.empty:
            raise LakeError(f"no run {run_id!r} in the run log (see `drlake sql \"SELECT run_id, "
                            "stage, status FROM runs\"`)")
        if row.iloc[-1]["stage"] != "analyze":
            raise InputError(f"run {run_id} is a {row.iloc[-1]['stage']!r} run; a report needs "
                             "an analyze run")
        return row.iloc[-1]
    ok = runs[(runs["stage"] == "analyze") & (runs["status"] == "ok")]
    if ok.empty:
        raise LakeError("the lake has no successful analyze run: run the analysis first "
                        "(`drlake run`)")
    return ok.sort_values("started_at").iloc[-1]


def encoder_run(runs: pd.DataFrame, encoder: str | None, before=None) -> pd.Series | None:
    """Return the latest successful activations run of the encoder named `encoder`.

    Encoder names end with the first 8 hex digits of the encoder hash
    (e.g. 'cnn10x10-s0-a78e0e39'); without a match, the latest activations run before
    `before` is returned, or None.
    """
    acts = runs[(runs["stage"] == "activations") & (runs["status"] == "ok")]
    if before is not None:
        acts = acts[acts["started_at"] <= before]
    acts = acts.sort_values("started_at")
    if encoder:
        hit = acts[[isinstance(h, str) and h[:8] in encoder for h in acts["encoder_hash"]]]
        if len(hit):
            return hit.iloc[-1]
    return acts.iloc[-1] if len(acts) else None


# --------------------------------------------------------------------------- reading


@dataclass
class ReportData:
    """Everything the page shows, read from the lake for one analyze run."""

    run: pd.Series
    params: dict
    runs: pd.DataFrame
    results: dict[str, pd.DataFrame]
    queries: dict[str, str]
    clinical: pd.DataFrame
    immune: pd.DataFrame
    catalogue: pd.DataFrame
    counts: list[tuple[str, object]]
    spatial: dict[str, pd.DataFrame] = field(default_factory=dict)
    spatial_png: dict[str, bytes] = field(default_factory=dict)
    # the latest `drlake compare-encoders` run's rows (empty if none ran)
    encoder_study: pd.DataFrame = field(default_factory=pd.DataFrame)
    # the Delta version of every table the page was read from, and the snapshot's name when
    # it was rebuilt from the run's own snapshot (`drlake report --run RUN_ID`)
    table_versions: dict = field(default_factory=dict)
    snapshot: str | None = None


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables").fetchall()}


def _scalar(con, sql: str):
    try:
        return con.execute(sql).fetchone()[0]
    except duckdb.Error:
        return None


def input_counts(con: duckdb.DuckDBPyConnection, params: dict,
                 results: dict[str, pd.DataFrame]) -> list[tuple[str, object]]:
    """Return (name, count) pairs describing the inputs and outputs of the run."""
    enc = params.get("encoder")
    out: list[tuple[str, object]] = []
    for cohort, n in con.execute(
            "SELECT cohort, count(*) FROM patients GROUP BY cohort ORDER BY cohort").fetchall():
        out.append((f"ingested patients, cohort {cohort}", n))
    out.append(("clinical rows", _scalar(con, "SELECT count(*) FROM clinical")))
    out.append(("immune markers: patients x markers", "{} x {}".format(
        _scalar(con, "SELECT count(DISTINCT patient_id) FROM immune_markers"),
        _scalar(con, "SELECT count(DISTINCT marker) FROM immune_markers"))))
    if enc:
        where = f"WHERE encoder = {_quote(enc)}"
        out.append((f"feature rows of encoder {enc}",
                    _scalar(con, f"SELECT count(*) FROM features {where}")))
        out.append(("patients x sequences with features", "{} x {}".format(
            _scalar(con, f"SELECT count(DISTINCT patient_id) FROM features {where}"),
            _scalar(con, f"SELECT count(DISTINCT modality) FROM features {where}"))))
    for key, name in (("n", "patients analysed"), ("n_train_used", "training-set size")):
        if key in params:
            out.append((name, params[key]))
    for table, df in results.items():
        out.append((f"rows in {table} for this run", len(df)))
    return out


def read_spatial(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[dict, dict]:
    """Return (tables, queries) of the spatial results when the views exist and have rows.

    Rows of this run are used when there are any, else those of the latest run in the table.
    """
    have = _views(con)
    tables, queries = {}, {}
    for t in SPATIAL_TABLES:
        if t not in have:
            continue
        try:
            cols = [c[0] for c in con.execute(f"SELECT * FROM {t} LIMIT 0").description]
            sql = f"SELECT * FROM {t}"
            if "run_id" in cols:
                mine = _scalar(con, f"SELECT count(*) FROM {t} WHERE run_id = {_quote(run_id)}")
                rid = run_id if mine else _scalar(con, f"SELECT max(run_id) FROM {t}")
                if rid is not None:
                    sql = results_sql(t, rid)
            df = con.execute(sql).df()
        except duckdb.Error:
            continue
        if len(df):
            tables[t], queries[t] = df, sql
    return tables, queries


def _png_column(df: pd.DataFrame) -> str | None:
    """Return the column of a spatial-maps table holding PNG paths, if any."""
    for c in df.columns:
        vals = df[c].dropna()
        if len(vals) and all(isinstance(v, str) and v.lower().endswith(".png") for v in vals):
            return c
    return None


def read_pngs(lake: Lake, maps: pd.DataFrame, limit: int = MAX_SPATIAL_MAPS) -> dict[str, bytes]:
    """Return PNG bytes of the spatial maps (paths absolute or relative to the lake root)."""
    col = _png_column(maps)
    out: dict[str, bytes] = {}
    if col is None:
        return out
    for rel in maps[col].dropna().head(limit):
        readers = [Path(rel).read_bytes] if os.path.isabs(rel) else []
        with contextlib.suppress(DrlakeError):
            readers.append(lake.blob(rel).read_bytes)
        for read in readers:
            try:
                data = read()
            except (OSError, ValueError, DrlakeError):
                continue
            if data.startswith(b"\x89PNG"):
                out[rel] = data
                break
    return out


def read_report_data(lake: Lake, run_id: str | None = None) -> ReportData:
    """Read the run log, the run's results, the cohort tables and the spatial results.

    With `run_id`, every table is read at the versions that run recorded when it committed (its
    snapshot), so an old report is rebuilt from exactly the rows it used, whatever ran since.
    Without, the latest analyze run is reported from the lake as it is now.
    """
    from pipelines.sql import connect, resolve_snapshot

    runs = lake.runs()
    if runs.empty:
        raise LakeError(f"{lake.url}: the run log is empty; nothing to report")
    run = select_run(runs, run_id)
    rid = run["run_id"]
    params = json.loads(run["parameters"] or "{}")
    snapshot = None
    if run_id is not None and isinstance(run.get("table_versions"), str):
        snapshot = resolve_snapshot(lake, rid)
        runs = runs[runs["started_at"] <= run["ended_at"]].reset_index(drop=True)
    versions = dict(snapshot.versions) if snapshot else lake.table_versions()
    con = connect(lake, as_of=snapshot)
    try:
        queries = {t: results_sql(t, rid) for t in RESULT_TABLES}
        results = {t: con.execute(q).df() for t, q in queries.items()}
        queries["clinical"] = cohort_sql("clinical", rid)
        queries["immune_markers"] = cohort_sql("immune_markers", rid)
        clinical = con.execute(queries["clinical"]).df()
        immune = con.execute(queries["immune_markers"]).df()
        catalogue = con.execute(
            "SELECT name, family, paper_name, paper45 FROM feature_catalogue").df()
        counts = input_counts(con, params, results)
        spatial, sq = read_spatial(con, rid)
        queries.update(sq)
        queries["results_encoder_study"] = (
            "SELECT * FROM results_encoder_study WHERE run_id = "
            "(SELECT max(run_id) FROM results_encoder_study) ORDER BY patient_set, encoder")
        study = con.execute(queries["results_encoder_study"]).df()
    finally:
        con.close()
    maps = spatial.get("results_spatial_maps")
    pngs = read_pngs(lake, maps) if maps is not None else {}
    return ReportData(run, params, runs, results, queries, clinical, immune, catalogue, counts,
                      spatial, pngs, study, versions,
                      snapshot.label if snapshot else None)


# --------------------------------------------------------------------------- sections


def _labels(cat: pd.DataFrame) -> dict:
    """Return keyword arguments of the heatmaps from the feature catalogue."""
    fam_order = {"firstorder": 0, "glcm": 1, "glszm": 2, "ngtdm": 3, "shape": 4}
    c = cat.assign(_f=cat["family"].map(fam_order).fillna(9)).sort_values("_f", kind="stable")
    return {"feature_labels": {n: (p if isinstance(p, str) and p else n)
                               for n, p in zip(c["name"], c["paper_name"], strict=True)},
            "catalogue_order": list(c["name"]),
            "families": dict(zip(c["name"], c["family"], strict=True))}


def _empty(table: str, rid: str) -> str:
    return P.note(f"No rows in {table} for run {rid}: this part of the analysis was not run "
                  "or produced nothing.")


def _n(df: pd.DataFrame) -> str:
    """Return the largest number of patients of an association table (n, or n_low + n_high)."""
    n = df["n"] if "n" in df else df.get("n_low", np.nan) + df.get("n_high", np.nan)
    return str(int(n.max())) if n.notna().any() else "?"


def section_cohort(d: ReportData) -> str:
    """Table 1 from the clinical and immune-marker tables."""
    if d.clinical.empty:
        return P.note("The clinical table is empty.")
    scope = ("the patients analysed in this run" if len(d.results["results_scores"])
             else "all patients in the clinical table")
    summary = P.cohort_summary(d.clinical, d.immune)
    immune = summary["group"].str.startswith("Immune")
    tables = [P.grouped_table_html(summary[~immune], "group", ["item", "value"])]
    if immune.any():
        markers = summary[immune].rename(columns={"item": "marker"})
        tables.append(P.grouped_table_html(markers, "group", ["marker", "value"]))
    return (f"<p>Demographics of {scope} (n = {len(d.clinical)}), as in the paper's "
            "Table 1. Months are days / 30.4375. An immune cell type is <em>present</em> in a "
            "patient when its estimated fraction is greater than 0.</p>"
            f'<div class="side">{"".join(tables)}</div>')


def section_heatmap(d: ReportData, table: str, num: int, draw: Callable, what: str) -> str:
    """Figure 2 or 3: a faceted heatmap of one association table."""
    df = d.results[table]
    if df.empty:
        return _empty(table, d.run["run_id"])
    labels = _labels(d.catalogue)
    fig = draw(df, **labels)
    nsig = int(df["significant"].sum())
    alpha = d.params.get("alpha", 0.05)
    caption = (f"<b>Figure {num}.</b> {what} Training set, n = {_n(df)} patients; "
               f"{df['feature'].nunique()} DRFs per sequence (rows, grouped by family: "
               "histogram, GLCM, GLSZM, NGTDM, shape) x "
               f"{df['marker'].nunique()} immune markers (columns), one panel per sequence. "
               f"Ringed cells: Holm–Bonferroni-corrected p &lt; {alpha} over the whole heatmap "
               f"({nsig} of {len(df)} tests). Grey: not computable.")
    return P.figure_html(fig, f"fig{num}", caption)


def section_survival(d: ReportData) -> str:
    """Table 2: significant survival features, or the smallest p-values when none is."""
    df = d.results["results_survival"]
    if df.empty:
        return _empty("results_survival", d.run["run_id"])
    labels = _labels(d.catalogue)["feature_labels"]
    alpha = d.params.get("alpha", 0.05)
    intro = (f"<p>Log-rank test of the patients above vs at or below each feature's median "
             f"(gender: male vs female), training set; {len(df)} features tested (DRFs, age, "
             "gender, immune markers). Median survival is the Kaplan–Meier median of each group "
             "in <b>months</b> (days / 30.4375; empty when not reached). HR: Cox hazard ratio "
             f"of the high vs the low group with its 95% CI. Significant: Holm-corrected p &lt; "
             f"{alpha}.</p>")
    sig = P.survival_display(df, labels)
    if len(sig):
        return (intro + f"<p><b>{len(sig)} significant feature(s).</b></p>"
                + P.table_html(sig, P.SURVIVAL_FORMATS))
    top = P.survival_display(df, labels, significant_only=False, limit=10)
    return (intro + P.note(f"No feature is significantly associated with survival after Holm "
                           f"correction (none of {len(df)} has corrected p < {alpha}).")
            + "<h3>The 10 smallest p-values, for reference (not significant)</h3>"
            + P.table_html(top, P.SURVIVAL_FORMATS))


def _cutoff(params: dict) -> float:
    c = params.get("score_cutoff", 0.5)
    return float(c) if isinstance(c, (int, float)) else 0.5


def _auc_notes(cls: pd.DataFrame) -> list[str]:
    """Return warning paragraphs (HTML) on AUCs that must not be read as findings.

    A note when the cohort is too small for a stable AUC (n < ``SMALL_N``), and one naming the
    pooled LOOCV AUCs whose 95% CI lies below chance.
    """
    from pipelines.stats.classify import SMALL_N

    out = []
    n = int(cls["n"].max()) if cls["n"].notna().any() else 0
    if 0 < n < SMALL_N:
        out.append(P.note(
            f"n = {n} patients is too small for a stable AUC: 95% intervals are wide, and "
            "pooled leave-one-out AUCs are biased below 0.5 when there is no signal (leaving a "
            "patient out shifts the training class balance against it). "
            + ("Read the repeated stratified k-fold estimate first, and none"
               if (cls["evaluation"] == "repeated_cv").any() else "Read none")
            + " of these AUCs as a finding unless its interval excludes 0.5.", "warn"))
    loo = cls[(cls["evaluation"] == "loocv") & (cls["auc_high95"] < 0.5)]
    if len(loo):
        sets = ", ".join(f"{r.feature_set} ({r.auc:.2f})" for r in loo.itertuples())
        out.append(P.note(
            f"Pooled LOOCV AUCs below chance with their whole 95% CI: {sets}. This is the known "
            "bias of pooled leave-one-out scores without signal: it means no signal, not an "
            "inverted one.", "warn"))
    return out


def section_classifier(d: ReportData) -> str:
    """Figure 4a-d and the classifier table."""
    cls, sc, imp = (d.results[t] for t in ("results_classifier", "results_scores",
                                            "results_importance"))
    if cls.empty:
        return _empty("results_classifier", d.run["run_id"])
    cut = _cutoff(d.params)
    has_rcv = (cls["evaluation"] == "repeated_cv").any()
    has_lpo = (cls["evaluation"] == "leave_pair_out").any()
    parts = ["<p>Random forests classify patients into shorter vs longer than median survival "
             "(censored patients imputed as in the paper) from DRFs (R), clinical features "
             "(C: age, gender), immune markers (I) and their unions, evaluated "
             + ("by repeated stratified k-fold cross-validation (the mean AUC of the held-out "
                "folds; the recommended estimate, shown first), " if has_rcv else "")
             + ("by leave-pair-out AUC (each short/long survivor pair held out together from a "
                "forest fitted on the others; unbiased at small n, no per-patient scores), "
                if has_lpo else "")
             + "by leave-one-out cross-validation (pooled held-out scores, the paper's "
             "estimate) and on the held-out part of a single train/test split.</p>"]
    parts.extend(_auc_notes(cls))
    parts.append(P.figure_html(F.auc_bars(cls), "fig4a",
                               "<b>Figure 4a.</b> AUC of each feature set with its 95% "
                               "confidence interval (error bars), per evaluation; dashed line: "
                               "chance."))
    loo = sc[sc["evaluation"] == "loocv"] if len(sc) else sc
    if len(loo):
        parts.append(P.figure_html(
            F.score_scatter(sc, cls, cut), "fig4b",
            "<b>Figure 4b.</b> Held-out (LOOCV) predicted probability of long survival vs "
            "survival in months, one panel per feature set; hollow points are censored "
            "patients at their imputed survival. Titles: Spearman ρ of score vs survival "
            "and its p, Holm-corrected over the feature sets. Dotted line: decision threshold "
            f"{cut}."))
        parts.append(P.figure_html(
            F.km_predicted_groups(sc, cls, cut), "fig4c",
            "<b>Figure 4c.</b> Kaplan–Meier survival of the patients predicted long "
            f"(LOOCV score &gt; {cut}) and short, per feature set, with the numbers at risk "
            "below each axis; ticks mark censored patients. Titles: log-rank p and hazard "
            "ratio of predicted short vs long with its 95% CI."))
    else:
        parts.append(_empty("results_scores", d.run["run_id"]))
    if len(imp):
        sets = imp.groupby("feature_set")["feature"].nunique()
        chosen = sets.idxmax()
        ev = "loocv" if (imp["evaluation"] == "loocv").any() else imp["evaluation"].iloc[0]
        sub = imp[(imp["feature_set"] == chosen) & (imp["evaluation"] == ev)]
        top = min(30, len(sub))
        parts.append(P.figure_html(
            F.importance_bars(sub, _labels(d.catalogue)["feature_labels"], top=top), "fig4d",
            f"<b>Figure 4d.</b> The {top} most important of the {len(sub)} features of the "
            f"{chosen} classifier ({F.EVAL_LABELS.get(ev, ev)}), coloured by kind: impurity "
            "importance and, where computed, permutation importance (drop in AUC)."))
    else:
        parts.append(_empty("results_importance", d.run["run_id"]))
    parts.append("<h3>All classifier results</h3>"
                 + P.table_html(P.classifier_display(cls), P.CLASSIFIER_FORMATS))
    return "".join(parts)


def marker_estimate(params: dict) -> str:
    """Return the Fig. 5 estimate an analyze run used (runs before the option used LOOCV)."""
    return params.get("marker_cv", "loocv")


def section_markers(d: ReportData) -> str:
    """Figure 5a/b heatmaps and the top feature per marker (5c) as a table."""
    df = d.results["results_marker_auc"]
    if df.empty:
        return _empty("results_marker_auc", d.run["run_id"])
    labels = _labels(d.catalogue)["feature_labels"]
    have = set(df["evaluation"])
    ev = next((e for e in ("loocv", "oob", "split") if e in have), "split")
    from pipelines.stats.classify import SMALL_N

    n = int(df["n"].max()) if df["n"].notna().any() else 0
    small = (P.note(f"n = {n} patients is too small for stable marker AUCs: pooled LOOCV and "
                    "out-of-bag AUCs are biased below 0.5 when there is no signal; read a cell "
                    "as a finding only if its 95% CI excludes 0.5.", "warn")
             if 0 < n < SMALL_N else "")
    how = {"oob": "out-of-bag predictions of one forest per cell (the default; "
                  "--marker-cv loocv runs the paper's pooled leave-one-out)",
           "loocv": "the paper's pooled leave-one-out (one forest per patient and cell)",
           "none": "the train/test split only (--marker-cv none)"}
    est = marker_estimate(d.params)
    which = P.note(f"Cross-validated estimate of this run: {how.get(est, est)}.")
    return small + which + (P.figure_html(
        F.marker_auc_heatmaps(df), "fig5",
        "<b>Figure 5.</b> AUC of random forests predicting below vs above-median values of "
        "each immune marker (rows) from one sequence's DRFs (columns), per evaluation "
        "(LOOCV, out-of-bag, train/test split). Colours are centred on chance (0.5) and fixed "
        "to [0, 1]. Every held-out prediction behind these AUCs is in "
        "<code>results_marker_scores</code>.")
        + f"<h3>Most important DRF per marker and sequence ({F.EVAL_LABELS[ev]})</h3>"
        + P.table_html(P.top_feature_table(df, labels, ev)))


def section_spatial(d: ReportData) -> str:
    """Spatial results: the tables as stored and the maps' PNGs."""
    parts = []
    for t, df in d.spatial.items():
        shown = df.drop(columns=[c for c in [_png_column(df)] if c])
        more = f" (first 200 of {len(df)} rows)" if len(df) > 200 else ""
        parts.append(f"<h3>{P.esc(t)}{more}</h3>"
                     + f'<div class="scroll">{P.table_html(shown.head(200))}</div>')
    maps = d.spatial.get("results_spatial_maps")
    if d.spatial_png and maps is not None:
        col = _png_column(maps)
        for k, (rel, png) in enumerate(d.spatial_png.items(), start=1):
            row = maps[maps[col] == rel].iloc[0]
            desc = ", ".join(f"{c} = {_short(row[c])}" for c in maps.columns
                             if c not in (col, "run_id"))
            parts.append(P.image_html(png, f"spatial-map-{k}",
                                      f"<b>Map {k}.</b> {P.esc(desc or rel)}"))
    return "".join(parts)


def section_encoders(d: ReportData) -> str:
    """The latest encoder study: power, false positives, survival AUC and stability per
    encoder, on all patients and on those no trained encoder saw."""
    df = d.encoder_study
    rid = df["run_id"].iloc[0]
    notes = [P.note(
        f"From `drlake compare-encoders` run {rid} (not this analyze run). Rows of trained "
        "encoders on patient set 'all' are in-sample: the encoder saw those patients' volumes "
        "while training (column n_seen); the 'unseen' rows use only patients no compared "
        "trained encoder saw.")]
    shown = df.drop(columns=["run_id"])
    return "".join(notes) + f'<div class="scroll">{P.table_html(shown)}</div>'


def _short(v) -> str:
    """Return a value as short text (floats to 3 significant digits)."""
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def section_provenance(d: ReportData) -> str:
    """Run, parameters, encoder, input counts, stage timings and the SQL of each table."""
    run = d.run
    secs = P._duration(run["started_at"], run["ended_at"])
    parts = ["<h3>Analysis run</h3>", P.key_values([
        ("run id", run["run_id"]), ("status", run["status"]),
        ("started", P._fmt_time(run["started_at"])), ("ended", P._fmt_time(run["ended_at"])),
        ("wall time (s)", f"{secs:.1f}" if np.isfinite(secs) else ""),
        ("package version", run["package_version"]), ("parameters hash", run["params_hash"]),
        ("input fingerprints", run["input_fingerprints"]), ("message", run["message"]),
    ]), "<h3>Parameters</h3>", P.json_block(run["parameters"])]
    enc_name = d.params.get("encoder")
    if not enc_name and len(d.results["results_spearman"]):
        enc_name = d.results["results_spearman"]["encoder"].iloc[0]
    act = encoder_run(d.runs, enc_name, before=run["started_at"])
    parts.append("<h3>Encoder</h3>")
    if act is None:
        parts.append(P.key_values([("encoder", enc_name or "unknown"),
                                   ("activations run", "none in the run log")]))
    else:
        parts.append(P.key_values([("encoder", enc_name), ("encoder hash (sha256 of "
                                    "architecture + weights)", act["encoder_hash"]),
                                   ("activations run", act["run_id"]),
                                   ("package version", act["package_version"])]))
        parts.append(P.json_block(act["parameters"]))
    how = (f"rebuilt from the snapshot of run {d.snapshot}" if d.snapshot else
           "read from the lake as it was when this page was built")
    parts += ["<h3>Lake snapshot</h3>",
              f"<p>Tables {P.esc(how)}; <code>drlake report --run {P.esc(run['run_id'])}</code> "
              f"rebuilds this page and <code>drlake sql --as-of {P.esc(run['run_id'])}</code> "
              "queries the same rows.</p>",
              P.key_values([(t, f"version {v}") for t, v in sorted(d.table_versions.items())]),
              "<h3>Inputs and outputs</h3>", P.key_values(d.counts),
              "<h3>Time per stage</h3>",
              P.table_html(P.stage_timings(d.runs), {"total time (s)": P.fmt_num(1),
                                                     "last run (s)": P.fmt_num(1)}),
              f"<details><summary>All {len(d.runs)} runs of the run log</summary>"
              + P.table_html(P.runs_display(d.runs), {"time (s)": P.fmt_num(1)})
              + "</details>",
              "<h3>SQL that reproduces each table</h3>",
              "<p>Run with <code>drlake sql \"...\"</code> or on "
              "<code>pipelines.sql.connect(lake)</code> from Python.</p>"]
    for t, q in d.queries.items():
        parts.append(f"<p><b>{P.esc(t)}</b></p>" + P.pre(q))
    return "".join(parts)


def build_sections(d: ReportData) -> list[P.Section]:
    """Return the page's sections in order (spatial only when it has rows)."""
    S = P.SECTIONS
    out = [
        P.Section("cohort", S["cohort"], section_cohort(d)),
        P.Section("spearman", S["spearman"], section_heatmap(
            d, "results_spearman", 2, F.spearman_heatmap,
            "Spearman correlation (ρ) of each DRF with each immune marker; colours fixed to "
            "[−1, 1], red positive, blue negative.")),
        P.Section("wilcoxon", S["wilcoxon"], section_heatmap(
            d, "results_wilcoxon", 3, F.wilcoxon_heatmap,
            "−log10 p of the Wilcoxon rank-sum test comparing each DRF between patients "
            "below and above the median of each immune marker.")),
        P.Section("survival", S["survival"], section_survival(d)),
        P.Section("classifier", S["classifier"], section_classifier(d)),
        P.Section("markers", S["markers"], section_markers(d)),
    ]
    if d.spatial:
        out.append(P.Section("spatial", S["spatial"], section_spatial(d)))
    if len(d.encoder_study):
        out.append(P.Section("encoders", S["encoders"], section_encoders(d)))
    out.append(P.Section("provenance", S["provenance"], section_provenance(d)))
    return out


# --------------------------------------------------------------------------- writing


def report_path(lake: Lake, run_id: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Return where the page goes: out_dir/index.html, else <lake>/reports/<run_id>/index.html."""
    if out_dir is not None:
        return Path(out_dir) / "index.html"
    return lake.report_dir(run_id) / "index.html"


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside `path` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def build_report(lake: Lake | str, run_id: str | None = None,
                 out_dir: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of an analyze run and return its path.

    run_id: the analyze run to report (default: the latest successful one). The page goes to
    ``<lake>/reports/<run_id>/index.html`` (local lakes) or ``<out_dir>/index.html``.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    if out_dir is None:
        report_path(lake, "check", None)  # a remote lake needs out_dir: fail before any work
    data = read_report_data(lake, run_id)
    rid = data.run["run_id"]
    path = report_path(lake, rid, out_dir)
    sections = build_sections(data)
    why = data.run["message"] or "no message"
    status = "" if data.run["status"] == "ok" else P.note(
        f"This analyze run's status is {data.run['status']!r} ({why}); the sections show only "
        "the results it wrote.", "warn")
    subtitle = (f"Analysis run <code>{P.esc(rid)}</code>, encoder "
                f"<code>{P.esc(data.params.get('encoder', '?'))}</code>, mask region "
                f"<code>{P.esc(data.params.get('region', 'roi'))}</code>, protocol "
                f"<code>{P.esc(data.params.get('protocol', '?'))}</code>, marker heatmap "
                f"estimate <code>{P.esc(marker_estimate(data.params))}</code>, drlake "
                f"{P.esc(data.run['package_version'])}; reproduces seed 000 (Table 1, "
                f"Figures 2–5, Table 2).")
    html = P.render_page(f"drlake report: {rid}", subtitle, sections, banner=status)
    write_text_atomic(path, html)
    return path
