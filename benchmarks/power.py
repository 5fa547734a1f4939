"""Power and family-wise error of the seed-000 association tests on synthetic cohorts.

    python benchmarks/power.py --patients 151 --seeds 50
    python benchmarks/power.py --estimators --sizes 24 60 151 --seeds 20

With --estimators: the survival-classifier AUC estimators on null cohorts (clinical features
age and gender, labels independent of them) at each size: the mean AUC of pooled LOOCV, repeated
stratified 5 x 10 CV, out-of-bag and leave-pair-out (at most --max-pairs pairs), which should be
0.5; pooled LOOCV's is known to fall below it at small n. Then the same estimators on signal
cohorts at --patients (the planted latent-driven DRF-like features plus age and gender; label
survival above the median): their mean AUC and their power, the share of cohorts whose 95% CI
lies above 0.5.

For each seed: the synthetic cohort's tables (pipelines.synth.make_tables) with DRF-like
features driven by its latent factors (effect_scale 1) or by nothing (effect_scale 0, the null
cohort); Spearman and Wilcoxon on the training split (n_train = 100 of 151), Holm over the whole
heatmap. Prints the fraction of seeds in which the planted pairs are found (power) and in which
anything at all is significant on the null cohort (family-wise error; should be <= ~5% per test).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def null_estimators(sizes: list[int], seeds: int, trees: int, max_pairs: int) -> None:
    """Print the mean (and its standard error) AUC of each estimator on null cohorts."""
    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()
    print(f"null cohorts: {seeds} per size, {trees} trees, leave-pair-out <= {max_pairs} pairs")
    print("| n | pooled LOOCV | repeated 5x10 CV | OOB | leave-pair-out |")
    print("| --- | --- | --- | --- | --- |")
    for n in sizes:
        aucs: dict[str, list[float]] = {k: [] for k in ESTIMATORS}
        for s in range(seeds):
            rng = np.random.default_rng(5000 + 97 * n + s)
            X = pd.DataFrame({"age": rng.normal(55, 14, n).round(),
                              "gender": rng.integers(0, 2, n).astype(float)})
            y = rng.permutation(np.arange(n) % 2)
            for k, r in zip(aucs, _estimates(X, y, s, trees, max_pairs), strict=True):
                aucs[k].append(r.auc)
        cells = [f"{np.mean(v):.3f} +/- {np.std(v, ddof=1) / np.sqrt(len(v)):.3f}"
                 for v in aucs.values()]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(f"({time.perf_counter() - t0:.0f} s)")


ESTIMATORS = ("pooled LOOCV", "repeated 5x10 CV", "OOB", "leave-pair-out")


def _estimates(X, y, seed: int, trees: int, max_pairs: int) -> list:
    from pipelines.stats.classify import rf_leave_pair_out, rf_loocv, rf_oob, rf_repeated_cv

    return [rf_loocv(X, y, seed=seed, n_estimators=trees, permutation_repeats=0),
            rf_repeated_cv(X, y, seed=seed, n_estimators=trees),
            rf_oob(X, y, seed=seed, n_estimators=trees),
            rf_leave_pair_out(X, y, seed=seed, n_estimators=trees, max_pairs=max_pairs)]


def signal_estimators(n: int, seeds: int, trees: int, max_pairs: int) -> None:
    """Print each estimator's mean AUC and power (95% CI above 0.5) on planted cohorts."""
    import numpy as np
    from test_analyze import planted_frames

    from pipelines.synth import make_tables

    t0 = time.perf_counter()
    aucs = {k: [] for k in ESTIMATORS}
    above = {k: 0 for k in ESTIMATORS}
    for s in range(seeds):
        f, _ = planted_frames(n, 3000 + s, 1.0)
        clin = make_tables(n, seed=3000 + s, effect_scale=1.0)["clinical"].set_index("patient_id")
        X = f.join(clin[["age"]]).assign(gender=(clin["gender"] == "M").astype(float))
        days = clin.loc[X.index, "survival_days"].to_numpy()
        y = (days > np.median(days)).astype(int)
        for k, r in zip(ESTIMATORS, _estimates(X, y, s, trees, max_pairs), strict=True):
            aucs[k].append(r.auc)
            above[k] += bool(r.auc_low95 > 0.5)
    print(f"signal cohorts: {seeds} of {n} patients, {trees} trees "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| estimator | mean AUC | power (95% CI above 0.5) |")
    print("| --- | --- | --- |")
    for k in ESTIMATORS:
        v = aucs[k]
        print(f"| {k} | {np.mean(v):.3f} +/- {np.std(v, ddof=1) / np.sqrt(len(v)):.3f} | "
              f"{above[k] / seeds:.0%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=151)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--estimators", action="store_true",
                    help="mean AUC of each survival-classifier estimator on null cohorts")
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 60, 151])
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--max-pairs", type=int, default=100)
    args = ap.parse_args()
    if args.estimators:
        null_estimators(args.sizes, args.seeds, args.trees, args.max_pairs)
        signal_estimators(args.patients, args.seeds, args.trees, args.max_pairs)
        return
    from test_analyze import planted_frames

    from pipelines.stats.association import spearman_matrix, wilcoxon_groups
    from pipelines.stats.splits import train_test_split_ids

    planted = [("T1CE__szm_lze", "t_cells_cd8"), ("T1CE__szm_lze", "t_cells_cd4_memory_resting"),
               ("T2__szm_lze", "neutrophils"), ("T2__szm_lze", "macrophages_m1")]
    found = {p: 0 for p in planted}
    null_sp = null_wx = 0
    t0 = time.perf_counter()
    n_train = round(args.patients * 100 / 151)
    for s in range(args.seeds):
        for scale in (1.0, 0.0):
            f, m = planted_frames(args.patients, 1000 + s, scale)
            train, _ = train_test_split_ids(list(f.index), n_train=n_train, seed=s)
            sp = spearman_matrix(f.loc[train], m.loc[train])
            if scale:
                sig = set(zip(sp.feature[sp.significant], sp.marker[sp.significant], strict=True))
                for p in planted:
                    found[p] += p in sig
            else:
                null_sp += bool(sp["significant"].any())
                null_wx += bool(wilcoxon_groups(f.loc[train], m.loc[train])["significant"].any())
    print(f"{args.seeds} seeds, {args.patients} patients (training split {n_train}), "
          f"{time.perf_counter() - t0:.0f} s")
    for p, k in found.items():
        print(f"power  {p[0]:>16} ~ {p[1]:<28} {k / args.seeds:6.1%}")
    print(f"null cohort: seeds with any Holm-significant Spearman  {null_sp / args.seeds:6.1%}")
    print(f"null cohort: seeds with any Holm-significant Wilcoxon  {null_wx / args.seeds:6.1%}")


if __name__ == "__main__":
    main()
