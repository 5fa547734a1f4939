"""The whole seed-000 study, files -> report, stage by stage: wall time and peak memory per worker.

    python benchmarks/study.py COHORT_DIR --lake /tmp/study-lake --workers 2
    python benchmarks/study.py COHORT_DIR --lake /tmp/study-lake --workers 1 2 --stages ingest
    python benchmarks/study.py COHORT_DIR --lake /tmp/study-lake --marker-cv loocv

COHORT_DIR is a folder written by `drlake synth` (manifest.csv, regions.toml, clinical.csv,
immune.csv, expression.tsv), e.g. `drlake synth /tmp/cohort151 --patients 151 --size paper
--biopsy-patients 0`; the cohort is not generated here (that is not part of the study's time).

With the ingest stage, each worker count starts from an empty lake (the folder is removed first;
without it the stages run on the lake as it is) and runs ingest,
activations, quantify and analyze on a fresh dask LocalCluster of that many worker processes (one
thread each; a new cluster per stage, so that each worker's peak resident memory, read from the
worker itself, is the stage's own), then the report in this process. Analyze runs with the
default settings unless --marker-cv / --trees say otherwise. The table printed at the end has
one row per stage and worker count; the last rows give the 1 -> N speed-up of each stage.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

STAGES = ("ingest", "activations", "quantify", "analyze", "report")
TARGETS_S = {"ingest": 60, "activations+quantify": 90, "analyze": 90, "report": 15,
             "total": 300}


def peak_rss_mib() -> float:
    """Return this process's peak resident memory (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def on_cluster(workers: int, fn):
    """Run fn(SchedulerSpec) on a fresh LocalCluster; return (result, seconds, worker peaks)."""
    from distributed import Client, LocalCluster

    from pipelines.scheduler import SchedulerSpec

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        sched = SchedulerSpec(address=cluster.scheduler_address)
        t0 = time.perf_counter()
        out = fn(sched)
        seconds = time.perf_counter() - t0
        with Client(cluster) as client:
            rss = sorted(client.run(peak_rss_mib).values())
    return out, seconds, rss


def run_study(cohort: Path, lake_url: str, workers: int, analyze_kw: dict,
              stages: tuple[str, ...]) -> list[dict]:
    """Run the chosen stages of the study once; return one row per stage."""
    from pipelines.analyze import AnalyzeSettings, run_analyze
    from pipelines.encoder import EncoderSpec
    from pipelines.ingest import IngestSettings, ingest
    from pipelines.lake import Lake
    from pipelines.pipeline import run_activations, run_quantify
    from pipelines.quantify import QuantifySettings
    from pipelines.regions import read_regions_file
    from pipelines.report import build_report

    lake = Lake(lake_url)
    rows, state = [], {}
    if "ingest" not in stages and "activations" not in stages:
        print("  (no ingest / activations: analysing the lake as it is)", flush=True)

    def stage(name, fn):
        out, seconds, rss = on_cluster(workers, fn)
        rows.append({"stage": name, "workers": workers, "seconds": seconds, "rss": rss})
        print(f"  {name:<12} {seconds:8.1f} s  peak RSS per worker (MiB): "
              + ", ".join(f"{v:.0f}" for v in rss), flush=True)
        return out

    if "ingest" in stages:
        settings = IngestSettings(regions=read_regions_file(cohort / "regions.toml"))
        stage("ingest", lambda s: ingest(
            cohort / "manifest.csv", lake, clinical=cohort / "clinical.csv",
            immune=cohort / "immune.csv", expression=cohort / "expression.tsv",
            settings=settings, sched=s, progress=False))
    if "activations" in stages:
        state["act"] = stage("activations", lambda s: run_activations(
            lake, EncoderSpec(), s, cohort="main", force=True, progress=False))
    encoder = state["act"]["encoder"] if "act" in state else None
    if "quantify" in stages:
        if encoder is None:
            raise SystemExit("quantify needs the activations stage in the same run")
        stage("quantify", lambda s: run_quantify(
            lake, encoder, QuantifySettings(), s, cohort="main", force=True, progress=False))
    if "analyze" in stages:
        state["an"] = stage("analyze", lambda s: run_analyze(
            lake, AnalyzeSettings(encoder=encoder, **analyze_kw), s, progress=False, force=True))
    if "report" in stages and "an" in state:
        t0 = time.perf_counter()
        build_report(lake, run_id=state["an"]["run_id"])
        seconds = time.perf_counter() - t0
        rows.append({"stage": "report", "workers": workers, "seconds": seconds,
                     "rss": [peak_rss_mib()]})
        print(f"  {'report':<12} {seconds:8.1f} s  (this process)", flush=True)
    return rows


def print_table(rows: list[dict], n_patients: int) -> None:
    """Print the stage table, the grouped targets and the 1 -> N speed-ups."""
    print(f"\n{n_patients} patients; seconds per stage (target in brackets where the issue "
          "sets one)")
    print(f"{'stage':<22} {'workers':>7} {'seconds':>9} {'target':>7}  peak RSS/worker MiB")
    by_w: dict[int, dict[str, float]] = {}
    for r in rows:
        by_w.setdefault(r["workers"], {})[r["stage"]] = r["seconds"]
        t = TARGETS_S.get(r["stage"], "")
        print(f"{r['stage']:<22} {r['workers']:>7} {r['seconds']:>9.1f} {t!s:>7}  "
              + ", ".join(f"{v:.0f}" for v in r["rss"]))
    for w, s in by_w.items():
        if "activations" in s and "quantify" in s:
            print(f"{'activations+quantify':<22} {w:>7} {s['activations'] + s['quantify']:>9.1f} "
                  f"{TARGETS_S['activations+quantify']:>7}")
        print(f"{'total':<22} {w:>7} {sum(s.values()):>9.1f} {TARGETS_S['total']:>7}")
    ws = sorted(by_w)
    if len(ws) > 1:
        base = by_w[ws[0]]
        for w in ws[1:]:
            ups = ", ".join(f"{st} {base[st] / by_w[w][st]:.2f}x" for st in base
                            if st in by_w[w] and by_w[w][st] > 0)
            print(f"speed-up {ws[0]} -> {w} workers: {ups}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cohort", type=Path, help="a folder written by `drlake synth`")
    ap.add_argument("--lake", required=True, help="lake folder (removed and rebuilt)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--marker-cv", choices=("loocv", "oob", "none"), default=None,
                    help="marker heatmap estimate (default: analyze's own default)")
    ap.add_argument("--trees", type=int, default=None, help="survival forest size")
    args = ap.parse_args()
    analyze_kw = {k: v for k, v in (("marker_cv", args.marker_cv), ("trees", args.trees))
                  if v is not None}
    rows = []
    for w in args.workers:
        if "ingest" in args.stages:  # a study from the files: start from an empty lake
            shutil.rmtree(args.lake, ignore_errors=True)
        print(f"{w} worker(s), lake {args.lake}:", flush=True)
        rows += run_study(args.cohort, args.lake, w, analyze_kw, tuple(args.stages))
    import pandas as pd

    patients = pd.read_csv(args.cohort / "manifest.csv")["patient_id"].nunique()
    print_table(rows, patients)


if __name__ == "__main__":
    main()
