"""Time to build the 180-wide DRF view and to run the DRF x 22-marker Spearman + Holm query.

    python benchmarks/sql.py                       # 151 and 10,000 patients
    python benchmarks/sql.py --patients 151 2000

For each cohort size a synthetic lake is written directly as Parquet (one features fragment per
patient x sequence with 20 maps x 41 paper quantifiers + 4 shape rows, like the quantify stage
writes, and an immune_markers table with 22 markers), then timed: connecting (defining every view,
including the 180-column DRF pivot), materialising the DRF table, and the Spearman + Holm view
over all DRF x marker pairs. Median of 3 runs. The same DRF query is then timed on the
`drlake sql` sandbox connection (the lake read through the read-only filesystem).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MODS = ("T1", "T1CE", "T2", "FLAIR")


def write_lake(root: Path, n: int, seed: int = 0) -> None:
    """Write features (per sequence: one Parquet file per 500 patients) and immune markers."""
    from pipelines.features.catalogue import preset
    from pipelines.schemas import load_schema

    rng = np.random.default_rng(seed)
    feats = preset("paper41")
    shape = [f for f in preset("paper45") if f not in feats]
    schema = load_schema("features").arrow_schema()
    pids = np.array([f"P{i:06d}" for i in range(n)])
    for mod in MODS:
        folder = root / "tables" / "features" / f"modality={mod}" / "encoder=bench"
        folder.mkdir(parents=True, exist_ok=True)
        for start in range(0, n, 500):
            chunk = pids[start:start + 500]
            k = len(chunk)
            tex_p = np.repeat(chunk, 20 * len(feats))
            tex_map = np.tile(np.repeat(np.arange(20), len(feats)), k)
            tex_f = np.tile(np.array(feats), 20 * k)
            shp_p = np.repeat(chunk, len(shape))
            shp_f = np.tile(np.array(shape), k)
            tbl = pa.table({
                "patient_id": np.concatenate([tex_p, shp_p]),
                "modality": np.full(len(tex_p) + len(shp_p), mod),
                "encoder": np.full(len(tex_p) + len(shp_p), "bench"),
                "region": np.full(len(tex_p) + len(shp_p), "roi"),
                "layer": np.concatenate([1 + tex_map // 10, np.zeros(len(shp_p), int)]),
                "map": np.concatenate([tex_map % 10, np.zeros(len(shp_p), int)]),
                "feature": np.concatenate([tex_f, shp_f]),
                "value": rng.normal(size=len(tex_p) + len(shp_p)),
                "run_id": np.full(len(tex_p) + len(shp_p), "bench"),
            }, schema=schema)
            pq.write_table(tbl, folder / f"batch{start // 500:04d}.parquet")
    markers = [f"marker_{j:02d}" for j in range(22)]
    imm = pd.DataFrame({"patient_id": np.repeat(pids, 22), "marker": np.tile(markers, n),
                        "value": rng.uniform(0, 0.3, n * 22).round(3)})
    (root / "tables" / "immune_markers").mkdir(parents=True, exist_ok=True)
    imm.to_parquet(root / "tables" / "immune_markers" / "data.parquet", index=False)


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, nargs="+", default=[151, 10_000])
    args = ap.parse_args()
    from pipelines.lake import Lake
    from pipelines.sql import connect

    print(f"{'patients':>9} {'feature rows':>13} {'connect s':>10} {'DRF table s':>12} "
          f"{'DRF shape':>12} {'Spearman+Holm s':>16} {'pairs':>7} {'sandbox DRF s':>14}")
    for n in args.patients:
        with tempfile.TemporaryDirectory() as tmp:
            write_lake(Path(tmp), n)
            lake = Lake(tmp)
            t_conn, con = timed(lambda lake=lake: connect(lake))

            def drf(con=con):
                return con.sql("SELECT * FROM drf").to_arrow_table()

            t_drf, tbl = timed(drf)

            def spearman(con=con):
                return con.execute(
                    "SELECT count(*), sum(CASE WHEN p_holm < 0.05 THEN 1 ELSE 0 END) "
                    "FROM drf_immune_spearman_all").fetchall()[0]

            t_sp, (pairs, _sig) = timed(spearman)
            rows = con.execute("SELECT count(*) FROM features").fetchone()[0]
            con.close()
            sandbox = connect(lake, sandbox=True)
            t_sb, _ = timed(lambda sandbox=sandbox: sandbox.sql("SELECT * FROM drf")
                            .to_arrow_table())
            sandbox.close()
            shape = f"{tbl.num_rows}x{tbl.num_columns - 2}"
            print(f"{n:>9} {rows:>13,} {t_conn:>10.2f} {t_drf:>12.2f} {shape:>12} "
                  f"{t_sp:>16.2f} {pairs:>7} {t_sb:>14.2f}")


if __name__ == "__main__":
    main()
