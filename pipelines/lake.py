"""The lake: the only module that knows paths, fsspec URLs, the Zarr and Parquet layout, atomic
writes and the run log.

Layout under the lake root (a local folder or any fsspec URL such as ``s3://bucket/lake``)::

    volumes/<patient>.zarr          Zarr v3 group: images/<MOD> (z, y, x) intensities in [0, 1]
                                    stored as uint16 steps of 1/65535 (attribute scale_factor),
                                    masks/<MOD> (z, y, x) uint8 labels (attrs["regions"]: name
                                    -> labels), spatial metadata in attributes
    activations/<encoder>/<patient>.zarr
    tables/<table>/                 a Delta Lake table (`pipelines.tables`): Parquet data files
                                    and the _delta_log that says which of them are the table
    tables/runs/                    the run log (status events: running, ok, failed, dead)
    reports/<run_id>/               HTML reports

Visibility: a table changes only by a Delta commit, so a reader sees a table version whole or
not at all. Rows carry the run id that wrote them, and readers (`read_table`, the SQL views) show
only rows of runs that ended ``ok``: a running, failed or killed stage's rows stay invisible. A
volume is visible to the pipeline only once its row is in the ``patients`` table, which is
written after the Zarr group.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import zarr
from zarr.codecs import ZstdCodec

from pipelines import __version__
from pipelines.exceptions import InputError, LakeError
from pipelines.schemas import load_schema
from pipelines.tables import DeltaTableStore, delta_storage_options, forget_listings

# The layout (folders relative to the lake root); nothing outside this module names them.
VOLUMES = "volumes"
ACTIVATIONS = "activations"
TABLES = "tables"
REPORTS = "reports"
PATCH_SETS = "spatial/patches"
SPATIAL_MODELS = "spatial/models"
SPATIAL_MAPS = "spatial_maps"
ENCODER_MODELS = "models/encoders"
# where stages stage Zarr groups (``.tmp-<name>-<run token>.zarr``) before committing them
STAGING_FOLDERS = (VOLUMES, f"{ACTIVATIONS}/*", PATCH_SETS, f"{SPATIAL_MAPS}/*")

_DELTA_FILE_RE = re.compile(r"-[0-9a-f]{12}\.parquet$")
PATIENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHUNK = 64


def validate_patient_id(pid: object, where: str = "") -> str:
    """Return `pid` as a string if it is safe to use in a path, else raise InputError.

    Allowed: letters, digits, '-', '_', '.', starting with a letter or digit, at most 128
    characters; no path separators, no '..'.
    """
    missing = pid is None or (pd.api.types.is_scalar(pid) and pd.isna(pid))  # empty CSV cell
    s = "" if missing else str(pid).strip()
    prefix = f"{where}: " if where else ""
    if not s:
        raise InputError(f"{prefix}empty patient id: fill in the patient_id of every row")
    if "/" in s or "\\" in s or ".." in s or not PATIENT_ID_RE.fullmatch(s):
        raise InputError(
            f"{prefix}invalid patient id {s!r}: use letters, digits, '-', '_' and '.' only "
            "(no path separators, no '..')"
        )
    return s


def canonical_json(obj) -> str:
    """Return a stable JSON text of obj (sorted keys, no spaces) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    """Return the hex sha256 of a text."""
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Return the hex sha256 of a file's bytes, or of every file under a folder (DICOM series)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode())
        with open(q, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def new_run_id(stage: str) -> str:
    """Return a fresh run id: <stage>-<UTC time>-<random hex>."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stage}-{now}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class VolumeRecord:
    """A patient's volume as read back from the lake: arrays (z, y, x) and spatial metadata."""

    patient_id: str
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    attrs: dict


class Lake:
    """A lake rooted at a local folder or an fsspec URL."""

    def __init__(self, root: str | os.PathLike = "lake", storage_options: Mapping | None = None):
        root = str(root)
        self.storage_options = dict(storage_options or {})
        self.fs, path = fsspec.core.url_to_fs(root, **self.storage_options)
        self.is_local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        self.root = path.rstrip("/") if not self.is_local else str(Path(path).resolve())
        self.url = self.root if self.is_local else f"{_protocol(self.fs)}://{self.root}"
        self.storage: Storage = (LocalStorage(self.fs) if self.is_local
                                 else ObjectStorage(self.fs, self.storage_options))
        # per-process caches keyed on table versions (not pickled: __reduce__ reconnects)
        self._cache: dict = {}
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def __reduce__(self):
        # Dask tasks take a Lake: it travels as its URL and storage options and reconnects.
        return (Lake, (self.url, self.storage_options))

    # ---- typed locations: the only way stages reach the lake's files --------------------------
    def volume(self, patient_id: str) -> GroupLocation:
        """Return the location of a patient's volume group (images, masks, spatial attrs)."""
        return GroupLocation(self, VOLUMES, validate_patient_id(patient_id))

    def activations(self, encoder: str, patient_id: str) -> GroupLocation:
        """Return the location of a patient's activation maps of `encoder`."""
        _check_path_component(encoder)
        return GroupLocation(self, f"{ACTIVATIONS}/{encoder}", validate_patient_id(patient_id))

    def patch_set(self, name: str) -> GroupLocation:
        """Return the location of a spatial patch set (paper 004 training patches)."""
        _check_path_component(name)
        return GroupLocation(self, PATCH_SETS, name)

    def spatial_map(self, model: str, patient_id: str) -> GroupLocation:
        """Return the location of a patient's spatial probability map of `model`."""
        _check_path_component(model)
        return GroupLocation(self, f"{SPATIAL_MAPS}/{model}", validate_patient_id(patient_id))

    def spatial_map_png(self, model: str, patient_id: str) -> BlobLocation:
        """Return the location of the PNG overview of a patient's spatial map."""
        _check_path_component(model)
        return BlobLocation(self, f"{SPATIAL_MAPS}/{model}/{validate_patient_id(patient_id)}.png")

    def spatial_model(self, name: str) -> BlobLocation:
        """Return the location of a fitted spatial (biopsy) classifier."""
        _check_path_component(name)
        return BlobLocation(self, f"{SPATIAL_MODELS}/{name}.pt")

    def model(self, name: str) -> ModelLocation:
        """Return the folder of a trained encoder (model.json and its weights files)."""
        _check_path_component(name)
        return ModelLocation(self, f"{ENCODER_MODELS}/{name}")

    def model_names(self) -> list[str]:
        """Return the names of the trained encoders in the lake (those with a model.json)."""
        base = self.path(ENCODER_MODELS)
        if not self.fs.exists(base):
            return []
        return sorted(p.rstrip("/").split("/")[-2] for p in self.fs.glob(f"{base}/*/model.json"))

    def blob(self, rel: str) -> BlobLocation:
        """Return the location of a file a table row names by its path relative to the root."""
        parts = str(rel).strip("/").split("/")
        for part in parts:
            _check_path_component(part)
        return BlobLocation(self, "/".join(parts))

    def report_dir(self, run_id: str) -> Path:
        """Return the local folder of an analyze run's report (local lakes only)."""
        _check_path_component(run_id)
        if not self.is_local:
            raise InputError(f"the lake {self.url} is not a local folder: pass out_dir, a local "
                             "folder for the report")
        return Path(self.path(REPORTS, run_id))

    def describe_layout(self) -> dict[str, str]:
        """Return where the lake keeps volumes and tables (for messages to the user)."""
        return {"volumes": self.url_of(VOLUMES), "tables": self.url_of(TABLES)}

    # ---- paths -------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Return the filesystem path (no protocol) of a location inside the lake."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def url_of(self, *parts: str) -> str:
        """Return the full URL (with protocol for remote lakes) of a location inside the lake."""
        p = self.path(*parts) if parts else self.root
        return p if self.is_local else f"{_protocol(self.fs)}://{p}"

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def ensure(self) -> None:
        """Create the lake's top-level folders if they do not exist."""
        for sub in (VOLUMES, TABLES, ACTIVATIONS, REPORTS):
            self.storage.makedirs(self.path(sub))

    def absent_folders(self, *parts: str) -> list[str]:
        """Return the lake folders among `parts` (and the root and its missing parents) that do
        not exist yet, deepest first: what a stage that fails should remove again.

        Local lakes only; an object store has no folders to leave behind ([]).
        """
        if not self.is_local:
            return []
        out = [self.path(p) for p in parts if not os.path.exists(self.path(p))]
        folder = Path(self.root)
        while not folder.exists() and folder != folder.parent:
            out.append(str(folder))
            folder = folder.parent
        return out

    def remove_empty_folders(self, folders: list[str]) -> None:
        """Remove each of `folders` (deepest first) that exists and is empty; keep the others."""
        for f in folders:
            with contextlib.suppress(OSError):
                os.rmdir(f)

    # ---- Delta tables ------------------------------------------------------------------------
    def table_dir(self, table: str) -> str:
        return self.path(TABLES, table)

    def table(self, name: str) -> DeltaTableStore:
        """Return the Delta table `name` of this lake (schema in `schemas/<name>.json`)."""
        _check_path_component(name)
        load_schema(name)
        path = self.table_dir(name)
        store = DeltaTableStore(name, self.url_of(TABLES, name), self.fs, path,
                                delta_storage_options(self.url, self.storage_options))
        if not store.exists() and self._has_parquet_files(path):
            raise LakeError(
                f"{self.url}: table {name} is in the drlake 0.1 layout (plain Parquet files, no "
                f"Delta log); convert the lake once with `drlake migrate --lake {self.url}`")
        return store

    def _has_parquet_files(self, path: str) -> bool:
        """Return True if `path` holds Parquet files of the 0.1 layout (named by patient, run or
        ``data``), not data files a Delta writer left uncommitted (``part-*`` or
        ``<stem>-<12 hex>.parquet``)."""
        try:
            files = [f.rsplit("/", 1)[-1] for f in self.fs.find(path)
                     if f.endswith(".parquet") and "/_delta_log/" not in f]
        except (FileNotFoundError, OSError):
            return False
        return any(not (n.startswith(("part-", ".")) or _DELTA_FILE_RE.search(n)) for n in files)

    def table_names(self) -> list[str]:
        """Return the names of the tables that exist in the lake (with a Delta log)."""
        base = self.path(TABLES)
        # delta-rs creates tables without fsspec, so an object store's cached listings (s3fs
        # shares them between instances) would hide tables made since: list afresh
        forget_listings(self.fs, base)
        if not self.fs.exists(base):
            return []
        out = []
        for p in self.fs.ls(base, detail=False):
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith(".") and self.fs.exists(f"{p.rstrip('/')}/_delta_log"):
                out.append(name)
        return sorted(out)

    def table_versions(self) -> dict[str, int]:
        """Return table -> latest Delta version of every table of the lake."""
        out = {}
        for name in self.table_names():
            v = self.table(name).version()
            if v is not None:
                out[name] = v
        return out

    def read_table(self, table: str, version: int | None = None,
                   committed: bool = True) -> pd.DataFrame:
        """Return the table (at `version`) as a DataFrame with the schema's columns.

        With `committed`, rows carrying the run id of a run that has not ended ``ok`` (running,
        failed, killed) are left out: a stage's rows become visible when its run commits.
        """
        df = self.table(table).read(version)
        if committed and table != "runs" and "run_id" in df.columns and len(df):
            df = df[df["run_id"].isin(self.ok_run_ids())].reset_index(drop=True)
        return df

    def append_rows(self, table: str, data: pd.DataFrame | pa.Table,
                    run_id: str | None = None) -> int:
        """Append validated rows to a table in one commit; return the new version."""
        return self.table(table).append(data, run_id)

    def replace_rows(self, table: str, data: pd.DataFrame | pa.Table, column: str, value: str,
                     run_id: str | None = None) -> int:
        """Replace the rows whose `column` equals `value` by `data` in one commit."""
        pred = f"{column} = '{str(value).replace(chr(39), chr(39) * 2)}'"
        return self.table(table).replace_where(data, pred, run_id)

    def upsert_table(self, table: str, rows: pd.DataFrame, run_id: str | None = None) -> int | None:
        """Merge rows into a table by primary key (new rows win) in one commit; return the
        version (unchanged when every row is already there, so reingesting is a no-op).

        Concurrent writers of different keys all land: a conflicting commit is retried.
        """
        return self.table(table).upsert(rows, run_id)

    def put_bytes_atomic(self, target: str, payload: bytes) -> None:
        """Write bytes to `target` so that readers see either the old or the whole new file."""
        self.storage.put_bytes_atomic(target, payload)

    # ---- volumes (Zarr) ----------------------------------------------------------------------
    def volume_path(self, patient_id: str) -> str:
        return self.volume(patient_id).path

    def staged_path(self, folder: str, name: str, token: str) -> str:
        """Return the temporary (invisible) path a group `name` is staged at under `token`."""
        _check_path_component(name)
        _check_path_component(token)
        return self.path(folder, f".tmp-{name}-{token}.zarr")

    def stage_group(self, folder: str, name: str,
                    token: str | None = None) -> tuple[str, zarr.Group]:
        """Open a new Zarr v3 group under a temporary (invisible) name in `folder`.

        Returns (temporary path, group). Fill it, then `commit_group` it to `folder/name.zarr`
        or `discard_staged` it. A `token` (e.g. the run id) makes the name known in advance, so
        that a stage whose tasks stage in parallel can discard them all after a failure.
        """
        tmp = self.staged_path(folder, name, token or uuid.uuid4().hex[:8])
        return tmp, zarr.open_group(self.storage.zarr_store(tmp), mode="w", zarr_format=3)

    def commit_group(self, tmp: str, folder: str, name: str) -> str:
        """Move a staged group into place as the committed `name` of `folder`, replacing an
        older one; return its path relative to the root.

        Locally the folder is swapped by renames. An object store has no rename, so a group
        that replaces a committed one is copied to a new hidden version
        (``.v-<name>-<hex>.zarr``) and one PUT of the pointer ``.<name>.current`` switches
        readers to it: a reader sees the old group or the new one, whole. Superseded versions
        stay until `drlake compact` (`remove_superseded_groups`).
        """
        _check_path_component(name)
        plain = f"{folder}/{name}.zarr"
        if self.is_local:
            self.storage.replace_dir(tmp, self.path(plain))
            return plain
        current = self.group_rel(folder, name)
        if not self.fs.exists(self.path(current)):
            self.storage.replace_dir(tmp, self.path(plain))
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path(folder, f".{name}.current"))
            return plain
        version = f"{folder}/.v-{name}-{uuid.uuid4().hex[:12]}.zarr"
        self.storage.replace_dir(tmp, self.path(version))
        self.storage.put_bytes_atomic(self.path(folder, f".{name}.current"), version.encode())
        return version

    def group_rel(self, folder: str, name: str) -> str:
        """Return the committed group `name` of `folder` relative to the root: ``name.zarr``, or
        on an object store the version its pointer names once it has been replaced."""
        plain = f"{folder}/{name}.zarr"
        if self.is_local:
            return plain
        try:
            target = self.storage.read_bytes(self.path(folder, f".{name}.current")).decode()
        except FileNotFoundError:
            return plain
        return target.strip() or plain

    def remove_superseded_groups(self) -> list[str]:
        """Remove the group versions no pointer names (object stores: what replacements left
        behind, or a copy a killed commit never pointed at); return their paths."""
        if self.is_local:
            return []
        removed = []
        for folder in STAGING_FOLDERS:
            live = set()
            for ptr in self.fs.glob(self.path(folder, ".*.current")):
                live.add(self.storage.read_bytes(ptr).decode().strip().rsplit("/", 1)[-1])
                parent, pointer = ptr.rsplit("/", 1)
                old = f"{parent}/{pointer[1:-len('.current')]}.zarr"  # the first, unversioned
                if self.fs.exists(old):
                    self.fs.rm(old, recursive=True)
                    removed.append(old)
            for p in self.fs.glob(self.path(folder, ".v-*.zarr")):
                if p.rstrip("/").rsplit("/", 1)[-1] not in live:
                    self.fs.rm(p, recursive=True)
                    removed.append(p)
        return removed

    def discard_staged(self, tmp: str) -> None:
        """Remove a staged (temporary) group if it exists."""
        with contextlib.suppress(Exception):
            if self.fs.exists(tmp):
                self.fs.rm(tmp, recursive=True)

    def open_group(self, rel: str) -> zarr.Group:
        """Open a committed Zarr group (path relative to the root) read-only."""
        path = self.path(rel)
        if not self.fs.exists(path):
            raise LakeError(f"{self.url}: {rel} does not exist")
        return zarr.open_group(self.storage.zarr_store(path, read_only=True), mode="r")

    def stage_volume(
        self,
        patient_id: str,
        images: Mapping[str, np.ndarray],
        masks: Mapping[str, np.ndarray],
        attrs: Mapping,
        token: str | None = None,
    ) -> str:
        """Write a patient's volume group under a temporary (invisible) name; return that path.

        images: modality -> (z, y, x) float32 array; masks: modality -> (z, y, x) uint8 label
        array (0 outside; attrs["regions"] names its label sets). attrs: spatial metadata
        (spacing, origin, direction, world_to_voxel, ...). Call `commit_volume` to move it into
        place or `discard_staged` to drop it.
        """
        pid = validate_patient_id(patient_id)
        tmp, group = self.volume(pid).stage(token)
        try:
            group.attrs.update(dict(attrs))
            imgs = group.require_group("images")
            msk = group.require_group("masks")
            for mod, arr in images.items():
                write_array(imgs, mod, encode_unit_interval(arr),
                            attributes={"scale_factor": UNIT_SCALE,
                                        "units": "normalised intensity in [0, 1]"})
            for mod, arr in masks.items():
                write_array(msk, mod, np.asarray(arr, dtype=np.uint8))
        except BaseException:
            self.discard_staged(tmp)
            raise
        return tmp

    def commit_volume(self, tmp: str, patient_id: str) -> str:
        """Move a staged group to volumes/<patient>.zarr (replacing an older one); return it."""
        return self.volume(patient_id).commit(tmp)

    def write_volume(self, patient_id: str, images, masks, attrs) -> str:
        """Stage and commit a patient's volume group; return its path relative to the root."""
        return self.commit_volume(self.stage_volume(patient_id, images, masks, attrs), patient_id)

    def read_volume(self, patient_id: str, modalities: list[str] | None = None) -> VolumeRecord:
        """Return a patient's images, masks and attributes from the lake."""
        pid = validate_patient_id(patient_id)
        path = self.volume_path(pid)
        if not self.fs.exists(path):
            raise LakeError(f"{self.url}: no volume for patient {pid} (run `drlake ingest`)")
        group = self.volume(pid).open()
        mods = modalities or list(group.attrs["modalities"])
        images = {m: decode_array(group["images"][m]) for m in mods}
        masks = {m: group["masks"][m][...] for m in mods}
        return VolumeRecord(pid, images, masks, dict(group.attrs))

    def volume_attrs(self, patient_id: str) -> dict:
        """Return the attributes of a patient's volume group."""
        return self.volume(patient_id).attrs()

    # ---- run log -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(
        self,
        stage: str,
        parameters: Mapping,
        input_fingerprints: Mapping[str, str] | None = None,
        encoder_hash: str | None = None,
    ) -> Iterator[RunLog]:
        """Log a stage run: a 'running' row at start, 'ok' or 'failed' with the message at end."""
        log = RunLog(
            lake=self,
            run_id=new_run_id(stage),
            stage=stage,
            parameters=dict(parameters),
            input_fingerprints=dict(input_fingerprints or {}),
            encoder_hash=encoder_hash,
            started_at=dt.datetime.now(dt.UTC),
        )
        self.mark_dead_runs()
        log.write("running")
        try:
            yield log
        except BaseException as exc:
            log.write("failed", message=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        log.write("ok", message=log.message)

    def run_events(self) -> pd.DataFrame:
        """Return every status event of the run log (running, ok, failed, dead), unfiltered."""
        return self.table("runs").read()

    def runs(self, mark_dead: bool = True) -> pd.DataFrame:
        """Return the run log, one row per run (its latest status), oldest first.

        With `mark_dead`, runs still ``running`` whose driver process has gone (same host) are
        first marked ``dead`` and their staged Zarr groups removed.
        """
        if mark_dead:
            self.mark_dead_runs()
        return latest_run_rows(self.run_events())

    def ok_run_ids(self) -> set[str]:
        """Return the ids of the runs that ended ``ok`` (cached per version of the run log)."""
        import pyarrow.dataset as pads

        runs = self.table("runs")
        with self._cache_lock:  # threads of one process share the Lake and its handle
            handle = self._cache.get("runs_handle")
            if handle is not None:
                try:
                    handle.update_incremental()  # reads only the log entries committed since
                except Exception:  # the table was removed or rewritten under us: reopen
                    self._cache.clear()
                    handle = None
            if handle is None:
                handle = runs.open()
                if handle is None:
                    return set()
                self._cache["runs_handle"] = handle
            version = handle.version()
            cached = self._cache.get("ok_run_ids")
            if cached is None or cached[0] != version:
                ok = runs.read(version, columns=["run_id"], filter=pads.field("status") == "ok")
                cached = (version, frozenset(ok["run_id"]))
                self._cache["ok_run_ids"] = cached
        return set(cached[1])

    def mark_dead_runs(self) -> list[str]:
        """Mark runs whose driver process is gone as ``dead``; remove what they staged.

        A run is dead when its latest status is ``running``, it ran on this host and its process
        id is no longer alive. Returns the ids marked.
        """
        runs = latest_run_rows(self.run_events())
        self.discard_orphan_staging()
        if runs.empty:
            return []
        host = socket.gethostname()
        dead = []
        for _, r in runs[runs["status"] == "running"].iterrows():
            pid = r.get("pid")
            if r.get("host") != host or pid is None or pd.isna(pid):
                continue
            if _pid_alive(int(pid)):
                continue
            dead.append(r)
        for r in dead:
            log = RunLog(lake=self, run_id=r["run_id"], stage=r["stage"],
                         parameters=json.loads(r["parameters"]),
                         input_fingerprints=json.loads(r["input_fingerprints"]),
                         encoder_hash=r["encoder_hash"], started_at=r["started_at"],
                         pid=int(r["pid"]))
            log.write("dead", message="the run's process ended without committing (killed?)")
            self.discard_run_staging(r["run_id"])
        return [r["run_id"] for r in dead]

    def discard_run_staging(self, run_id: str) -> None:
        """Remove the Zarr groups a run staged (``.tmp-*-<token>.zarr``) and never committed."""
        token = run_id.replace(":", "")
        for folder in STAGING_FOLDERS:
            for p in self.fs.glob(self.path(folder, f".tmp-*-{token}*.zarr")):
                self.discard_staged(p)

    def discard_orphan_staging(self) -> list[str]:
        """Remove groups staged under a `process_token` whose process (on this host) is gone:
        what a stage killed before it wrote any run-log row left behind. Returns their paths."""
        host = _host_tag()
        out = []
        for folder in STAGING_FOLDERS:
            for p in self.fs.glob(self.path(folder, ".tmp-*.zarr")):
                m = _PROCESS_TOKEN_RE.search(p)
                if m and m["host"] == host and not _pid_alive(int(m["pid"])):
                    self.discard_staged(p)
                    out.append(p)
        return out


# ---- storage backends ------------------------------------------------------------------------
class Storage:
    """What differs between a local folder and an object store, behind one interface.

    Paths are filesystem paths of the lake's fsspec filesystem (no protocol).
    """

    def __init__(self, fs):
        self.fs = fs

    def makedirs(self, path: str) -> None:
        raise NotImplementedError

    def zarr_store(self, path: str, read_only: bool = False):
        raise NotImplementedError

    def replace_dir(self, tmp: str, final: str) -> None:
        """Move the folder `tmp` to `final`, replacing what was there."""
        raise NotImplementedError

    def put_bytes_atomic(self, target: str, payload: bytes) -> None:
        """Write bytes to `target` so that readers see either the old or the whole new file."""
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as f:
            return f.read()


class LocalStorage(Storage):
    """A lake in a local folder: renames are atomic, so commits are renames."""

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def zarr_store(self, path: str, read_only: bool = False):
        return zarr.storage.LocalStore(path, read_only=read_only)

    def replace_dir(self, tmp: str, final: str) -> None:
        old = None
        if os.path.exists(final):
            old = f"{os.path.dirname(final)}/.old-{uuid.uuid4().hex[:8]}-{Path(final).name}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old:
            import shutil

            shutil.rmtree(old, ignore_errors=True)

    def put_bytes_atomic(self, target: str, payload: bytes) -> None:
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class ObjectStorage(Storage):
    """A lake on an object store (S3 and the like): no folders, no renames; one PUT is atomic."""

    def __init__(self, fs, storage_options: Mapping | None = None):
        super().__init__(fs)
        self.storage_options = dict(storage_options or {})

    def makedirs(self, path: str) -> None:
        with contextlib.suppress(Exception):
            self.fs.makedirs(path, exist_ok=True)

    def zarr_store(self, path: str, read_only: bool = False):
        return zarr.storage.FsspecStore.from_url(
            f"{_protocol(self.fs)}://{path}", storage_options=self.storage_options,
            read_only=read_only)

    def replace_dir(self, tmp: str, final: str) -> None:
        # No directory rename: server-side copy of every object, then delete the staged ones.
        # Readers find groups through the tables, which are committed only after this.
        if self.fs.exists(final):
            self.fs.rm(final, recursive=True)
        for src in self.fs.find(tmp):
            self.fs.copy(src, final + src[len(tmp):])
        self.fs.rm(tmp, recursive=True)

    def put_bytes_atomic(self, target: str, payload: bytes) -> None:
        self.fs.pipe_file(target, payload)


# ---- typed locations -------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupLocation:
    """A Zarr group of the lake: a volume, activation maps, a patch set or a spatial map."""

    lake: Lake
    folder: str
    name: str

    @property
    def rel(self) -> str:
        """The committed group's path relative to the lake root (what table rows record)."""
        return self.lake.group_rel(self.folder, self.name)

    @property
    def path(self) -> str:
        return self.lake.path(self.rel)

    def exists(self) -> bool:
        return self.lake.fs.exists(self.path)

    def open(self) -> zarr.Group:
        """Open the committed group read-only (LakeError if it does not exist)."""
        return self.lake.open_group(self.rel)

    def attrs(self) -> dict:
        return dict(self.open().attrs)

    def stage(self, token: str | None = None) -> tuple[str, zarr.Group]:
        """Open a new group under a temporary, invisible name; return (its token path, group).

        Fill it, then `commit` or `discard` it. `token` (the run id) names it, so that the
        staging of a killed run is found and removed by the next run (`Lake.mark_dead_runs`).
        """
        return self.lake.stage_group(self.folder, self.name, token)

    def staged(self, token: str) -> str:
        """Return the temporary path `stage(token)` uses."""
        return self.lake.staged_path(self.folder, self.name, token)

    def commit(self, staged: str) -> str:
        """Move a staged group into place (replacing an older one); return `rel`."""
        return self.lake.commit_group(staged, self.folder, self.name)

    def discard(self, staged: str) -> None:
        self.lake.discard_staged(staged)


@dataclass(frozen=True)
class BlobLocation:
    """One file of the lake (a fitted model, a PNG), written whole or not at all."""

    lake: Lake
    rel: str

    @property
    def path(self) -> str:
        return self.lake.path(self.rel)

    def exists(self) -> bool:
        return self.lake.fs.exists(self.path)

    def read_bytes(self) -> bytes:
        """Return the file's bytes (LakeError naming it if it does not exist)."""
        try:
            return self.lake.storage.read_bytes(self.path)
        except FileNotFoundError:
            raise LakeError(f"{self.lake.url}: {self.rel} does not exist") from None

    def write_atomic(self, payload: bytes) -> str:
        """Write the file so that readers see the old or the whole new one; return `rel`."""
        self.lake.put_bytes_atomic(self.path, payload)
        return self.rel

    def info(self) -> dict:
        return self.lake.fs.info(self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.lake.fs.rm(self.path)


@dataclass(frozen=True)
class ModelLocation:
    """The folder of a trained encoder: model.json and its weights files."""

    lake: Lake
    rel: str

    def file(self, name: str) -> BlobLocation:
        _check_path_component(name)
        return BlobLocation(self.lake, f"{self.rel}/{name}")

    def files(self, pattern: str) -> list[BlobLocation]:
        """Return the model's files whose names match a glob `pattern`."""
        base = self.lake.path(self.rel)
        return [BlobLocation(self.lake, f"{self.rel}/{p.rstrip('/').rsplit('/', 1)[-1]}")
                for p in sorted(self.lake.fs.glob(f"{base}/{pattern}"))]


def process_token(run_id: str) -> str:
    """Return a staging token that names this process: ``<run_id>-h<host hash>p<pid>``.

    A stage that stages before it writes its first run-log row (ingest, whose refusals must
    leave the lake unchanged) uses it, so that the next run can tell its staging is orphaned.
    """
    return f"{run_id.replace(':', '')}-h{_host_tag()}p{os.getpid()}"


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


_PROCESS_TOKEN_RE = re.compile(r"-h(?P<host>[0-9a-f]{8})p(?P<pid>\d+)\.zarr/?$")


def latest_run_rows(events: pd.DataFrame) -> pd.DataFrame:
    """Return one row per run id: its latest status event (the final one if it ended)."""
    if events.empty:
        return events.reset_index(drop=True)
    rank = events["status"].map({"running": 0}).fillna(1)
    ev = events.assign(_rank=rank).sort_values(["run_id", "_rank", "ended_at"],
                                                na_position="first", kind="stable")
    out = ev.groupby("run_id", sort=False).tail(1).drop(columns="_rank")
    return out.sort_values("started_at", kind="stable").reset_index(drop=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunLog:
    """One stage run being logged; stages may add input fingerprints and a summary message."""

    lake: Lake
    run_id: str
    stage: str
    parameters: dict
    input_fingerprints: dict
    encoder_hash: str | None
    started_at: dt.datetime
    message: str | None = None
    pid: int = field(default_factory=os.getpid)

    @property
    def params_hash(self) -> str:
        return sha256_text(canonical_json(self.parameters))

    def write(self, status: str, message: str | None = None) -> None:
        """Append this run's status event to the run log.

        The ``running`` event records the Delta version of every table when the stage started
        (what it read); the ``ok`` event the versions after its commits (the run's snapshot,
        which `drlake sql --as-of RUN_ID` and `drlake report --run RUN_ID` read).
        """
        ended = None if status == "running" else dt.datetime.now(dt.UTC)
        versions = None
        if status in ("running", "ok"):
            versions = canonical_json(self.lake.table_versions())
        row = pd.DataFrame(
            [
                {
                    "run_id": self.run_id,
                    "stage": self.stage,
                    "parameters": canonical_json(self.parameters),
                    "params_hash": self.params_hash,
                    "package_version": __version__,
                    "encoder_hash": self.encoder_hash,
                    "input_fingerprints": canonical_json(self.input_fingerprints),
                    "started_at": self.started_at,
                    "ended_at": ended,
                    "status": status,
                    "message": message,
                    "pid": self.pid,
                    "host": socket.gethostname(),
                    "table_versions": versions,
                }
            ]
        )
        self.lake.append_rows("runs", row, run_id=self.run_id)


def _protocol(fs) -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, tuple) else proto


def _check_path_component(part: str) -> None:
    if not part or "/" in part or "\\" in part or ".." in part or part.startswith("."):
        raise InputError(f"unsafe path component {part!r}")


UNIT_SCALE = 1.0 / 65535.0


def encode_unit_interval(arr: np.ndarray) -> np.ndarray:
    """Return intensities in [0, 1] as uint16 steps of 1/65535 (max error 7.7e-6).

    Normalised float32 noise compresses poorly; 16-bit steps keep far more precision than the
    12-16-bit scanner data they come from and halve the lake.
    """
    a = np.asarray(arr, dtype=np.float32)
    if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
        raise ValueError("encode_unit_interval expects values in [0, 1]")
    if a.ndim == 0:
        return np.rint(a * 65535.0).astype(np.uint16)
    # slabs of about 4 M voxels: the float temporaries stay small next to the volume
    out = np.empty(a.shape, np.uint16)
    step = max(1, (1 << 22) // max(1, a[0].size))
    for i in range(0, a.shape[0], step):
        out[i:i + step] = np.rint(a[i:i + step] * 65535.0)
    return out


def decode_array(zarr_array, selection=Ellipsis) -> np.ndarray:
    """Return a stored array (or a selection of it), applying its scale_factor attribute
    (float32) when it has one."""
    data = zarr_array[selection]
    scale = zarr_array.attrs.get("scale_factor")
    if scale is None:
        return data
    return data.astype(np.float32) * np.float32(scale)


def write_array(group, name: str, arr: np.ndarray, chunks: tuple[int, ...] | None = None,
                dimension_names=("z", "y", "x"), attributes: dict | None = None) -> None:
    """Write an array chunked (default 64^3) inside one shard per array, zstd-compressed."""
    chunks = chunks or (CHUNK,) * arr.ndim
    chunks = tuple(min(c, s) for c, s in zip(chunks, arr.shape, strict=True))
    shards = tuple(-(-s // c) * c for s, c in zip(arr.shape, chunks, strict=True))
    a = group.create_array(
        name,
        shape=arr.shape,
        dtype=arr.dtype,
        chunks=chunks,
        shards=shards,
        compressors=ZstdCodec(level=3),
        dimension_names=dimension_names,
        fill_value=0,
        attributes=attributes,
    )
    a[...] = arr
