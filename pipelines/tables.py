"""The lake's tables as Delta Lake tables (delta-rs): atomic multi-file commits, optimistic
concurrency, versions to read the lake as it was.

`DeltaTableStore` is what `Lake.table(name)` returns: one table, validated against its schema
in `schemas/` on every write. Writers never rewrite a table wholesale:

- ``append`` adds rows in one commit (blind appends never conflict);
- ``upsert`` is a Delta MERGE on the schema's primary key, so two concurrent ingests of
  different patients both land (a conflicting commit is retried on the new version);
- ``commit_files`` commits data files that tasks wrote into the table folder (invisible until
  committed) together with the removal of the rows they replace, in one transaction: a stage's
  whole output becomes visible at once or not at all.

Object stores use delta-rs's own S3 mechanism (conditional PUT, ``If-None-Match``) for the
commit log, so two writers racing for one version get a conflict, never a lost update.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.exceptions import LakeError
from pipelines.schemas import load_schema, validate

log = logging.getLogger(__name__)

COMMIT_RETRIES = 20
# Set when a table is created. Snapshots are the lake's provenance (`--as-of`, `report --run`),
# so the log outlives delta-rs's 30-day default; `drlake compact` decides which data files go.
# A checkpoint every 10 commits keeps opening a table to at most 10 log files to replay.
TABLE_CONFIGURATION = {"delta.logRetentionDuration": "interval 36500 days",
                       "delta.checkpointInterval": "10"}


def delta_storage_options(url: str, storage_options: Mapping | None) -> dict[str, str] | None:
    """Return delta-rs storage options for a lake URL (None for a local folder).

    fsspec/s3fs options (``key``, ``secret``, ``client_kwargs.endpoint_url``) and the usual AWS
    environment variables are mapped to delta-rs keys; S3 commits use conditional PUTs.
    """
    if "://" not in url or url.startswith("file://"):
        return None
    so = dict(storage_options or {})
    out: dict[str, str] = {}
    proto = url.split("://", 1)[0]
    if proto in ("s3", "s3a"):
        endpoint = ((so.get("client_kwargs") or {}).get("endpoint_url") or so.get("endpoint_url")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        if endpoint:
            out["AWS_ENDPOINT_URL"] = endpoint
            if endpoint.startswith("http://"):
                out["AWS_ALLOW_HTTP"] = "true"
        if so.get("key"):
            out["AWS_ACCESS_KEY_ID"] = so["key"]
        if so.get("secret"):
            out["AWS_SECRET_ACCESS_KEY"] = so["secret"]
        if so.get("token"):
            out["AWS_SESSION_TOKEN"] = so["token"]
        region = (so.get("client_kwargs") or {}).get("region_name")
        if region:
            out["AWS_REGION"] = region
        out["conditional_put"] = "etag"
    for k, v in so.items():
        if isinstance(v, str) and k.isupper():
            out[k] = v
    return out


@dataclass
class DeltaTableStore:
    """One table of the lake as a Delta table at `uri` (`fs`/`path` reach the same folder)."""

    name: str
    uri: str
    fs: object
    path: str
    storage_options: dict | None

    @property
    def schema(self):
        return load_schema(self.name)

    # ---- reading -----------------------------------------------------------------------------
    def exists(self) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options)

    def open(self, version: int | None = None):
        """Return the deltalake DeltaTable at `version` (latest if None), or None if absent."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        except Exception as exc:  # delta-rs reports a missing version as a generic error
            if version is not None and ("version" in str(exc).lower()):
                raise LakeError(f"table {self.name} has no version {version}") from None
            raise

    def version(self) -> int | None:
        """Return the table's latest version, or None if it has no commit yet."""
        t = self.open()
        return None if t is None else t.version()

    def dataset(self, version: int | None = None):
        """Return a pyarrow dataset of the table at `version`, or None if the table is absent.

        The files come from the Delta log; they are read with pyarrow over the lake's own
        filesystem (delta-rs's pyarrow filesystem handler can abort the interpreter at exit,
        delta-rs #2184). Columns the schema has and a file lacks read as null.
        """
        import pyarrow.dataset as pads
        from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

        t = self.open(version)
        if t is None:
            return None
        schema = self.schema.arrow_schema()
        rels = pa.table(t.get_add_actions(flatten=True)).column("path").to_pylist()
        files = [f"{self.path}/{urllib.parse.unquote(r)}" for r in rels]
        part = [c for c in self.schema.partition_by]
        partitioning = (pads.partitioning(pa.schema([schema.field(c) for c in part]),
                                          flavor="hive") if part else None)
        if not _is_local(self.fs):
            forget_listings(self.fs, self.path)
        fs = (LocalFileSystem() if _is_local(self.fs)
              else PyFileSystem(FSSpecHandler(self.fs)))
        return pads.dataset(files, schema=schema, format="parquet", filesystem=fs,
                            partitioning=partitioning, partition_base_dir=self.path)

    def read(self, version: int | None = None, columns: list[str] | None = None,
             filter=None) -> pd.DataFrame:
        """Return the table (at `version`) as a DataFrame with the schema's columns."""
        schema = self.schema
        ds = self.dataset(version)
        cols = columns or schema.names
        if ds is None:
            return schema.arrow_schema().empty_table().select(cols).to_pandas()
        have = set(ds.schema.names)
        tbl = ds.to_table(columns=[c for c in cols if c in have], filter=filter)
        for c in cols:
            if c not in have:
                typ = schema.arrow_schema().field(c).type
                tbl = tbl.append_column(c, pa.nulls(len(tbl), typ))
        return tbl.select(cols).to_pandas()

    # ---- writing -----------------------------------------------------------------------------
    def _props(self, run_id: str | None, operation: str, retries: int = COMMIT_RETRIES):
        from deltalake import CommitProperties

        meta = {"drlake_operation": operation}
        if run_id:
            meta["drlake_run_id"] = run_id
        return CommitProperties(custom_metadata=meta, max_commit_retries=retries)

    def _arrow(self, data: pd.DataFrame | pa.Table) -> pa.Table:
        return validate(self.name, data)

    def append(self, data: pd.DataFrame | pa.Table, run_id: str | None = None) -> int:
        """Append rows in one commit; return the new version."""
        from deltalake import write_deltalake

        tbl = self._arrow(data)
        part = list(self.schema.partition_by) or None
        write_deltalake(self.uri, tbl, mode="append", partition_by=part,
                        configuration=TABLE_CONFIGURATION,
                        storage_options=self.storage_options,
                        commit_properties=self._props(run_id, "append"))
        return self.version()

    def replace_where(self, data: pd.DataFrame | pa.Table, predicate: str,
                      run_id: str | None = None) -> int:
        """Replace the rows matching a SQL `predicate` with `data` in one commit (every row of
        `data` must match it); return the new version."""
        from deltalake import write_deltalake

        tbl = self._arrow(data)
        if not self.exists():
            return self.append(tbl, run_id)
        write_deltalake(self.uri, tbl, mode="overwrite", predicate=predicate,
                        partition_by=list(self.schema.partition_by) or None,
                        storage_options=self.storage_options,
                        commit_properties=self._props(run_id, "replace"))
        return self.version()

    def upsert(self, data: pd.DataFrame | pa.Table, run_id: str | None = None) -> int | None:
        """Merge rows by the primary key (new rows win) in one commit; return the new version.

        Rows equal to what the table holds change nothing and make no commit (a rerun is a
        no-op: the version stays). Conflicting concurrent commits are retried from the new
        version, so concurrent writers of different keys all land.
        """
        from deltalake.exceptions import CommitFailedError

        tbl = self._arrow(data)
        key = list(self.schema.primary_key)
        if not key:
            raise LakeError(f"table {self.name} has no primary key to merge on")
        for attempt in range(COMMIT_RETRIES):
            t = self.open()
            if t is None:
                try:
                    return self.append(tbl, run_id)
                except Exception as exc:  # created concurrently: merge into it
                    if "already exists" not in str(exc).lower() and attempt == COMMIT_RETRIES - 1:
                        raise
                    continue
            if _rows_present(t, tbl, key):
                return t.version()
            on = " AND ".join(f'target."{k}" = source."{k}"' for k in key)
            try:
                (t.merge(tbl, predicate=on, source_alias="source", target_alias="target",
                         commit_properties=self._props(run_id, "upsert", retries=0))
                 .when_matched_update_all().when_not_matched_insert_all().execute())
                return self.open().version()
            except CommitFailedError:
                time.sleep(0.05 * (attempt + 1))
        raise LakeError(f"table {self.name}: gave up after {COMMIT_RETRIES} conflicting commits")

    def has_rows(self, data: pd.DataFrame | pa.Table) -> bool:
        """Return True if every row of `data` is already in the table exactly (by primary key)."""
        t = self.open()
        if t is None:
            return len(data) == 0
        return _rows_present(t, self._arrow(data), list(self.schema.primary_key))

    def new_file_path(self, partition: Mapping[str, str] | None, stem: str) -> tuple[str, str]:
        """Return (path inside the table, filesystem path) for a new, not yet committed file."""
        parts = [f"{k}={urllib.parse.quote(str(v), safe='')}" for k, v in (partition or {}).items()]
        rel = "/".join([*parts, f"{stem}-{uuid.uuid4().hex[:12]}.parquet"])
        return rel, f"{self.path}/{rel}"

    def write_file(self, data: pd.DataFrame | pa.Table, partition: Mapping[str, str] | None,
                   stem: str) -> dict:
        """Write one data file into the table folder without committing it; return its add
        action as a plain dict (picklable, for `commit_files`).

        Readers do not see the file until a commit names it; a killed writer leaves an orphan
        that `drlake compact` vacuums.
        """
        tbl = self._arrow(data)
        partition = dict(partition or {})
        body = tbl.drop_columns([c for c in partition if c in tbl.column_names])
        rel, full = self.new_file_path(partition, stem)
        folder = full.rsplit("/", 1)[0]
        try:
            self.fs.makedirs(folder, exist_ok=True)
        except Exception:  # object stores have no folders
            pass
        with self.fs.open(full, "wb") as f:
            pq.write_table(body, f, compression="zstd")
        size = self.fs.info(full)["size"]
        return {"path": rel, "size": int(size), "partition_values": partition,
                "modification_time": int(time.time() * 1000), "stats": _file_stats(body)}

    def commit_files(self, adds: list[dict], replace_key: str | None = None,
                     run_id: str | None = None, operation: str = "write") -> int | None:
        """Commit files written by `write_file`, removing in the same transaction the rows they
        replace; return the new version (None if there was nothing to commit).

        replace_key: a column (e.g. ``patient_id``); each add's ``replaces`` lists the values of
        it whose rows, in the add's partition, the new file supersedes. A committed file holding
        only such rows is removed; one holding some is rewritten without them, in the same
        commit. A conflicting concurrent commit is retried on the new version.
        """
        from deltalake import DeltaTable, Schema
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import create_table_with_add_actions

        if not adds:
            return self.version()
        schema = self.schema
        part_cols = list(schema.partition_by)
        arrow_schema = schema.arrow_schema()
        if not self.exists():
            try:
                create_table_with_add_actions(
                    self.uri, Schema.from_arrow(arrow_schema), [_add_action(a) for a in adds],
                    partition_by=part_cols or None, configuration=TABLE_CONFIGURATION,
                    storage_options=self.storage_options,
                    commit_properties=self._props(run_id, operation))
                return self.version()
            except Exception as exc:
                if "exist" not in str(exc).lower():
                    raise
        replaced: dict[str, set[str]] = {}
        for a in adds:
            key = json.dumps(a["partition_values"], sort_keys=True)
            replaced.setdefault(key, set()).update(map(str, a.get("replaces", ())))
        for attempt in range(COMMIT_RETRIES):
            t = DeltaTable(self.uri, storage_options=self.storage_options)
            actions: list = [_add_action(a) for a in adds]
            if replace_key:
                actions += self._replacement_actions(t, replace_key, replaced)
            try:
                t.create_write_transaction(
                    actions, mode="append", schema=arrow_schema, partition_by=part_cols or None,
                    commit_properties=self._props(run_id, operation, retries=0))
                return DeltaTable(self.uri, storage_options=self.storage_options).version()
            except CommitFailedError:
                time.sleep(0.05 * (attempt + 1))
        raise LakeError(f"table {self.name}: gave up after {COMMIT_RETRIES} conflicting commits")

    def _replacement_actions(self, t, col: str, replaced: Mapping[str, set[str]]) -> list:
        """Return the remove (and rewrite) actions that drop, per partition, the rows whose `col`
        is among that partition's replaced values."""
        from deltalake.transaction import RemoveAction

        part_cols = list(self.schema.partition_by)
        files = pa.table(t.get_add_actions(flatten=True)).to_pylist()
        now = int(time.time() * 1000)
        out = []
        for f in files:
            pv = {c: f.get(f"partition.{c}") for c in part_cols}
            values = replaced.get(json.dumps(pv, sort_keys=True))
            if not values:
                continue
            lo, hi = f.get(f"min.{col}"), f.get(f"max.{col}")
            if lo is not None and hi is not None and not any(lo <= v <= hi for v in values):
                continue
            if lo is not None and lo == hi and lo in values:
                out.append(RemoveAction(f["path"], True, now, f["size_bytes"], pv))
                continue
            full = f"{self.path}/{urllib.parse.unquote(f['path'])}"
            with self.fs.open(full, "rb") as fh:
                body = pq.read_table(fh)
            keep = body.filter(pc.invert(pc.is_in(body[col], pa.array(sorted(values)))))
            if len(keep) == len(body):
                continue
            out.append(RemoveAction(f["path"], True, now, f["size_bytes"], pv))
            if len(keep):
                for c, v in pv.items():
                    if c not in keep.column_names:
                        keep = keep.append_column(c, pa.array([v] * len(keep), pa.string()))
                out.append(_add_action(self.write_file(keep, pv, "rewrite")))
        return out

    # ---- maintenance ---------------------------------------------------------------------------
    def compact(self) -> dict:
        """Rewrite small files into larger ones (Delta OPTIMIZE); return delta-rs's metrics."""
        t = self.open()
        return {} if t is None else t.optimize.compact()

    def vacuum(self, keep_from_version: int | None) -> list[str]:
        """Delete files no version from `keep_from_version` on needs (and orphans older than it);
        return the deleted paths. None keeps every version (deletes only orphans of no version)."""
        t = self.open()
        if t is None:
            return []
        hours = self._retention_hours(keep_from_version)
        return t.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False)

    def commit_timestamp(self, version: int) -> float:
        """Return the time (seconds since the epoch) at which `version` was committed, from the
        table's commit history (each commit's commitInfo timestamp)."""
        t = self.open()
        for entry in ([] if t is None else t.history()):
            if entry.get("version") == version and entry.get("timestamp") is not None:
                return float(entry["timestamp"]) / 1000.0
        raise LakeError(f"table {self.name} has no version {version} in its log "
                        "(it may have been cleaned up)")

    def _retention_hours(self, keep_from_version: int | None) -> int:
        """Return a vacuum retention (whole hours) that keeps every file `keep_from_version` and
        later versions reference: files removed after that version was committed stay."""
        if keep_from_version is None:
            keep_from_version = 0
        try:
            ts = self.commit_timestamp(keep_from_version)
        except LakeError:
            return 24 * 365 * 100
        age_h = max(0.0, time.time() - ts) / 3600.0
        return int(age_h) + 2


