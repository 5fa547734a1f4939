"""The encoder study (issue 18): which of the lake's encoders finds the biology?

For every encoder in the features table (seeded, trained, identity, filter banks, checkpoints)
on the same patients and mask region, one row per patient set:

- power: of the planted (marker, sequence) pairs of the ground truth (a marker driven by a latent
  factor x a sequence whose texture that factor drives), the fraction with at least one
  Holm-significant DRF of that sequence (Spearman, Holm over the whole DRF x marker heatmap, as
  the analyze stage does); ``true_hits`` counts the significant planted cells;
- false positives: significant cells of null markers (generated independently of every factor)
  and how many null markers have one;
- ``separation_auc``: how well |rho| ranks planted cells above null-marker cells (0.5: not at
  all); unlike the Holm counts it still says something at small n;
- survival AUC with its 95% CI: random forest of short vs long survival (censored patients
  imputed, the paper's labels) from the encoder's DRFs, repeated stratified 5-fold CV;
- stability: Spearman rho across patients of each DRF between this encoder and the same encoder
  with another seed (seeded ``cnn..-s0`` vs ``-s1``; trained models whose settings differ only in
  the seed); median and fraction of DRFs with rho >= 0.8.

Leakage: a trained encoder saw its training and validation patients' volumes (no labels). The
study analyses every patient ("all", in-sample for trained encoders: the notes say so) and, when
the trained encoders left some out, the patients none of them saw ("unseen"), with every encoder
on that same set.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.exceptions import InputError, LakeError
from pipelines.lake import Lake

log = logging.getLogger("drlake.encoder_study")

SEEDED_RE = re.compile(r"^cnn(?P<blocks>[0-9x]+)-s(?P<seed>[0-9]+)-[0-9a-f]{8}$")
CHECKPOINT_RE = re.compile(r"^cnn[0-9x]+-w-[0-9a-f]{8}$")
MIN_PATIENTS = 10
STABLE_RHO = 0.8


@dataclass(frozen=True)
class StudySettings:
    """Settings of the encoder study (recorded in the run log).

    encoders: names to compare (None: every encoder with features); region: mask region (None:
    the primary one); alpha: Holm level; seed / trees / cv_repeats: the survival forests'
    seed, size and 5-fold CV repeats.
    """

    encoders: tuple[str, ...] | None = None
    region: str | None = None
    alpha: float = 0.05
    seed: int = 0
    trees: int = 200
    cv_repeats: int = 3

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise InputError(f"--alpha must be in (0, 1), got {self.alpha}")
        if self.trees < 1 or self.cv_repeats < 1:
            raise InputError("--trees and --cv-repeats must be >= 1")


@dataclass(frozen=True)
class Truth:
    """The planted associations of a synthetic cohort: (marker, sequence) pairs and nulls."""

    planted: tuple[tuple[str, str], ...]
    null_markers: tuple[str, ...]

    @property
    def real_markers(self) -> tuple[str, ...]:
        return tuple(sorted({m for m, _ in self.planted}))


def read_truth(path: str | Path) -> Truth:
    """Return the planted pairs and null markers of a ground_truth.json (drlake synth)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: ground truth file not found (drlake synth writes "
                         "ground_truth.json)")
    try:
        gt = json.loads(p.read_text(encoding="utf-8"))
        drivers = {f: tuple(t["sequences"]) for f, t in gt["texture_drivers"].items()}
        planted = tuple(sorted((m, seq) for m, t in gt["immune"].items() if t["driver"]
                               for seq in drivers.get(t["driver"], ())))
        nulls = tuple(sorted(gt["null_markers"]))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{p}: not a drlake ground truth (needs texture_drivers, immune and "
                         f"null_markers): {exc}") from None
    return Truth(planted, nulls)


# --------------------------------------------------------------------------- encoders


