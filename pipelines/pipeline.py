"""The batch pipeline over a lake: activations -> quantify, as Dask graphs of per-patient tasks.

Each stage function builds one delayed task per patient (activations) or per patient x sequence
(quantify), runs it on the chosen scheduler (see `pipelines.scheduler`) and logs the run. Tasks
read from and write to the lake themselves and return small summaries.
"""

from __future__ import annotations

import json
import logging
import time

import dask
import pandas as pd

from pipelines.encoder import EncoderSpec, build_encoder, spec_as_dict
from pipelines.exceptions import LakeError
from pipelines.lake import Lake
from pipelines.quantify import (
    QuantifySettings,
    existing_fragment_hashes,
    quantify_patient_modality,
)
from pipelines.scheduler import SchedulerSpec, run_tasks

log = logging.getLogger("drlake.pipeline")


def cohort_patients(lake: Lake, cohort: str | None = "main",
                    patients: list[str] | None = None) -> list[tuple[str, list[str]]]:
    """Return [(patient_id, modalities)] of the cohort's patients (or of the given ids)."""
    df = lake.read_table("patients")
    if df.empty:
        raise LakeError(f"{lake.url}: no patients in the lake (run `drlake ingest` first)")
    if patients:
        unknown = sorted(set(patients) - set(df["patient_id"]))
        if unknown:
            raise LakeError(f"{lake.url}: unknown patient(s) {', '.join(unknown)}")
        df = df[df["patient_id"].isin(patients)]
    elif cohort:
        df = df[df["cohort"] == cohort]
        if df.empty:
            raise LakeError(f"{lake.url}: no patients of cohort {cohort!r}")
    return [(r.patient_id, r.modalities.split(",")) for r in df.itertuples()]


def _activations_task(lake: Lake, pid, spec: EncoderSpec, threads, force, token):
    import torch  # noqa: F401  (loaded before its threads are capped)

    from pipelines.activations import patient_activations
    from pipelines.scheduler import limit_task_threads

    limit_task_threads(threads)
    encoder = _cached_encoder(spec)
    return patient_activations(lake, pid, encoder, threads=threads, force=force, token=token)


_ENCODERS: dict = {}


def _cached_encoder(spec: EncoderSpec):
    key = repr(spec)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(spec)
    return _ENCODERS[key]


def encoder_maps_rows(encoder) -> pd.DataFrame:
    """Return the encoder_maps rows of an encoder: what each (layer, map) is."""
    rows = []
    for k, (names, params) in enumerate(zip(encoder.map_names(), encoder.map_params(),
                                            strict=True), start=1):
        for m, (name, spec) in enumerate(zip(names, params, strict=True)):
            rows.append({"encoder": encoder.name, "layer": k, "map": m, "map_name": name,
                         "filter": spec["filter"] if spec else None,
                         "parameters": json.dumps(spec["params"], sort_keys=True)
                         if spec else None})
    return pd.DataFrame(rows)


def run_activations(lake: Lake, spec: EncoderSpec, sched: SchedulerSpec | None = None,
                    cohort: str | None = "main", patients: list[str] | None = None,
                    force: bool = False, progress: bool = True) -> dict:
    """Compute activation maps for the cohort's patients; return a summary with the encoder."""
    sched = sched or SchedulerSpec()
    encoder = build_encoder(spec)
    todo = cohort_patients(lake, cohort, patients)
    threads = sched.threads_per_task()
    params = {"encoder": spec_as_dict(spec), "patients": len(todo)}
    t0 = time.perf_counter()
    with lake.run("activations", params, encoder_hash=encoder.identity_hash) as run:
        tasks = [
            dask.delayed(_activations_task, pure=False)(
                lake, pid, spec, threads, force, run.run_id,
                dask_key_name=f"activations-{pid}",
            )
            for pid, _ in todo
        ]
        results = run_tasks(tasks, sched, desc=f"activations {encoder.name}", progress=progress)
        known = lake.read_table("encoder_maps", committed=False)["encoder"]
        if not (known == encoder.name).any():  # its maps are fixed by its hash
            lake.replace_rows("encoder_maps", encoder_maps_rows(encoder), "encoder",
                              encoder.name, run_id=run.run_id)
        done = sum(not r["skipped"] for r in results)
        run.message = (f"encoder {encoder.name}: {done} patient(s) computed, "
                       f"{len(results) - done} unchanged")
    log.debug("activations: %s (%.1f s)", run.message, time.perf_counter() - t0)
    return {"encoder": encoder.name, "encoder_identity": encoder.describe(), "computed": done,
            "skipped": len(results) - done, "run_id": run.run_id}


def run_quantify(lake: Lake, encoder_name: str, settings: QuantifySettings | None = None,
                 sched: SchedulerSpec | None = None, cohort: str | None = "main",
                 patients: list[str] | None = None, force: bool = False,
                 progress: bool = True) -> dict:
    """Quantify every patient x sequence's activations into the features table."""
    settings = settings or QuantifySettings()
    sched = sched or SchedulerSpec()
    todo = cohort_patients(lake, cohort, patients)
    missing = [pid for pid, _ in todo if not lake.activations(encoder_name, pid).exists()]
    if missing:
        raise LakeError(
            f"{lake.url}: no activations of encoder {encoder_name} for {len(missing)} patient(s) "
            f"(e.g. {missing[0]}); run `drlake run` or the activations stage first"
        )
    params = {"encoder": encoder_name, "settings": settings.as_dict(), "patients": len(todo)}
    threads = sched.threads_per_task()
    t0 = time.perf_counter()
    with lake.run("quantify", params) as run:
        known = {} if force else existing_fragment_hashes(lake, encoder_name)
        tasks = [
            dask.delayed(quantify_patient_modality, pure=False)(
                lake, pid, mod, encoder_name, settings, run.run_id,
                threads, force, known.get((pid, mod)), dask_key_name=f"quantify-{pid}-{mod}",
            )
            for pid, mods in todo
            for mod in mods
        ]
        results = run_tasks(tasks, sched, desc="quantify", progress=progress)
        done = [r for r in results if not r["skipped"]]
        # the whole stage's fragments become visible in one commit, replacing older rows
        lake.table("features").commit_files([r["add"] for r in done], replace_key="patient_id",
                                            run_id=run.run_id, operation="quantify")
        run.message = (f"{len(done)} fragment(s) written ({sum(r['rows'] for r in done)} rows), "
                       f"{len(results) - len(done)} unchanged")
    log.debug("quantify: %s (%.1f s)", run.message, time.perf_counter() - t0)
    return {"written": len(done), "skipped": len(results) - len(done), "run_id": run.run_id,
            "seconds": time.perf_counter() - t0}
