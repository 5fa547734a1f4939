"""Figures of the analysis report (seed 000, Figures 2-5): pure functions, DataFrames in,
matplotlib Figures out.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``, no pyplot state)
and rendered with the Agg canvas by :func:`figure_png`. Layouts are computed in inches from the
number and length of the labels, so that 180 features or 22 markers never overlap: every
heatmap is faceted by sequence (45 features per panel), cells have a fixed size and margins
grow with the longest label. Fonts are 8-9 pt, which the page shows at their physical size
(the page displays a figure at 96 CSS pixels per inch).

Input frames have the columns of the ``results_*`` tables (``schemas/results_*.json``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.textpath import TextToPath

#: Days per month used for every "months" in the report (365.25 / 12).
MONTH_DAYS = 30.4375
#: Display order of the paper's feature sets (others follow alphabetically).
FEATURE_SET_ORDER = ("R", "C", "I", "R+C", "R+I", "C+I", "R+C+I")
#: Display names of the sequences (the paper's names); unknown ones are shown as stored.
MODALITY_LABELS = {"T1": "T1-WI", "T1CE": "T1-CE", "T2": "T2-WI", "FLAIR": "FLAIR"}
MODALITY_ORDER = ("T1", "T1CE", "T2", "FLAIR")
CLINICAL_FEATURES = {"age": "Age", "gender": "Gender", "grade": "Grade"}
KIND_COLOURS = {"DRF": "#3b6fb6", "clinical": "#e08a1e", "immune": "#3a9a4a"}
EVAL_COLOURS = {"repeated_cv": "#3a8a4f", "leave_pair_out": "#8c6d1f", "loocv": "#2f5d9c",
                "split": "#e0802a", "oob": "#7b5ea7"}
EVAL_LABELS = {"repeated_cv": "repeated stratified k-fold CV", "leave_pair_out": "leave-pair-out",
               "loocv": "LOOCV (pooled)", "split": "train/test split", "oob": "out-of-bag"}
SIG_NOTE = "significant after Holm correction"
_UPPER = {"cd4", "cd8", "nk", "m0", "m1", "m2", "cd3", "dc"}
FONT = 8.5
_TEXT = TextToPath()


# --------------------------------------------------------------------------- labels


def marker_label(marker: str) -> str:
    """Return the display name of a snake-case marker: 't_cells_cd8' -> 'T Cells CD8'."""
    words = str(marker).split("_")
    return " ".join(w.upper() if w in _UPPER else w.capitalize() for w in words)


def modality_label(modality: str | None) -> str:
    """Return the paper's name of a sequence ('T1CE' -> 'T1-CE'); unknown names unchanged."""
    if modality is None or (isinstance(modality, float) and math.isnan(modality)):
        return ""
    return MODALITY_LABELS.get(str(modality), str(modality))


def order_modalities(modalities: Iterable[str]) -> list[str]:
    """Return the distinct sequences in the paper's order (T1, T1CE, T2, FLAIR, then others)."""
    mods = {m for m in modalities if isinstance(m, str)}
    known = [m for m in MODALITY_ORDER if m in mods]
    return known + sorted(mods - set(known))


def order_feature_sets(sets: Iterable[str]) -> list[str]:
    """Return feature-set names in the paper's order (R, C, I, R+C, R+I, C+I, R+C+I, others)."""
    sets = set(sets)
    known = [s for s in FEATURE_SET_ORDER if s in sets]
    return known + sorted(sets - set(known))


def drf_label(feature: str, labels: Mapping[str, str] | None = None) -> str:
    """Return the paper's name of a catalogue feature (e.g. 'cm_contrast' -> 'Contrast-GLCM')."""
    return (labels or {}).get(feature) or str(feature)


def feature_kind(name: str) -> str:
    """Return 'DRF', 'clinical' or 'immune' for a classifier feature name.

    DRF columns are named '<SEQUENCE>__<feature>' (the ``drf`` view); clinical ones are age,
    gender, grade; anything else is an immune marker.
    """
    if "__" in name:
        return "DRF"
    return "clinical" if name in CLINICAL_FEATURES else "immune"


