"""Time the quantifier core (`compute_features`) on the reference ROIs, single-threaded.

    .venv/bin/python benchmarks/quantifiers.py [--repeats 5] [--no-cold] [--no-shape]

Each time is the median of ``--repeats`` runs after one warm-up call, in ms, with image and
mask already in memory as full-size arrays (bounding box, crop and discretisation are part of
the timed work). ``texture`` is firstorder + GLCM + GLSZM + NGTDM at 32 levels (IBSI FBN), GLCM
averaged over the 13 directions, in one call; the per-family columns are one call per family
(each repeats the shared crop and discretisation). ``shape`` columns time
`pipelines.features.shape.shape_features` with the paper's 4 features and with the default
"all" that `compute_features(..., families=("shape",))` asks for, if that module imports.

The cold start is measured in fresh subprocesses: ``import + first call`` with the numba cache
already on disk (a normal new process), and with an empty cache directory (numba compiles every
kernel), each for an int16 image (brain1) followed by a float32 one (synth50k).
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipelines.features.extract import compute_features  # noqa: E402

REF = ROOT.parent / "shared" / "reference"
TEXTURE = ("firstorder", "glcm", "glszm", "ngtdm")
#: The IBSI 1 families beyond the paper's (second table: one call per family, ms).
MORE = ("localintensity", "ivh", "glrlm", "gldzm", "ngldm")
#: (name, image, label file, target ms for the texture families together)
CASES = (
    ("brain1", "pyradiomics/brain1_image.nrrd", "pyradiomics/brain1_label.nrrd", 2.2),
    ("lung2", "pyradiomics/lung2_image.nrrd", "pyradiomics/lung2_label.nrrd", 8.5),
    ("synth50k", "bench/synth_image.nrrd", "bench/synth50k_label.nrrd", 8.2),
    ("synth200k", "bench/synth_image.nrrd", "bench/synth200k_label.nrrd", 20.6),
)


def load(image: str, label: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Return (image array, boolean ROI = label 1, spacing (z, y, x) in mm)."""
    img = sitk.ReadImage(str(REF / image))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(REF / label)))
    return sitk.GetArrayFromImage(img), lab == 1, tuple(img.GetSpacing()[::-1])


def median_ms(fn, repeats: int) -> float:
    """Return the median wall time of fn() in ms over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


_COLD = r"""
import os, sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import numpy as np, SimpleITK as sitk
ref = {ref!r}
def load(i, m):
    return (sitk.GetArrayFromImage(sitk.ReadImage(ref + i)),
            sitk.GetArrayFromImage(sitk.ReadImage(ref + m)) == 1)
a, b = load("/pyradiomics/brain1_image.nrrd", "/pyradiomics/brain1_label.nrrd")
c, d = load("/bench/synth_image.nrrd", "/bench/synth50k_label.nrrd")
t1 = time.perf_counter()
from pipelines.features.extract import compute_features
fams = ("firstorder", "glcm", "glszm", "ngtdm")
compute_features(a, b, (1.0, 1.0, 1.0), fams)
t2 = time.perf_counter()
compute_features(c, d, (1.0, 1.0, 1.0), fams)
t3 = time.perf_counter()
print(json.dumps({{"first": t2 - t1, "second_dtype": t3 - t2}}))
"""


def cold_start(empty_cache: bool) -> dict:
    """Return {"first": s, "second_dtype": s} from a fresh interpreter."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if empty_cache:
            env["NUMBA_CACHE_DIR"] = tmp
        code = _COLD.format(root=str(ROOT), ref=str(REF))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def case_row(name, img, roi, spacing, target, repeats, shape_features) -> str:
    """Return the table row of one case (see the module docstring for the columns)."""
    n = int(roi.sum())
    t_all = median_ms(lambda: compute_features(img, roi, spacing, TEXTURE), repeats)
    per = [median_ms(lambda f=f: compute_features(img, roi, spacing, (f,)), repeats)
           for f in TEXTURE]
    ok = "ok" if t_all <= target else "!!"
    row = (f"{name:<10}{n:>8}{t_all:>11.2f}{target:>8.1f}{ok:>4}{n / t_all / 1e3:>7.2f}"
           + "".join(f"{t:>{w}.2f}" for t, w in zip(per, (11, 7, 7, 7), strict=True)))
    if shape_features is not None:
        t_paper = median_ms(lambda: shape_features(roi, spacing, features="paper"), repeats)
        t_shape = median_ms(lambda: shape_features(roi, spacing), repeats)
        row += f"{t_paper:>12.1f}{t_shape:>10.1f}"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start subprocesses")
    ap.add_argument("--no-shape", action="store_true", help="skip the shape columns")
    args = ap.parse_args()

    shape_features = None
    if not args.no_shape:
        try:
            from pipelines.features.shape import shape_features
        except ImportError as e:  # written by another engineer; optional here
            print(f"(shape not timed: {e})")

    head = (f"{'case':<10}{'voxels':>8}{'texture ms':>11}{'target':>8}{'':>4}{'Mvox/s':>7}"
            f"{'firstorder':>11}{'glcm':>7}{'glszm':>7}{'ngtdm':>7}")
    if shape_features is not None:
        head += f"{'shape paper':>12}{'shape all':>10}"
    print(f"single thread, median of {args.repeats} after a warm-up; per-family columns in ms")
    print(head)
    print("-" * len(head))
    loaded = {}
    for name, image, label, target in CASES:
        img, roi, spacing = loaded[name] = load(image, label)
        print(case_row(name, img, roi, spacing, target, args.repeats, shape_features), flush=True)

    print()
    print("the other IBSI 1 families, one call each (ms; 3D, 32 levels, GLRLM averaged):")
    print(f"{'case':<10}{'voxels':>8}" + "".join(f"{f:>16}" for f in MORE))
    for name, *_ in CASES:
        img, roi, spacing = loaded[name]
        times = [median_ms(lambda f=f, a=img, m=roi, s=spacing: compute_features(a, m, s, (f,)),
                           args.repeats) for f in MORE]
        print(f"{name:<10}{int(roi.sum()):>8}" + "".join(f"{t:>16.2f}" for t in times),
              flush=True)

    if not args.no_cold:
        warm = cold_start(empty_cache=False)
        compiled = cold_start(empty_cache=True)
        print()
        print("cold start in a fresh process (import + first call, s):")
        print(f"  numba cache on disk : brain1 int16 {warm['first']:.2f} s, then synth50k "
              f"float32 {warm['second_dtype']:.2f} s")
        print(f"  empty numba cache   : brain1 int16 {compiled['first']:.2f} s, then synth50k "
              f"float32 {compiled['second_dtype']:.2f} s (compiles every kernel)")


if __name__ == "__main__":
    main()
