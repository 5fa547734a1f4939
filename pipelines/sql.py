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

from pipelines.lake import Lake
from pipelines.schemas import SCHEMA_DIR, load_schema

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
CATALOGUE = SCHEMA_DIR / "features.csv"

_DUCK_TYPES = {
    "string": "VARCHAR", "int64": "BIGINT", "int32": "INTEGER", "float64": "DOUBLE",
    "bool": "BOOLEAN", "timestamp": "TIMESTAMPTZ",
}


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def table_source(lake: Lake, table: str) -> str:
    """Return a SQL relation over the table's Parquet files with exactly the schema's columns."""
    schema = load_schema(table)
    cols = ", ".join(f'CAST("{c.name}" AS {_DUCK_TYPES[c.type]}) AS "{c.name}"'
                     for c in schema.columns)
    if not lake.table_files(table):
        empty = ", ".join(f'CAST(NULL AS {_DUCK_TYPES[c.type]}) AS "{c.name}"'
                          for c in schema.columns)
        return f"(SELECT {empty} LIMIT 0)"
    glob = lake.url_of("tables", table) + "/**/*.parquet"
    return (f"(SELECT {cols} FROM read_parquet({_quote(glob)}, union_by_name = true, "
            f"hive_partitioning = false))")


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


def render(sql: str, lake: Lake, con: duckdb.DuckDBPyConnection) -> str:
    """Return the view SQL with its placeholders filled for this lake."""
    sql = re.sub(r"\{\{source:(\w+)\}\}", lambda m: table_source(lake, m.group(1)), sql)
    sql = re.sub(r"\{\{pivot_columns:(\w+):(\w+):(\w+)\}\}",
                 lambda m: _pivot_columns(con, *m.groups()), sql)
    sql = sql.replace("{{catalogue}}", f"read_csv({_quote(str(CATALOGUE))}, header = true)")
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


def connect(lake: Lake | str, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """Return a DuckDB connection with every view of sql/ defined over the lake."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    con = duckdb.connect(database)
    register_functions(con)
    if not lake.is_local:
        con.register_filesystem(lake.fs)
    for path in view_files():
        con.execute(render(path.read_text(encoding="utf-8"), lake, con))
    return con


READ_ONLY_TYPES = ("SELECT", "EXPLAIN")


def check_read_only(query: str) -> list[str]:
    """Return the statements of `query` if every one only reads; else raise InputError.

    Allowed: SELECT (including WITH, DESCRIBE, SHOW, SUMMARIZE) and EXPLAIN. Anything that
    writes, attaches, copies, installs or changes settings is refused with its statement type.
    """
    from pipelines.exceptions import InputError

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise InputError(f"SQL error: {exc}") from None
    if not statements:
        raise InputError("no SQL statement given")
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in READ_ONLY_TYPES:
            raise InputError(
                f"drlake sql is read-only: {kind} statements are refused (use SELECT; write "
                "results with --out FILE)"
            )
    return [st.query for st in statements]


def lockdown(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Restrict a connection to reading the lake and the catalogue: no other file access."""
    allowed = [lake.url_of() + "/", str(SCHEMA_DIR) + "/"]
    con.execute("SET allowed_directories = " + "[" + ", ".join(map(_quote, allowed)) + "]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def run_query(lake: Lake | str, query: str):
    """Return the result of the last statement of a read-only query as a DataFrame, with the
    DuckDB column types as `df.attrs["types"]`."""
    from pipelines.exceptions import InputError

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    statements = check_read_only(query)
    con = connect(lake)
    try:
        lockdown(con, lake)
        rel = None
        for sql in statements:
            rel = con.sql(sql)
        df = rel.df() if rel is not None else None
        types = [str(t) for t in rel.types] if rel is not None else []
    except duckdb.Error as exc:
        raise InputError(f"SQL error: {exc}") from None
    finally:
        con.close()
    if df is not None:
        df.attrs["types"] = types
    return df
