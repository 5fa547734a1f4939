"""Ingest wall time and peak memory (RSS of the ingest process) on synthetic cohorts.

    python benchmarks/ingest.py                         # small demo cohort (24 patients)
    python benchmarks/ingest.py --size paper --patients 151 --workers 1,2
    python benchmarks/ingest.py --memory                # one 512 x 512 x 400 float32 image
    python benchmarks/ingest.py --memory --shape 256,256,200 --format nrrd

The cohort files are generated first (not timed); ingest then runs in a child process so that its
peak resident memory (ru_maxrss) is its own. With --memory, one image of the given shape (x, y, z;
1 mm voxels, so the resampled grid has the same size) is ingested after a tiny warm-up ingest, and
the peak RSS of the ingest alone (the kernel's high-water mark, reset just before it) is reported
with its ratio to the image's float32 bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time, resource
from pipelines.ingest import ingest, IngestSettings
from pipelines.lake import Lake
from pipelines.regions import read_regions_file
from pipelines.scheduler import SchedulerSpec
root, lake, scheduler, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sched = SchedulerSpec(scheduler, workers)
settings = IngestSettings(regions=read_regions_file(f"{root}/regions.toml"))
kw = dict(clinical=f"{root}/clinical.csv", immune=f"{root}/immune.csv",
          expression=f"{root}/expression.tsv", progress=False, sched=sched, settings=settings)
t0 = time.perf_counter()
s = ingest(f"{root}/manifest.csv", Lake(lake), **kw)
t1 = time.perf_counter()
s2 = ingest(f"{root}/manifest.csv", Lake(lake), **kw)
t2 = time.perf_counter()
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": t1 - t0, "reingest_seconds": t2 - t1, "patients": len(s.ingested),
                  "reingested": len(s2.ingested), "peak_rss_mib": rss / 1024}))
"""

MEMORY_CHILD = """
import json, os, resource, sys, time
from pipelines.ingest import ingest
from pipelines.lake import Lake
work = sys.argv[1]
ingest(f"{work}/warmup/manifest.csv", Lake(f"{work}/warmup-lake"), progress=False)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None

base = status("VmRSS")
try:  # reset the high-water mark so that VmHWM is the peak of the ingest alone
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
t0 = time.perf_counter()
ingest(f"{work}/big/manifest.csv", Lake(f"{work}/lake"), progress=False)
seconds = time.perf_counter() - t0
peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "reset": reset, "seconds": seconds}))
"""


def write_one_image_cohort(folder: Path, shape_xyz: tuple[int, int, int], fmt: str) -> int:
    """Write one float32 image (x, y, z voxels of 1 mm) with a ball mask and a manifest; return the
    image's float32 bytes."""
    import numpy as np
    import SimpleITK as sitk

    nx, ny, nz = shape_xyz
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:nz, :ny, :nx]
    ball = ((x - nx / 2) ** 2 + (y - ny / 2) ** 2 + (z - nz / 2) ** 2) <= (min(shape_xyz) / 4) ** 2
    arr = rng.normal(100.0, 20.0, size=(nz, ny, nx)).astype(np.float32)
    arr[ball] += 200.0
    ext = {"nifti": "nii.gz", "nrrd": "nrrd"}[fmt]
    for name, a in (("image", arr), ("mask", ball.astype(np.uint8))):
        sitk.WriteImage(sitk.GetImageFromArray(a), str(folder / f"{name}.{ext}"),
                        useCompression=True, compressionLevel=1)
    (folder / "manifest.csv").write_text(
        f"patient_id,modality,image,mask\nB1,T1,image.{ext},mask.{ext}\n")
    return arr.nbytes


def memory_benchmark(args) -> None:
    """Peak RSS of ingesting one image, and its ratio to the image's float32 bytes."""
    shape = tuple(int(v) for v in args.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for old in ("lake", "warmup-lake"):  # a kept workdir: ingest again, do not skip
            shutil.rmtree(work / old, ignore_errors=True)
        t0 = time.perf_counter()
        write_one_image_cohort(work / "warmup", (16, 16, 8), args.format)
        nbytes = write_one_image_cohort(work / "big", shape, args.format)
        write_s = time.perf_counter() - t0
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(work)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 2**20
    added = r["peak"] - r["base"]
    print(f"image: {' x '.join(map(str, shape))} float32 ({args.format}), "
          f"{nbytes / mib:.0f} MiB of voxels (files written in {write_s:.1f} s, not counted)")
    print(f"ingest wall time:      {r['seconds']:.1f} s")
    print(f"RSS before ingest:     {r['base'] / mib:.0f} MiB (interpreter, imports, warm-up)")
    print(f"peak RSS during it:    {r['peak'] / mib:.0f} MiB"
          + ("" if r["reset"] else " (ru_maxrss: high-water mark could not be reset)"))
    print(f"added by the ingest:   {added / mib:.0f} MiB = {added / nbytes:.2f} x the image's "
          f"float32 bytes (peak RSS / image bytes: {r['peak'] / nbytes:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="small", choices=["small", "paper"])
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: temp)")
    ap.add_argument("--memory", action="store_true",
                    help="measure the peak memory of ingesting one image instead")
    ap.add_argument("--shape", default="512,512,400", help="--memory: image size x,y,z")
    ap.add_argument("--format", default="nifti", choices=["nifti", "nrrd"],
                    help="--memory: image file format")
    ap.add_argument("--workers", default="1,2",
                    help="comma-separated worker counts to time (one ingest each)")
    ap.add_argument("--scheduler", default="threads", choices=["threads", "processes"])
    args = ap.parse_args()
    if args.memory:
        memory_benchmark(args)
        return

    from pipelines.synth import make_cohort

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        cohort = work / "cohort"
        t0 = time.perf_counter()
        make_cohort(cohort, n_patients=args.patients, seed=args.seed, size=args.size,
                    biopsy_patients=0, progress=False)
        synth_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in cohort.rglob("*") if f.is_file()) / 2**20
        runs = []
        for w in (int(v) for v in args.workers.split(",")):
            lake = work / f"lake-{w}"
            shutil.rmtree(lake, ignore_errors=True)
            out = subprocess.run([sys.executable, "-c", CHILD, str(cohort), str(lake),
                                  args.scheduler, str(w)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["workers"] = w
            r["lake_mb"] = sum(f.stat().st_size for f in lake.rglob("*") if f.is_file()) / 2**20
            runs.append(r)
    print(f"cohort: {args.patients} patients, size={args.size}, {size_mb:.0f} MiB of input files "
          f"(synth {synth_s:.1f} s, not counted); scheduler {args.scheduler}")
    print("| workers | ingest s | s/patient | speed-up | reingest s | peak RSS MiB | lake MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['workers']} | {r['seconds']:.1f} | {r['seconds'] / args.patients:.2f} | "
              f"{runs[0]['seconds'] / r['seconds']:.2f}x | {r['reingest_seconds']:.2f} | "
              f"{r['peak_rss_mib']:.0f} | {r['lake_mb']:.0f} |")


if __name__ == "__main__":
    main()
