"""Time the 180-wide DRF view and the DRF x 22-marker Spearman + Holm query on a Delta lake,
before and after compaction.

    python benchmarks/sql.py                       # 151 and 10,000 patients
    python benchmarks/sql.py --patients 151 2000
    python benchmarks/sql.py --patients 2000 --workers 1 --batch 250

For each cohort size a synthetic Delta lake is written the way the quantify stage writes one:
inside a logged ``quantify`` run (``Lake.run``: a ``running`` event, then ``ok``, so readers see
the rows), one features data file per patient x sequence (20 maps x 41 paper quantifiers + 4
shape rows, written with `DeltaTableStore.write_file` by --workers processes), committed with one
`commit_files` per --batch patients (default 500, so the Delta log has several commits); the 22
immune markers per patient are appended with `Lake.append_rows`. Then timed, median of 3 runs:
connecting (defining every view, including the 180-column DRF pivot), materialising the DRF
table, the Spearman + Holm view over all DRF x marker pairs, and the DRF query on the
`drlake sql` sandbox connection (read-only, external access disabled).

The lake is then compacted with `compact_lake` (Delta OPTIMIZE + VACUUM, keeping every version an
``ok`` run recorded) and the same timings are taken again.

Printed, per cohort size: the time to write the lake and to compact it; the features table's data
files in the Delta log and on disk, and its commits, before and after compaction (VACUUM keeps the
small files the run's recorded snapshot needs, so the files on disk do not shrink); one timing row
before and one after compaction. At the end, a table comparing before vs after (seconds before /
after, and the speed-up) for every cohort size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

MODS = ("T1", "T1CE", "T2", "FLAIR")
ENCODER = "bench"
N_MAPS = 20
MARKERS = [f"marker_{j:02d}" for j in range(22)]
TASK_PATIENTS = 25  # patients per worker task (x 4 sequences = 100 data files)


def patient_ids(start: int, stop: int) -> list[str]:
    return [f"P{i:06d}" for i in range(start, stop)]


def _fragment_template() -> pd.DataFrame:
    """Return the region/layer/map/feature columns of one patient x sequence fragment."""
    from pipelines.features.catalogue import preset

    feats = list(preset("paper41"))
    shape = [f for f in preset("paper45") if f not in feats]
    tex_map = np.repeat(np.arange(N_MAPS), len(feats))
    return pd.DataFrame({
        "region": "roi",
        "layer": np.concatenate([1 + tex_map // 10, np.zeros(len(shape), np.int64)]),
        "map": np.concatenate([tex_map % 10, np.zeros(len(shape), np.int64)]),
        "feature": np.concatenate([np.tile(np.array(feats, dtype=object), N_MAPS),
                                   np.array(shape, dtype=object)]),
    })


def write_fragments(lake_url: str, start: int, stop: int, run_id: str, seed: int) -> list[dict]:
    """Write the features data files (not committed) of patients start..stop-1, one per patient
    x sequence as `quantify_patient_modality` does; return their add actions."""
    from pipelines.lake import Lake

    store = Lake(lake_url).table("features")
    template = _fragment_template()
    adds = []
    for i, pid in zip(range(start, stop), patient_ids(start, stop), strict=True):
        rng = np.random.default_rng([seed, i])
        for mod in MODS:
            df = template.copy()
            df.insert(0, "patient_id", pid)
            df.insert(1, "modality", mod)
            df.insert(2, "encoder", ENCODER)
            df["value"] = rng.normal(size=len(df))
            df["run_id"] = run_id
            df["fragment_hash"] = f"bench-{seed}-{mod}"
            add = store.write_file(df, {"modality": mod, "encoder": ENCODER}, pid)
            add["replaces"] = [pid]
            adds.append(add)
    return adds


def write_lake(lake, n: int, batch: int, workers: int, seed: int = 0) -> str:
    """Write the synthetic lake: immune markers (one append), then a logged quantify run whose
    features files are committed every `batch` patients; return the run id."""
    lake.ensure()
    rng = np.random.default_rng(seed)
    for start in range(0, n, 50_000):  # immune markers: a handful of appends at most
        pids = patient_ids(start, min(n, start + 50_000))
        k = len(pids)
        lake.append_rows("immune_markers", pd.DataFrame({
            "patient_id": np.repeat(pids, len(MARKERS)), "marker": np.tile(MARKERS, k),
            "value": rng.uniform(0, 0.3, k * len(MARKERS)).round(3)}))
    store = lake.table("features")
    ctx = get_context("spawn")  # deltalake's runtime threads do not survive a fork
    with (lake.run("quantify", {"benchmark": "sql", "patients": n, "batch": batch}) as run,
          ProcessPoolExecutor(workers, mp_context=ctx) as pool):
        for b0 in range(0, n, batch):
            b1 = min(n, b0 + batch)
            futures = [pool.submit(write_fragments, lake.url, s, min(b1, s + TASK_PATIENTS),
                                   run.run_id, seed)
                       for s in range(b0, b1, TASK_PATIENTS)]
            adds = [a for f in futures for a in f.result()]
            store.commit_files(adds, replace_key="patient_id", run_id=run.run_id,
                               operation="quantify")
        run.message = f"benchmark: {n * len(MODS)} fragment(s) written"
    return run.run_id


def file_counts(lake, table: str = "features") -> tuple[int, int, int]:
    """Return (data files in the Delta log, Parquet data files on disk, commits) of a table."""
    t = lake.table(table).open()
    in_log = t.get_add_actions(flatten=True).num_rows
    on_disk = sum(1 for root, _dirs, files in os.walk(lake.table_dir(table))
                  if "_delta_log" not in root for f in files if f.endswith(".parquet"))
    return in_log, on_disk, t.version() + 1


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure(lake) -> dict:
    """Return the timings (median of 3) and result sizes of the SQL views over `lake`."""
    from pipelines.sql import connect

    cons = []
    t_conn, con = timed(lambda: cons.append(connect(lake)) or cons[-1])
    for c in cons[:-1]:
        c.close()
    try:
        t_drf, tbl = timed(lambda: con.sql("SELECT * FROM drf").to_arrow_table())
        t_sp, (pairs, sig) = timed(lambda: con.execute(
            "SELECT count(*), sum(CASE WHEN p_holm < 0.05 THEN 1 ELSE 0 END) "
            "FROM drf_immune_spearman_all").fetchall()[0])
        rows = con.execute("SELECT count(*) FROM features").fetchone()[0]
    finally:
        con.close()
    sandbox = connect(lake, sandbox=True)
    try:
        t_sb, sb = timed(lambda: sandbox.sql("SELECT * FROM drf").to_arrow_table())
    finally:
        sandbox.close()
    if (sb.num_rows, sb.num_columns) != (tbl.num_rows, tbl.num_columns):
        raise RuntimeError(f"sandbox DRF {sb.shape} differs from DRF {tbl.shape}")
    key = ["patient_id", "encoder", "region"]
    return {"rows": rows, "connect": t_conn, "drf": t_drf, "spearman": t_sp, "sandbox": t_sb,
            "shape": f"{tbl.num_rows}x{tbl.num_columns - len(key)}", "pairs": pairs,
            "significant": sig, "drf_sum": float(np.nansum(
                tbl.drop_columns(key).to_pandas().to_numpy(dtype=float)))}


TIMINGS = (("connect", "connect s"), ("drf", "DRF table s"), ("spearman", "Spearman+Holm s"),
           ("sandbox", "sandbox DRF s"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, nargs="+", default=[151, 10_000])
    ap.add_argument("--batch", type=int, default=500,
                    help="patients per features commit (default 500)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes writing the features files (default 2)")
    args = ap.parse_args()
    from pipelines.lake import Lake
    from pipelines.maintenance import compact_lake

    header = (f"{'patients':>9} {'lake':>7} {'files':>7} {'feature rows':>13} {'connect s':>10} "
              f"{'DRF table s':>12} {'DRF shape':>12} {'Spearman+Holm s':>16} {'pairs':>7} "
              f"{'sandbox DRF s':>14}")
    summary = []
    for n in args.patients:
        with tempfile.TemporaryDirectory() as tmp:
            lake = Lake(Path(tmp) / "lake")
            t0 = time.perf_counter()
            write_lake(lake, n, args.batch, args.workers)
            t_write = time.perf_counter() - t0
            before_files = file_counts(lake)
            before = measure(lake)
            t0 = time.perf_counter()
            compacted = compact_lake(lake)
            t_compact = time.perf_counter() - t0
            after_files = file_counts(lake)
            after = measure(lake)
            if any(before[k] != after[k] for k in ("rows", "shape", "pairs", "significant")) \
                    or not np.isclose(before["drf_sum"], after["drf_sum"]):
                raise RuntimeError(f"results differ after compaction: {before} vs {after}")
            f = compacted.get("features", {})
            print(f"\n{n:,} patients: lake written in {t_write:.1f} s, compacted in "
                  f"{t_compact:.1f} s")
            print(f"  features data files in the Delta log: {before_files[0]:,} -> "
                  f"{after_files[0]:,}; on disk: {before_files[1]:,} -> {after_files[1]:,} "
                  f"(OPTIMIZE added {f.get('files_added', 0)}, removed "
                  f"{f.get('files_removed', 0):,}; VACUUM deleted {f.get('vacuumed', 0)}); "
                  f"commits: {before_files[2]} -> {after_files[2]}")
            print(header)
            for label, m, files in (("before", before, before_files),
                                    ("after", after, after_files)):
                print(f"{n:>9} {label:>7} {files[0]:>7} {m['rows']:>13,} {m['connect']:>10.2f} "
                      f"{m['drf']:>12.2f} {m['shape']:>12} {m['spearman']:>16.2f} "
                      f"{m['pairs']:>7} {m['sandbox']:>14.2f}")
            summary.append((n, before_files[0], after_files[0], before, after))

    print("\nbefore vs after compaction: seconds before / after (speed-up)")
    cols = [f"{title:>23}" for _, title in TIMINGS]
    print(f"{'patients':>9} {'files':>15} " + " ".join(cols))
    for n, fb, fa, before, after in summary:
        cells = []
        for key, _ in TIMINGS:
            b, a = before[key], after[key]
            cells.append(f"{f'{b:.2f} / {a:.2f} ({b / a:.1f}x)':>23}")
        print(f"{n:>9} {f'{fb:,} -> {fa:,}':>15} " + " ".join(cells))


if __name__ == "__main__":
    main()
