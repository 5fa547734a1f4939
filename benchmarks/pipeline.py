"""Wall time and peak memory per worker of activations + quantify on an ingested lake.

    python benchmarks/pipeline.py --lake /path/to/lake --workers 1 2
    python benchmarks/pipeline.py --lake /path/to/lake --workers 2 --replicate 4
    python benchmarks/pipeline.py --lake /path/to/lake --workers 2 --encoder filters:bank.toml

Each configuration runs on a fresh dask LocalCluster of worker processes (one thread each) with
--force, so every patient is recomputed; the peak resident memory of every worker process is read
from the worker itself (ru_maxrss) after the run. --replicate K first copies the lake's main
cohort K times under new patient ids (volumes, hard-linked where the file system allows, and
patients rows; the copies are real lake entries), to show that memory per worker stays flat as
the cohort grows.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time

import pandas as pd


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link src to dst (a volume's chunks are never rewritten in place), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def replicate_cohort(lake, k: int) -> list[str]:
    """Copy the main cohort's volumes k-1 times under ids '<id>-rN'; return all patient ids."""
    from pipelines.lake import Lake

    assert isinstance(lake, Lake) and lake.is_local
    pats = lake.read_table("patients")
    base = pats[pats["cohort"] == "main"]
    base = base[~base["patient_id"].str.contains(r"-r\d+$")]
    rows = []
    for r in range(1, k):
        for row in base.itertuples(index=False):
            new = f"{row.patient_id}-r{r}"
            dst = lake.path("volumes", f"{new}.zarr")
            if not lake.exists("volumes", f"{new}.zarr"):  # hard links: the copies cost no disk
                shutil.copytree(lake.path("volumes", f"{row.patient_id}.zarr"), dst,
                                copy_function=_link_or_copy)
            d = row._asdict()
            d.update(patient_id=new, volume_path=f"volumes/{new}.zarr")
            rows.append(d)
    if rows:
        lake.upsert_table("patients", pd.DataFrame(rows))
    return list(base["patient_id"]) + [r["patient_id"] for r in rows]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(lake, patients: list[str], workers: int, encoder: str = "seeded") -> dict:
    from distributed import LocalCluster

    from pipelines.encoder import spec_from_options
    from pipelines.pipeline import run_activations, run_quantify
    from pipelines.scheduler import SchedulerSpec

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        sched = SchedulerSpec(address=cluster.scheduler_address)
        t0 = time.perf_counter()
        act = run_activations(lake, spec_from_options(weights=encoder), sched, cohort=None,
                              patients=patients, force=True, progress=False)
        t1 = time.perf_counter()
        run_quantify(lake, act["encoder"], sched=sched, cohort=None, patients=patients,
                     force=True, progress=False)
        t2 = time.perf_counter()
        from distributed import Client

        with Client(cluster) as client:
            rss = client.run(peak_rss_mib)
    return {"workers": workers, "patients": len(patients), "maps": sum(
                len(n) for n in act_maps(act)), "activations_s": t1 - t0,
            "quantify_s": t2 - t1, "total_s": t2 - t0, "peak_rss_mib": sorted(rss.values())}


def act_maps(act: dict) -> list[list[str]]:
    """Return the map names per layer of an activations summary's encoder."""
    ident = act["encoder_identity"]
    if "map_names" in ident:
        return [ident["map_names"]]
    arch = ident["architecture"]
    return [["image"]] if arch["type"] == "identity" else [list(range(b)) for b in arch["blocks"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lake", required=True)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--replicate", type=int, default=1)
    ap.add_argument("--encoder", default="seeded",
                    help="seeded | identity | filters:NAME_OR_FILE (a filter bank)")
    args = ap.parse_args()

    from pipelines.lake import Lake
    from pipelines.pipeline import cohort_patients

    lake = Lake(args.lake)
    if args.replicate > 1:
        patients = replicate_cohort(lake, args.replicate)
    else:
        patients = [p for p, _ in cohort_patients(lake, "main")]
        patients = [p for p in patients if "-r" not in p]
    results = [run_once(lake, patients, w, args.encoder) for w in args.workers]
    n_maps = results[0]["maps"]
    print(f"lake {lake.url}: {len(patients)} patients x 4 sequences x {n_maps} maps "
          f"(encoder {args.encoder})")
    print(f"{'workers':>7} {'activations s':>14} {'quantify s':>11} {'total s':>8} "
          f"{'maps/s':>7}  peak RSS per worker (MiB)")
    for r in results:
        rate = r["patients"] * 4 * n_maps / r["quantify_s"]
        rss = ", ".join(f"{v:.0f}" for v in r["peak_rss_mib"])
        print(f"{r['workers']:>7} {r['activations_s']:>14.1f} {r['quantify_s']:>11.1f} "
              f"{r['total_s']:>8.1f} {rate:>7.0f}  {rss}")
    if len(results) > 1:
        base = results[0]["total_s"]
        for r in results[1:]:
            print(f"speedup {results[0]['workers']} -> {r['workers']} workers: "
                  f"{base / r['total_s']:.2f}x")


if __name__ == "__main__":
    main()
