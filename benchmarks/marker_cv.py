"""Out-of-bag vs leave-one-out estimates of the Fig. 5 marker heatmap on a paper-sized cohort.

    python benchmarks/marker_cv.py --lake demo-lake --truth demo-cohort/ground_truth.json
    python benchmarks/marker_cv.py --lake lake151/            # a lake of >= 100 patients as is

Every (marker, sequence) cell of the heatmap is estimated twice with the analyze stage's own
task (`pipelines.analyze._marker_task`, paper protocol, ``--trees`` trees): by the paper's
pooled LOOCV (n forests per cell) and by one forest's out-of-bag predictions. A lake smaller
than 100 patients is first extended to ``--patients`` with `pipelines.demo.paper_size_check`'s
cohort (its image patients plus patients drawn from their measured DRF-latent relation). Prints
the AUC difference per cell, how often the OOB AUC lies inside the LOOCV AUC's 95% CI, whether
both call the same cells "CI above 0.5", and the time of each estimator.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def cohort(lake_url: str, truth: Path | None, n: int, seed: int):
    """Return (drf, markers, planted) of the lake, extended to n patients when it is small."""
    from pipelines.analyze import load_cohort
    from pipelines.lake import Lake

    lake = Lake(lake_url)
    data = load_cohort(lake)
    if len(data.ids) >= 100 or truth is None:
        return data.drf, data.markers, {}
    import json

    from pipelines.synth import make_tables
    from pipelines.synth.extrapolate import extrapolated_drfs

    g = json.loads(truth.read_text())
    t = make_tables(n, seed=g["seed"], effect_scale=g["effect_scale"])
    lat = t["latent"].set_index("patient_id")
    drf = extrapolated_drfs(data.drf, lat.loc[data.ids], lat, seed=seed)
    planted = {m: s["driver"] for m, s in g["immune"].items() if s["driver"]}
    return drf, t["immune"].set_index("patient_id").astype(float), planted


def main() -> None:
    import dask

    from pipelines.analyze import AnalyzeSettings, _marker_task, _split_feature
    from pipelines.scheduler import SchedulerSpec, run_tasks

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lake", required=True)
    ap.add_argument("--truth", type=Path, default=None)
    ap.add_argument("--patients", type=int, default=151)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    drf, markers, planted = cohort(args.lake, args.truth, args.patients, args.seed)
    n = len(drf)
    pos = np.arange(n)
    mods = sorted({_split_feature(c)[0] for c in drf.columns})
    print(f"{n} patients, {len(markers.columns)} markers x {len(mods)} sequences, "
          f"{args.trees} trees, {args.workers} workers")
    out = {}
    for ev in ("oob", "loocv"):
        s = AnalyzeSettings(marker_trees=args.trees, marker_cv=ev, seed=args.seed)
        tasks = [dask.delayed(_marker_task, pure=False)(
            drf[[c for c in drf.columns if c.startswith(mod + "__")]], markers[mk],
            pos[:100], pos[100:], s, mk, mod) for mk in markers.columns for mod in mods]
        t0 = time.perf_counter()
        res = run_tasks(tasks, SchedulerSpec("processes", args.workers), desc=f"markers {ev}")
        secs = time.perf_counter() - t0
        out[ev] = pd.DataFrame([
            {"marker": r["marker"], "modality": r["modality"], **r["results"][ev].summary()}
            for r in res if ev in r["results"]]).set_index(["marker", "modality"])
        print(f"{ev:>5}: {len(out[ev])} cells in {secs:.0f} s")
    o, lo = out["oob"], out["loocv"].loc[out["oob"].index]
    d = o["auc"] - lo["auc"]
    inside = (o["auc"] >= lo["auc_low95"]) & (o["auc"] <= lo["auc_high95"])
    call_o, call_l = o["auc_low95"] > 0.5, lo["auc_low95"] > 0.5
    print(f"OOB - LOOCV AUC: mean {d.mean():+.3f}, sd {d.std():.3f}, |max| {d.abs().max():.3f}; "
          f"OOB inside the LOOCV 95% CI in {inside.sum()}/{len(d)} cells")
    print(f"cells with CI above 0.5: LOOCV {call_l.sum()}, OOB {call_o.sum()}, both "
          f"{(call_l & call_o).sum()}, disagreeing {(call_l != call_o).sum()}")
    if planted:
        print("| marker | planted | sequence | LOOCV AUC (95% CI) | OOB AUC (95% CI) |")
        print("| --- | --- | --- | --- | --- |")
        for (mk, mod), r in lo.iterrows():
            if mk in planted:
                q = o.loc[(mk, mod)]
                print(f"| {mk} | {planted[mk]} | {mod} | {r.auc:.3f} ({r.auc_low95:.2f}-"
                      f"{r.auc_high95:.2f}) | {q.auc:.3f} ({q.auc_low95:.2f}-"
                      f"{q.auc_high95:.2f}) |")
        null = ~o.index.get_level_values(0).isin(list(planted))
        print(f"null markers: cells with CI above 0.5: LOOCV {call_l[null].sum()}, "
              f"OOB {call_o[null].sum()} of {null.sum()}")


if __name__ == "__main__":
    main()
