"""Analyze stage: every analysis of seed 000 (sections 2.4 and 3) over the lake, into results.

Reads the DRF table (one encoder), the immune markers and the clinical table through the SQL
views, and writes one Parquet file per results table named by the run id:

- results_spearman: Spearman rho of each DRF with each marker on the training set, Holm over the
  whole heatmap (Fig. 2);
- results_wilcoxon: rank-sum test of each DRF between below/above-median marker groups (Fig. 3);
- results_survival: log-rank of median-split groups of each DRF, age, gender and marker, median
  survival per group, Cox HR with CI, Holm (Table 2);
- results_classifier / results_scores / results_importance: random forests of short vs long
  survival (censored patients imputed as in the paper) for feature sets R, C, I and their unions,
  leave-one-out (pooled, the paper's), the single split and repeated stratified k-fold (the
  small-n estimate), with score-vs-survival statistics, Holm-corrected over the feature sets of
  one evaluation (Fig. 4);
- results_marker_auc / results_marker_scores: random forests of below/above-median markers from
  each sequence's 45 DRFs, their AUCs and every held-out prediction they were computed from
  (Fig. 5).

`protocol="paper"` reproduces the paper's choices (labels and marker medians learned on all
patients); `protocol="strict"` fits every label threshold, censored-survival donor set and imputer
inside the training fold, on every path (LOOCV, split, repeated CV, OOB). Missing-value
imputation is fitted inside the training folds in both protocols.
The statistics themselves are in `pipelines.stats` (scipy, statsmodels, lifelines, sklearn).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass

import dask
import numpy as np
import pandas as pd

from pipelines.exceptions import InputError, LakeError
from pipelines.lake import Lake
from pipelines.scheduler import SchedulerSpec, run_tasks

log = logging.getLogger("drlake.analyze")

FEATURE_SETS = ("R", "C", "I", "R+C", "R+I", "C+I", "R+C+I")


@dataclass(frozen=True)
class AnalyzeSettings:
    """Settings of the analyze stage (recorded in the run log).

    n_train: training-set size of the single split (the paper: 100 of 151; scaled to the cohort
    as round(n * 100 / 151) when the cohort is smaller than 151); alpha: significance level of
    Holm-corrected p-values; trees / marker_trees: random-forest sizes of the survival and the
    marker classifiers; permutation_repeats: permutation-importance repeats (survival models).
    marker_cv: the cross-validated estimate of the Fig. 5 heatmap besides the split: "oob"
    (the default: out-of-bag predictions of one forest, every patient scored by the trees that
    did not see it, about n times cheaper; strict: each tree's labels from its in-bag patients;
    its agreement with LOOCV is measured by ``benchmarks/marker_cv.py``), "loocv" (the paper's
    pooled leave-one-out: n forests per heatmap cell, 88 cells) or "none".
    cv_folds / cv_repeats: repeated stratified k-fold of the survival classifiers (cv_repeats 0
    skips it). lpo_pairs: leave-pair-out AUC of the survival classifiers over at most this many
    seeded (short, long) survivor pairs, one forest each (0 skips it). km_median: Kaplan-Meier
    median definition, "r" (R's survfit, default) or "first" (lifelines'), see
    :func:`pipelines.stats.survival.km_median`.
    """

    encoder: str | None = None
    # mask region whose DRFs are analysed (default: the only one, else the lake's primary one)
    region: str | None = None
    protocol: str = "paper"
    seed: int = 0
    n_train: int = 100
    alpha: float = 0.05
    trees: int = 300
    marker_trees: int = 100
    permutation_repeats: int = 5
    marker_cv: str = "oob"
    cv_folds: int = 5
    cv_repeats: int = 10
    lpo_pairs: int = 0
    km_median: str = "r"

    def __post_init__(self):
        if self.protocol not in ("paper", "strict"):
            raise InputError(f"--protocol must be paper or strict, got {self.protocol!r}")
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.trees < 1 or self.marker_trees < 1:
            raise InputError("forest sizes must be >= 1")
        if self.marker_cv not in ("loocv", "oob", "none"):
            raise InputError(f"--marker-cv must be loocv, oob or none, got {self.marker_cv!r}")
        if self.cv_folds < 2 or self.cv_repeats < 0:
            raise InputError("cv_folds must be >= 2 and cv_repeats >= 0")
        if self.lpo_pairs < 0:
            raise InputError(f"lpo_pairs must be >= 0 (0 skips leave-pair-out), got "
                             f"{self.lpo_pairs}")
        if self.km_median not in ("r", "first"):
            raise InputError(f"--km-median must be r or first, got {self.km_median!r}")


@dataclass
class CohortData:
    """Aligned analysis inputs: one row per patient (sorted ids)."""

    drf: pd.DataFrame        # patients x 45*sequences, columns "<SEQ>__<feature>"
    markers: pd.DataFrame    # patients x markers
    clinical: pd.DataFrame   # age, gender, grade, survival_days, event
    encoder: str
    region: str = "roi"

    @property
    def ids(self) -> list[str]:
        return list(self.drf.index)

    def fingerprint(self) -> str:
        """Return a sha256 of the analysis inputs' content."""
        h = hashlib.sha256()
        for df in (self.drf, self.markers, self.clinical):
            h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
            h.update(",".join(map(str, df.columns)).encode())
        h.update(self.encoder.encode())
        h.update(self.region.encode())
        return h.hexdigest()


