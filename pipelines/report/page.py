"""HTML assembly of the analysis report: one self-contained page.

Everything the page needs is inside it: figures are base64 PNG ``<img>`` elements, styles are
one inline ``<style>`` block with system fonts, and there is no script, no external stylesheet,
font or link, so the file opens from the file system with no server and no internet.

This module also shapes the report's tables (cohort summary, significant survival features,
top feature per marker, run timings) from result DataFrames: pure functions, frames in, frames
or HTML text out.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.report.figures import (
    MONTH_DAYS,
    drf_label,
    feature_display,
    figure_png,
    format_p,
    marker_label,
    modality_label,
    order_feature_sets,
    order_modalities,
)

#: Section ids and headings, in page order (the spatial section appears only with data).
SECTIONS = {
    "cohort": "Cohort summary (Table 1)",
    "spearman": "DRF–immune marker correlations (Figure 2)",
    "wilcoxon": "DRFs between low and high immune markers (Figure 3)",
    "survival": "Features associated with survival (Table 2)",
    "classifier": "Predicting short vs long survival (Figure 4)",
    "markers": "Predicting immune markers from DRFs (Figure 5)",
    "spatial": "Spatial results",
    "encoders": "Which encoder finds the biology (encoder study)",
    "provenance": "Provenance",
}

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial,
       sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; line-height: 1.45; }
main { max-width: 1500px; margin: 0 auto; padding: 16px 28px 60px; background: #fff; }
h1 { font-size: 1.6em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.3em; margin-top: 2.2em; padding-top: 0.6em; border-top: 2px solid #e3e3e3; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
p.sub { color: #555; margin-top: 0; }
nav ol { columns: 2; font-size: 0.95em; }
nav a, a { color: #1f5fa8; }
figure { margin: 1.2em 0; overflow-x: auto; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 0.92em; color: #333; max-width: 1100px; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0 1em; }
th, td { border: 1px solid #d6d6d6; padding: 3px 8px; vertical-align: top; }
th { background: #f0f2f5; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.nowrap { white-space: nowrap; }
.side { display: flex; flex-wrap: wrap; gap: 0 40px; align-items: flex-start; }
tr.group td { background: #f7f7f7; font-weight: 600; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; }
.warn { background: #fdecea; border-left: 4px solid #d93025; padding: 6px 10px; }
pre { background: #f5f5f7; padding: 8px 10px; overflow-x: auto; font-size: 0.85em; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
details { margin: 0.6em 0; }
.scroll { max-height: 520px; overflow: auto; display: inline-block; }
"""


@dataclass
class Section:
    """One section of the page: an anchor id, a heading and its body HTML."""

    id: str
    title: str
    body: str


# --------------------------------------------------------------------------- HTML helpers


