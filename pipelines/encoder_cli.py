"""``drlake encoder train`` and ``drlake compare-encoders``: thin commands over
:mod:`pipelines.encoder_training` and :mod:`pipelines.encoder_study` (issue 18).

Mount with ``app.add_typer(encoder_app, name="encoder")`` and register
``app.command("compare-encoders")(compare_encoders)`` at the top level. User mistakes raise
:class:`pipelines.exceptions.DrlakeError`, which the ``drlake`` entry point prints as one line.

Typical session::

    drlake encoder train --lake lake --name ssl-s0 --seed 0 [--holdout 0.3]
    drlake encoder train --lake lake --name ssl-s1 --seed 1 [--holdout 0.3]
    drlake run --lake lake --encoder trained:ssl-s0      # the features' encoder is ssl-s0
    drlake compare-encoders --lake lake --truth cohort/ground_truth.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.exceptions import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Encoders trained on the lake's own volumes (self-supervised) and the encoder study.",
    pretty_exceptions_enable=False,
)

LakeOpt = Annotated[
    str, typer.Option("--lake", help="lake root: a folder or an fsspec URL (s3://bucket/lake)")
]


def patient_list(text: str | None) -> list[str] | None:
    """Return the ids of a comma-separated list or of a file (one id per line, or commas)."""
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    ids = [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]
    if not ids:
        raise InputError("--train-patients is empty: give ids (P1,P2) or a file of ids")
    return ids


@app.command()
def train(
    lake: LakeOpt = "lake",
    name: Annotated[str, typer.Option(help="model name; run it with --encoder trained:NAME")] = (
        "ssl"),
    epochs: Annotated[int, typer.Option(min=1, help="maximum epochs")] = 8,
    seed: Annotated[int, typer.Option(help="seed of the split, crops, masks and weights")] = 0,
    patience: Annotated[int, typer.Option(min=1, help="early stopping: epochs without a "
                                          "lower validation loss")] = 2,
    crop: Annotated[int, typer.Option(help="crop edge in voxels (ROI-centred cubes)")] = 32,
    crops_per_sequence: Annotated[int, typer.Option(min=1, help="crops per patient and "
                                                    "sequence")] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 3e-3,
    blocks: Annotated[str, typer.Option(help="maps per Conv3d block")] = "10,10",
    validation: Annotated[float, typer.Option(help="fraction of training patients used for "
                                              "early stopping")] = 0.2,
    holdout: Annotated[float, typer.Option(help="fraction of the cohort never trained on "
                                           "(recorded; the study analyses them apart)")] = 0.0,
    split_seed: Annotated[int, typer.Option(help="seed of the --holdout split (the same for "
                                            "every --seed)")] = 0,
    train_patients: Annotated[str | None, typer.Option(
        help="train only on these patients (comma-separated ids or a file of ids); the others "
        "are held out")] = None,
    cohort: Annotated[str, typer.Option(help="cohort of the lake to train on")] = "main",
    threads: Annotated[int, typer.Option(min=1, help="torch threads (1: identical weights on "
                                         "every CPU)")] = 1,
    device: Annotated[str, typer.Option(help="auto (CUDA if present) | cpu | cuda")] = "auto",
    force: Annotated[bool, typer.Option(help="retrain even if unchanged")] = False,
):
    """Train the encoder self-supervised on ROI crops and store it in the lake."""
    from pipelines.encoder_training import TrainSettings, train_encoder
    from pipelines.lake import Lake

    try:
        block_t = tuple(int(b) for b in blocks.split(","))
    except ValueError:
        raise InputError(f"--blocks expects comma-separated map counts, got {blocks!r}") from None
    settings = TrainSettings(epochs=epochs, seed=seed, patience=patience, crop=crop,
                             crops_per_sequence=crops_per_sequence, batch_size=batch_size, lr=lr,
                             blocks=block_t, validation_fraction=validation,
                             holdout_fraction=holdout, split_seed=split_seed,
                             threads=threads, device=device)
    s = train_encoder(Lake(lake), name, settings, cohort=cohort,
                      train_patients=patient_list(train_patients), force=force)
    state = "unchanged" if s["skipped"] else "trained"
    typer.echo(f"encoder {s['model']} {state}: {s['n_train']} train / {s['n_validation']} "
               f"validation / {s['n_held_out']} held-out patients; best epoch {s['best_epoch']} "
               f"of {s['epochs']}{' (early stop)' if s['stopped_early'] else ''}, validation "
               f"loss {s['best_val_loss']:.6f}, {s['seconds_per_epoch']:.1f} s/epoch on "
               f"{s['device']} -> {s['path']}")
    typer.echo(f"  weights sha256 {s['weights_sha256'][:16]}; run it with "
               f"`drlake run --lake {lake} --encoder trained:{s['model']}`")


def compare_encoders(
    lake: LakeOpt = "lake",
    truth: Annotated[Path | None, typer.Option(
        help="ground_truth.json of a synthetic cohort: which markers are planted, which null")]
    = None,
    encoders: Annotated[str | None, typer.Option(
        help="comma-separated encoder names (default: every encoder in the features table)")]
    = None,
    region: Annotated[str | None, typer.Option(help="mask region (default: the primary one)")]
    = None,
    alpha: Annotated[float, typer.Option(help="Holm-corrected significance level")] = 0.05,
    seed: Annotated[int, typer.Option(help="seed of the survival forests")] = 0,
    trees: Annotated[int, typer.Option(help="trees per survival forest")] = 200,
    cv_repeats: Annotated[int, typer.Option(min=1, help="repeats of the 5-fold CV of the "
                                            "survival AUC")] = 3,
):
    """Compare the lake's encoders: planted-marker power, null false positives, survival AUC,
    DRF stability across seeds; on all patients and on those no trained encoder saw."""
    from pipelines.encoder_study import StudySettings, format_study, run_encoder_study
    from pipelines.lake import Lake

    settings = StudySettings(
        encoders=tuple(e.strip() for e in encoders.split(",") if e.strip()) if encoders
        else None, region=region, alpha=alpha, seed=seed, trees=trees, cv_repeats=cv_repeats)
    r = run_encoder_study(Lake(lake), settings, truth=truth)
    typer.echo(format_study(r["table"]))
    for note in r["notes"]:
        typer.echo(f"note: {note}")
    typer.echo(f"results_encoder_study {r['run_id']}: {len(r['table'])} row(s)")


app.command("compare-encoders")(compare_encoders)