def feature_display(name: str, labels: Mapping[str, str] | None = None) -> str:
    """Return a readable name for a classifier or survival feature.

    'T1CE__cm_contrast' -> 'T1-CE Contrast-GLCM'; 'age' -> 'Age'; 't_cells_cd8' -> 'T Cells CD8'.
    """
    kind = feature_kind(name)
    if kind == "DRF":
        mod, feat = name.split("__", 1)
        return f"{modality_label(mod)} {drf_label(feat, labels)}"
    if kind == "clinical":
        return CLINICAL_FEATURES[name]
    return marker_label(name)


def _months(days) -> np.ndarray:
    return np.asarray(days, dtype=float) / MONTH_DAYS


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def format_p(p) -> str:
    """Return a p-value as text: '0.032', '2.4×10⁻⁵' (as in the paper), 'n/a' for missing."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if p >= 0.001 or p == 0:
        return f"{p:.3f}" if p >= 0.001 else "0"
    mant, exp = f"{p:.1e}".split("e")
    return f"{mant}×10{str(int(exp)).translate(_SUPERSCRIPT)}"


# --------------------------------------------------------------------------- rendering


def figure_png(fig: Figure, dpi: int = 150) -> bytes:
    """Return the figure rendered as PNG bytes by the Agg canvas."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def _text_in(labels: Iterable[str], font: float = FONT) -> float:
    """Return the width in inches of the longest label at the given font size (measured with
    the default font's glyph metrics)."""
    prop = FontProperties(size=font)
    widths = [_TEXT.get_text_width_height_descent(str(s), prop, ismath=False)[0]
              for s in labels]
    return max(widths, default=0.0) / 72.0


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _axes_in(fig: Figure, left: float, bottom: float, width: float, height: float, **kw):
    """Add axes at a position given in inches from the figure's bottom-left corner."""
    fw, fh = fig.get_size_inches()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh), **kw)


def _sig_marks(ax, xs, ys, size: float) -> None:
    """Draw significance circles visible on any colour: a white ring under a black ring."""
    if len(xs) == 0:
        return
    ax.scatter(xs, ys, s=size, facecolors="none", edgecolors="white", linewidths=2.2)
    ax.scatter(xs, ys, s=size, facecolors="none", edgecolors="black", linewidths=1.0)


def _sig_handle() -> Line2D:
    return Line2D([], [], marker="o", linestyle="", markerfacecolor="none",
                  markeredgecolor="black", markersize=7, label=SIG_NOTE)


# --------------------------------------------------------------------------- Fig. 2 and 3


def feature_order(features: Iterable[str], catalogue_order: Sequence[str] | None = None) -> list:
    """Return features in catalogue order (families together), unknown ones last, sorted."""
    present = set(features)
    first = [f for f in (catalogue_order or []) if f in present]
    return first + sorted(present - set(first))


