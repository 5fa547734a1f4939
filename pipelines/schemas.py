"""Table schemas (one JSON file per table in `schemas/`) and the check every write goes through.

A schema lists columns with a type (string, int64, float64, bool, timestamp), nullability and
optional constraints (min/max, allowed values, regex pattern) plus a primary key. `validate`
returns an Arrow table cast exactly to the schema, or raises `SchemaError` naming the table, the
column, the row and the offending value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.exceptions import SchemaError
from pipelines.resources import data_dir

SCHEMA_DIR = data_dir("schemas")

_ARROW_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class Column:
    """One column of a table schema."""

    name: str
    type: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    allowed: tuple | None = None
    pattern: str | None = None
    description: str = ""
    optional: bool = False  # may be left out of written rows: it is then null


@dataclass(frozen=True)
class TableSchema:
    """A table's columns, primary key and Arrow schema."""

    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    description: str = ""
    partition_by: tuple[str, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in self.columns]
        )


@cache
def load_schema(table: str) -> TableSchema:
    """Return the schema of `table` read from `schemas/<table>.json`."""
    path = SCHEMA_DIR / f"{table}.json"
    if not path.exists():
        raise SchemaError(f"no schema for table {table!r} (expected {path})")
    spec = json.loads(path.read_text(encoding="utf-8"))
    cols = []
    for c in spec["columns"]:
        if c["type"] not in _ARROW_TYPES:
            raise SchemaError(
                f"schema {path.name}: column {c['name']} has unknown type {c['type']}"
            )
        allowed = tuple(c["allowed"]) if "allowed" in c else None
        cols.append(
            Column(
                name=c["name"],
                type=c["type"],
                nullable=c.get("nullable", False),
                min=c.get("min"),
                max=c.get("max"),
                exclusive_min=c.get("exclusive_min", False),
                allowed=allowed,
                pattern=c.get("pattern"),
                description=c.get("description", ""),
                optional=bool(c.get("optional", False)) and c.get("nullable", False),
            )
        )
    return TableSchema(
        table=spec["table"],
        columns=tuple(cols),
        primary_key=tuple(spec.get("primary_key", ())),
        description=spec.get("description", ""),
        partition_by=tuple(spec.get("partition_by", ())),
    )


def _row_label(df: pd.DataFrame, i: int) -> str:
    """Return a human description of row i (its position and, if present, its patient id)."""
    label = f"row {i + 1}"
    for key in ("patient_id", "biopsy_id", "sample_id", "run_id"):
        if key in df.columns:
            label += f" ({key}={df[key].iloc[i]!r})"
            break
    return label


def _fail(schema: TableSchema, col: str, df: pd.DataFrame, i: int, value, why: str):
    if isinstance(value, np.generic):
        value = value.item()
    raise SchemaError(
        f"table {schema.table}, column {col}, {_row_label(df, i)}: value {value!r} {why}"
    )


