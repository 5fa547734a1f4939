"""A real Dask cluster over an object-store lake: a `dask scheduler` and two `dask worker`
processes on 127.0.0.1 run ingest -> run -> analyze (from the command line, as a user would) into
a lake on the loopback S3 server, and every table, volume and activation map equals those of the
same stages run locally into a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import zarr
from test_ingest import assert_same_volumes, volumes_content

from pipelines.analyze import AnalyzeSettings, run_analyze
from pipelines.encoder import EncoderSpec
from pipelines.ingest import IngestSettings, ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.quantify import QuantifySettings
from pipelines.regions import read_regions_file
from pipelines.scheduler import SchedulerSpec

REPO = Path(__file__).resolve().parents[1]
N_PATIENTS = 10  # the fewest analyze accepts
ENCODER = EncoderSpec(blocks=(2, 2), seed=1)
ENCODER_ARGS = ["--blocks", "2,2", "--seed", "1"]
# intensity features only: the texture families add minutes on two shared cores and nothing
# the cluster or the object store does differently
QUANTIFY = QuantifySettings(families=("firstorder",))
QUANTIFY_ARGS = ["--families", "firstorder"]
ANALYZE = AnalyzeSettings(seed=1, trees=5, marker_trees=5, permutation_repeats=1,
                          marker_cv="none", cv_repeats=1)
ANALYZE_ARGS = ["--seed", "1", "--trees", "5", "--marker-trees", "5", "--permutation-repeats",
                "1", "--marker-cv", "none", "--cv-repeats", "1"]
# columns that differ between two runs of the same stages: when, where and by whom they ran
VOLATILE = {"runs": ("started_at", "ended_at", "pid", "host", "message")}


def start_cluster(tmp_path: Path, procs: list[subprocess.Popen], workers: int = 2) -> str:
    """Start `dask scheduler` and `workers` `dask worker` processes on 127.0.0.1 with this
    process's environment (the S3 endpoint and credentials included) and the repository on
    PYTHONPATH; append each process to `procs` as soon as it is started; return the address."""
    sfile = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}

    def popen(args: list[str], log: str) -> subprocess.Popen:
        with open(tmp_path / log, "wb") as out:
            p = subprocess.Popen([sys.executable, "-m", *args], stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
        procs.append(p)
        return p

    sched = popen(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                   "--no-dashboard", "--scheduler-file", str(sfile)], "scheduler.log")
    deadline = time.monotonic() + 60
    while True:
        try:  # absent, or not yet completely written
            address = json.loads(sfile.read_text())["address"]
            break
        except (OSError, ValueError, KeyError):
            pass
        if sched.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the scheduler did not start: "
                                 + (tmp_path / "scheduler.log").read_text(errors="replace"))
        time.sleep(0.1)
    for i in range(workers):
        popen(["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard",
               "--host", "127.0.0.1", "--name", f"w{i}"], f"worker{i}.log")
    return address


def wait_for_workers(address: str, workers: int) -> None:
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(workers, timeout=120)


def executed_tasks(address: str) -> dict[str, int]:
    """Return worker address -> tasks it has executed so far."""
    from distributed import Client

    with Client(address, timeout="60s") as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def stop(procs: list[subprocess.Popen]) -> list[int]:
    """Terminate the processes (and any children they started), newest first; kill what is left
    after 30 s; return every PID that was stopped."""
    tree: list[psutil.Process] = []
    for p in procs[::-1]:
        try:
            parent = psutil.Process(p.pid)
            tree += [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            pass
    pids = sorted({p.pid for p in procs} | {t.pid for t in tree})
    for t in tree:
        try:
            t.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=30)
    for t in alive:
        try:
            t.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=30)
    for p in procs:  # reap our own children (no zombies)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
    return pids


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def drlake(procs: list[subprocess.Popen], *args: str) -> str:
    """Run a `drlake` command with this process's environment; return its stdout."""
    p = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                         env={**os.environ})
    procs.append(p)
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, f"drlake {' '.join(args)} failed:\n{err}"
    return out


def tables(lake: Lake) -> dict[str, pd.DataFrame]:
    """Every table of the lake without run ids and volatile columns, in a canonical row order."""
    out = {}
    for name in lake.table_names():
        df = lake.read_table(name)
        df = df.drop(columns=[c for c in ("run_id", *VOLATILE.get(name, ())) if c in df.columns])
        out[name] = df.sort_values(list(df.columns)).reset_index(drop=True)
    return out