def faceted_heatmap(
    df: pd.DataFrame,
    value: str,
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    colorbar_label: str,
    feature_labels: Mapping[str, str] | None = None,
    catalogue_order: Sequence[str] | None = None,
    families: Mapping[str, str] | None = None,
    significant: str = "significant",
    threshold: float | None = None,
) -> Figure:
    """Heatmap of `value` per (feature, marker), one panel per sequence, significant cells ringed.

    Rows are the features (the same in every panel, labelled on the left column of panels),
    columns the markers; panels are laid out two per row. Missing cells are light grey.
    """
    mods = order_modalities(df["modality"])
    markers = sorted(df["marker"].unique(), key=marker_label)
    feats = feature_order(df["feature"].unique(), catalogue_order)
    ylabels = [drf_label(f, feature_labels) for f in feats]
    xlabels = [marker_label(m) for m in markers]
    ncols = min(2, len(mods))
    nrows = math.ceil(len(mods) / ncols)
    cw, ch = 0.19, 0.165
    pw, ph = cw * len(markers), ch * len(feats)
    left = _text_in(ylabels) + 0.35
    gap = 0.3
    below = _text_in(xlabels) + 0.25
    title_h, top = 0.32, 0.5
    cb_w, cb_pad, cb_label = 0.18, (0.8 if threshold is not None else 0.35), 0.75
    width = left + ncols * pw + (ncols - 1) * gap + cb_pad + cb_w + cb_label
    height = top + nrows * (title_h + ph + below)
    fig = _new_figure(width, height)
    cm = colormaps[cmap].with_extremes(bad="#d9d9d9")
    norm = Normalize(vmin=vmin, vmax=vmax)
    size = (min(cw, ch) * 72 * 0.78) ** 2
    image = None
    for k, mod in enumerate(mods):
        r, c = divmod(k, ncols)
        x0 = left + c * (pw + gap)
        y0 = height - top - (r + 1) * (title_h + ph + below) + below
        ax = _axes_in(fig, x0, y0, pw, ph)
        sub = df[df["modality"] == mod]
        grid = sub.pivot_table(index="feature", columns="marker", values=value, aggfunc="first",
                               dropna=False).reindex(index=feats, columns=markers)
        image = ax.imshow(grid.to_numpy(float), cmap=cm, norm=norm, aspect="auto",
                          interpolation="nearest")
        sig = sub[sub[significant].fillna(False).astype(bool)]
        fi = {f: i for i, f in enumerate(feats)}
        mi = {m: j for j, m in enumerate(markers)}
        _sig_marks(ax, [mi[m] for m in sig["marker"]], [fi[f] for f in sig["feature"]], size)
        ax.set_xticks(range(len(markers)), xlabels, rotation=90, fontsize=FONT)
        ax.set_yticks(range(len(feats)), ylabels if c == 0 else [], fontsize=FONT)
        ax.tick_params(length=2, pad=2)
        _family_lines(ax, feats, families)
        ax.set_title(f"{modality_label(mod)}  ({len(feats)} DRFs x {len(markers)} markers, "
                     f"{len(sig)} significant)", fontsize=FONT + 1, loc="left")
    cax = _axes_in(fig, width - cb_label - cb_w, height - top - min(ph, 4.0) - title_h,
                   cb_w, min(ph, 4.0))
    cb = fig.colorbar(image, cax=cax)
    cb.set_label(colorbar_label, fontsize=FONT + 0.5)
    cb.ax.tick_params(labelsize=FONT)
    if threshold is not None and np.isfinite(threshold):
        cb.ax.axhline(threshold, color="black", linewidth=1.5)
        cb.ax.text(-0.3, threshold, "Holm\nthreshold", transform=cb.ax.get_yaxis_transform(),
                   ha="right", va="center", fontsize=FONT - 1)
    fig.legend(handles=[_sig_handle()], loc="upper left", fontsize=FONT + 0.5, frameon=False,
               bbox_to_anchor=(left / width, 1 - 0.05 / height))
    return fig


def _family_lines(ax, feats: Sequence[str], families: Mapping[str, str] | None) -> None:
    """Draw a white line between consecutive feature families (histogram, GLCM, ...)."""
    if not families:
        return
    for i in range(1, len(feats)):
        if families.get(feats[i]) != families.get(feats[i - 1]):
            ax.axhline(i - 0.5, color="white", linewidth=1.6)


def spearman_heatmap(df: pd.DataFrame, **labels) -> Figure:
    """Fig. 2: Spearman rho of each DRF with each marker, diverging colours fixed to [-1, 1]."""
    return faceted_heatmap(df, "rho", cmap="RdBu_r", vmin=-1.0, vmax=1.0,
                           colorbar_label="Spearman ρ (DRF vs marker)", **labels)


