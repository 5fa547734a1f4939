"""Lake maintenance: `compact_lake` (Delta OPTIMIZE + VACUUM that keeps every version a recorded
run needs) and `migrate_lake` (a drlake 0.1 lake of plain Parquet files to Delta tables)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lake import Lake
from pipelines.schemas import SCHEMA_DIR, load_schema
from pipelines.tables import DeltaTableStore, delta_storage_options

log = logging.getLogger(__name__)


def compact_lake(lake: Lake, vacuum: bool = True, keep_runs: bool = True) -> dict:
    """Compact every table's small files and vacuum files no retained version needs.

    Returns table -> {files_added, files_removed, vacuumed}. With `keep_runs`, every version
    that an ``ok`` run recorded (``runs.table_versions``) stays readable, so `drlake sql
    --as-of RUN_ID` and `drlake report --run RUN_ID` keep working after a vacuum.
    """
    oldest: dict[str, int] = {}
    if keep_runs:
        runs = lake.runs(mark_dead=False)
        for text in runs.get("table_versions", pd.Series(dtype=object)).dropna():
            for t, v in json.loads(text).items():
                oldest[t] = min(oldest.get(t, v), int(v))
    out = {}
    for name in lake.table_names():
        table = lake.table(name)
        m = table.compact()
        vac: list[str] = []
        if vacuum:
            vac = table.vacuum(oldest.get(name) if keep_runs else None)
        out[name] = {"files_added": int(m.get("numFilesAdded", 0)),
                     "files_removed": int(m.get("numFilesRemoved", 0)), "vacuumed": len(vac)}
    if vacuum:
        gone = lake.remove_superseded_groups()
        if gone:
            log.info("removed %d superseded Zarr group version(s)", len(gone))
    return out


def legacy_tables(lake: Lake) -> list[str]:
    """Return the tables of the lake still in the 0.1 layout (Parquet files, no Delta log)."""
    base = lake.path("tables")
    if not lake.fs.exists(base):
        return []
    out = []
    for p in lake.fs.ls(base, detail=False):
        name = p.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(".") or lake.fs.exists(f"{p.rstrip('/')}/_delta_log"):
            continue
        files = [f for f in lake.fs.find(p) if f.endswith(".parquet")
                 and not f.rsplit("/", 1)[-1].startswith(".")]
        if files and (SCHEMA_DIR / f"{name}.json").exists():
            out.append(name)
    return sorted(out)


def _legacy_frame(lake: Lake, name: str, files: list[str]) -> pa.Table:
    """Return a 0.1 table's files as one Arrow table with today's schema (new columns null)."""
    from pipelines.quantify import HASH_KEY

    schema = load_schema(name)
    arrow = schema.arrow_schema()
    parts = []
    for f in files:
        with lake.fs.open(f, "rb") as fh:
            t = pq.read_table(fh)
        meta = t.schema.metadata or {}
        df = t.to_pandas()
        for seg in f.split("/"):  # hive partition values of the old layout
            if "=" in seg and not seg.endswith(".parquet"):
                k, v = seg.split("=", 1)
                if k in schema.names and k not in df.columns:
                    df[k] = v
        if name == "features":
            if "region" not in df.columns:
                df["region"] = "roi"
            if HASH_KEY in meta:
                df["fragment_hash"] = meta[HASH_KEY].decode()
        if name == "runs":
            df["table_versions"] = None
        for c in schema.columns:
            if c.name not in df.columns:
                df[c.name] = None
        parts.append(pa.Table.from_pandas(df[schema.names], preserve_index=False)
                     .cast(arrow, safe=False))
    return pa.concat_tables(parts) if parts else arrow.empty_table()


def migrate_lake(lake: Lake) -> dict:
    """Convert a drlake 0.1 lake in place: each table's Parquet files become a Delta table.

    Per table, the rows are written as new data files and committed in one Delta commit (the
    switch: before it the folder holds no Delta log, after it the log names only the new
    files); the old files are deleted after the commit. Returns table -> rows migrated.
    """
    done = {}
    for name in legacy_tables(lake):
        base = lake.path("tables", name)
        old = [f for f in lake.fs.find(base) if f.endswith(".parquet")
               and "/_delta_log/" not in f]
        data = _legacy_frame(lake, name, old)

        store = DeltaTableStore(name, lake.url_of("tables", name), lake.fs, base,
                                delta_storage_options(lake.url, lake.storage_options))
        part_cols = list(store.schema.partition_by)
        adds = []
        if part_cols:
            keys = data.select(part_cols).to_pandas().drop_duplicates()
            df = data.to_pandas()
            for _, k in keys.iterrows():
                sel = df[(df[part_cols] == k.values).all(axis=1)]
                pv = {c: str(k[c]) for c in part_cols}
                adds.append(store.write_file(sel, pv, "migrated"))
        elif len(data):
            adds.append(store.write_file(data, {}, "migrated"))
        if adds:
            store.commit_files(adds, run_id=None, operation="migrate")
        for f in old:
            lake.fs.rm(f)
        done[name] = len(data)
        log.info("migrated table %s: %d rows", name, len(data))
    return done
