"""Lake stages of seed 004: patches, train, evaluate, map. Each reads the lake, calls the pure
core (patches, model, train, evaluate, maps), logs a run and writes its outputs atomically.

What they write (locations from the lake: `Lake.patch_set`, `Lake.spatial_model`,
`Lake.spatial_map`, `Lake.spatial_map_png`)::

    a patch set (Zarr)                      array patches (biopsy, channel, y, x) float32
    table spatial_patches                   labels and where each patch sits
    a spatial model                         torch checkpoint (weights + JSON metadata)
    table results_spatial                   accuracy / AUC with CIs, CNN and RF
    a spatial map per patient (Zarr)        array probability (z, y, x), NaN outside the map
    its PNG                                 the map over T1Gd with the biopsy sites
    table results_spatial_maps              one row per mapped patient

Idempotent: ``spatial_patches``, ``spatial_train`` and ``spatial_map`` skip work whose output
exists for the same inputs and parameters (``force=True`` recomputes); ``spatial_evaluate``
always recomputes (it is deterministic for a seed) and writes one results file per run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from pipelines.exceptions import InputError, LakeError
from pipelines.lake import Lake, canonical_json, sha256_text, write_array
from pipelines.scheduler import SchedulerSpec, run_tasks
from pipelines.spatial import SEQUENCES
from pipelines.spatial.evaluate import (
    evaluate_cnn,
    evaluate_rf,
    grouped_split,
    make_splits,
    median_labels,
    metrics,
    patch_features,
)
from pipelines.spatial.maps import (
    check_name,
    map_slices,
    map_voxels,
    overlay_png,
    predict_map,
    read_truth,
    spearman_in_mask,
    write_map,
)
from pipelines.spatial.patches import (
    BRAIN_FRACTION,
    NORMALISATIONS,
    brain_mask,
    channel_names,
    check_sites,
    extract_patches,
    nearest_voxel,
    normalise_volume,
    stack_volume,
    world_to_index,
)
from pipelines.spatial.train import (
    TrainConfig,
    model_from_bytes,
    model_to_bytes,
    predict_proba,
    train_model,
)

__all__ = [
    "PatchSet",
    "PatchSettings",
    "load_patch_set",
    "spatial_evaluate",
    "spatial_map",
    "spatial_patches",
    "spatial_train",
    "synthetic_biopsy_lake",
]

log = logging.getLogger("drlake.spatial")



# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PatchSettings:
    """How patches are cut: ``gene`` whose above-median expression is the label; in-plane
    ``radius`` (voxels; 8 gives the seed's 17 x 17 at 1 mm); ``adjacent`` slices on each side
    (1 gives the seed's 17 x 17 x 27 option); per-patient ``normalisation`` (see
    :func:`pipelines.spatial.patches.normalise_volume`); the ``sequences`` stacked as channels;
    ``brain_reference`` / ``brain_fraction``: the sequence and level telling brain from
    background (sites below it are refused; its brain mask is the normalisation region)."""

    gene: str = "CD3D"
    radius: int = 8
    adjacent: int = 0
    normalisation: str = "brain-zscore"
    sequences: tuple[str, ...] = SEQUENCES
    brain_reference: str = "T1"
    brain_fraction: float = BRAIN_FRACTION

    def __post_init__(self):
        object.__setattr__(self, "sequences", tuple(self.sequences))
        if self.radius < 1 or self.adjacent < 0:
            raise InputError(f"radius must be >= 1 and adjacent >= 0, got {self.radius}, "
                             f"{self.adjacent}")
        if self.normalisation not in NORMALISATIONS:
            raise InputError(f"normalisation must be one of {NORMALISATIONS}, got "
                             f"{self.normalisation!r}")
        if not self.sequences:
            raise InputError("no sequences given")
        check_name(self.gene, "gene name")

    @property
    def name(self) -> str:
        """Default patch-set name, e.g. ``CD3D-r8-a0-brain-zscore`` (plus a short hash when the
        sequences or brain settings differ from the defaults)."""
        base = f"{self.gene}-r{self.radius}-a{self.adjacent}-{self.normalisation}"
        default = PatchSettings(gene=self.gene, radius=self.radius, adjacent=self.adjacent,
                                normalisation=self.normalisation)
        if self != default:
            base += "-" + sha256_text(canonical_json(self.as_dict()))[:6]
        return base

    def as_dict(self) -> dict:
        d = asdict(self)
        d["sequences"] = list(self.sequences)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PatchSettings:
        return cls(**{**d, "sequences": tuple(d["sequences"])})


@dataclass
class PatchSet:
    """A patch set read back from the lake: patches (n, C, H, W) float32, its label table (one
    row per patch, in patch order), the settings and the Zarr attributes."""

    name: str
    patches: np.ndarray
    table: pd.DataFrame
    settings: PatchSettings
    attrs: dict = field(default_factory=dict)

    @property
    def groups(self) -> np.ndarray:
        return self.table["patient_id"].to_numpy().astype(str)

    @property
    def tpm(self) -> np.ndarray:
        return self.table["tpm"].to_numpy(dtype=float)


# --------------------------------------------------------------------------- helpers


def _prepared_stack(images: dict, settings: PatchSettings) -> tuple[np.ndarray, np.ndarray]:
    """Return (normalised stack (C, z, y, x), raw brain reference (z, y, x))."""
    if settings.brain_reference not in images:
        raise InputError(f"volume lacks the brain reference sequence {settings.brain_reference}")
    ref = images[settings.brain_reference]
    region = brain_mask(ref, settings.brain_fraction)
    normed = normalise_volume({s: images[s] for s in settings.sequences},
                              settings.normalisation, region)
    return stack_volume(normed, settings.sequences), ref


def _read_images(lake: Lake, pid: str, settings: PatchSettings):
    mods = list(dict.fromkeys([*settings.sequences, settings.brain_reference]))
    attrs = lake.volume_attrs(pid)
    missing = [m for m in mods if m not in attrs.get("modalities", [])]
    if missing:
        raise InputError(f"patient {pid}: the lake volume lacks sequence(s) {missing} "
                         f"(it has {attrs.get('modalities')})")
    return lake.read_volume(pid, modalities=mods)


def _biopsy_expression(lake: Lake, gene: str) -> tuple[pd.DataFrame, list[str]]:
    """Return (biopsies with a ``tpm`` column for ``gene``, ids of biopsies lacking it)."""
    b = lake.read_table("biopsies")
    if b.empty:
        raise LakeError(f"{lake.url}: no biopsies in the lake (ingest with --biopsies)")
    e = lake.read_table("genomic_expression")
    e = e[(e["sample_type"] == "biopsy") & (e["gene"] == gene)]
    if e.empty:
        genes = sorted(lake.read_table("genomic_expression")["gene"].unique())[:20]
        raise InputError(f"no biopsy expression of gene {gene!r} in the lake (genes: {genes})")
    e = e.drop_duplicates("sample_id").set_index("sample_id")["tpm"]
    b = b.assign(tpm=b["biopsy_id"].map(e))
    lacking = sorted(b.loc[b["tpm"].isna(), "biopsy_id"])
    b = b.dropna(subset=["tpm"]).sort_values(["patient_id", "biopsy_id"]).reset_index(drop=True)
    return b, lacking


def _patients_fingerprints(lake: Lake, pids) -> dict:
    p = lake.read_table("patients").set_index("patient_id")
    unknown = sorted(set(pids) - set(p.index))
    if unknown:
        raise LakeError(f"{lake.url}: biopsies of patient(s) without a volume: "
                        f"{', '.join(unknown[:5])} (ingest their images)")
    return {pid: str(p.loc[pid, "fingerprint"]) for pid in sorted(set(pids))}


def _site_voxels(rows: pd.DataFrame, attrs: dict) -> np.ndarray:
    pts = rows[["x_mm", "y_mm", "z_mm"]].to_numpy(dtype=float)
    return nearest_voxel(world_to_index(pts, attrs["world_to_voxel"]))


def _try_open(loc):
    try:
        return loc.open()
    except (LakeError, FileNotFoundError, KeyError, ValueError):
        return None


# --------------------------------------------------------------------------- patches


def spatial_patches(lake: Lake, settings: PatchSettings | None = None, name: str | None = None,
                    force: bool = False) -> dict:
    """Cut a patch around every biopsy with expression of ``settings.gene``; write the patches to
    ``spatial/patches/<name>.zarr`` and the labels to the ``spatial_patches`` table.

    Labels: 1 where TPM > the median TPM of the set's biopsies (the seed's label). Biopsies
    lacking the gene are left out (listed in the summary). A site outside its volume, too close
    to the edge for the patch, or outside the brain raises InputError naming the biopsy.
    Returns ``{"patch_set", "zarr_path", "n", "n_patients", "channels", "skipped",
    "missing_expression", "run_id"}``.
    """
    settings = settings or PatchSettings()
    name = check_name(name or settings.name, "patch-set name")
    b, lacking = _biopsy_expression(lake, settings.gene)
    if b.empty:
        raise InputError(f"no biopsy has expression of {settings.gene}")
    fps = _patients_fingerprints(lake, b["patient_id"])
    inputs = {"biopsies": sha256_text(canonical_json(
        b[["biopsy_id", "patient_id", "x_mm", "y_mm", "z_mm", "tpm"]].to_dict("records"))),
        **fps}
    fingerprint = sha256_text(canonical_json({"settings": settings.as_dict(), "inputs": inputs}))
    loc = lake.patch_set(name)
    rel = loc.rel
    old = _try_open(loc)
    if (not force and old is not None and old.attrs.get("fingerprint") == fingerprint
            and (lake.read_table("spatial_patches")["patch_set"] == name).any()):
        return {"patch_set": name, "zarr_path": rel, "n": len(b),
                "n_patients": b["patient_id"].nunique(),
                "channels": list(old.attrs["channels"]), "skipped": True,
                "missing_expression": lacking, "run_id": old.attrs.get("run_id")}
    params = {"patch_set": name, **settings.as_dict()}
    with lake.run("spatial_patches", params, input_fingerprints=inputs) as run:
        chunks, centres = [], []
        for pid, rows in b.groupby("patient_id", sort=True):
            vol = _read_images(lake, pid, settings)
            stack, ref = _prepared_stack(vol.images, settings)
            vox = _site_voxels(rows, vol.attrs)
            check_sites(vox, stack.shape[1:], list(rows["biopsy_id"]), settings.radius,
                        settings.adjacent, reference=ref, brain_fraction=settings.brain_fraction,
                        points_xyz=rows[["x_mm", "y_mm", "z_mm"]].to_numpy())
            chunks.append(extract_patches(stack, vox, settings.radius, settings.adjacent))
            centres.append(vox)
        X = np.concatenate(chunks)
        vox = np.concatenate(centres)
        labels, median = median_labels(b["tpm"])
        channels = channel_names(settings.sequences, settings.adjacent)
        tmp, group = loc.stage(run.run_id)
        try:
            group.attrs.update({"settings": settings.as_dict(), "channels": channels,
                                "biopsy_ids": list(b["biopsy_id"]), "fingerprint": fingerprint,
                                "run_id": run.run_id, "median_tpm": median,
                                "axes": ["biopsy", "channel", "y", "x"]})
            write_array(group, "patches", X, chunks=(256, X.shape[1], X.shape[2], X.shape[3]),
                        dimension_names=("biopsy", "channel", "y", "x"))
        except BaseException:
            loc.discard(tmp)
            raise
        rel = loc.commit(tmp)
        table = pd.DataFrame({
            "patch_set": name, "biopsy_id": b["biopsy_id"], "patient_id": b["patient_id"],
            "gene": settings.gene, "tpm": b["tpm"], "median_tpm": median, "label": labels,
            "patch_index": np.arange(len(b)), "zarr_path": rel, "voxel_z": vox[:, 0],
            "voxel_y": vox[:, 1], "voxel_x": vox[:, 2], "run_id": run.run_id})
        lake.replace_rows("spatial_patches", table, "patch_set", name, run_id=run.run_id)
        run.message = (f"{len(b)} patches of {b['patient_id'].nunique()} patient(s), "
                       f"{len(channels)} channels; {len(lacking)} biopsies lack {settings.gene}")
    return {"patch_set": name, "zarr_path": rel, "n": len(b),
            "n_patients": int(b["patient_id"].nunique()), "channels": channels, "skipped": False,
            "missing_expression": lacking, "run_id": run.run_id}


def load_patch_set(lake: Lake, name: str) -> PatchSet:
    """Return a patch set (patches in table order) or raise LakeError if it is missing or its
    table and Zarr array disagree."""
    name = check_name(name, "patch-set name")
    group = _try_open(lake.patch_set(name))
    table = lake.read_table("spatial_patches")
    table = table[table["patch_set"] == name].sort_values("patch_index").reset_index(drop=True)
    if group is None or table.empty:
        known = sorted(lake.read_table("spatial_patches")["patch_set"].unique())
        raise LakeError(f"{lake.url}: no patch set {name!r} (run `drlake spatial patches`; "
                        f"known: {known})")
    X = group["patches"][...]
    if len(X) != len(table) or list(table["patch_index"]) != list(range(len(X))) or \
            list(table["biopsy_id"]) != list(group.attrs["biopsy_ids"]):
        raise LakeError(f"{lake.url}: patch set {name!r}: table and Zarr array disagree "
                        "(rerun `drlake spatial patches --force`)")
    return PatchSet(name, X, table, PatchSettings.from_dict(group.attrs["settings"]),
                    dict(group.attrs))


# --------------------------------------------------------------------------- train


def load_model(lake: Lake, name: str):
    """Return (model, metadata) of a trained model stored in the lake."""
    loc = lake.spatial_model(check_name(name, "model name"))
    if not loc.exists():
        raise LakeError(f"{lake.url}: no model {name!r} (run `drlake spatial train`)")
    payload = loc.read_bytes()
    model, meta = model_from_bytes(payload)
    meta["sha256"] = hashlib.sha256(payload).hexdigest()[:16]
    return model, meta


def spatial_train(lake: Lake, patch_set: str | None = None, config: TrainConfig | None = None,
                  holdout: str = "test", name: str | None = None, force: bool = False) -> dict:
    """Train a patch classifier on a patch set and store it as ``spatial/models/<name>.pt``.

    ``holdout="test"``: the patients are split 60/20/20 (grouped, ``config.seed``); the model
    trains on the first part, early-stops on the second, and the third is held out (recorded in
    the checkpoint, scored here and mapped by default by :func:`spatial_map`). ``"none"``:
    80/20 train/dev, nothing held out. Labels: above the median TPM of the train + dev rows.
    Returns a summary with the held-out metrics (when any) and timings.
    """
    cfg = config or TrainConfig()
    if holdout not in ("test", "none"):
        raise InputError(f"holdout must be 'test' or 'none', got {holdout!r}")
    ps = load_patch_set(lake, patch_set or PatchSettings().name)
    name = check_name(name or f"{cfg.arch}-{ps.name}-s{cfg.seed}", "model name")
    params = {"patch_set": ps.name, "holdout": holdout, "config": cfg.as_dict()}
    key = sha256_text(canonical_json({**params, "patches": ps.attrs["fingerprint"]}))
    if not force and lake.spatial_model(name).exists():
        _, meta = load_model(lake, name)
        if meta.get("key") == key:
            return {**meta["summary"], "skipped": True}
    fractions = (0.6, 0.2, 0.2) if holdout == "test" else (0.8, 0.2, 0.0)
    s = grouped_split(ps.groups, fractions, cfg.seed)
    y, thr = median_labels(ps.tpm, np.concatenate([s.train, s.dev]))
    with lake.run("spatial_train", params,
                  input_fingerprints={"patches": ps.attrs["fingerprint"]}) as run:
        res = train_model(ps.patches[s.train], y[s.train], ps.patches[s.dev], y[s.dev], cfg)
        test_metrics = None
        if len(s.test):
            p = predict_proba(res.model, ps.patches[s.test], tta=cfg.tta)
            test_metrics = metrics(y[s.test], p)
        parts = {k: sorted(set(ps.groups[getattr(s, k)])) for k in ("train", "dev", "test")}
        summary = {"model": name, "path": lake.spatial_model(name).rel, "patch_set": ps.name,
                   "arch": cfg.arch, "seed": cfg.seed, "holdout": holdout,
                   "n_train": len(s.train), "n_dev": len(s.dev), "n_test": len(s.test),
                   "best_epoch": res.best_epoch, "epochs": len(res.history),
                   "seconds": round(res.seconds, 3),
                   "seconds_per_epoch": round(res.seconds_per_epoch, 4),
                   "test_metrics": test_metrics, "run_id": run.run_id, "skipped": False}
        meta = {"key": key, "patch_set": ps.name, "patch_settings": ps.settings.as_dict(),
                "threshold_tpm": thr, "patients": parts, "run_id": run.run_id,
                "history": res.history, "summary": summary}
        lake.spatial_model(name).write_atomic(model_to_bytes(res, meta))
        run.message = (f"model {name}: best epoch {res.best_epoch}/{len(res.history)}"
                       + (f", held-out AUC {test_metrics['auc']:.3f}" if test_metrics else ""))
    return summary


# --------------------------------------------------------------------------- evaluate


def spatial_evaluate(lake: Lake, patch_set: str | None = None,
                     config: TrainConfig | None = None, split: str = "grouped",
                     evaluation: str = "both", folds: int = 5, rf: bool = True,
                     labels: str = "train", ci_method: str = "delong",
                     rf_trees: int = 300) -> dict:
    """Evaluate the CNN (and the random-forest baseline) on held-out patients; write the
    ``results_spatial`` table.

    ``evaluation``: "split" (one 60/20/20 split), "kfold" (``folds`` grouped folds, test
    predictions pooled) or "both". ``split="grouped"`` splits by patient; ``split="biopsy"``
    evaluates *both* the grouped split and the seed's random biopsy split with the same seed,
    so the difference (what patient leakage adds) is reported. Returns ``{"run_id", "results"
    (DataFrame of the written rows), "difference" (DataFrame: biopsy minus grouped AUC per
    evaluation and model, empty for split="grouped")}``.
    """
    cfg = config or TrainConfig()
    if split not in ("grouped", "biopsy"):
        raise InputError(f"split must be 'grouped' or 'biopsy', got {split!r}")
    evals = ["split", "kfold"] if evaluation == "both" else [evaluation]
    if any(e not in ("split", "kfold") for e in evals):
        raise InputError(f"evaluation must be 'split', 'kfold' or 'both', got {evaluation!r}")
    ps = load_patch_set(lake, patch_set or PatchSettings().name)
    kinds = ["grouped"] if split == "grouped" else ["grouped", "biopsy"]
    params = {"patch_set": ps.name, "split": split, "evaluation": evaluation, "folds": folds,
              "rf": rf, "labels": labels, "ci_method": ci_method, "rf_trees": rf_trees,
              "config": cfg.as_dict()}
    groups, tpm = ps.groups, ps.tpm
    cohort = ps.table["label"].to_numpy()
    rows = []
    with lake.run("spatial_evaluate", params,
                  input_fingerprints={"patches": ps.attrs["fingerprint"]}) as run:
        feats = None
        if rf:
            names = list(ps.settings.sequences)
            feats = patch_features(ps.patches, names, ps.settings.adjacent)
        for kind in kinds:
            for ev in evals:
                splits = make_splits(groups, kind, ev, seed=cfg.seed, k=folds)
                t0 = time.perf_counter()
                cnn = evaluate_cnn(ps.patches, tpm, splits, cfg, labels, cohort, groups,
                                   ci_method)
                results = [(cnn, cfg.arch, time.perf_counter() - t0)]
                if rf:
                    t0 = time.perf_counter()
                    forest = evaluate_rf(feats, tpm, splits, cfg.seed, labels, cohort, groups,
                                         ci_method, n_estimators=rf_trees)
                    results.append((forest, "rf", time.perf_counter() - t0))
                for r, arch, secs in results:
                    m = r.metrics
                    epochs = [f["best_epoch"] for f in r.folds if f["best_epoch"] is not None]
                    rows.append({
                        "run_id": run.run_id, "patch_set": ps.name, "gene": ps.settings.gene,
                        "split": kind, "evaluation": ev, "model": r.model, "arch": arch,
                        "seed": cfg.seed, "labels": labels, "folds": len(splits),
                        "n_train": r.n_train, "n_test": m["n"],
                        "n_test_patients": len(set(groups[r.rows])), "n_pos": m["n_pos"],
                        **{k: m[k] for k in ("accuracy", "accuracy_low95", "accuracy_high95",
                                             "auc", "auc_low95", "auc_high95", "ci_method")},
                        "best_epoch": float(np.mean(epochs)) if epochs else None,
                        "seconds": secs})
        df = pd.DataFrame(rows)
        lake.append_rows("results_spatial", df, run_id=run.run_id)
        best = df[(df["split"] == "grouped") & (df["model"] == "cnn")]
        run.message = "; ".join(f"grouped {r.evaluation} CNN AUC {r.auc:.3f} "
                                f"[{r.auc_low95:.3f}, {r.auc_high95:.3f}]"
                                for r in best.itertuples())
    return {"run_id": run.run_id, "results": df, "difference": auc_difference(df)}


def auc_difference(results: pd.DataFrame) -> pd.DataFrame:
    """Return biopsy-split minus grouped-split AUC and accuracy per evaluation and model (empty
    when the results hold only one split kind)."""
    if set(results["split"]) != {"grouped", "biopsy"}:
        return pd.DataFrame(columns=["evaluation", "model", "auc_grouped", "auc_biopsy",
                                     "auc_difference", "accuracy_difference"])
    w = results.pivot_table(index=["evaluation", "model"], columns="split",
                            values=["auc", "accuracy"])
    out = pd.DataFrame({
        "auc_grouped": w[("auc", "grouped")], "auc_biopsy": w[("auc", "biopsy")],
        "auc_difference": w[("auc", "biopsy")] - w[("auc", "grouped")],
        "accuracy_difference": w[("accuracy", "biopsy")] - w[("accuracy", "grouped")],
    })
    return out.reset_index()


# --------------------------------------------------------------------------- maps

_MODEL_CACHE: dict[tuple, tuple] = {}


def _cached_model(lake: Lake, name: str):
    info = lake.spatial_model(check_name(name, "model name")).info()
    key = (lake.url, name, info.get("size"), info.get("mtime") or info.get("LastModified"))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = load_model(lake, name)
    return _MODEL_CACHE[key]


def _png_slices(mask: np.ndarray, slices: list[int] | None, sites: np.ndarray) -> list[int]:
    """Return the slices drawn: the mapped ones, or for a whole-tumour map the sites' slices
    (else the tumour's central slice)."""
    if slices is not None:
        return slices
    zs = sorted({int(z) for z in sites[:, 0] if 0 <= z < mask.shape[0] and mask[z].any()})
    if zs:
        return zs
    tz = np.flatnonzero(np.asarray(mask).any(axis=(1, 2)))
    return [int(tz[len(tz) // 2])] if len(tz) else [mask.shape[0] // 2]


def map_patient(lake: Lake, model_name: str, pid: str,
                slices_spec: str, truth_path: str | None, png: bool, tta: bool | None,
                run_id: str, threads: int | None = None, force: bool = False) -> dict:
    """Map one patient (a Dask task): write the Zarr map and PNG, return its results row."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model, meta = _cached_model(lake, model_name)
    settings = PatchSettings.from_dict(meta["patch_settings"])
    use_tta = meta["config"]["tta"] if tta is None else bool(tta)
    vol = _read_images(lake, pid, settings)
    mask_mod = "T1Gd" if "T1Gd" in vol.masks else next(iter(vol.masks))
    mask = vol.masks[mask_mod]
    b = lake.read_table("biopsies")
    rows = b[b["patient_id"] == pid].sort_values("biopsy_id")
    sites = _site_voxels(rows, vol.attrs) if len(rows) else np.zeros((0, 3), int)
    slices = map_slices(slices_spec, mask, sites)
    slices_txt = "all" if slices is None else ",".join(map(str, slices))
    key = sha256_text(canonical_json({"model": meta["sha256"], "slices": slices_txt,
                                      "tta": use_tta, "fingerprint": vol.attrs.get("fingerprint"),
                                      "png": png}))
    loc = lake.spatial_map(model_name, pid)
    png_loc = lake.spatial_map_png(model_name, pid) if png else None
    png_rel = png_loc.rel if png_loc else None
    old = None if force else _try_open(loc)
    if old is not None and old.attrs.get("map_key") == key and (
            png_loc is None or png_loc.exists()):
        prob = old["probability"][...]
    else:
        stack, _ = _prepared_stack(vol.images, settings)
        prob = predict_map(stack, mask, lambda p: predict_proba(model, p, tta=use_tta),
                           settings.radius, settings.adjacent, slices)
        spatial = {k: vol.attrs[k] for k in ("spacing_zyx", "spacing_xyz", "origin_xyz",
                                              "direction", "shape_zyx", "world_to_voxel")}
        write_map(lake, model_name, pid, prob, token=run_id, attrs={
            **spatial, "model": model_name, "model_sha256": meta["sha256"], "run_id": run_id,
            "slices": slices_txt, "tta": use_tta, "mask_modality": mask_mod, "map_key": key,
            "gene": settings.gene, "meaning": f"P({settings.gene} TPM > median)"})
        if png:
            background = vol.images.get("T1Gd", vol.images[settings.sequences[0]])
            img = overlay_png(background, prob, _png_slices(mask, slices, sites), sites,
                              list(rows["biopsy_id"]), title=f"{pid}: {model_name}",
                              label=f"P({settings.gene} > median)")
            png_loc.write_atomic(img)
    rho = p = None
    if truth_path:
        truth = read_truth(truth_path, vol.attrs)
        r, pv, _ = spearman_in_mask(prob, truth, mask)
        rho, p = (None if np.isnan(r) else r), (None if np.isnan(pv) else pv)
    return {"run_id": run_id, "model": model_name, "patient_id": pid,
            "heldout": pid in meta.get("patients", {}).get("test", []),
            "slices": slices_txt, "n_voxels": int(len(map_voxels(mask, slices))),
            "map_path": loc.rel, "png_path": png_rel, "rho_vs_truth": rho, "rho_p": p,
            "seconds": time.perf_counter() - t0}


def spatial_map(lake: Lake, model: str, patients: Sequence[str] | str | None = None,
                slices: str | Sequence[int] = "sites", truth_dir: str | Path | None = None,
                truth_pattern: str = "{patient}_infiltration.nii.gz", png: bool = True,
                tta: bool | None = None, sched: SchedulerSpec | None = None,
                force: bool = False, progress: bool = False) -> pd.DataFrame:
    """Map a trained model's probability over patients' tumours; write Zarr maps, PNG overlays
    and the ``results_spatial_maps`` table. Returns the rows written.

    ``patients``: None = the model's held-out test patients (every patient of its patch set if
    none was held out); "all" = every patient of the patch set; or a list of ids. ``slices``:
    "sites" (the slices through the patient's biopsies), "all" (whole tumour) or z indices.
    ``truth_dir``: a folder of ground-truth fields named by ``truth_pattern``; when given, each
    map's Spearman rho against the truth inside the tumour is recorded. ``tta``: average over
    the 8 rotations/flips (None: as the model was evaluated). One Dask task per patient on
    ``sched`` (default: synchronous).
    """
    sched = sched or SchedulerSpec("sync")
    _, meta = load_model(lake, model)
    parts = meta.get("patients", {})
    if patients is None:
        pids = parts.get("test") or sorted(
            {p for k in ("train", "dev", "test") for p in parts.get(k, [])})
    elif isinstance(patients, str) and patients == "all":
        pids = sorted({p for k in ("train", "dev", "test") for p in parts.get(k, [])})
    else:
        pids = [patients] if isinstance(patients, str) else list(patients)
    known = set(lake.read_table("patients")["patient_id"])
    unknown = sorted(set(pids) - known)
    if unknown:
        raise LakeError(f"{lake.url}: unknown patient(s) {', '.join(unknown[:5])}")
    if not pids:
        raise InputError("no patient to map")
    truths = {}
    if truth_dir is not None:
        for pid in pids:
            path = Path(truth_dir) / truth_pattern.format(patient=pid)
            if not path.exists():
                raise InputError(f"no truth field for patient {pid}: {path} does not exist")
            truths[pid] = str(path)
    slices_spec = slices if isinstance(slices, str) else ",".join(str(int(s)) for s in slices)
    params = {"model": model, "model_sha256": meta["sha256"], "patients": len(pids),
              "slices": slices_spec, "truth": truth_dir is not None, "png": png, "tta": tta}
    with lake.run("spatial_map", params) as run:
        threads = sched.threads_per_task()
        tasks = [dask.delayed(map_patient, pure=False)(
            lake, model, pid, slices_spec, truths.get(pid), png, tta,
            run.run_id, threads, force, dask_key_name=f"spatial-map-{pid}") for pid in pids]
        rows = run_tasks(tasks, sched, desc="spatial map", progress=progress)
        df = pd.DataFrame(rows)
        lake.append_rows("results_spatial_maps", df, run_id=run.run_id)
        rhos = df["rho_vs_truth"].dropna()
        run.message = (f"{len(df)} map(s), {int(df['n_voxels'].sum())} voxels"
                       + (f", median rho vs truth {rhos.median():.3f}" if len(rhos) else ""))
    return df


# --------------------------------------------------------------------------- synthetic lake


def synthetic_biopsy_lake(root: str | Path, n_patients: int = 4, seed: int = 0,
                          effect_scale: float = 1.0) -> dict:
    """Write a synthetic biopsy cohort under ``root/cohort`` and ingest it into the lake
    ``root/lake`` (cohort "biopsy"), unless a previous call already did (marker file). For
    tests, benchmarks and demos. Returns ``{"lake", "cohort", "truth_dir"}`` paths."""
    from pipelines.ingest import IngestSettings, ingest
    from pipelines.synth import make_cohort

    root = Path(root)
    out, lake_dir = root / "cohort", root / "lake"
    marker = root / f".done-{n_patients}-{seed}-{effect_scale}"
    if not marker.exists():
        make_cohort(out, n_patients=1, seed=seed, size="small", biopsy_patients=n_patients,
                    effect_scale=effect_scale, progress=False)
        ingest(out / "biopsy" / "manifest.csv", Lake(lake_dir),
               biopsies=out / "biopsy" / "biopsies.csv",
               settings=IngestSettings(cohort="biopsy"), progress=False)
        marker.write_text("ok\n")
    return {"lake": str(lake_dir), "cohort": str(out / "biopsy"),
            "truth_dir": str(out / "biopsy" / "truth")}