def _check_column(schema: TableSchema, c: Column, df: pd.DataFrame) -> pd.Series:
    """Return the column converted to its schema type, or raise on the first bad value."""
    s = df[c.name]
    missing = s.isna().to_numpy()
    if missing.any() and not c.nullable:
        i = int(np.flatnonzero(missing)[0])
        _fail(schema, c.name, df, i, None, "is missing (column is not nullable)")
    if c.type in ("int64", "int32", "float64"):
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna().to_numpy() & ~missing
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            _fail(schema, c.name, df, i, s.iloc[i], "is not a number")
        vals = num.to_numpy(dtype=float, na_value=np.nan)
        nonfinite = ~np.isfinite(vals) & ~missing
        if nonfinite.any():
            i = int(np.flatnonzero(nonfinite)[0])
            _fail(schema, c.name, df, i, s.iloc[i], "is not finite")
        if c.type != "float64":
            frac = (vals != np.round(vals)) & ~missing
            if frac.any():
                i = int(np.flatnonzero(frac)[0])
                _fail(schema, c.name, df, i, s.iloc[i], "is not an integer")
        if c.min is not None:
            low = (vals <= c.min) if c.exclusive_min else (vals < c.min)
            low &= ~missing
            if low.any():
                i = int(np.flatnonzero(low)[0])
                op = ">" if c.exclusive_min else ">="
                _fail(schema, c.name, df, i, s.iloc[i], f"must be {op} {c.min}")
        if c.max is not None:
            high = (vals > c.max) & ~missing
            if high.any():
                i = int(np.flatnonzero(high)[0])
                _fail(schema, c.name, df, i, s.iloc[i], f"must be <= {c.max}")
        if c.allowed is not None:
            ok = np.isin(vals, np.asarray(c.allowed, dtype=float)) | missing
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                _fail(schema, c.name, df, i, s.iloc[i], f"must be one of {list(c.allowed)}")
        if c.type == "float64":
            return pd.Series(vals, index=s.index)
        return pd.array(
            [None if m else int(v) for v, m in zip(vals, missing, strict=True)], dtype="Int64"
        )
    if c.type == "string":
        strs = s.astype(object).where(~missing, None)
        if c.allowed is not None:
            ok = strs.isin(c.allowed).to_numpy() | missing
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                _fail(schema, c.name, df, i, s.iloc[i], f"must be one of {list(c.allowed)}")
        # each distinct value is checked once (a features fragment has ~40,000 rows but a few
        # dozen distinct strings per column)
        present = strs.to_numpy(dtype=object)[~missing]
        distinct = pd.unique(present) if len(present) else present
        if c.pattern is not None:
            rx = re.compile(c.pattern)
            for v in distinct:
                if not rx.fullmatch(str(v)):
                    i = next(i for i, w in enumerate(strs) if w is not None and w == v)
                    _fail(schema, c.name, df, i, v, f"does not match pattern {c.pattern}")
        if all(type(v) is str for v in distinct):
            return strs
        return strs.map(lambda v: None if v is None else str(v))
    if c.type == "bool":
        return s.astype("boolean")
    if c.type == "timestamp":
        return pd.to_datetime(s, utc=True)
    raise SchemaError(f"table {schema.table}: unsupported type {c.type}")  # pragma: no cover


def validate(table: str, data: pd.DataFrame | pa.Table) -> pa.Table:
    """Return `data` as an Arrow table exactly matching the schema of `table`.

    A column the schema marks ``optional`` may be left out (it is written as null). Raises
    SchemaError naming the table, column, row and value on: a missing or extra column, a
    null in a non-nullable column, a value of the wrong type, out of range, not allowed, not
    matching its pattern, or a duplicate primary key.
    """
    schema = load_schema(table)
    df = data.to_pandas() if isinstance(data, pa.Table) else data.reset_index(drop=True)
    absent = [c.name for c in schema.columns if c.optional and c.name not in df.columns]
    if absent:
        df = df.assign(**{n: None for n in absent})
    missing = [n for n in schema.names if n not in df.columns]
    if missing:
        raise SchemaError(f"table {schema.table}: missing column(s) {', '.join(missing)}")
    extra = [n for n in df.columns if n not in schema.names]
    if extra:
        raise SchemaError(
            f"table {schema.table}: unexpected column(s) {', '.join(map(str, extra))}"
        )
    out = {c.name: _check_column(schema, c, df) for c in schema.columns}
    if schema.primary_key and len(df):
        dup = df.duplicated(subset=list(schema.primary_key), keep="first").to_numpy()
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            key = {k: df[k].iloc[i] for k in schema.primary_key}
            raise SchemaError(f"table {schema.table}: duplicate key {key} at {_row_label(df, i)}")
    arrays = []
    for c in schema.columns:
        col = out[c.name]
        if c.type == "float64":
            arr = pa.array(
                np.asarray(col, dtype=float), type=pa.float64(), from_pandas=True
            )
        else:
            arr = pa.array(pd.Series(col).tolist(), type=_ARROW_TYPES[c.type], from_pandas=True)
        arrays.append(arr)
    tbl = pa.Table.from_arrays(arrays, schema=schema.arrow_schema())
    # pa.Table.from_arrays does not enforce nullability: cast does (see STACK-NOTES).
    return tbl.cast(schema.arrow_schema())

