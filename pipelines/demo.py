"""`drlake demo`: the whole pipeline on a small synthetic cohort, end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipelines.ingest import IngestSettings, ingest
from pipelines.lake import Lake


def run_demo(
    workdir: Path,
    lake_url: str,
    patients: int = 24,
    biopsy_patients: int = 12,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> dict:
    """Synthesise a small cohort into `workdir`, ingest it into the lake and run every stage.

    Returns a dict of what was produced (paths and counts). Rerunning reuses the cohort files
    when they exist for the same settings and skips lake work that is already done.
    """
    from pipelines.synth import make_cohort

    t0 = time.perf_counter()
    workdir = Path(workdir)
    echo(f"[1/2] synthetic cohort: {patients} patients (+{biopsy_patients} biopsy) -> {workdir}")
    make_cohort(
        workdir, n_patients=patients, seed=seed, size="small", biopsy_patients=biopsy_patients
    )
    lake = Lake(lake_url)
    echo(f"[2/2] ingest -> {lake.url}")
    main = ingest(
        workdir / "manifest.csv",
        lake,
        clinical=workdir / "clinical.csv",
        immune=workdir / "immune.csv",
        expression=workdir / "expression.tsv",
        settings=IngestSettings(cohort="main"),
    )
    echo(f"      main cohort: {main}")
    out = {"cohort": str(workdir), "lake": lake.url, "ingest": str(main)}
    if biopsy_patients > 0:
        bio = ingest(
            workdir / "biopsy" / "manifest.csv",
            lake,
            biopsies=workdir / "biopsy" / "biopsies.csv",
            settings=IngestSettings(cohort="biopsy"),
        )
        echo(f"      biopsy cohort: {bio}")
        out["ingest_biopsy"] = str(bio)
    echo(f"done in {time.perf_counter() - t0:.1f} s; lake at {lake.url}")
    echo(f"  volumes: {lake.path('volumes')}")
    echo(f"  tables:  {lake.path('tables')}  (runs: `drlake runs --lake {lake_url}`)")
    return out
