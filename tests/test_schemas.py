"""Every table schema loads, and violations name the table, column, row and value."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from pipelines.exceptions import SchemaError
from pipelines.schemas import SCHEMA_DIR, load_schema, validate

TABLES = sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))


@pytest.mark.parametrize("table", TABLES)
def test_schema_loads_with_primary_key_in_columns(table):
    s = load_schema(table)
    assert s.table == table
    assert set(s.primary_key) <= set(s.names)
    assert len(s.arrow_schema()) == len(s.columns)


def immune(**over):
    row = {"patient_id": "P1", "marker": "t_cells_cd8", "value": 0.1}
    row.update(over)
    return pd.DataFrame([row, {"patient_id": "P2", "marker": "t_cells_cd8", "value": 0.2}])


def test_valid_table_is_cast_to_schema():
    tbl = validate("immune_markers", immune())
    assert tbl.schema == load_schema("immune_markers").arrow_schema()
    assert tbl.column("value").to_pylist() == [0.1, 0.2]


@pytest.mark.parametrize(
    "over, pattern",
    [
        ({"value": 1.5}, r"immune_markers, column value, row 1 \(patient_id='P1'\): value 1.5 "
                         r"must be <= 1"),
        ({"value": "x"}, r"column value.*'x' is not a number"),
        ({"value": None}, r"column value.*is missing"),
        ({"marker": "T Cells"}, r"column marker.*'T Cells' does not match pattern"),
        ({"patient_id": "P2"}, r"duplicate key"),
        ({"value": float("inf")}, r"column value.*is not finite"),
    ],
)
def test_violations_name_table_column_row_and_value(over, pattern):
    with pytest.raises(SchemaError, match=pattern):
        validate("immune_markers", immune(**over))


def test_missing_and_extra_columns():
    with pytest.raises(SchemaError, match="missing column"):
        validate("immune_markers", immune().drop(columns="value"))
    with pytest.raises(SchemaError, match="unexpected column"):
        validate("immune_markers", immune().assign(extra=1))


def test_integer_column_refuses_fractions_and_nullable_timestamp_accepts_none():
    df = pd.DataFrame([{"patient_id": "P1", "age": 50, "gender": "F", "grade": "GBM",
                        "survival_days": 10, "event": 0.5}])
    with pytest.raises(SchemaError, match="event.*must be one of|event.*not an integer"):
        validate("clinical", df)
    run = {
        "run_id": "r1", "stage": "s", "parameters": "{}", "params_hash": "h",
        "package_version": "0", "encoder_hash": None, "input_fingerprints": "{}",
        "started_at": dt.datetime.now(dt.UTC), "ended_at": None, "status": "running",
        "message": None,
    }
    tbl = validate("runs", pd.DataFrame([run]))
    assert tbl.column("ended_at").null_count == 1
