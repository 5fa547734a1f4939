"""Power and family-wise error of the seed-000 association tests on synthetic cohorts.

    python benchmarks/power.py --patients 151 --seeds 50

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=151)
    ap.add_argument("--seeds", type=int, default=50)
    args = ap.parse_args()
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
