"""``drlake spatial ...``: thin commands over :mod:`pipelines.spatial.stage` (seed 004).

Mount with ``app.add_typer(spatial_app, name="spatial")``. User mistakes raise
:class:`pipelines.exceptions.DrlakeError`, which the ``drlake`` entry point prints as one line.

Typical session::

    drlake spatial patches --lake lake --gene CD3D
    drlake spatial evaluate --lake lake --split biopsy      # grouped and biopsy splits, + RF
    drlake spatial train --lake lake --seed 0
    drlake spatial map --lake lake --model small-CD3D-r8-a0-brain-zscore-s0 --slices all \\
        --truth-dir cohort/biopsy/truth
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated

import typer

from pipelines.spatial import SEED_REFERENCE

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Spatially resolved radiomics (seed 004): biopsy patches, a ResNet classifier of "
    "above-median expression, patient-grouped evaluation, probability maps.",
    pretty_exceptions_enable=False,
)

LakeOpt = Annotated[
    str, typer.Option("--lake", help="lake root: a folder or an fsspec URL (s3://bucket/lake)")
]
GeneOpt = Annotated[str, typer.Option("--gene", help="gene whose above-median TPM is the label")]
AdjOpt = Annotated[int, typer.Option("--adjacent-slices", min=0,
                                     help="adjacent slices on each side (1: 17x17x27 input)")]
PatchSetOpt = Annotated[str | None, typer.Option(
    "--patch-set", help="patch set name (default: from --gene, --adjacent-slices, "
    "--normalisation)")]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed (splits, weights, batches)")]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="maximum training epochs")]


class Norm(StrEnum):
    brain_zscore = "brain-zscore"
    none = "none"


class Arch(StrEnum):
    small = "small"
    resnet50 = "resnet50"


class SplitKind(StrEnum):
    grouped = "grouped"
    biopsy = "biopsy"


class Evaluation(StrEnum):
    both = "both"
    split = "split"
    kfold = "kfold"


class Holdout(StrEnum):
    test = "test"
    none = "none"


class Labels(StrEnum):
    train = "train"
    cohort = "cohort"


class CI(StrEnum):
    delong = "delong"
    cluster_bootstrap = "cluster-bootstrap"


NormOpt = Annotated[Norm, typer.Option("--normalisation",
                                       help="per-patient intensity normalisation")]


def _lake(path: str):
    from pipelines.lake import Lake

    return Lake(path)


def _patch_set(name, gene, adjacent, normalisation) -> str:
    from pipelines.spatial.stage import PatchSettings

    if name:
        return name
    return PatchSettings(gene=gene, adjacent=adjacent, normalisation=normalisation.value).name


def _config(arch, epochs, seed, batch_size, lr, patience, augment, tta, threads):
    from pipelines.spatial.train import TrainConfig

    return TrainConfig(arch=arch.value, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                       patience=patience, augment=augment, tta=tta, threads=threads)


def _fmt(v, lo=None, hi=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "  n/a"
    s = f"{v:.3f}"
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        s += f" [{lo:.3f}, {hi:.3f}]"
    return s


@app.command()
def patches(
    lake: LakeOpt = "lake",
    gene: GeneOpt = "CD3D",
    radius: Annotated[int, typer.Option(min=1, help="in-plane radius in voxels (8: 17x17)")] = 8,
    adjacent_slices: AdjOpt = 0,
    normalisation: NormOpt = Norm.brain_zscore,
    name: Annotated[str | None, typer.Option(help="patch set name")] = None,
    force: Annotated[bool, typer.Option(help="recompute even if unchanged")] = False,
):
    """Cut a patch around every biopsy site and label it by above-median expression."""
    from pipelines.spatial.stage import PatchSettings, spatial_patches

    settings = PatchSettings(gene=gene, radius=radius, adjacent=adjacent_slices,
                             normalisation=normalisation.value)
    s = spatial_patches(_lake(lake), settings, name=name, force=force)
    state = "unchanged" if s["skipped"] else "written"
    typer.echo(f"patch set {s['patch_set']} {state}: {s['n']} biopsies of {s['n_patients']} "
               f"patient(s), {len(s['channels'])} channels of {2 * radius + 1}x{2 * radius + 1}"
               f" -> {s['zarr_path']}")
    if s["missing_expression"]:
        typer.echo(f"  left out (no {gene}): {', '.join(s['missing_expression'][:10])}")


@app.command()
def train(
    lake: LakeOpt = "lake",
    patch_set: PatchSetOpt = None,
    gene: GeneOpt = "CD3D",
    adjacent_slices: AdjOpt = 0,
    normalisation: NormOpt = Norm.brain_zscore,
    arch: Annotated[Arch, typer.Option(help="small ResNet or the seed's ResNet-50")] = Arch.small,
    epochs: EpochsOpt = 100,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(min=2)] = 16,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    patience: Annotated[int, typer.Option(min=1, help="early-stopping patience")] = 20,
    augment: Annotated[bool, typer.Option(help="random 90-degree rotations and flips")] = True,
    tta: Annotated[bool, typer.Option(help="average predictions over rotations/flips")] = True,
    holdout: Annotated[Holdout, typer.Option(
        help="test: hold out 20% of patients (mapped by default); none: use all")] = (
        Holdout.test),
    name: Annotated[str | None, typer.Option(help="model name")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    force: Annotated[bool, typer.Option(help="retrain even if unchanged")] = False,
):
    """Train a patch classifier (grouped train/dev split, early stopping) and store it."""
    from pipelines.spatial.stage import spatial_train

    cfg = _config(arch, epochs, seed, batch_size, lr, patience, augment, tta, threads)
    ps = _patch_set(patch_set, gene, adjacent_slices, normalisation)
    s = spatial_train(_lake(lake), ps, cfg, holdout=holdout.value, name=name, force=force)
    state = "unchanged" if s["skipped"] else "trained"
    typer.echo(f"model {s['model']} {state}: {s['n_train']} train / {s['n_dev']} dev / "
               f"{s['n_test']} held-out biopsies; best epoch {s['best_epoch']} of {s['epochs']}"
               f" ({s['seconds_per_epoch']:.3f} s/epoch) -> {s['path']}")
    m = s.get("test_metrics")
    if m:
        typer.echo(f"  held-out patients: accuracy "
                   f"{_fmt(m['accuracy'], m['accuracy_low95'], m['accuracy_high95'])}, AUC "
                   f"{_fmt(m['auc'], m['auc_low95'], m['auc_high95'])}")


@app.command()
def evaluate(
    lake: LakeOpt = "lake",
    patch_set: PatchSetOpt = None,
    gene: GeneOpt = "CD3D",
    adjacent_slices: AdjOpt = 0,
    normalisation: NormOpt = Norm.brain_zscore,
    split: Annotated[SplitKind, typer.Option(
        help="grouped: by patient; biopsy: also the seed's random biopsy split, for "
        "comparison")] = SplitKind.grouped,
    evaluation: Annotated[Evaluation, typer.Option(
        help="one 60/20/20 split, grouped k-fold, or both")] = Evaluation.both,
    folds: Annotated[int, typer.Option(min=2, help="k of the k-fold")] = 5,
    arch: Annotated[Arch, typer.Option()] = Arch.small,
    epochs: EpochsOpt = 100,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(min=2)] = 16,
    lr: Annotated[float, typer.Option()] = 1e-3,
    patience: Annotated[int, typer.Option(min=1)] = 20,
    augment: Annotated[bool, typer.Option()] = True,
    tta: Annotated[bool, typer.Option()] = True,
    rf: Annotated[bool, typer.Option(help="random-forest baseline on IBSI patch features")] = True,
    labels: Annotated[Labels, typer.Option(
        help="median from the training rows (train) or all biopsies (cohort, as the seed)")] = (
        Labels.train),
    ci: Annotated[CI, typer.Option(help="AUC CI method")] = CI.delong,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
):
    """Accuracy and AUC (95% CI) of the CNN and the RF baseline on held-out patients."""
    from pipelines.spatial.stage import spatial_evaluate

    cfg = _config(arch, epochs, seed, batch_size, lr, patience, augment, tta, threads)
    ps = _patch_set(patch_set, gene, adjacent_slices, normalisation)
    out = spatial_evaluate(_lake(lake), ps, cfg, split=split.value, evaluation=evaluation.value,
                           folds=folds, rf=rf, labels=labels.value, ci_method=ci.value)
    df = out["results"]
    typer.echo(f"run {out['run_id']} ({ps}, seed {seed}, labels: {labels.value} median)")
    typer.echo(f"{'split':8} {'evaluation':10} {'model':5} {'n_test':>6}  "
               f"{'accuracy [95% CI]':24} AUC [95% CI]")
    for r in df.itertuples():
        typer.echo(f"{r.split:8} {r.evaluation:10} {r.model:5} {r.n_test:6d}  "
                   f"{_fmt(r.accuracy, r.accuracy_low95, r.accuracy_high95):24} "
                   f"{_fmt(r.auc, r.auc_low95, r.auc_high95)}")
    typer.echo(f"seed paper (random biopsy split, n_test {SEED_REFERENCE['n_test']}): accuracy "
               f"{SEED_REFERENCE['accuracy']:.2f}, AUC {SEED_REFERENCE['auc']:.2f}")
    diff = out["difference"]
    for r in diff.itertuples():
        typer.echo(f"biopsy - grouped ({r.evaluation}, {r.model}): AUC {r.auc_difference:+.3f}, "
                   f"accuracy {r.accuracy_difference:+.3f}")


@app.command("map")
def map_(
    model: Annotated[str, typer.Option("--model", help="trained model name")],
    lake: LakeOpt = "lake",
    patients: Annotated[str | None, typer.Option(
        help="comma-separated ids, 'all' (the patch set's patients); default: the model's "
        "held-out patients")] = None,
    slices: Annotated[str, typer.Option(
        help="'sites' (slices through the biopsies), 'all' (whole tumour) or z indices "
        "'30,31'")] = "sites",
    truth_dir: Annotated[str | None, typer.Option(
        help="folder of ground-truth fields <patient>_infiltration.nii.gz")] = None,
    truth_pattern: Annotated[str, typer.Option(
        help="truth file name, {patient} is replaced")] = "{patient}_infiltration.nii.gz",
    png: Annotated[bool, typer.Option(help="write the PNG overlays")] = True,
    tta: Annotated[bool | None, typer.Option(
        help="average over rotations/flips (default: as the model)")] = None,
    scheduler: Annotated[str, typer.Option(
        help="sync, threads, processes or a cluster address")] = "sync",
    workers: Annotated[int | None, typer.Option(min=1)] = None,
    force: Annotated[bool, typer.Option(help="recompute existing maps")] = False,
):
    """Slide a trained model over tumour voxels: Zarr maps, PNG overlays, rho vs truth."""
    from pipelines.scheduler import SchedulerSpec
    from pipelines.spatial.stage import spatial_map

    pats = None
    if patients:
        pats = "all" if patients == "all" else [p.strip() for p in patients.split(",")
                                                if p.strip()]
    df = spatial_map(_lake(lake), model, pats, slices, truth_dir, truth_pattern, png, tta,
                     SchedulerSpec(scheduler, workers), force=force, progress=True)
    for r in df.itertuples():
        rho = "" if r.rho_vs_truth is None or math.isnan(r.rho_vs_truth) else (
            f", rho vs truth {r.rho_vs_truth:+.3f}")
        typer.echo(f"{r.patient_id}{' (held out)' if r.heldout else ''}: {r.n_voxels} voxels "
                   f"[slices {r.slices}] -> {r.map_path}"
                   + (f", {r.png_path}" if r.png_path else "") + rho)
    rhos = df["rho_vs_truth"].dropna()
    if len(rhos):
        typer.echo(f"median rho vs truth over {len(rhos)} patient(s): {rhos.median():+.3f}")