def encoder_kind(name: str, models: dict[str, dict]) -> dict:
    """Return {"kind", "family", "seed"} of an encoder name; family groups seeds of one encoder.

    `models`: trained models' records by name. Deterministic encoders (identity, filter banks)
    and checkpoints have no family (None).
    """
    if name in models:
        rec = models[name]
        rest = {k: v for k, v in rec["settings"].items() if k != "seed"}
        family = "trained:" + json.dumps([rest, rec["architecture"]], sort_keys=True)
        return {"kind": "trained", "family": family, "seed": rec["settings"]["seed"]}
    m = SEEDED_RE.fullmatch(name)
    if m:
        return {"kind": "seeded", "family": "seeded:" + m["blocks"], "seed": int(m["seed"])}
    if name == "identity":
        return {"kind": "identity", "family": None, "seed": None}
    if name.startswith("filters-"):
        return {"kind": "filters", "family": None, "seed": None}
    if CHECKPOINT_RE.fullmatch(name):
        return {"kind": "checkpoint", "family": None, "seed": None}
    return {"kind": "other", "family": None, "seed": None}


def seed_partners(kinds: dict[str, dict]) -> dict[str, str]:
    """Return {encoder: the same family's encoder with the nearest other seed}."""
    out = {}
    for name, k in kinds.items():
        mates = [(abs(o["seed"] - k["seed"]), o["seed"], n) for n, o in kinds.items()
                 if n != name and k["family"] and o["family"] == k["family"]
                 and o["seed"] != k["seed"]]
        if mates:
            out[name] = min(mates)[2]
    return out


def feature_encoders(lake: Lake) -> list[str]:
    """Return the encoders with features in the lake, oldest first."""
    from pipelines.sql import connect

    con = connect(lake)
    try:
        return [r[0] for r in con.execute(
            "SELECT encoder FROM features GROUP BY encoder ORDER BY max(run_id)").fetchall()]
    finally:
        con.close()


def trained_records(lake: Lake) -> dict[str, dict]:
    """Return the trained encoders' records (model.json) by name."""
    from pipelines.encoder_training import load_model_record, model_names

    return {n: load_model_record(lake, n) for n in model_names(lake)}


# --------------------------------------------------------------------------- metrics (pure)


def _modality(feature: str) -> str | None:
    return feature.split("__", 1)[0] if "__" in feature else None


def association_metrics(drf: pd.DataFrame, markers: pd.DataFrame, truth: Truth | None,
                        alpha: float = 0.05) -> dict:
    """Return power, false positives and rho summaries of DRFs (patients x "<SEQ>__<f>") against
    markers (patients x markers), Holm over the whole heatmap; without truth only the counts."""
    from sklearn.metrics import roc_auc_score

    from pipelines.stats.association import spearman_matrix

    sp = spearman_matrix(drf, markers, alpha=alpha)
    sp["modality"] = sp["feature"].map(_modality)
    sp["abs_rho"] = sp["rho"].abs()
    out = {"n_drf": int(drf.shape[1]), "n_significant": int(sp["significant"].sum())}
    if truth is None:
        return out
    have = set(markers.columns)
    pairs = [(m, s) for m, s in truth.planted if m in have]
    nulls = [m for m in truth.null_markers if m in have]
    planted = sp[[(m, s) in set(pairs) for m, s in zip(sp["marker"], sp["modality"],
                                                       strict=True)]]
    null = sp[sp["marker"].isin(nulls)]
    hit = planted.groupby(["marker", "modality"])["significant"].any()
    detected = [bool(hit.get(p, False)) for p in pairs]
    per_pair = planted.groupby(["marker", "modality"])["abs_rho"].max()
    scores = pd.concat([planted["abs_rho"], null["abs_rho"]]).to_numpy()
    labels = np.r_[np.ones(len(planted)), np.zeros(len(null))]
    ok = np.isfinite(scores)
    sep = (float(roc_auc_score(labels[ok], scores[ok]))
           if ok.any() and len(set(labels[ok])) == 2 else np.nan)
    out.update({
        "planted_pairs": len(pairs), "detected_pairs": int(sum(detected)),
        "power": sum(detected) / len(pairs) if pairs else np.nan,
        "true_hits": int(planted["significant"].sum()),
        "false_positives": int(null["significant"].sum()),
        "null_markers_hit": int(null.loc[null["significant"], "marker"].nunique()),
        "n_null_markers": len(nulls),
        "planted_max_rho": float(per_pair.mean()) if len(per_pair) else np.nan,
        "null_max_rho": float(null.groupby("marker")["abs_rho"].max().mean())
        if len(null) else np.nan,
        "separation_auc": sep,
    })
    return out