def analysed_region(con, encoder: str, region: str | None) -> str:
    """Return the mask region to analyse: `region` if the encoder's features have it; else the
    only region there is, else the lake's primary region (the first of patients.regions)."""
    have = [r[0] for r in con.execute(
        "SELECT DISTINCT region FROM features WHERE encoder = ? ORDER BY 1", [encoder]).fetchall()]
    if region is not None:
        if region not in have:
            raise InputError(f"no features for region {region!r} (encoder {encoder}); the lake "
                             f"has {', '.join(have)}")
        return region
    if len(have) == 1:
        return have[0]
    specs = [r[0] for r in con.execute(  # of a patient this encoder's features cover
        "SELECT regions FROM patients WHERE regions IS NOT NULL AND patient_id IN "
        "(SELECT patient_id FROM features WHERE encoder = ?) ORDER BY patient_id LIMIT 1",
        [encoder]).fetchall()]
    primary = specs[0].split()[0].split("=")[0] if specs else None
    if primary in have:
        return primary
    raise InputError(f"the features have regions {', '.join(have)}; choose one with --region")


def load_cohort(lake: Lake, encoder: str | None = None, region: str | None = None) -> CohortData:
    """Return the DRF table of one encoder and mask region joined with markers and clinical data.

    Patients missing from any of the three are left out (logged); at least 10 must remain.
    """
    from pipelines.sql import connect

    con = connect(lake)
    try:
        encs = [r[0] for r in con.execute(
            "SELECT encoder FROM features GROUP BY encoder ORDER BY max(run_id)").fetchall()]
        if not encs:
            raise LakeError(f"{lake.url}: the features table is empty (run `drlake run`)")
        enc = encoder or encs[-1]
        if enc not in encs:
            raise InputError(f"no features for encoder {enc!r}; the lake has {', '.join(encs)}")
        reg = analysed_region(con, enc, region)
        drf = con.execute("SELECT * FROM drf WHERE encoder = ? AND region = ?", [enc, reg]).df()
        markers = con.execute("SELECT * FROM immune_markers_wide").df()
        clinical = con.execute("SELECT * FROM clinical").df()
    finally:
        con.close()
    drf = drf.drop(columns=["encoder", "region"]).set_index("patient_id").dropna(axis=1, how="all")
    markers = markers.set_index("patient_id")
    clinical = clinical.set_index("patient_id")
    if markers.empty or clinical.empty:
        raise LakeError(f"{lake.url}: immune markers and clinical tables are needed "
                        "(ingest with --immune and --clinical)")
    ids = sorted(set(drf.index) & set(markers.index) & set(clinical.index))
    dropped = len(set(drf.index) | set(markers.index) | set(clinical.index)) - len(ids)
    if dropped:
        log.info("analyze: %d patient(s) lack DRFs, markers or clinical data and are left out",
                 dropped)
    if len(ids) < 10:
        raise LakeError(f"{lake.url}: only {len(ids)} patients have DRFs, markers and clinical "
                        "data; at least 10 are needed")
    return CohortData(drf.loc[ids].astype(float), markers.loc[ids].astype(float),
                      clinical.loc[ids], enc, reg)