def wilcoxon_heatmap(df: pd.DataFrame, **labels) -> Figure:
    """Fig. 3: -log10 p of the rank-sum test of each DRF between low/high marker groups."""
    d = df.copy()
    with np.errstate(divide="ignore"):
        d["neglog10p"] = -np.log10(d["p"].astype(float).clip(lower=1e-300))
    top = float(np.nanmax(d["neglog10p"])) if d["neglog10p"].notna().any() else 1.0
    vmax = max(2.0, math.ceil(top))
    sig = d.loc[d["significant"].fillna(False).astype(bool), "neglog10p"]
    threshold = float(sig.min()) if len(sig) else None
    return faceted_heatmap(d, "neglog10p", cmap="YlOrRd", vmin=0.0, vmax=vmax,
                           colorbar_label="−log10(p), Wilcoxon rank-sum (uncorrected)",
                           threshold=threshold, **labels)


# --------------------------------------------------------------------------- Fig. 4


def auc_bars(classifier: pd.DataFrame) -> Figure:
    """Fig. 4a: survival-classifier AUC with 95% CI per feature set and evaluation, side by side.

    Evaluations in the order repeated stratified k-fold CV (the recommended estimate),
    leave-pair-out (when run), pooled LOOCV (the paper's), split. Bars are labelled with the
    AUC; the dashed line is chance (0.5).
    """
    sets = order_feature_sets(classifier["feature_set"])
    evals = [e for e in ("repeated_cv", "leave_pair_out", "loocv", "split")
             if e in set(classifier["evaluation"])]
    fig = _new_figure(max(6.5, 1.1 * len(sets) + 2.5), 4.4)
    ax = fig.add_axes((0.09, 0.2, 0.88, 0.68))
    w = 0.8 / max(len(evals), 1)
    for k, ev in enumerate(evals):
        sub = classifier[classifier["evaluation"] == ev].set_index("feature_set").reindex(sets)
        auc = sub["auc"].astype(float).to_numpy()
        lo = np.clip(auc - sub["auc_low95"].astype(float).to_numpy(), 0, None)
        hi = np.clip(sub["auc_high95"].astype(float).to_numpy() - auc, 0, None)
        x = np.arange(len(sets)) + (k - (len(evals) - 1) / 2) * w
        n = sub["n"].dropna()
        nlab = f" (n = {int(n.max())})" if len(n) else ""
        ax.bar(x, np.nan_to_num(auc), w * 0.92, color=EVAL_COLOURS[ev],
               label=f"{EVAL_LABELS[ev]}{nlab}",
               yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], capsize=3,
               error_kw={"elinewidth": 1, "ecolor": "#333333"})
        for xi, a, h in zip(x, auc, np.nan_to_num(hi), strict=True):
            if np.isfinite(a):
                ax.text(xi, min(a + h + 0.015, 1.02), f"{a:.2f}", ha="center", va="bottom",
                        fontsize=FONT - 0.5)
    nf = classifier.groupby("feature_set")["n_features"].max()
    ax.set_xticks(range(len(sets)),
                  [f"{s}\n({int(nf.get(s, 0))} features)" for s in sets], fontsize=FONT)
    ax.axhline(0.5, color="#777777", linestyle="--", linewidth=1, label="chance (AUC 0.5)")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("AUC (short vs long survival), 95% CI", fontsize=FONT + 0.5)
    ax.set_xlabel("feature set: R = DRFs, C = clinical (age, gender), I = immune markers",
                  fontsize=FONT + 0.5)
    ax.tick_params(labelsize=FONT)
    ax.legend(fontsize=FONT, loc="upper left", ncols=len(evals) + 1, frameon=False,
              bbox_to_anchor=(0, 1.13))
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _panel_grid(n: int, ncols: int, pw: float, ph: float, *, left=0.75, right=0.2,
                top=0.45, gap_x=0.75, gap_y=0.9, bottom_extra=0.0):
    """Return (width, height, [(x0, y0)...]) of a grid of n equal panels, positions in inches."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width = left + ncols * pw + (ncols - 1) * gap_x + right
    row_h = ph + gap_y + bottom_extra
    height = top + nrows * row_h
    pos = []
    for k in range(n):
        r, c = divmod(k, ncols)
        pos.append((left + c * (pw + gap_x), height - top - r * row_h - ph))
    return width, height, pos


def score_scatter(scores: pd.DataFrame, classifier: pd.DataFrame, cutoff: float = 0.5,
                  evaluation: str = "loocv") -> Figure:
    """Fig. 4b: held-out predicted P(long survival) vs survival, one panel per feature set.

    Survival is in months; censored patients are drawn hollow at their imputed survival (the
    value the labels and the Spearman rho use). Each title gives rho and its Holm-corrected p
    (over the feature sets of the evaluation; the raw p when no corrected one is stored) from the
    results_classifier table.
    """
    sc = scores[scores["evaluation"] == evaluation]
    sets = order_feature_sets(sc["feature_set"])
    width, height, pos = _panel_grid(len(sets), 4, 2.55, 2.1, gap_x=0.55, gap_y=0.75, top=0.75)
    fig = _new_figure(width, height)
    stats = classifier[classifier["evaluation"] == evaluation].set_index("feature_set")
    ymax = 0.0
    axes = []
    for s, (x0, y0) in zip(sets, pos, strict=True):
        ax = _axes_in(fig, x0, y0, 2.55, 2.1)
        d = sc[sc["feature_set"] == s]
        surv = d["imputed_days"].where(d["imputed_days"].notna(), d["survival_days"])
        y = _months(surv)
        ymax = max(ymax, float(np.nanmax(y)) if len(y) else 0.0)
        dead = d["event"].to_numpy() == 1
        ax.scatter(d["score"][dead], y[dead], s=14, color="#2f5d9c", label="death observed")
        ax.scatter(d["score"][~dead], y[~dead], s=14, facecolors="none", edgecolors="#2f5d9c",
                   label="censored (imputed)")
        ax.axvline(cutoff, color="#999999", linestyle=":", linewidth=1)
        rho = stats["score_rho"].get(s, np.nan) if "score_rho" in stats else np.nan
        holm = ("score_rho_p_holm" in stats
                and np.isfinite(float(stats["score_rho_p_holm"].get(s, np.nan))))
        col = "score_rho_p_holm" if holm else "score_rho_p"
        p = stats[col].get(s, np.nan) if col in stats else np.nan
        rho_txt = (f"ρ = {rho:.2f}, {'Holm p' if holm else 'p'} = {format_p(p)}"
                   if np.isfinite(rho) else "ρ n/a")
        ax.set_title(f"{s}: {rho_txt}", fontsize=FONT + 0.5, loc="left")
        ax.set_xlim(-0.03, 1.03)
        ax.tick_params(labelsize=FONT)
        ax.set_xlabel("predicted P(long survival)", fontsize=FONT)
        ax.set_ylabel("survival (months)", fontsize=FONT)
        ax.spines[["top", "right"]].set_visible(False)
        axes.append(ax)
    for ax in axes:
        ax.set_ylim(0, ymax * 1.05 + 1)
    if axes:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="upper left", ncols=2,
                   fontsize=FONT, frameon=False, bbox_to_anchor=(0.6 / width, 1))
    return fig


def km_predicted_groups(scores: pd.DataFrame, classifier: pd.DataFrame, cutoff: float = 0.5,
                        evaluation: str = "loocv") -> Figure:
    """Fig. 4c: Kaplan-Meier curves of the predicted long (score > cutoff) and short groups.

    One panel per feature set with the numbers at risk below the axis (lifelines
    ``add_at_risk_counts``); the log-rank p and the hazard ratio (predicted short vs long, 95%
    CI) are those of the results_classifier table, computed by the analyze stage.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    sc = scores[scores["evaluation"] == evaluation]
    sets = order_feature_sets(sc["feature_set"])
    pw, ph = 3.3, 2.2
    width, height, pos = _panel_grid(len(sets), 3, pw, ph, left=1.45, gap_x=1.55, gap_y=1.75,
                                     top=0.55)
    fig = _new_figure(width, height)
    stats = classifier[classifier["evaluation"] == evaluation].set_index("feature_set")
    tmax = _months(sc["survival_days"]).max() if len(sc) else 1.0
    for s, (x0, y0) in zip(sets, pos, strict=True):
        ax = _axes_in(fig, x0, y0, pw, ph)
        d = sc[sc["feature_set"] == s]
        long_ = d["score"].to_numpy(float) > cutoff
        fitters = []
        for mask, name, colour in ((long_, "Long", "#2f5d9c"), (~long_, "Short", "#c0392b")):
            if mask.sum() == 0:
                continue
            kmf = KaplanMeierFitter(label=name)
            kmf.fit(_months(d["survival_days"][mask]), d["event"][mask].to_numpy(int),
                    label=f"{name} (n = {int(mask.sum())})")
            kmf.plot_survival_function(ax=ax, ci_show=False, color=colour, show_censors=True,
                                       censor_styles={"ms": 4, "marker": "|"}, linewidth=1.5)
            kmf._label = name
            fitters.append(kmf)
        ax.set_xlim(0, tmax * 1.02 + 1e-9)
        ax.set_ylim(0, 1.03)
        ax.set_xlabel("time since diagnosis (months)", fontsize=FONT)
        ax.set_ylabel("survival probability", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.legend(fontsize=FONT - 0.5, loc="lower left", frameon=True, framealpha=0.9,
                  edgecolor="none", title="predicted survival", title_fontsize=FONT - 0.5)
        ax.set_title(f"{s}\nlog-rank {_km_stats_text(stats, s)}", fontsize=FONT + 0.5,
                     loc="left")
        ax.spines[["top", "right"]].set_visible(False)
        if fitters:
            add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"],
                               ypos=-0.55, fontsize=FONT - 0.5)
    return fig


