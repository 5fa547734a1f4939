"""DuckDB over the lake: `connect(lake)` returns a connection with every view of `sql/` defined.

The views live in `sql/*.sql` as plain SQL, one concern per file. Placeholders filled here:

- ``{{source:TABLE}}``: the Delta table TABLE (its current or snapshot version, as an Arrow
  dataset, rows of ok runs only) with the schema's columns, or an empty relation with those
  columns when the table has no commit yet;
- ``{{pivot_columns:VIEW:KEY:VALUE}}``: one ``max(VALUE) FILTER (WHERE KEY = k) AS "k"`` per
  distinct KEY of VIEW (DuckDB cannot PIVOT on data-derived values inside a view);
- ``{{catalogue}}``: the feature catalogue CSV (``schemas/features.csv``);
- ``{{drf_columns}}``: one ``max(value) FILTER (...) AS "<SEQ>__<feature>"`` per sequence present
  in the features table and per `paper45` feature.

A file may start with ``-- depends: a, b`` naming views it needs; files are created in
dependency order. Remote lakes register their fsspec filesystem with DuckDB (no httpfs needed).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
from fsspec.implementations.dirfs import DirFileSystem

from pipelines.lake import Lake
from pipelines.resources import data_dir
from pipelines.schemas import SCHEMA_DIR, load_schema

SQL_DIR = data_dir("sql")
CATALOGUE = SCHEMA_DIR / "features.csv"

_DUCK_TYPES = {
    "string": "VARCHAR", "int64": "BIGINT", "int32": "INTEGER", "float64": "DOUBLE",
    "bool": "BOOLEAN", "timestamp": "TIMESTAMPTZ",
}


def _quote(s: str) -> str:
    """Return `s` as a SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def _glob_escape(path: str) -> str:
    """Return `path` with DuckDB's glob characters (``*``, ``?``, ``[``) matched literally."""
    return re.sub(r"([*?\[])", r"[\1]", path)


SANDBOX_PROTOCOL = "drlakero"


