"""Delta tables of the lake: a stage's output is one unit (a killed or failed run leaves nothing
visible), concurrent writers lose nothing, on a local lake and on the loopback S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_cohort_files
from test_analyze import lake_from_tables

from pipelines.exceptions import InputError
from pipelines.ingest import ingest
from pipelines.lake import Lake
from pipelines.sql import run_query

ANALYZE = ["--seed", "1", "--marker-cv", "none", "--trees", "5", "--marker-trees", "5",
           "--permutation-repeats", "1", "--scheduler", "sync"]
RESULTS = ("results_spearman", "results_wilcoxon", "results_survival")


@pytest.fixture(params=["local", "s3"])
def lake_url(request, tmp_path):
    """The URL of an empty lake: a local folder, or a prefix on the loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "lake")
    request.getfixturevalue("s3_server")
    return "s3://drlake/lake"


def drlake(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace", **kw)


def wait_for(cond, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def visible_counts(lake: Lake) -> dict[str, int]:
    return {t: int(run_query(lake, f"SELECT count(*) AS n FROM {t}")["n"].iloc[0])
            for t in RESULTS}


@pytest.mark.parametrize("lake_url", ["local", pytest.param("s3", marks=pytest.mark.slow)],
                         indirect=True)  # s3: about 50 s, in the slow suite
def test_a_killed_analyze_and_its_rerun_leave_one_runs_results(lake_url):
    lake = lake_from_tables(lake_url, 10, 3, 1.0)
    p = drlake("analyze", "--lake", lake_url, *ANALYZE)
    # kill it once its first results are committed to storage (but the run is not ok)
    wait_for(lambda: lake.table("results_spearman").version() is not None, 120, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed = lake.runs(mark_dead=False).iloc[-1]
    assert killed["stage"] == "analyze" and killed["status"] == "running"
    written = lake.read_table("results_spearman", committed=False)
    assert len(written) > 0 and set(written["run_id"]) == {killed["run_id"]}
    assert visible_counts(lake) == dict.fromkeys(RESULTS, 0)

    r = drlake("analyze", "--lake", lake_url, *ANALYZE)
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    runs = lake.runs()
    status = dict(zip(runs["run_id"], runs["status"], strict=True))
    assert status[killed["run_id"]] == "dead"
    rerun = runs.iloc[-1]
    assert rerun["status"] == "ok" and rerun["run_id"] != killed["run_id"]
    counts = visible_counts(lake)
    for t in RESULTS:
        mine = lake.read_table(t)
        assert set(mine["run_id"]) == {rerun["run_id"]}, t
        assert counts[t] == len(mine) > 0, t
    sp = lake.read_table("results_spearman")
    assert len(sp) == len(written)  # the same rows a whole run writes, once


def test_rows_of_a_failed_analyze_are_not_visible(lake_url, monkeypatch):
    from pipelines.analyze import AnalyzeSettings, run_analyze
    from pipelines.scheduler import SchedulerSpec

    lake = lake_from_tables(lake_url, 10, 3, 1.0)

    append = type(lake).append_rows

    def broken(self, table, *a, **k):  # the classifier rows are refused, after the association
        if table == "results_classifier":  # and survival rows were staged
            raise InputError("survival data refused (test)")
        return append(self, table, *a, **k)

    monkeypatch.setattr(type(lake), "append_rows", broken)
    settings = AnalyzeSettings(seed=1, marker_cv="none", trees=5, marker_trees=5,
                               permutation_repeats=1)
    with pytest.raises(InputError, match="refused"):
        run_analyze(lake, settings, SchedulerSpec("sync"), progress=False)
    failed = lake.runs().iloc[-1]
    assert failed["status"] == "failed"
    assert len(lake.read_table("results_spearman", committed=False)) > 0
    assert lake.read_table("results_spearman").empty
    assert visible_counts(lake) == dict.fromkeys(RESULTS, 0)
    assert run_query(lake, "SELECT count(*) AS n FROM results_spearman WHERE run_id = "
                           f"'{failed['run_id']}'")["n"].iloc[0] == 0


def _expression_file(path: Path, pid: str, genes: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"gene": [f"G{i:05d}" for i in range(genes)],
                       pid: rng.gamma(2.0, 5.0, genes).round(4)})
    df.to_csv(path, sep="\t", index=False)
    return path


def test_two_concurrent_ingests_keep_every_row(lake_url, tmp_path):
    root = tmp_path / "c"
    make_cohort_files(root, n=6)
    lines = (root / "manifest.csv").read_text().splitlines()
    clin = (root / "clinical.csv").read_text().splitlines()
    first = root / "first.csv"
    first.write_text("\n".join(lines[:9]) + "\n")  # header + P001-P004 x 2 sequences
    (root / "clin4.csv").write_text("\n".join(clin[:5]) + "\n")
    lake = Lake(lake_url)
    ingest(first, lake, clinical=root / "clin4.csv", progress=False)
    genes = 30_000
    procs = []
    for i, pid in ((5, "P005"), (6, "P006")):
        (root / f"m{i}.csv").write_text(
            lines[0] + "\n" + "\n".join(x for x in lines[1:] if x.startswith(pid)) + "\n")
        (root / f"clin{i}.csv").write_text(clin[0] + "\n" + clin[i] + "\n")
        expr = _expression_file(root / f"expr{i}.tsv", pid, genes, i)
        procs.append(drlake("ingest", str(root / f"m{i}.csv"), "--lake", lake_url,
                            "--clinical", str(root / f"clin{i}.csv"), "--expression",
                            str(expr), "--spacing", "2", "--scheduler", "sync"))
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    ids = [f"P00{i}" for i in range(1, 7)]
    assert sorted(lake.read_table("patients")["patient_id"]) == ids
    assert sorted(lake.read_table("clinical")["patient_id"]) == ids
    expr = lake.read_table("genomic_expression")
    assert len(expr) == 2 * genes
    assert set(expr["patient_id"]) == {"P005", "P006"}
    assert not expr.duplicated(["sample_id", "gene"]).any()
    n = run_query(lake, "SELECT count(*) AS n FROM genomic_expression")["n"].iloc[0]
    assert n == 2 * genes


def test_concurrent_commits_to_one_table_all_land(lake_url):
    """Writers of different keys racing on one table: the library's conflict detection (a
    conditional put on S3) makes the loser retry; nothing is lost or duplicated."""
    lake = Lake(lake_url)
    lake.ensure()
    errors = []

    def write(i: int):
        try:
            rows = pd.DataFrame({"patient_id": [f"Q{i:03d}"], "age": [40.0 + i],
                                 "gender": ["F"], "grade": ["GBM"],
                                 "survival_days": [300.0], "event": [1]})
            lake.upsert_table("clinical", rows)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = lake.read_table("clinical")
    assert sorted(got["patient_id"]) == [f"Q{i:03d}" for i in range(6)]


def test_tables_made_during_a_run_are_in_its_recorded_versions(lake_url):
    """A run that creates a table records its version, and --as-of that run sees its rows. On
    S3 the listing of tables/ is cached by s3fs while delta-rs creates tables behind its back;
    the run log once recorded {"clinical": 0} and an --as-of query returned no rows."""
    lake = Lake(lake_url)
    lake.ensure()
    clinical = pd.DataFrame({"patient_id": ["Q001"], "age": [40.0], "gender": ["F"],
                             "grade": ["GBM"], "survival_days": [300.0], "event": [1]})
    lake.upsert_table("clinical", clinical)
    assert lake.table_names() == ["clinical"]  # lists (and caches) tables/
    with lake.run("test", {}) as run:
        lake.upsert_table("immune_markers", pd.DataFrame(
            {"patient_id": ["Q001"], "marker": ["t_cells_cd8"], "value": [0.1]}),
            run_id=run.run_id)
    assert {"clinical", "immune_markers", "runs"} <= set(Lake(lake_url).table_names())
    runs = lake.runs()
    ok = runs[(runs["run_id"] == run.run_id) & (runs["status"] == "ok")]
    assert "immune_markers" in json.loads(ok["table_versions"].iloc[0])
    got = run_query(lake, "SELECT count(*) AS n FROM immune_markers", as_of=run.run_id)
    assert int(got["n"].iloc[0]) == 1


def test_a_killed_ingest_leaves_no_staging_after_the_next_run(tmp_path):
    root = tmp_path / "c"
    manifest = make_cohort_files(root, n=3, shape=(40, 64, 64), spacing=(1.0, 1.0, 1.0))
    lake = Lake(tmp_path / "lake")
    first = root / "one.csv"
    lines = manifest.read_text().splitlines()
    first.write_text("\n".join(lines[:3]) + "\n")
    ingest(first, lake, progress=False)
    p = drlake("ingest", str(manifest), "--lake", str(lake.root), "--spacing", "0.5",
               "--scheduler", "sync")
    vol = Path(lake.root) / "volumes"
    wait_for(lambda: any(x.name.startswith(".tmp-") for x in vol.iterdir()), 120, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert any(x.name.startswith(".tmp-") for x in vol.iterdir())
    s = ingest(manifest, lake, progress=False)
    assert s.ingested == ["P002", "P003"]
    assert not any(x.name.startswith(".tmp-") for x in vol.iterdir())
    # killed while staging, before its first run-log row: the next run found its staging
    # orphaned (its process is gone) and removed it
    runs = lake.runs()
    assert list(runs["status"]) in (["ok", "ok"], ["ok", "dead", "ok"])
    assert os.path.isdir(vol / "P003.zarr")


# ---- kills at random points, with a reader polling all along -----------------------------------
STAGES = {
    "ingest": lambda c, lake: ["ingest", str(c / "manifest.csv"), "--lake", lake, "--clinical",
                               str(c / "clinical.csv"), "--immune", str(c / "immune.csv"),
                               "--expression", str(c / "expression.tsv"), "--regions-file",
                               str(c / "regions.toml"), "--scheduler", "sync"],
    "run": lambda c, lake: ["run", "--lake", lake, "--blocks", "2,2", "--scheduler", "sync"],
    "analyze": lambda c, lake: ["analyze", "--lake", lake, *ANALYZE],
}
POLLED = ("patients", "clinical", "genomic_expression", "features", "results_spearman",
          "results_survival", "results_classifier")


def _stage(args: list[str]) -> float:
    t0 = time.monotonic()
    p = drlake(*args)
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    return time.monotonic() - t0


def _tables(lake: Lake) -> dict[str, pd.DataFrame]:
    """Every table but the run log, without run ids, in a canonical row order."""
    out = {}
    for name in lake.table_names():
        if name == "runs":
            continue
        df = lake.read_table(name).drop(columns=["run_id"], errors="ignore")
        out[name] = df.sort_values(list(df.columns)).reset_index(drop=True)
    return out


def _count_key(table: str, columns) -> str:
    """The column a table's rows are counted by: the run id where its view shows it."""
    return "run_id" if "run_id" in columns else "patient_id"


class PollingReader(threading.Thread):
    """Counts the visible rows of each table per run id, over and over, through the SQL views."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.seen, self.errors = url, [], []
        self.stop = threading.Event()

    def run(self):
        from pipelines.sql import connect

        while not self.stop.is_set():
            try:
                con = connect(Lake(self.url))
                try:
                    cols: dict[str, set[str]] = {}
                    for t, c in con.execute("SELECT table_name, column_name "
                                            "FROM information_schema.columns").fetchall():
                        cols.setdefault(t, set()).add(c)
                    for t in POLLED:
                        if t not in cols:
                            continue
                        col = _count_key(t, cols[t])
                        for key, n in con.execute(
                                f"SELECT {col}, count(*) FROM {t} GROUP BY ALL").fetchall():
                            self.seen.append((t, key, n))
                finally:
                    con.close()
            except Exception as exc:  # a reader must never fail either
                self.errors.append(repr(exc))
            time.sleep(0.02)


@pytest.mark.slow
def test_kills_at_random_points_then_reruns_equal_a_clean_build(tmp_path):
    cohort = tmp_path / "cohort"
    p = drlake("synth", str(cohort), "--patients", "12", "--biopsy-patients", "0")
    assert p.wait(timeout=300) == 0
    clean = str(tmp_path / "clean")
    took = {name: _stage(make(cohort, clean)) for name, make in STAGES.items()}
    want = _tables(Lake(clean))

    url = str(tmp_path / "killed")
    rng = np.random.default_rng(17)
    reader = PollingReader(url)
    reader.start()
    try:
        for name, make in STAGES.items():
            for _ in range(2):  # two kills per stage, at random points of its clean run time
                p = drlake(*make(cohort, url))
                time.sleep(float(rng.uniform(0.1, 0.9)) * took[name])
                p.send_signal(signal.SIGKILL)
                p.wait()
            _stage(make(cohort, url))
    finally:
        reader.stop.set()
        reader.join(30)
    lake = Lake(url)
    got = _tables(lake)
    assert sorted(got) == sorted(want)
    for t in want:
        pd.testing.assert_frame_equal(got[t], want[t], check_exact=True, obj=t)
    # no staging left behind, no run left 'running'
    leftovers = [f for f in lake.fs.find(lake.root) if "/.tmp-" in f]
    assert leftovers == []
    assert "running" not in set(lake.runs()["status"])
    # the reader never failed and never saw part of a run: every count it saw is the whole
    # run's (what the run's rows number once committed), or the run was later replaced whole
    assert reader.errors == []
    assert reader.seen
    final = {}
    for t in POLLED:
        df = lake.read_table(t, committed=False) if t in lake.table_names() else pd.DataFrame()
        if len(df):
            view = run_query(lake, f"SELECT * FROM {t} LIMIT 0").columns
            col = _count_key(t, view)
            final.update({(t, k): n for k, n in df.groupby(col).size().items()})
    for t, key, n in reader.seen:
        if (t, key) in final:
            assert n == final[(t, key)], (t, key, n)


def _backdate_commit(table, version: int, days: float) -> None:
    """Rewrite the commit and removal times of `version` in the table's log to `days` ago."""
    log = Path(table.path) / "_delta_log" / f"{version:020d}.json"
    when = int((time.time() - days * 86400) * 1000)
    lines = []
    for line in log.read_text().splitlines():
        action = json.loads(line)
        if "commitInfo" in action:
            action["commitInfo"]["timestamp"] = when
        if "remove" in action:
            action["remove"]["deletionTimestamp"] = when
        lines.append(json.dumps(action))
    log.write_text("\n".join(lines) + "\n")
    os.utime(log, (when / 1000, when / 1000))


def test_vacuum_keeps_every_file_the_oldest_kept_version_needs(tmp_path):
    """Versions committed days ago stay readable after a vacuum that keeps them; a vacuum that
    keeps only a later version deletes the files only older versions referenced."""
    lake = Lake(str(tmp_path / "lake"))
    lake.ensure()
    table = lake.table("clinical")

    def rows(age: float) -> pd.DataFrame:
        return pd.DataFrame({"patient_id": ["Q001"], "age": [age], "gender": ["F"],
                             "grade": ["GBM"], "survival_days": [300.0], "event": [1]})

    for v, age in enumerate([40.0, 41.0, 42.0]):
        assert table.upsert(rows(age)) == v
    for v, days in [(0, 10), (1, 5), (2, 1)]:
        _backdate_commit(table, v, days)
    assert abs(table.commit_timestamp(1) - (time.time() - 5 * 86400)) < 60

    assert table.vacuum(keep_from_version=0) == []
    assert table.read(version=0)["age"].tolist() == [40.0]

    deleted = table.vacuum(keep_from_version=2)
    assert len(deleted) == 1  # version 0's file, removed 5 days ago
    assert table.read(version=1)["age"].tolist() == [41.0]
    assert table.read()["age"].tolist() == [42.0]
    with pytest.raises(FileNotFoundError):
        table.read(version=0)


def test_compact_keeps_the_snapshot_an_old_run_recorded(tmp_path):
    """`drlake compact` after a table was replaced keeps the version an older ok run read."""
    from pipelines.maintenance import compact_lake

    lake = Lake(str(tmp_path / "lake"))
    lake.ensure()
    table = lake.table("clinical")
    first = pd.DataFrame({"patient_id": ["Q001", "Q002"], "age": [40.0, 50.0],
                          "gender": ["F", "M"], "grade": ["GBM", "GBM"],
                          "survival_days": [300.0, 400.0], "event": [1, 0]})
    table.upsert(first)
    with lake.run("analyze", {"seed": 1}) as log:
        run = log.run_id
    table.upsert(first.assign(age=[60.0, 70.0]))
    _backdate_commit(table, 0, 3)
    _backdate_commit(table, 1, 2)  # the replaced file has been a tombstone for two days
    compact_lake(lake)
    recorded = json.loads(lake.runs().set_index("run_id").loc[run, "table_versions"])
    assert table.read(version=recorded["clinical"])["age"].tolist() == [40.0, 50.0]
