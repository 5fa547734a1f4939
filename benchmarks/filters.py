"""Time of each IBSI 2 filter on a paper-size volume's ROI crop (single thread), as the filter
encoder runs it: the ROI box grown by the filter's measured margin, clipped to the volume.

    python benchmarks/filters.py                      # both shipped banks
    python benchmarks/filters.py --bank my_bank.toml

One synthetic paper-size patient (1 mm, about 256^2 in-plane) is generated and ingested first
(not timed); each filter is then applied to its T1CE crop, best of --repeats runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bank", action="append", default=None,
                    help="bank name or file (default: every shipped bank)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", default="paper", choices=["small", "paper"])
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    from pipelines.activations import roi_crop_box
    from pipelines.filters.encoder import WHOLE_VOLUME, FilterEncoder, load_bank, shipped_banks
    from pipelines.ingest import IngestSettings, ingest
    from pipelines.lake import Lake
    from pipelines.regions import read_regions_file
    from pipelines.synth import make_cohort

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_cohort(Path(tmp) / "c", n_patients=1, seed=0, size=args.size,
                            biopsy_patients=0, progress=False)
        lake = Lake(Path(tmp) / "lake")
        ingest(paths["manifest"], lake, progress=False,
               settings=IngestSettings(regions=read_regions_file(paths["regions"])))
        pid = lake.read_table("patients")["patient_id"].iloc[0]
        vol = lake.read_volume(pid, ["T1CE"])
    img, roi = vol.images["T1CE"].astype("float64"), vol.masks["T1CE"] > 0
    spacing = float(vol.attrs["spacing_zyx"][0])
    print(f"volume {img.shape} at {spacing} mm, ROI {int(roi.sum())} voxels; single thread, "
          f"best of {args.repeats}")
    print("| bank | filter (map) | margin vox | crop (z, y, x) | seconds |")
    print("| --- | --- | --- | --- | --- |")
    with threadpool_limits(1):
        for ref in args.bank or shipped_banks():
            bank = load_bank(ref)
            total = 0.0
            for spec in bank.specs:
                enc = FilterEncoder(type(bank)(bank.name, (spec,)))
                margin = enc.margin(spacing)
                box = roi_crop_box(roi, margin, 1)
                crop = img[tuple(slice(a, b) for a, b in box)]
                best = float("inf")
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    spec.apply(crop, (spacing,) * 3)
                    best = min(best, time.perf_counter() - t0)
                total += best
                shown = "whole" if margin >= WHOLE_VOLUME else str(margin)
                print(f"| {bank.name} | {spec.label} | {shown} | {crop.shape} | {best:.3f} |")
            print(f"| {bank.name} | **whole bank, one sequence** | | | {total:.2f} |")


if __name__ == "__main__":
    main()