def forget_listings(fs, path: str) -> None:
    """Drop an object store's cached directory listings of `path`, its parents and everything
    under it.

    s3fs caches listings (shared between instances) and then reports a file that is not in a
    cached listing as missing. Table files are written by delta-rs (and by other processes)
    behind fsspec's back, and the Delta log already says which files exist, so a listing cached
    before a commit must not decide whether a file of that commit can be opened.
    """
    fs.invalidate_cache(path)
    cache = getattr(fs, "dircache", None)
    if cache:
        root = fs._strip_protocol(path).rstrip("/")
        for key in [k for k in list(cache) if k == root or k.startswith(root + "/")]:
            cache.pop(key, None)


def _is_local(fs) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in proto or "local" in proto


def _rows_present(t, tbl: pa.Table, key: list[str]) -> bool:
    """Return True if every row of `tbl` is already in the Delta table `t` exactly."""
    if len(tbl) == 0:
        return True
    if len(tbl) > 200_000:
        return False
    import pyarrow.dataset as pads

    ds = t.to_pyarrow_dataset()
    filt = None
    for k in key:
        vals = pc.unique(tbl[k])
        if len(vals) <= 10_000:
            expr = pads.field(k).isin(vals)
            filt = expr if filt is None else filt & expr
    have = ds.to_table(filter=filt, columns=[c for c in tbl.column_names
                                             if c in ds.schema.names])
    if len(have) != len(tbl) or have.column_names != tbl.column_names:
        return False
    a = have.to_pandas().sort_values(key).reset_index(drop=True)
    b = tbl.to_pandas().sort_values(key).reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
        return True
    except AssertionError:
        return False


def _file_stats(tbl: pa.Table) -> str:
    """Return the Delta ``stats`` JSON (record count, min, max, null count) of a data file."""
    mins, maxs, nulls = {}, {}, {}
    for name in tbl.column_names:
        col = tbl[name]
        nulls[name] = col.null_count
        typ = col.type
        if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_string(typ)):
            continue
        if len(col) == col.null_count:
            continue
        mm = pc.min_max(col)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if isinstance(lo, float) and not (lo == lo and hi == hi):
            continue
        mins[name], maxs[name] = lo, hi
    return json.dumps({"numRecords": len(tbl), "minValues": mins, "maxValues": maxs,
                       "nullCount": nulls}, allow_nan=False, default=str)


def _add_action(a: dict):
    from deltalake.transaction import AddAction

    return AddAction(a["path"], a["size"], a["partition_values"], a["modification_time"], True,
                     a["stats"])


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