def activations_content(lake: Lake, encoder: str) -> dict:
    """Return {patient: ({array path: values}, attrs)} of the encoder's activation maps."""
    out = {}
    for pid in sorted(lake.read_table("patients")["patient_id"]):
        g = lake.activations(encoder, pid).open()
        arrays = {path: node[...] for path, node in g.members(max_depth=None)
                  if isinstance(node, zarr.Array)}
        out[pid] = (arrays, {k: v for k, v in g.attrs.items() if k != "run_id"})
    return out


@pytest.mark.slow  # 4-6 min on two shared cores (the cluster's run stage on S3 is most of it)
def test_cluster_on_an_s3_lake_builds_the_same_lake_as_a_local_run(tmp_path, s3_server):
    """`drlake ingest`, `drlake run` and `drlake analyze --scheduler tcp://...` on a scheduler
    and two worker processes, into s3://drlake/lake, give the lake the same stages give run
    locally (sync) into a folder: every table (but run ids and when/where runs ran), every
    volume, every activation map. Every process the test starts is gone at the end."""
    from pipelines.synth import make_cohort

    cohort = tmp_path / "cohort"
    make_cohort(cohort, n_patients=N_PATIENTS, seed=0, size="small", biopsy_patients=0,
                progress=False)
    files = {k: cohort / f for k, f in (("clinical", "clinical.csv"), ("immune", "immune.csv"),
                                        ("expression", "expression.tsv"))}
    url = "s3://drlake/lake"
    remote = Lake(url)
    assert not remote.is_local
    procs: list[subprocess.Popen] = []
    pids: list[int] = []
    try:
        # the workers start after s3_server has set the AWS variables, with this environment
        address = start_cluster(tmp_path, procs)
        assert address.startswith("tcp://127.0.0.1:")

        # the local reference, built in this process while the workers start
        local = Lake(tmp_path / "local")
        sync = SchedulerSpec("sync")
        settings = IngestSettings(regions=read_regions_file(cohort / "regions.toml"))
        s = ingest(cohort / "manifest.csv", local, settings=settings, sched=sync,
                   progress=False, **files)
        assert len(s.ingested) == N_PATIENTS
        act = run_activations(local, ENCODER, sync, progress=False)
        encoder = act["encoder"]
        run_quantify(local, encoder, QUANTIFY, sched=sync, progress=False)
        run_analyze(local, ANALYZE, sync, progress=False)

        # the same stages on the cluster, from the command line, into the S3 lake
        wait_for_workers(address, 2)
        done = sum(executed_tasks(address).values())
        stages = [
            ("ingest", ["ingest", str(cohort / "manifest.csv"), "--lake", url,
                        *(a for k, p in files.items() for a in (f"--{k}", str(p))),
                        "--regions-file", str(cohort / "regions.toml")], N_PATIENTS),
            ("run", ["run", "--lake", url, *ENCODER_ARGS, *QUANTIFY_ARGS], 2 * N_PATIENTS),
            ("analyze", ["analyze", "--lake", url, *ANALYZE_ARGS], 1),
        ]
        for stage, args, n_tasks in stages:
            drlake(procs, *args, "--scheduler", address)
            per_worker = executed_tasks(address)
            assert sum(per_worker.values()) - done >= n_tasks, (stage, per_worker)
            done = sum(per_worker.values())
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
    finally:
        pids = stop(procs)
    assert pids and not [p for p in pids if alive(p)]

    # every table, volume and activation map is the same in both lakes; every difference is
    # collected, so that one run shows all of them
    assert remote.runs()["status"].tolist() == ["ok"] * 4
    got, want = tables(remote), tables(local)
    expected = {"patients", "clinical", "immune_markers", "genomic_expression", "features",
                "encoder_maps", "runs", "results_spearman", "results_wilcoxon",
                "results_survival", "results_classifier", "results_scores",
                "results_importance", "results_marker_auc", "results_marker_scores"}
    assert expected <= set(want), expected - set(want)
    assert sorted(got) == sorted(want)
    differences = []
    for name in want:
        assert len(want[name]) > 0, name
        try:
            pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)
        except AssertionError as exc:
            differences.append(f"table {name}: {exc}")
    try:
        assert_same_volumes(volumes_content(remote), volumes_content(local))
    except AssertionError as exc:
        differences.append(f"volumes: {exc}")
    a, b = activations_content(remote, encoder), activations_content(local, encoder)
    assert a.keys() == b.keys()
    for pid in a:
        if a[pid][0].keys() != b[pid][0].keys() or a[pid][1] != b[pid][1]:
            differences.append(f"activations of {pid}: other arrays or attributes")
            continue
        for path in a[pid][0]:
            if not np.array_equal(a[pid][0][path], b[pid][0][path]):
                differences.append(f"activations of {pid}: {path} differs")
    assert not differences, "the cluster's S3 lake differs from the local one:\n" + "\n\n".join(
        differences)