class ReadOnlyLakeFileSystem(DirFileSystem):
    """The lake as a read-only fsspec filesystem rooted at the lake (``drlakero://tables/...``).

    The SQL sandbox reads the lake only through it: every write, delete, rename or folder
    creation raises PermissionError, and a path that leaves the lake's root is refused.
    """

    protocol = SANDBOX_PROTOCOL

    def _join(self, path):
        if isinstance(path, str):
            parts = [p for p in path.split("://", 1)[-1].split("/") if p not in ("", ".")]
            if ".." in parts:
                raise PermissionError(f"{path}: outside the lake")
        return super()._join(path)

    def glob(self, path, **kwargs):
        # The lake's root is literal: escape its glob characters, keep the pattern's own.
        rel = path.split("://", 1)[-1].lstrip("/")
        self._join(rel)  # refuses '..'
        pattern = _glob_escape(self.path) + self.fs.sep + rel
        found = self.fs.glob(pattern, **kwargs)
        if kwargs.get("detail", False):
            return self._relpath_detail(found)
        return self._relpath(found)

    def _refuse(self, *args, **kwargs):
        raise PermissionError("the lake is read-only in drlake sql")

    def open(self, path, mode="rb", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            self._refuse()
        return super().open(path, mode, *args, **kwargs)

    def _open(self, path, mode="rb", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            self._refuse()
        return super()._open(path, mode, *args, **kwargs)


for _name in ("mkdir", "makedirs", "rm", "rm_file", "rmdir", "mv", "copy", "cp_file", "put",
              "put_file", "pipe", "pipe_file", "touch", "write_text", "write_bytes", "rename",
              "link", "symlink", "_rm", "_mv", "_cp_file", "_put_file", "_pipe_file", "_mkdir",
              "_makedirs", "_rm_file", "_copy", "_pipe", "_put", "_touch"):
    setattr(ReadOnlyLakeFileSystem, _name, ReadOnlyLakeFileSystem._refuse)


def table_source(lake: Lake, table: str, con: duckdb.DuckDBPyConnection | None = None,
                 snapshot: Snapshot | None = None) -> str:
    """Return a SQL relation over the table's Delta snapshot with exactly the schema's columns.

    The table's files (from its Delta log, at the snapshot's version if one is given) are
    registered with `con` as an Arrow dataset, so DuckDB pushes column selections and filters
    down to the Parquet files. Rows of runs that did not end ``ok`` (running, failed, killed)
    are left out. A schema column that no file has yet reads as NULL.
    """
    schema = load_schema(table)
    version = snapshot.versions.get(table) if snapshot else None
    ds = None
    if snapshot is None or version is not None:
        ds = lake.table(table).dataset(version)
    if ds is None or con is None:
        empty = ", ".join(f'CAST(NULL AS {_DUCK_TYPES[c.type]}) AS "{c.name}"'
                          for c in schema.columns)
        return f"(SELECT {empty} LIMIT 0)"
    name = f"_delta_{table}"
    con.register(name, ds)
    cols = ", ".join(f'CAST("{c.name}" AS {_DUCK_TYPES[c.type]}) AS "{c.name}"'
                     for c in schema.columns)
    where = ""
    if table != "runs" and "run_id" in schema.names:
        where = " WHERE run_id IN (SELECT run_id FROM _drlake_ok_runs)"
    elif table == "runs" and snapshot is not None:
        where = (f" WHERE coalesce(ended_at, started_at) <= "
                 f"CAST({_quote(snapshot.cutoff.isoformat())} AS TIMESTAMPTZ)")
    return f"(SELECT {cols} FROM {name}{where})"


@dataclass(frozen=True)
class Snapshot:
    """The lake as it was: a Delta version per table and the time the snapshot was taken."""

    versions: dict
    cutoff: dt.datetime
    label: str


def resolve_snapshot(lake: Lake, as_of: str) -> Snapshot:
    """Return the snapshot named by a run id, a lake version or a timestamp.

    - a run id: the table versions that run recorded when it ended ``ok``;
    - an integer N: lake version N, i.e. the state after the N-th ``ok`` run (0 = the first);
    - an ISO timestamp: the state after the last ``ok`` run that ended at or before it.
    """
    from pipelines.exceptions import InputError

    runs = lake.runs(mark_dead=False)
    ok = runs[(runs["status"] == "ok") & runs["table_versions"].notna()]
    ok = ok.sort_values("ended_at", kind="stable").reset_index(drop=True)
    text = str(as_of).strip()
    if text in set(runs["run_id"]):
        row = runs[runs["run_id"] == text].iloc[-1]
        if row["status"] != "ok" or not isinstance(row["table_versions"], str):
            raise InputError(f"run {text} is {row['status']!r}; only an ok run that recorded its "
                             "table versions names a snapshot")
    elif re.fullmatch(r"\d+", text):
        n = int(text)
        if n >= len(ok):
            raise InputError(f"the lake has versions 0..{len(ok) - 1}; no version {n}")
        row = ok.iloc[n]
    else:
        try:
            ts = pd.Timestamp(text)
        except ValueError:
            raise InputError(f"--as-of {text!r} is neither a run id, a lake version nor a "
                             "timestamp") from None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        before = ok[ok["ended_at"] <= ts]
        if before.empty:
            raise InputError(f"no run had ended ok at {ts.isoformat()}")
        row = before.iloc[-1]
    versions = json.loads(row["table_versions"])
    return Snapshot(versions=versions, cutoff=row["ended_at"].to_pydatetime(),
                    label=f"{row['run_id']} (ended {row['ended_at']})")


def view_files() -> list[Path]:
    """Return the view files of sql/ in dependency order."""
    files = {p.stem: p for p in sorted(SQL_DIR.glob("*.sql"))}
    deps = {}
    for name, p in files.items():
        first = (p.read_text(encoding="utf-8").splitlines() or [""])[0]
        m = re.match(r"--\s*depends:\s*(.*)", first)
        deps[name] = [d.strip() for d in m.group(1).split(",") if d.strip()] if m else []
    order: list[str] = []

    def visit(n: str, stack: tuple = ()):
        if n in order or n not in files:
            return
        if n in stack:
            raise RuntimeError(f"cyclic view dependencies: {' -> '.join((*stack, n))}")
        for d in deps[n]:
            visit(d, (*stack, n))
        order.append(n)

    for n in files:
        visit(n)
    return [files[n] for n in order]


def _drf_columns(con: duckdb.DuckDBPyConnection) -> str:
    mods = [r[0] for r in con.execute(
        "SELECT DISTINCT modality FROM features ORDER BY modality").fetchall()]
    feats = [r[0] for r in con.execute(
        "SELECT name FROM feature_catalogue WHERE paper45 ORDER BY family, name").fetchall()]
    cols = [
        f"max(value) FILTER (WHERE modality = {_quote(m)} AND feature = {_quote(f)}) "
        f'AS "{m}__{f}"'
        for m in mods
        for f in feats
    ]
    return ",\n    ".join(cols) if cols else "NULL AS no_features"


def _pivot_columns(con: duckdb.DuckDBPyConnection, view: str, key: str, value: str) -> str:
    keys = [r[0] for r in con.execute(
        f'SELECT DISTINCT "{key}" FROM {view} ORDER BY 1').fetchall()]
    cols = [f'max("{value}") FILTER (WHERE "{key}" = {_quote(k)}) AS "{k}"' for k in keys]
    return ",\n    ".join(cols) if cols else f"NULL AS no_{key}"


def render(sql: str, lake: Lake, con: duckdb.DuckDBPyConnection,
           snapshot: Snapshot | None = None) -> str:
    """Return the view SQL with its placeholders filled for this lake (as of `snapshot`)."""
    sql = re.sub(r"\{\{source:(\w+)\}\}",
                 lambda m: table_source(lake, m.group(1), con, snapshot), sql)
    sql = re.sub(r"\{\{pivot_columns:(\w+):(\w+):(\w+)\}\}",
                 lambda m: _pivot_columns(con, *m.groups()), sql)
    sql = sql.replace("{{catalogue}}", "_drlake_catalogue")
    if "{{drf_columns}}" in sql:
        sql = sql.replace("{{drf_columns}}", _drf_columns(con))
    return sql


def _spearman_p(rho, n):
    """Return scipy's two-sided p of Spearman's rho with n pairs (t with n - 2 df), vectorised."""
    import numpy as np
    import pyarrow as pa
    from scipy import stats

    r = rho.to_numpy(zero_copy_only=False).astype(float)
    k = n.to_numpy(zero_copy_only=False).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = k - 2
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
        p = 2 * stats.t.sf(np.abs(t), df)
    p = np.where(np.abs(r) >= 1.0, 0.0, p)
    p = np.where(np.isfinite(r) & (df > 0), p, np.nan)
    return pa.array(p, mask=~np.isfinite(p))


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    """Register drlake's scalar functions (DuckDB has no t distribution)."""
    con.create_function("spearman_p", _spearman_p, [duckdb.sqltype("DOUBLE"),
                        duckdb.sqltype("BIGINT")], duckdb.sqltype("DOUBLE"), type="arrow",
                        null_handling="special")


def connect(lake: Lake | str, database: str = ":memory:", sandbox: bool = False,
            as_of: str | Snapshot | None = None) -> duckdb.DuckDBPyConnection:
    """Return a DuckDB connection with every view of sql/ defined over the lake.

    With `sandbox`, the connection can only read the lake: the tables are Arrow datasets
    registered with the connection (read-only by nature), the lake is also mounted as the
    read-only ``drlakero://`` filesystem, every other file access is disabled
    (``enable_external_access = false``, ``allowed_directories`` = the read-only lake only) and
    the configuration is locked, so no statement can write a byte anywhere.

    With `as_of` (a run id, a lake version or a timestamp; see `resolve_snapshot`), every view
    reads the tables at the versions of that snapshot.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    snapshot = resolve_snapshot(lake, as_of) if isinstance(as_of, str) else as_of
    con = duckdb.connect(database)
    try:
        register_functions(con)
        if sandbox:
            con.register_filesystem(ReadOnlyLakeFileSystem(path=lake.root, fs=lake.fs))
        elif not lake.is_local:
            con.register_filesystem(lake.fs)
        con.execute("CREATE OR REPLACE TEMP TABLE _drlake_catalogue AS SELECT * FROM "
                    f"read_csv({_quote(str(CATALOGUE))}, header = true)")
        _register_ok_runs(lake, con, snapshot)
        for path in view_files():
            con.execute(render(path.read_text(encoding="utf-8"), lake, con, snapshot))
        if sandbox:
            con.execute(f"SET allowed_directories = [{_quote(SANDBOX_PROTOCOL + '://')}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _register_ok_runs(lake: Lake, con: duckdb.DuckDBPyConnection,
                      snapshot: Snapshot | None) -> None:
    """Create the temp table of the run ids whose rows are visible (ended ``ok``, by then)."""
    import pyarrow as pa

    ev = lake.run_events()
    ok = ev[ev["status"] == "ok"]
    if snapshot is not None:
        ok = ok[ok["ended_at"] <= pd.Timestamp(snapshot.cutoff)]
    ids = pa.table({"run_id": pa.array(sorted(set(ok["run_id"])), pa.string())})
    con.register("_drlake_ok_runs_arrow", ids)
    con.execute("CREATE OR REPLACE TEMP TABLE _drlake_ok_runs AS "
                "SELECT * FROM _drlake_ok_runs_arrow")
    con.unregister("_drlake_ok_runs_arrow")


READ_ONLY_TYPES = ("SELECT",)
# Statement families named by their first keyword in refusals (DuckDB's statement type lumps
# INSTALL with LOAD and PRAGMA with SET).
_NAMED_BY_KEYWORD = {"INSTALL", "LOAD", "FORCE", "PRAGMA", "SET", "RESET", "CALL", "EXPORT",
                     "IMPORT", "ATTACH", "DETACH", "COPY", "USE", "CHECKPOINT", "VACUUM",
                     "ANALYZE", "UPDATE", "DELETE", "INSERT", "CREATE", "DROP", "ALTER"}


def _tokens(sql: str) -> list[tuple[int, str]]:
    """Return DuckDB's tokens of `sql` that are not comments: (offset, text) pairs."""
    toks = duckdb.tokenize(sql)
    out = []
    for i, (pos, kind) in enumerate(toks):
        end = toks[i + 1][0] if i + 1 < len(toks) else len(sql)
        if kind != duckdb.token_type.comment:
            out.append((pos, sql[pos:end].strip()))
    return out


def _refusal(kind: str) -> str:
    return (f"drlake sql is read-only: {kind} statements are refused (use SELECT, DESCRIBE, "
            "SHOW, SUMMARIZE or EXPLAIN; write results with --out FILE)")


def _check_statement(st) -> None:
    """Raise InputError unless `st` (a DuckDB parsed statement) only reads."""
    from pipelines.exceptions import InputError

    kind = str(st.type).rsplit(".", 1)[-1]
    toks = _tokens(st.query)
    first = toks[0][1].upper() if toks else ""
    if kind == "EXPLAIN" and first == "EXPLAIN":
        rest = toks[1:]
        if rest and rest[0][1] == "(":
            depth, end = 0, len(rest)
            for k, (_, text) in enumerate(rest):
                depth += {"(": 1, ")": -1}.get(text, 0)
                if text.upper() in ("ANALYZE", "ANALYSE"):
                    raise InputError(_refusal("EXPLAIN ANALYZE"))
                if depth == 0:
                    end = k + 1
                    break
            rest = rest[end:]
        elif rest and rest[0][1].upper() in ("ANALYZE", "ANALYSE"):
            raise InputError(_refusal("EXPLAIN ANALYZE"))
        if not rest:
            raise InputError("SQL error: EXPLAIN of nothing")
        inner = duckdb.extract_statements(st.query[rest[0][0]:])
        if len(inner) != 1:
            raise InputError(_refusal("EXPLAIN of several"))
        _check_statement(inner[0])
        return
    if kind not in READ_ONLY_TYPES:
        raise InputError(_refusal(first if first in _NAMED_BY_KEYWORD else kind))


def check_read_only(query: str) -> list[str]:
    """Return the statements of `query` if every one only reads; else raise InputError.

    Statements are classified by DuckDB's own parser, never by their text: allowed are SELECT
    (including WITH, FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE) and EXPLAIN of one of these
    without ANALYZE (EXPLAIN ANALYZE runs the statement). Anything else is refused by name.
    """
    from pipelines.exceptions import InputError

    try:
        statements = duckdb.extract_statements(query)
        if not statements:
            raise InputError("no SQL statement given")
        for st in statements:
            _check_statement(st)
    except duckdb.Error as exc:
        raise InputError(f"SQL error: {exc}") from None
    return [st.query for st in statements]


def _error_text(exc: BaseException) -> str:
    """Return DuckDB's error message without the Python traceback a filesystem error carries."""
    text = str(exc)
    if "Traceback (most recent call last)" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return "the lake is read-only in drlake sql" if "PermissionError" in last else last
    return text


def run_query(lake: Lake | str, query: str, as_of: str | None = None):
    """Return the result of the last statement of a read-only query as a DataFrame, with the
    DuckDB column types as `df.attrs["types"]`.

    The query is checked by `check_read_only` and then run on a `connect(..., sandbox=True)`
    connection, which cannot write even if a statement slipped through the check.
    """
    from pipelines.exceptions import InputError

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    statements = check_read_only(query)
    con = connect(lake, sandbox=True, as_of=as_of)
    try:
        rel = None
        for sql in statements:
            rel = con.sql(sql)
        df = rel.df() if rel is not None else None
        types = [str(t) for t in rel.types] if rel is not None else []
    except (duckdb.Error, PermissionError) as exc:
        raise InputError(f"SQL error: {_error_text(exc)}") from None
    finally:
        con.close()
    if df is not None:
        df.attrs["types"] = types
    return df