def _split_feature(name: str) -> tuple[str | None, str]:
    if "__" in name:
        mod, feat = name.split("__", 1)
        return mod, feat
    return None, name


def _with_modality(df: pd.DataFrame) -> pd.DataFrame:
    parts = df["feature"].map(_split_feature)
    out = df.copy()
    out.insert(0, "modality", [p[0] for p in parts])
    out["feature"] = [p[1] for p in parts]
    return out


def clinical_features(clinical: pd.DataFrame) -> pd.DataFrame:
    """Return the C feature set: age (years) and gender (1 = M, 0 = F)."""
    return pd.DataFrame({"age": clinical["age"].astype(float),
                         "gender": (clinical["gender"] == "M").astype(float)},
                        index=clinical.index)


def feature_set(data: CohortData, name: str) -> pd.DataFrame:
    """Return the columns of a feature set: R (DRFs), C (age, gender), I (markers), unions."""
    parts = {"R": data.drf, "C": clinical_features(data.clinical), "I": data.markers}
    return pd.concat([parts[p] for p in name.split("+")], axis=1)


# ---- tasks (each returns a small picklable result) -------------------------------------------
def survival_evaluations(settings: AnalyzeSettings) -> tuple[str, ...]:
    """Return the evaluations of the survival classifiers these settings run, in table order."""
    evs = ["loocv", "split"]
    if settings.cv_repeats > 0:
        evs.append("repeated_cv")
    if settings.lpo_pairs > 0:
        evs.append("leave_pair_out")
    return tuple(evs)


