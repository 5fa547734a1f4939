"""Time `shape_features` on the reference ROIs: median of 5 runs after one warm-up, in ms.

Run single-threaded from the repo root:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/shape.py

Columns: ``paper`` (the 4 paper features), ``fast`` (all but OMBB, MVEE, Moran's I, Geary's C),
``all`` without an image (adds OMBB and MVEE), and ``all+image`` (adds centre of mass shift,
integrated intensity and the O(n^2) Moran's I / Geary's C; only for ROIs under ~30k voxels).
The masks are passed at full image size: cropping is part of the timed work.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.features.shape import shape_features  # noqa: E402

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
CASES = (
    ("brain1", REF / "pyradiomics/brain1_label.nrrd", REF / "pyradiomics/brain1_image.nrrd", 4.4),
    ("lung2", REF / "pyradiomics/lung2_label.nrrd", REF / "pyradiomics/lung2_image.nrrd", 17.0),
    ("synth50k", REF / "bench/synth50k_label.nrrd", REF / "bench/synth_image.nrrd", 16.0),
    ("synth200k", REF / "bench/synth200k_label.nrrd", REF / "bench/synth_image.nrrd", 41.0),
)
MAX_VOXELS_WITH_IMAGE = 30_000


def read(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Return the (z, y, x) array of an image file and its spacing in (z, y, x) order (mm)."""
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), tuple(img.GetSpacing()[::-1])


def median_ms(fn, repeats: int = 5) -> float:
    """Return the median wall time of ``fn()`` in ms over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    """Print one table row per reference ROI."""
    print(
        f"{'roi':<10}{'voxels':>8}{'texture':>9}{'paper':>9}{'fast':>9}{'all':>9}{'all+image':>11}"
    )
    for name, label_path, image_path, texture_ms in CASES:
        if not label_path.exists():
            print(f"{name:<10} missing {label_path}")
            continue
        label, spacing = read(label_path)
        mask = label > 0
        paper = median_ms(lambda m=mask, s=spacing: shape_features(m, s, features="paper"))
        fast = median_ms(lambda m=mask, s=spacing: shape_features(m, s, features="fast"))
        full = median_ms(lambda m=mask, s=spacing: shape_features(m, s, features="all"))
        with_image = "-"
        n = int(mask.sum())
        if n <= MAX_VOXELS_WITH_IMAGE and image_path.exists():
            image = read(image_path)[0].astype(np.float64)
            ms = median_ms(lambda m=mask, s=spacing, i=image: shape_features(m, s, image=i), 3)
            with_image = f"{ms:.1f}"
        print(
            f"{name:<10}{n:>8}{texture_ms:>9.1f}{paper:>9.1f}{fast:>9.1f}{full:>9.1f}"
            f"{with_image:>11}"
        )


if __name__ == "__main__":
    main()
