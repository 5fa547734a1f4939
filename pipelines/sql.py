"""DuckDB over the lake: `connect(lake)` returns a connection with every view of `sql/` defined.

The views live in `sql/*.sql` as plain SQL, one concern per file. Placeholders filled here:

- ``{{source:TABLE}}``: the lake's Parquet files of TABLE (a glob over ``tables/TABLE/``) with the
  schema's columns, or an empty relation with those columns when the table has no file yet;
- ``{{pivot_columns:VIEW:KEY:VALUE}}``: one ``max(VALUE) FILTER (WHERE KEY = k) AS "k"`` per
  distinct KEY of VIEW (DuckDB cannot PIVOT on data-derived values inside a view);
- ``{{catalogue}}``: the feature catalogue CSV (``schemas/features.csv``);
- ``{{drf_columns}}``: one ``max(value) FILTER (...) AS "<SEQ>__<feature>"`` per sequence present
  in the features table and per `paper45` feature.

A file may start with ``-- depends: a, b`` naming views it needs; files are created in
dependency order. Remote lakes register their fsspec filesystem with DuckDB (no httpfs needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
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


def table_source(lake: Lake, table: str, sandbox: bool = False,
                 con: duckdb.DuckDBPyConnection | None = None) -> str:
    """Return a SQL relation over the table's Parquet files with exactly the schema's columns.

    With `sandbox`, the files are read through the read-only ``drlakero://`` filesystem. With
    `con`, a schema column that no file has yet (a lake written before the column was added)
    reads as NULL instead of failing the view.
    """
    schema = load_schema(table)
    if not lake.table_files(table):
        empty = ", ".join(f'CAST(NULL AS {_DUCK_TYPES[c.type]}) AS "{c.name}"'
                          for c in schema.columns)
        return f"(SELECT {empty} LIMIT 0)"
    if sandbox:
        glob = f"{SANDBOX_PROTOCOL}://tables/{table}/**/*.parquet"
    else:
        glob = _glob_escape(lake.url_of("tables", table)) + "/**/*.parquet"
    scan = (f"read_parquet({_quote(glob)}, union_by_name = true, hive_partitioning = false)")
    present = None
    if con is not None:
        present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}

    def column(name: str, typ: str) -> str:
        value = f'"{name}"' if present is None or name in present else "NULL"
        return f'CAST({value} AS {_DUCK_TYPES[typ]}) AS "{name}"'

    cols = ", ".join(column(c.name, c.type) for c in schema.columns)
    return f"(SELECT {cols} FROM {scan})"


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


def render(sql: str, lake: Lake, con: duckdb.DuckDBPyConnection, sandbox: bool = False) -> str:
    """Return the view SQL with its placeholders filled for this lake."""
    sql = re.sub(r"\{\{source:(\w+)\}\}",
                 lambda m: table_source(lake, m.group(1), sandbox, con), sql)
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


def connect(lake: Lake | str, database: str = ":memory:",
            sandbox: bool = False) -> duckdb.DuckDBPyConnection:
    """Return a DuckDB connection with every view of sql/ defined over the lake.

    With `sandbox`, the connection can only read the lake: the lake's files are reached through
    the read-only ``drlakero://`` filesystem, every other file access is disabled
    (``enable_external_access = false``, ``allowed_directories`` = the read-only lake only) and
    the configuration is locked, so no statement can write a byte anywhere.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    con = duckdb.connect(database)
    try:
        register_functions(con)
        if sandbox:
            con.register_filesystem(ReadOnlyLakeFileSystem(path=lake.root, fs=lake.fs))
        elif not lake.is_local:
            con.register_filesystem(lake.fs)
        con.execute("CREATE OR REPLACE TEMP TABLE _drlake_catalogue AS SELECT * FROM "
                    f"read_csv({_quote(str(CATALOGUE))}, header = true)")
        for path in view_files():
            con.execute(render(path.read_text(encoding="utf-8"), lake, con, sandbox))
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


def run_query(lake: Lake | str, query: str):
    """Return the result of the last statement of a read-only query as a DataFrame, with the
    DuckDB column types as `df.attrs["types"]`.

    The query is checked by `check_read_only` and then run on a `connect(..., sandbox=True)`
    connection, which cannot write even if a statement slipped through the check.
    """
    from pipelines.exceptions import InputError

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    statements = check_read_only(query)
    con = connect(lake, sandbox=True)
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