def _associations_task(drf: pd.DataFrame, markers: pd.DataFrame,
                       alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (Spearman, Wilcoxon) tables of DRFs vs immune markers (seed 000, Fig. 2-3)."""
    from pipelines.stats.association import spearman_matrix, wilcoxon_groups

    return (_with_modality(spearman_matrix(drf, markers, alpha=alpha)),
            _with_modality(wilcoxon_groups(drf, markers, alpha=alpha)))


def _survival_table_task(feats: pd.DataFrame, time_: pd.Series, event: pd.Series, alpha: float,
                         km_median: str) -> pd.DataFrame:
    """Return the per-feature log-rank / Cox table (seed 000, Table 2)."""
    from pipelines.stats.survival import survival_table

    return survival_table(feats, time_, event, categorical=("gender",), alpha=alpha,
                          median_definition=km_median)


def _survival_classifier_task(X, time_, event, train_pos, test_pos, settings: AnalyzeSettings,
                              set_name: str, evaluation: str) -> dict:
    """One evaluation of one feature set's survival forests (one Dask task: the evaluations are
    independent, each seeded by settings.seed, so splitting them keeps every number)."""
    from pipelines.stats.classify import (
        rf_leave_pair_out,
        rf_loocv,
        rf_repeated_cv,
        rf_split,
        score_group_survival,
    )
    from pipelines.stats.survival import survival_labeller, survival_labels

    if settings.protocol == "paper":
        y = pd.Series(survival_labels(time_, event), index=X.index)
    else:
        y = survival_labeller(time_, event)
    out = {}
    common = dict(seed=settings.seed, n_estimators=settings.trees, protocol=settings.protocol,
                  permutation_repeats=settings.permutation_repeats)
    if evaluation == "loocv":
        out["loocv"] = rf_loocv(X, y, **common)
    elif evaluation == "split":
        out["split"] = rf_split(X, y, train_pos, test_pos, **common)
    elif evaluation == "repeated_cv":
        try:
            out["repeated_cv"] = rf_repeated_cv(
                X, y, seed=settings.seed, n_estimators=settings.trees,
                n_splits=settings.cv_folds, n_repeats=settings.cv_repeats,
                protocol=settings.protocol)
        except InputError as exc:  # too few patients of a class for k folds
            log.debug("repeated CV %s: %s", set_name, exc)
    elif evaluation == "leave_pair_out":
        try:  # an AUC over pairs: no per-patient scores or importances
            return {"set": set_name, "leave_pair_out": rf_leave_pair_out(
                X, y, seed=settings.seed, n_estimators=settings.trees,
                protocol=settings.protocol, max_pairs=settings.lpo_pairs)}
        except InputError as exc:  # fewer than two patients of a class
            log.debug("leave-pair-out %s: %s", set_name, exc)
            return {"set": set_name}
    else:  # pragma: no cover - survival_evaluations names them
        raise ValueError(f"unknown evaluation {evaluation!r}")
    for ev, res in list(out.items()):
        idx = res.scores.index
        try:
            sg = score_group_survival(res.scores, time_.loc[idx], event.loc[idx])
            out[ev + "_surv"] = sg.summary()
        except Exception as exc:  # too few patients in a predicted group: report NaN
            log.debug("score survival %s %s: %s", set_name, ev, exc)
            out[ev + "_surv"] = {}
    return {"set": set_name, **out}


def _marker_task(X, values, train_pos, test_pos, settings: AnalyzeSettings, marker, modality):
    from pipelines.stats.association import median_split
    from pipelines.stats.classify import median_labeller, rf_loocv, rf_oob, rf_split

    if settings.protocol == "paper":
        y = pd.Series(median_split(values).astype(float).to_numpy(), index=X.index)
        if y.nunique() < 2:
            return {"marker": marker, "modality": modality, "results": {}}
    else:
        y = median_labeller(values)
    common = dict(seed=settings.seed, n_estimators=settings.marker_trees,
                  protocol=settings.protocol, permutation_repeats=0)
    results = {}
    for ev in (settings.marker_cv, "split"):
        if ev == "none":
            continue
        try:
            if ev == "loocv":
                results[ev] = rf_loocv(X, y, **common)
            elif ev == "oob":  # strict: each tree's marker median from its in-bag patients
                results[ev] = rf_oob(X, y, seed=settings.seed,
                                     n_estimators=settings.marker_trees,
                                     protocol=settings.protocol)
            else:
                results[ev] = rf_split(X, y, train_pos, test_pos, **common)
        except InputError as exc:  # one class only in a training/test set
            log.debug("marker %s %s %s: %s", marker, modality, ev, exc)
    return {"marker": marker, "modality": modality, "results": results}


# ---- the stage --------------------------------------------------------------------------------
def run_analyze(lake: Lake, settings: AnalyzeSettings | None = None,
                sched: SchedulerSpec | None = None, progress: bool = True,
                force: bool = False) -> dict:
    """Run every analysis and write the results tables; return the run id and a summary."""
    from pipelines.stats.classify import EVALUATION_NAMES, auc_caveat
    from pipelines.stats.multiple_testing import holm_adjust
    from pipelines.stats.splits import train_test_split_ids
    from pipelines.stats.survival import impute_censored_survival

    settings = settings or AnalyzeSettings()
    sched = sched or SchedulerSpec()
    data = load_cohort(lake, settings.encoder, settings.region)
    n = len(data.ids)
    n_train = settings.n_train if n >= 151 else max(5, round(n * settings.n_train / 151))
    n_train = min(n_train, n - 5)
    params = {**asdict(settings), "encoder": data.encoder, "region": data.region,
              "n_train_used": n_train, "n": n}
    fp = data.fingerprint()
    if not force:
        previous = _matching_run(lake, params, fp)
        if previous:
            return {"run_id": previous, "skipped": True, "n": n}
    t0 = time.perf_counter()
    train, test = train_test_split_ids(data.ids, n_train=n_train, seed=settings.seed)
    pos = {pid: i for i, pid in enumerate(data.ids)}
    train_pos = np.array([pos[p] for p in train])
    test_pos = np.array([pos[p] for p in test])
    time_ = data.clinical["survival_days"].astype(float)
    event = data.clinical["event"].astype(int)

    with lake.run("analyze", params, input_fingerprints={"cohort": fp}) as run:
        rid = run.run_id
        # 1-3. associations and per-feature survival on the training set, as Dask tasks of
        # the same graph as the forests (they run beside them instead of before them)
        feats = pd.concat([data.drf, clinical_features(data.clinical)[["age"]],
                           data.clinical[["gender"]], data.markers], axis=1).loc[train]
        stat_tasks = [
            dask.delayed(_associations_task, pure=False)(
                data.drf.loc[train], data.markers.loc[train], settings.alpha,
                dask_key_name="associations"),
            dask.delayed(_survival_table_task, pure=False)(
                feats, time_.loc[train], event.loc[train], settings.alpha, settings.km_median,
                dask_key_name="survival-table"),
        ]

        # 4-6. classifiers as Dask tasks
        tasks = [
            dask.delayed(_survival_classifier_task, pure=False)(
                feature_set(data, s), time_, event, train_pos, test_pos, settings, s, ev,
                dask_key_name=f"survival-rf-{s}-{ev}")
            for s in FEATURE_SETS for ev in survival_evaluations(settings)
        ]
        mods = sorted({_split_feature(c)[0] for c in data.drf.columns})
        for mk in data.markers.columns:
            for mod in mods:
                cols = [c for c in data.drf.columns if c.startswith(mod + "__")]
                tasks.append(dask.delayed(_marker_task, pure=False)(
                    data.drf[cols], data.markers[mk], train_pos, test_pos, settings, mk, mod,
                    dask_key_name=f"marker-rf-{mk}-{mod}"))
        results = run_tasks(stat_tasks + tasks, sched, desc="analyze: statistics and forests",
                            progress=progress)
        (sp, wx), st = results[:2]
        results = results[2:]
        for df in (sp, wx):
            df.insert(0, "encoder", data.encoder)
            df.insert(0, "run_id", rid)
        lake.append_rows("results_spearman", sp, run_id=rid)
        lake.append_rows("results_wilcoxon", wx, run_id=rid)
        kinds = {c: "drf" for c in data.drf.columns}
        kinds.update(age="clinical", gender="clinical")
        kinds.update({c: "immune" for c in data.markers.columns})
        st = _with_modality(st)
        st.insert(0, "kind", [kinds[m + "__" + f if m else f]
                              for m, f in zip(st["modality"], st["feature"], strict=True)])
        st.insert(0, "run_id", rid)
        # a Kaplan-Meier median that is never reached (or an unbounded CI) is stored as NULL
        num = st.select_dtypes("number").columns
        st[num] = st[num].replace([np.inf, -np.inf], np.nan)
        lake.append_rows("results_survival", st, run_id=rid)
        merged: dict[str, dict] = {}  # feature set -> its evaluations, in FEATURE_SETS order
        for r in results:
            if "set" in r:
                merged.setdefault(r["set"], {"set": r["set"]}).update(r)
        surv = list(merged.values())
        mark = [r for r in results if "marker" in r]
        imputed = pd.Series(impute_censored_survival(time_.to_numpy(), event.to_numpy()),
                            index=time_.index)
        cls_rows, score_rows, imp_rows = [], [], []
        for r in surv:
            for ev in ("repeated_cv", "leave_pair_out", "loocv", "split"):
                if ev not in r:
                    continue
                res = r[ev]
                sg = r.get(ev + "_surv") or {}
                cls_rows.append({
                    "run_id": rid, "feature_set": r["set"], "evaluation": ev, "n": res.n,
                    "n_features": int(feature_set(data, r["set"]).shape[1]),
                    "auc": res.auc, "auc_low95": res.auc_low95, "auc_high95": res.auc_high95,
                    "score_rho": sg.get("rho"), "score_rho_p": sg.get("rho_p"),
                    "logrank_p": sg.get("p"), "hr": sg.get("hr_low_vs_high"),
                    "hr_low95": sg.get("hr_low_vs_high_low95"),
                    "hr_high95": sg.get("hr_low_vs_high_high95"), "protocol": res.protocol})
                if ev == "leave_pair_out":
                    continue
                for pid, s in res.scores.items():
                    score_rows.append({
                        "run_id": rid, "feature_set": r["set"], "evaluation": ev,
                        "patient_id": pid, "score": float(s), "label": int(res.labels[pid]),
                        "survival_days": float(time_[pid]), "event": int(event[pid]),
                        "imputed_days": float(imputed[pid])})
                imp = res.importances.reset_index().rename(columns={"index": "feature"})
                imp = imp.rename(columns={imp.columns[0]: "feature"})
                for row in imp.itertuples(index=False):
                    imp_rows.append({
                        "run_id": rid, "feature_set": r["set"], "evaluation": ev,
                        "feature": row.feature, "impurity": row.impurity,
                        "permutation_mean": getattr(row, "permutation_mean", np.nan),
                        "permutation_std": getattr(row, "permutation_std", np.nan)})
        cls_df = pd.DataFrame(cls_rows)
        # Fig. 4b "corrected p": Holm over the feature sets' score-survival correlations of one
        # evaluation (a family per evaluation: LOOCV, split, repeated CV)
        cls_df["score_rho_p_holm"] = np.nan
        for _, rows in cls_df.groupby("evaluation").groups.items():
            cls_df.loc[rows, "score_rho_p_holm"] = holm_adjust(
                cls_df.loc[rows, "score_rho_p"].to_numpy(dtype=float))
        num = cls_df.select_dtypes("number").columns
        cls_df[num] = cls_df[num].replace([np.inf, -np.inf], np.nan)
        lake.append_rows("results_classifier", cls_df, run_id=rid)
        lake.append_rows("results_scores", pd.DataFrame(score_rows), run_id=rid)
        lake.append_rows("results_importance", pd.DataFrame(imp_rows), run_id=rid)
        mk_rows, mk_score_rows = [], []
        for r in mark:
            for ev, res in r["results"].items():
                top = res.importances.index[0] if len(res.importances) else None
                mk_rows.append({
                    "run_id": rid, "marker": r["marker"], "modality": r["modality"],
                    "evaluation": ev, "n": res.n, "auc": res.auc, "auc_low95": res.auc_low95,
                    "auc_high95": res.auc_high95,
                    "top_feature": _split_feature(top)[1] if top else None,
                    "protocol": res.protocol})
                for pid, s in res.scores.items():
                    mk_score_rows.append({
                        "run_id": rid, "marker": r["marker"], "modality": r["modality"],
                        "evaluation": ev, "patient_id": pid, "score": float(s),
                        "label": int(res.labels[pid]), "protocol": res.protocol})
        mk_df = pd.DataFrame(mk_rows, columns=[
            "run_id", "marker", "modality", "evaluation", "n", "auc", "auc_low95", "auc_high95",
            "top_feature", "protocol"])
        lake.append_rows("results_marker_auc", mk_df, run_id=rid)
        lake.append_rows("results_marker_scores", pd.DataFrame(mk_score_rows, columns=[
            "run_id", "marker", "modality", "evaluation", "patient_id", "score", "label",
            "protocol"]), run_id=rid)
        shown = "repeated_cv" if any(r["evaluation"] == "repeated_cv" for r in cls_rows) \
            else "loocv"
        best = max(cls_rows, key=lambda r: -1 if r["evaluation"] != shown or
                   r["auc"] is None or np.isnan(r["auc"]) else r["auc"])
        caveat = auc_caveat(best["evaluation"], best["n"], best["auc"], best["auc_low95"],
                            best["auc_high95"])
        run.message = (
            f"n={n} (train {len(train)}), encoder {data.encoder}, region {data.region}, "
            f"protocol {settings.protocol}: "
            f"{int(sp['significant'].sum())} Holm-significant DRF-marker correlations, "
            f"{int(wx['significant'].sum())} Wilcoxon, {int(st['significant'].sum())} survival "
            f"features; best {EVALUATION_NAMES[shown]} survival AUC {best['auc']:.2f} "
            f"({best['auc_low95']:.2f}-{best['auc_high95']:.2f}, {best['feature_set']})"
            + (f" [{caveat}]" if caveat else ""))
    return {"run_id": rid, "skipped": False, "n": n, "message": run.message,
            "seconds": time.perf_counter() - t0}


def _matching_run(lake: Lake, params: dict, fingerprint: str) -> str | None:
    """Return the id of an earlier successful analyze run with these parameters and inputs."""
    import json

    from pipelines.lake import canonical_json, sha256_text

    runs = lake.runs()
    if runs.empty:
        return None
    want = sha256_text(canonical_json(params))
    ok = runs[(runs["stage"] == "analyze") & (runs["status"] == "ok")
              & (runs["params_hash"] == want)]
    for row in ok[::-1].itertuples():
        if json.loads(row.input_fingerprints).get("cohort") == fingerprint:
            return row.run_id
    return None