def esc(x) -> str:
    """Return x as HTML-escaped text ('' for None/NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return html.escape(str(x), quote=True)


def img_tag(png: bytes, alt: str, width_px: int | None = None) -> str:
    """Return an ``<img>`` with the PNG inline as a base64 data URL."""
    data = base64.b64encode(png).decode("ascii")
    width = f' width="{int(width_px)}"' if width_px else ""
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}"{width}>'


def figure_html(fig, fig_id: str, caption: str, dpi: int = 150) -> str:
    """Return a ``<figure>`` with the matplotlib figure as PNG at its physical size.

    The PNG is rendered at `dpi` and shown at 96 CSS pixels per inch, so 8.5 pt text is
    8.5 pt on screen at 100% zoom and sharp on high-density screens.
    """
    width_in = float(fig.get_size_inches()[0])
    png = figure_png(fig, dpi=dpi)
    alt = caption.split(".")[0]
    return (f'<figure id="{esc(fig_id)}">{img_tag(png, alt, round(width_in * 96))}'
            f"<figcaption>{caption}</figcaption></figure>")


def image_html(png: bytes, fig_id: str, caption: str) -> str:
    """Return a ``<figure>`` around an existing PNG (e.g. a stored spatial map)."""
    return (f'<figure id="{esc(fig_id)}">{img_tag(png, caption.split(".")[0])}'
            f"<figcaption>{caption}</figcaption></figure>")


def _cell(v, fmt=None) -> str:
    if isinstance(v, str) and len(v) <= 24:
        return f'<td class="nowrap">{esc(v)}</td>'
    if fmt is not None and v is not None and not (isinstance(v, float) and math.isnan(v)):
        return f'<td class="num">{esc(fmt(v))}</td>'
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return f'<td class="num">{esc(v)}</td>'
    return f"<td>{esc(v)}</td>"


def table_html(df: pd.DataFrame, formats: Mapping[str, Callable] | None = None,
               caption: str | None = None) -> str:
    """Return a plain HTML table of a DataFrame (escaped; numbers right-aligned).

    `formats` maps column names to functions value -> text.
    """
    formats = formats or {}
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = "".join(_cell(v, formats.get(c)) for c, v in zip(df.columns, rec, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def grouped_table_html(df: pd.DataFrame, group: str, columns: Sequence[str]) -> str:
    """Return an HTML table with a full-width header row whenever `group` changes."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    rows, last = [], None
    for rec in df.to_dict("records"):
        if rec[group] != last:
            rows.append(f'<tr class="group"><td colspan="{len(columns)}">{esc(rec[group])}'
                        "</td></tr>")
            last = rec[group]
        rows.append("<tr>" + "".join(_cell(rec[c]) for c in columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def pre(text: str) -> str:
    """Return text in a ``<pre><code>`` block."""
    return f"<pre><code>{esc(text)}</code></pre>"


def note(text: str, kind: str = "note") -> str:
    """Return a highlighted paragraph (kind 'note' or 'warn'); text is escaped."""
    return f'<p class="{kind}">{esc(text)}</p>'


def fmt_num(digits: int = 2):
    """Return a formatter of floats with `digits` decimals ('' for missing)."""
    return lambda v: "" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


# --------------------------------------------------------------------------- Table 1


def cohort_summary(clinical: pd.DataFrame, immune: pd.DataFrame) -> pd.DataFrame:
    """Return the cohort summary of the paper's Table 1 as rows (group, item, value).

    clinical: the ``clinical`` table (age, gender, grade, survival_days, event); immune: the
    long ``immune_markers`` table. A marker is present in a patient when its fraction is > 0.
    Median survival is the Kaplan-Meier median in months (days / 30.4375).
    """
    from lifelines import KaplanMeierFitter

    rows = [("Patients", "n", str(len(clinical)))]
    for col, group, names in (("gender", "Gender", {"M": "Male", "F": "Female"}),
                              ("grade", "Grade", {"LGG": "LGG", "GBM": "GBM"})):
        counts = clinical[col].value_counts()
        for key, name in names.items():
            rows.append((group, name, str(int(counts.get(key, 0)))))
        if clinical[col].isna().any():
            rows.append((group, "missing", str(int(clinical[col].isna().sum()))))
    age = clinical["age"].astype(float).dropna()
    if len(age):
        rows.append(("Age (years)", "median (min–max)",
                     f"{age.median():.1f} ({age.min():.1f}–{age.max():.1f})"))
        rows.append(("Age (years)", "mean", f"{age.mean():.2f}"))
    surv = clinical.dropna(subset=["survival_days", "event"])
    if len(surv):
        km = KaplanMeierFitter().fit(surv["survival_days"].astype(float) / MONTH_DAYS,
                                     surv["event"].astype(int))
        med = float(km.median_survival_time_)
        rows.append(("Survival", "median (months, Kaplan–Meier)",
                     f"{med:.2f}" if np.isfinite(med) else "not reached"))
        rows.append(("Survival", "median follow-up of all patients (months)",
                     f"{surv['survival_days'].median() / MONTH_DAYS:.2f}"))
        dead = int((surv["event"] == 1).sum())
        rows.append(("Survival", "dead (censored)", f"{dead} ({len(surv) - dead})"))
    if len(immune):
        present = (immune.assign(present=immune["value"].astype(float) > 0)
                   .groupby("marker")["present"].agg(["sum", "count"]))
        order = sorted(present.index, key=marker_label)
        for m in order:
            p, n = int(present.loc[m, "sum"]), int(present.loc[m, "count"])
            rows.append(("Immune cells (presence/absence)", marker_label(m), f"{p}/{n - p}"))
    return pd.DataFrame(rows, columns=["group", "item", "value"])


# --------------------------------------------------------------------------- Table 2


def survival_display(survival: pd.DataFrame, labels: Mapping[str, str] | None = None,
                     significant_only: bool = True, limit: int | None = None) -> pd.DataFrame:
    """Return Table 2: features sorted by p with medians in months, HR and CI, Holm p.

    'high' is the group strictly above the feature's median (for gender: male), 'low' the rest.
    """
    d = survival.copy()
    if significant_only:
        d = d[d["significant"].fillna(False).astype(bool)]
    d = d.sort_values(["p", "feature"], na_position="last")
    if limit:
        d = d.head(limit)
    names = [feature_display(f"{m}__{f}" if isinstance(m, str) and m else f, labels)
             for m, f in zip(d["modality"], d["feature"], strict=True)]
    return pd.DataFrame({
        "feature": names,
        "type": d["kind"].to_numpy(),
        "n high / low": [f"{int(a)} / {int(b)}" for a, b in zip(d["n_high"], d["n_low"],
                                                                 strict=True)],
        "median survival, high (months)": d["median_high_days"].to_numpy(float) / MONTH_DAYS,
        "median survival, low (months)": d["median_low_days"].to_numpy(float) / MONTH_DAYS,
        "p (log-rank)": d["p"].to_numpy(float),
        "HR (high vs low)": d["hr"].to_numpy(float),
        "95% CI low": d["hr_low95"].to_numpy(float),
        "95% CI high": d["hr_high95"].to_numpy(float),
        "Holm-corrected p": d["p_holm"].to_numpy(float),
    })


SURVIVAL_FORMATS = {
    "median survival, high (months)": fmt_num(1),
    "median survival, low (months)": fmt_num(1),
    "p (log-rank)": format_p,
    "HR (high vs low)": fmt_num(2),
    "95% CI low": fmt_num(2),
    "95% CI high": fmt_num(2),
    "Holm-corrected p": format_p,
}


# --------------------------------------------------------------------------- Figure 4/5 tables


EVALUATION_ORDER = ("repeated_cv", "leave_pair_out", "loocv", "split", "oob")


def classifier_display(classifier: pd.DataFrame) -> pd.DataFrame:
    """Return the survival-classifier results per feature set and evaluation, for display.

    Rows: the recommended estimate (repeated stratified k-fold CV) first, then pooled LOOCV (the
    paper's) and the split; a "reading" column says when an AUC must not be read as a finding
    (:func:`pipelines.stats.classify.auc_caveat`).
    """
    from pipelines.stats.classify import auc_caveat

    d = classifier.copy()
    d["_o"] = d["feature_set"].map({s: i for i, s in
                                    enumerate(order_feature_sets(d["feature_set"]))})
    d["_e"] = d["evaluation"].map({e: i for i, e in enumerate(EVALUATION_ORDER)}).fillna(99)
    d = d.sort_values(["_e", "_o"])
    holm = (d["score_rho_p_holm"].to_numpy(float) if "score_rho_p_holm" in d
            else np.full(len(d), np.nan))

    def ci(a, lo, hi, digits=3):
        return "" if not np.isfinite(a) else f"{a:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"

    return pd.DataFrame({
        "feature set": d["feature_set"].to_numpy(),
        "evaluation": d["evaluation"].to_numpy(),
        "n": d["n"].to_numpy(),
        "features": d["n_features"].to_numpy(),
        "AUC (95% CI)": [ci(*v) for v in d[["auc", "auc_low95", "auc_high95"]]
                         .to_numpy(float)],
        "Spearman ρ score vs survival": d["score_rho"].to_numpy(float),
        "ρ p": d["score_rho_p"].to_numpy(float),
        "ρ p (Holm)": holm,
        "log-rank p (predicted groups)": d["logrank_p"].to_numpy(float),
        "HR short vs long (95% CI)": [ci(*v, digits=2) for v in
                                      d[["hr", "hr_low95", "hr_high95"]].to_numpy(float)],
        "protocol": d["protocol"].to_numpy(),
        "reading": [auc_caveat(r.evaluation, int(r.n), float(r.auc), float(r.auc_low95),
                               float(r.auc_high95)) for r in d.itertuples()],
    })


CLASSIFIER_FORMATS = {"Spearman ρ score vs survival": fmt_num(2), "ρ p": format_p,
                      "ρ p (Holm)": format_p, "log-rank p (predicted groups)": format_p}


def top_feature_table(marker_auc: pd.DataFrame, labels: Mapping[str, str] | None = None,
                      evaluation: str = "loocv") -> pd.DataFrame:
    """Return Fig. 5c as a table: per marker (rows) and sequence (columns) the most important
    DRF of the marker classifier and its AUC."""
    d = marker_auc[marker_auc["evaluation"] == evaluation]
    mods = order_modalities(d["modality"])
    markers = sorted(d["marker"].unique(), key=marker_label)
    cells = {(r.marker, r.modality): r for r in d.itertuples(index=False)}
    rows = []
    for m in markers:
        row = {"marker": marker_label(m)}
        for mod in mods:
            r = cells.get((m, mod))
            if r is None or not isinstance(r.top_feature, str):
                row[modality_label(mod)] = ""
            else:
                auc = f" (AUC {r.auc:.2f})" if r.auc is not None and np.isfinite(r.auc) else ""
                row[modality_label(mod)] = f"{drf_label(r.top_feature, labels)}{auc}"
        rows.append(row)
    return pd.DataFrame(rows, columns=["marker", *[modality_label(m) for m in mods]])


# --------------------------------------------------------------------------- provenance tables


def _duration(start, end) -> float:
    if start is None or end is None or pd.isna(start) or pd.isna(end):
        return float("nan")
    return (pd.Timestamp(end) - pd.Timestamp(start)).total_seconds()


def _fmt_time(t) -> str:
    if t is None or pd.isna(t):
        return ""
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def stage_timings(runs: pd.DataFrame) -> pd.DataFrame:
    """Return per stage: number of runs, of successful runs, total and last wall time (s)."""
    d = runs.assign(seconds=[_duration(a, b) for a, b in zip(runs["started_at"],
                                                             runs["ended_at"], strict=True)])
    first = d.groupby("stage", sort=False)["started_at"].min().sort_values()
    out = []
    for stage in first.index:
        s = d[d["stage"] == stage].sort_values("started_at")
        out.append({"stage": stage, "runs": len(s), "ok": int((s["status"] == "ok").sum()),
                    "total time (s)": float(np.nansum(s["seconds"])),
                    "last run (s)": float(s["seconds"].iloc[-1]),
                    "last run id": s["run_id"].iloc[-1]})
    return pd.DataFrame(out, columns=["stage", "runs", "ok", "total time (s)", "last run (s)",
                                      "last run id"])


def runs_display(runs: pd.DataFrame) -> pd.DataFrame:
    """Return every run of the log (oldest first) with start, end and duration in seconds."""
    d = runs.sort_values("started_at")
    return pd.DataFrame({
        "run id": d["run_id"].to_numpy(),
        "stage": d["stage"].to_numpy(),
        "status": d["status"].to_numpy(),
        "started": [_fmt_time(t) for t in d["started_at"]],
        "ended": [_fmt_time(t) for t in d["ended_at"]],
        "time (s)": [_duration(a, b) for a, b in zip(d["started_at"], d["ended_at"],
                                                     strict=True)],
        "message": d["message"].to_numpy(),
    })


def json_block(text_or_obj) -> str:
    """Return JSON (a string or an object) pretty-printed in a ``<pre>`` block."""
    obj = text_or_obj
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except ValueError:
            return pre(obj)
    return pre(json.dumps(obj, indent=2, sort_keys=True, default=str))


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    """Return a two-column HTML table of (name, value) pairs."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


# --------------------------------------------------------------------------- the page


def render_page(title: str, subtitle: str, sections: Sequence[Section], banner: str = "") -> str:
    """Return the whole HTML document: head with inline CSS, a table of contents, sections.

    subtitle and banner are HTML (escape their variable parts); banner goes under the subtitle.
    """
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>'
                   for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><p class=\"sub\">{subtitle}</p>{banner}"
        f"<nav><ol>{toc}</ol></nav>{body}</main></body></html>\n"
    )
