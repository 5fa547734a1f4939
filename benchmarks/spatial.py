"""Seed 004 on a synthetic biopsy cohort: training time per epoch, map time per slice, and the
method's figures (grouped and biopsy-split CNN, RF baseline, map vs true field) beside the
seed's.

    python benchmarks/spatial.py                       # 45 patients (~160 biopsies), seed 0
    python benchmarks/spatial.py --patients 20 --quick # timings + one grouped k-fold only
    python benchmarks/spatial.py --workdir /tmp/sp45   # keep (and reuse) the cohort and lake

The cohort is generated and ingested first (not timed). Torch runs with ``--threads`` threads
(default 1: the machine is shared; timings are wall clock and vary with its load).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _fmt(m) -> str:
    return (f"acc {m['accuracy']:.3f} [{m['accuracy_low95']:.3f}, {m['accuracy_high95']:.3f}]  "
            f"AUC {m['auc']:.3f} [{m['auc_low95']:.3f}, {m['auc_high95']:.3f}]")


def time_training(X, y, arch: str, epochs: int, threads: int) -> float:
    """Return seconds per epoch of training ``arch`` on (X, y) (no dev set)."""
    from pipelines.spatial.train import TrainConfig, train_model

    r = train_model(X, y, config=TrainConfig(arch=arch, epochs=epochs, seed=0, threads=threads))
    return r.seconds_per_epoch


def time_map(lake, model, pid: str, settings, tta: bool,
             max_slices: int | None = None) -> tuple[float, int, int]:
    """Return (seconds per slice, slices, voxels) of mapping one patient's whole tumour (or its
    ``max_slices`` central tumour slices)."""
    from pipelines.spatial.maps import map_voxels, predict_map
    from pipelines.spatial.stage import _prepared_stack, _read_images
    from pipelines.spatial.train import predict_proba

    vol = _read_images(lake, pid, settings)
    stack, _ = _prepared_stack(vol.images, settings)
    mask = vol.masks["T1Gd"]
    zs = np.flatnonzero(np.asarray(mask).any(axis=(1, 2)))
    slices = None
    if max_slices and len(zs) > max_slices:
        mid = len(zs) // 2 - max_slices // 2
        slices = [int(z) for z in zs[mid:mid + max_slices]]
    t0 = time.perf_counter()
    predict_map(stack, mask, lambda p: predict_proba(model, p, tta=tta), settings.radius,
                settings.adjacent, slices)
    secs = time.perf_counter() - t0
    n_slices = len(zs) if slices is None else len(slices)
    return secs / n_slices, n_slices, len(map_voxels(mask, slices))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=45)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=100, help="max epochs of the evaluations")
    ap.add_argument("--quick", action="store_true", help="timings + grouped k-fold CNN only")
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: temp)")
    args = ap.parse_args()

    import torch

    from pipelines.lake import Lake
    from pipelines.spatial import SEED_REFERENCE
    from pipelines.spatial.stage import (
        load_model,
        load_patch_set,
        spatial_evaluate,
        spatial_map,
        spatial_patches,
        spatial_train,
        synthetic_biopsy_lake,
    )
    from pipelines.spatial.train import TrainConfig

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        paths = synthetic_biopsy_lake(work / f"spatial-{args.patients}", args.patients,
                                      args.seed)
        lake = Lake(paths["lake"])
        print(f"cohort: {args.patients} biopsy patients, seed {args.seed} "
              f"(synth + ingest {time.perf_counter() - t0:.0f} s, reused if already built)")
        t0 = time.perf_counter()
        s = spatial_patches(lake)
        ps = load_patch_set(lake, s["patch_set"])
        print(f"patches: {s['n']} biopsies x {len(s['channels'])} channels x 17 x 17 in "
              f"{time.perf_counter() - t0:.1f} s ({s['patch_set']})")

        y = (ps.tpm > np.median(ps.tpm)).astype(np.float32)
        n90 = min(90, len(y))  # the seed's training-set size
        print(f"\ntraining time per epoch ({n90} patches, batch 16, augmentation, "
              f"{args.threads} thread(s)):")
        for arch, ep in (("small", 10), ("resnet50", 2)):
            spe = time_training(ps.patches[:n90], y[:n90], arch, ep, args.threads)
            print(f"  {arch:9s} {spe:7.3f} s/epoch")

        cfg = TrainConfig(seed=args.seed, epochs=args.epochs, threads=args.threads)
        t0 = time.perf_counter()
        tr = spatial_train(lake, ps.name, cfg)
        print(f"\nmodel {tr['model']}: best epoch {tr['best_epoch']}/{tr['epochs']}, "
              f"{time.perf_counter() - t0:.1f} s")
        model, meta = load_model(lake, tr["model"])
        pid = meta["patients"]["test"][0]
        print(f"map time per tumour slice (patient {pid}, whole tumour):")
        for tta in (False, True):
            sps, n_sl, n_vox = time_map(lake, model, pid, ps.settings, tta)
            print(f"  small, tta={tta!s:5} {sps:7.3f} s/slice ({n_sl} slices, {n_vox} voxels)")
        big = TrainConfig(arch="resnet50", epochs=1, seed=0, threads=args.threads)
        from pipelines.spatial.train import train_model

        r50 = train_model(ps.patches[:32], y[:32], config=big).model
        sps, n_sl, n_vox = time_map(lake, r50, pid, ps.settings, False, max_slices=3)
        print(f"  resnet50, tta=False {sps:7.3f} s/slice ({n_sl} central slices, {n_vox} "
              "voxels)")

        print(f"\nevaluation (seed {args.seed}; labels: training-set median; DeLong AUC CI, "
              "Wilson accuracy CI):")
        t0 = time.perf_counter()
        out = spatial_evaluate(lake, ps.name, cfg, split="grouped" if args.quick else "biopsy",
                               evaluation="kfold" if args.quick else "both", rf=not args.quick)
        for r in out["results"].itertuples():
            m = r._asdict()
            print(f"  {r.split:8s} {r.evaluation:6s} {r.model:4s} n_test {r.n_test:4d}  "
                  f"{_fmt(m)}")
        print(f"  seed paper (random biopsy split, n_test 30): acc {SEED_REFERENCE['accuracy']:.2f}"
              f", AUC {SEED_REFERENCE['auc']:.2f}")
        for r in out["difference"].itertuples():
            print(f"  biopsy - grouped ({r.evaluation}, {r.model}): AUC {r.auc_difference:+.3f}")
        print(f"  ({time.perf_counter() - t0:.0f} s)")

        t0 = time.perf_counter()
        maps = spatial_map(lake, tr["model"], slices="all", truth_dir=paths["truth_dir"],
                           tta=False, png=True)
        rho = maps["rho_vs_truth"]
        print(f"\nmaps of the {len(maps)} held-out patients (whole tumour, no TTA): Spearman rho "
              f"vs true infiltration median {rho.median():.3f} (range {rho.min():.3f} to "
              f"{rho.max():.3f}), {time.perf_counter() - t0:.0f} s")
        print(f"  lake: {lake.url}")


if __name__ == "__main__":
    main()