def survival_auc(drf: pd.DataFrame, clinical: pd.DataFrame, seed: int = 0, trees: int = 200,
                 repeats: int = 3) -> dict:
    """Return {"auc", "auc_low95", "auc_high95"} of short vs long survival from DRFs (random
    forest, repeated stratified 5-fold CV; NaN when the classes are too small for 5 folds)."""
    from pipelines.stats.classify import rf_repeated_cv
    from pipelines.stats.survival import survival_labels

    y = pd.Series(survival_labels(clinical["survival_days"].astype(float),
                                  clinical["event"].astype(int)), index=drf.index)
    try:
        res = rf_repeated_cv(drf, y, seed=seed, n_estimators=trees, n_splits=5,
                             n_repeats=repeats, protocol="paper")
    except InputError as exc:
        log.info("survival AUC not computed: %s", exc)
        return {"auc": np.nan, "auc_low95": np.nan, "auc_high95": np.nan}
    return {"auc": res.auc, "auc_low95": res.auc_low95, "auc_high95": res.auc_high95}


def seed_stability(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Return the median and the fraction >= 0.8 of per-DRF Spearman rho between two encoders'
    DRF tables (patients x features; common patients and features)."""
    ids = a.index.intersection(b.index)
    cols = a.columns.intersection(b.columns)
    rho = a.loc[ids, cols].rank().corrwith(b.loc[ids, cols].rank()).dropna()
    if rho.empty:
        return {"stability_median_rho": np.nan, "stability_frac_stable": np.nan}
    return {"stability_median_rho": float(rho.median()),
            "stability_frac_stable": float((rho >= STABLE_RHO).mean())}


# --------------------------------------------------------------------------- the study


def patient_sets(ids: list[str], kinds: dict[str, dict],
                 models: dict[str, dict]) -> tuple[dict[str, list[str]], dict[str, set]]:
    """Return ({"all": ids, "unseen": ids no compared trained encoder saw}, seen per encoder).

    "unseen" is present only when some trained encoder is compared.
    """
    from pipelines.encoder_training import seen_patients

    seen = {n: seen_patients(models[n]) for n, k in kinds.items() if k["kind"] == "trained"}
    sets = {"all": list(ids)}
    if seen:
        union = set().union(*seen.values())
        sets["unseen"] = [p for p in ids if p not in union]
    return sets, seen


def _load(lake: Lake, encoders: list[str], region: str | None):
    from pipelines.analyze import load_cohort

    data = {e: load_cohort(lake, e, region) for e in encoders}
    regions = {d.region for d in data.values()}
    if len(regions) > 1:
        raise InputError(f"the encoders' primary regions differ ({', '.join(sorted(regions))});"
                         " choose one with --region")
    ids = sorted(set.intersection(*(set(d.ids) for d in data.values())))
    if len(ids) < MIN_PATIENTS:
        raise LakeError(f"{lake.url}: only {len(ids)} patients have DRFs of every compared "
                        f"encoder; at least {MIN_PATIENTS} are needed (run each encoder on the "
                        "whole cohort)")
    return data, ids, regions.pop()


def study_rows(lake: Lake, settings: StudySettings, truth: Truth | None
               ) -> tuple[pd.DataFrame, list[str], dict]:
    """Return (one row per encoder and patient set, notes, input fingerprints) of the study."""
    have = feature_encoders(lake)
    if not have:
        raise LakeError(f"{lake.url}: the features table is empty (run `drlake run` with each "
                        "encoder to compare)")
    encoders = list(settings.encoders or have)
    missing = [e for e in encoders if e not in have]
    if missing:
        raise InputError(f"no features for encoder(s) {', '.join(missing)}; the lake has "
                         f"{', '.join(have)}")
    models = trained_records(lake)
    kinds = {e: encoder_kind(e, models) for e in encoders}
    partners = seed_partners(kinds)
    data, ids, region = _load(lake, encoders, settings.region)
    sets, seen = patient_sets(ids, kinds, models)
    notes = [f"encoder {e} was trained on {len(s & set(ids))} of the {len(ids)} analysed "
             "patients: its 'all' rows are in-sample (its weights saw those volumes, never a "
             "marker or survival)" for e, s in seen.items() if s & set(ids)]
    if "unseen" in sets and len(sets["unseen"]) < MIN_PATIENTS:
        notes.append(f"only {len(sets['unseen'])} patient(s) were unseen by every trained "
                     f"encoder (< {MIN_PATIENTS}): no 'unseen' rows; train with --holdout or "
                     "--train-patients to leave patients out")
        del sets["unseen"]
    if truth is None:
        notes.append("no --truth: power and false positives need a ground truth")
    rows = []
    for set_name, pids in sets.items():
        for e in encoders:
            d = data[e]
            drf = d.drf.loc[pids]
            row = {"encoder": e, "kind": kinds[e]["kind"], "region": region,
                   "patient_set": set_name, "n": len(pids),
                   "n_seen": len(seen.get(e, set()) & set(pids)) if e in seen else None,
                   **association_metrics(drf, d.markers.loc[pids], truth, settings.alpha),
                   **survival_auc(drf, d.clinical.loc[pids], settings.seed, settings.trees,
                                  settings.cv_repeats),
                   "stability_partner": partners.get(e)}
            if e in partners:
                row.update(seed_stability(drf, data[partners[e]].drf.loc[pids]))
            rows.append(row)
    fps = {e: d.fingerprint() for e, d in data.items()}
    return pd.DataFrame(rows), notes, fps


STUDY_COLUMNS = [
    "run_id", "encoder", "kind", "region", "patient_set", "n", "n_seen", "n_drf",
    "n_significant", "planted_pairs", "detected_pairs", "power", "true_hits", "false_positives",
    "null_markers_hit", "n_null_markers", "planted_max_rho", "null_max_rho", "separation_auc",
    "auc", "auc_low95", "auc_high95", "stability_partner", "stability_median_rho",
    "stability_frac_stable",
]


def run_encoder_study(lake: Lake, settings: StudySettings | None = None,
                      truth: str | Path | None = None) -> dict:
    """Run the study, write ``results_encoder_study`` and return {"run_id", "table", "notes"}."""
    settings = settings or StudySettings()
    t = read_truth(truth) if truth is not None else None
    params = {**asdict(settings), "truth": asdict(t) if t else None}
    with lake.run("compare_encoders", params) as run:
        df, notes, fps = study_rows(lake, settings, t)
        run.input_fingerprints.update(fps)
        df.insert(0, "run_id", run.run_id)
        df = df.reindex(columns=STUDY_COLUMNS)
        lake.append_rows("results_encoder_study", df, run_id=run.run_id)
        run.message = (f"{df['encoder'].nunique()} encoder(s) x "
                       f"{df['patient_set'].nunique()} patient set(s)")
    return {"run_id": run.run_id, "table": df, "notes": notes}


def _cell(v, fmt: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return fmt.format(v)


def format_study(df: pd.DataFrame) -> str:
    """Return the study as an aligned text table (one line per encoder and patient set)."""
    head = ["encoder", "kind", "set", "n", "seen", "power", "hits", "FP", "null mk", "sep AUC",
            "|rho| planted/null", "survival AUC [95% CI]", "stability rho (>=0.8)"]
    lines = [head]
    for r in df.itertuples():
        lines.append([
            r.encoder, r.kind, r.patient_set, str(r.n), _cell(r.n_seen, "{:.0f}"),
            f"{_cell(r.detected_pairs, '{:.0f}')}/{_cell(r.planted_pairs, '{:.0f}')}"
            if pd.notna(r.planted_pairs) else "-",
            _cell(r.true_hits, "{:.0f}"), _cell(r.false_positives, "{:.0f}"),
            f"{_cell(r.null_markers_hit, '{:.0f}')}/{_cell(r.n_null_markers, '{:.0f}')}"
            if pd.notna(r.n_null_markers) else "-",
            _cell(r.separation_auc),
            f"{_cell(r.planted_max_rho)}/{_cell(r.null_max_rho)}",
            f"{_cell(r.auc)} [{_cell(r.auc_low95)}, {_cell(r.auc_high95)}]",
            f"{_cell(r.stability_median_rho)} ({_cell(r.stability_frac_stable)})",
        ])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