def _km_stats_text(stats: pd.DataFrame, feature_set: str) -> str:
    """Return 'log-rank p = ..., HR = x (a-b)' for a feature set, or 'n/a' parts."""
    def get(col):
        return float(stats[col].get(feature_set, np.nan)) if col in stats else np.nan

    p, hr, lo, hi = get("logrank_p"), get("hr"), get("hr_low95"), get("hr_high95")
    hr_txt = (f"HR short/long = {hr:.2f} ({lo:.2f}–{hi:.2f})" if np.isfinite(hr)
              else "HR n/a")
    return f"p = {format_p(p)}, {hr_txt}"


def importance_bars(importance: pd.DataFrame, feature_labels: Mapping[str, str] | None = None,
                    top: int = 30) -> Figure:
    """Fig. 4d: the `top` most important features of one classifier, coloured by kind.

    Left panel: impurity importance (mean decrease in Gini impurity, averaged over folds);
    right panel, when present: permutation importance (drop in AUC, mean +- sd).
    """
    d = importance.copy()
    key = "impurity" if d["impurity"].notna().any() else "permutation_mean"
    d = d.sort_values(key, ascending=False).head(top).iloc[::-1]
    names = [feature_display(f, feature_labels) for f in d["feature"]]
    colours = [KIND_COLOURS[feature_kind(f)] for f in d["feature"]]
    perm = d["permutation_mean"].notna().any() and key == "impurity"
    left = _text_in(names) + 0.3
    pw, gap = 3.4, 0.35
    ph = 0.2 * len(d) + 0.1
    width = left + pw + (gap + pw if perm else 0) + 0.3
    height = ph + 1.25
    fig = _new_figure(width, height)
    y = np.arange(len(d))
    ax = _axes_in(fig, left, 0.65, pw, ph)
    ax.barh(y, d[key].astype(float), color=colours, height=0.72)
    ax.set_yticks(y, names, fontsize=FONT)
    ax.set_ylim(-0.6, len(d) - 0.4)
    ax.set_xlabel("impurity importance (mean over folds)" if key == "impurity"
                  else "permutation importance (AUC drop)", fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.spines[["top", "right"]].set_visible(False)
    if perm:
        ax2 = _axes_in(fig, left + pw + gap, 0.65, pw, ph, sharey=ax)
        ax2.barh(y, d["permutation_mean"].astype(float).fillna(0), color=colours, height=0.72,
                 xerr=d["permutation_std"].astype(float).fillna(0),
                 error_kw={"elinewidth": 0.8, "ecolor": "#444444"})
        ax2.axvline(0, color="#777777", linewidth=0.8)
        ax2.tick_params(labelleft=False, labelsize=FONT)
        ax2.set_xlabel("permutation importance (AUC drop, mean ± sd)", fontsize=FONT)
        ax2.spines[["top", "right"]].set_visible(False)
    kinds = [k for k in KIND_COLOURS if k in {feature_kind(f) for f in d["feature"]}]
    fig.legend(handles=[Patch(color=KIND_COLOURS[k], label=k) for k in kinds],
               loc="upper left", ncols=3, fontsize=FONT, frameon=False,
               bbox_to_anchor=(left / width, 1 - 0.05 / height))
    return fig


# --------------------------------------------------------------------------- Fig. 5


def marker_auc_heatmaps(marker_auc: pd.DataFrame) -> Figure:
    """Fig. 5a/b: AUC of predicting low/high markers from each sequence's DRFs.

    One panel per evaluation (LOOCV, out-of-bag, split), markers as rows and sequences as
    columns, each cell annotated with its AUC; diverging colours centred on chance (0.5), fixed
    to [0, 1].
    """
    evals = [e for e in ("loocv", "oob", "split") if e in set(marker_auc["evaluation"])]
    mods = order_modalities(marker_auc["modality"])
    markers = sorted(marker_auc["marker"].unique(), key=marker_label)
    ylabels = [marker_label(m) for m in markers]
    cw, ch = 0.62, 0.24
    pw, ph = cw * len(mods), ch * len(markers)
    left, gap, top, bottom = _text_in(ylabels) + 0.3, 0.35, 0.75, 0.3
    cb_w, cb_label = 0.18, 0.8
    width = left + len(evals) * pw + (len(evals) - 1) * gap + 0.3 + cb_w + cb_label
    height = top + ph + bottom
    fig = _new_figure(width, height)
    norm = Normalize(0.0, 1.0)
    cm = colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    image = None
    for k, ev in enumerate(evals):
        ax = _axes_in(fig, left + k * (pw + gap), bottom, pw, ph)
        grid = (marker_auc[marker_auc["evaluation"] == ev]
                .pivot_table(index="marker", columns="modality", values="auc", aggfunc="first",
                             dropna=False)
                .reindex(index=markers, columns=mods).to_numpy(float))
        image = ax.imshow(grid, cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=FONT - 0.5,
                        color="white" if abs(v - 0.5) > 0.3 else "black")
        ax.set_xticks(range(len(mods)), [modality_label(m) for m in mods], fontsize=FONT)
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(markers)), ylabels if k == 0 else [], fontsize=FONT)
        ax.tick_params(length=2)
        n = marker_auc.loc[marker_auc["evaluation"] == ev, "n"].dropna()
        ax.set_title(f"{EVAL_LABELS[ev]}" + (f" (n = {int(n.max())})" if len(n) else ""),
                     fontsize=FONT + 1, pad=18)
    cax = _axes_in(fig, width - cb_label - cb_w, bottom, cb_w, min(ph, 3.5))
    cb = fig.colorbar(image, cax=cax)
    cb.set_label("AUC (low vs high marker); 0.5 = chance", fontsize=FONT + 0.5)
    cb.ax.tick_params(labelsize=FONT)
    return fig
