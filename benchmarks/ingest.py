"""Ingest wall time and peak memory (RSS of the ingest process) on synthetic cohorts.

    python benchmarks/ingest.py                         # small demo cohort (24 patients)
    python benchmarks/ingest.py --size paper --patients 151

The cohort files are generated first (not timed); ingest then runs in a child process so that its
peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time, resource
from pipelines.ingest import ingest, IngestSettings
from pipelines.lake import Lake
root, lake = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
s = ingest(f"{root}/manifest.csv", Lake(lake), clinical=f"{root}/clinical.csv",
           immune=f"{root}/immune.csv", expression=f"{root}/expression.tsv", progress=False)
t1 = time.perf_counter()
s2 = ingest(f"{root}/manifest.csv", Lake(lake), clinical=f"{root}/clinical.csv",
            immune=f"{root}/immune.csv", expression=f"{root}/expression.tsv", progress=False)
t2 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0, "reingest_seconds": t2 - t1, "patients": len(s.ingested),
                  "reingested": len(s2.ingested),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="small", choices=["small", "paper"])
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: temp)")
    args = ap.parse_args()

    from pipelines.synth import make_cohort

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        cohort = work / "cohort"
        t0 = time.perf_counter()
        make_cohort(cohort, n_patients=args.patients, seed=args.seed, size=args.size,
                    biopsy_patients=0, progress=False)
        synth_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in cohort.rglob("*") if f.is_file()) / 2**20
        out = subprocess.run([sys.executable, "-c", CHILD, str(cohort), str(work / "lake")],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        lake_mb = sum(f.stat().st_size for f in (work / "lake").rglob("*") if f.is_file()) / 2**20
    print(f"cohort: {args.patients} patients, size={args.size}, {size_mb:.0f} MiB of input files "
          f"(synth {synth_s:.1f} s, not counted)")
    per = r["seconds"] / args.patients
    print(f"ingest wall time:   {r['seconds']:.1f} s  ({per:.2f} s/patient)")
    print(f"reingest (no-op):   {r['reingest_seconds']:.2f} s, "
          f"{r['reingested']} patients rewritten")
    print(f"peak memory (RSS):  {r['peak_rss_mib']:.0f} MiB")
    print(f"lake size:          {lake_mb:.0f} MiB")


if __name__ == "__main__":
    main()
