"""The `drlake sql` sandbox: statements classified by DuckDB's parser, and a session that cannot
write a byte anywhere even when a statement is run on it directly (issue 16)."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_rows

from pipelines.exceptions import InputError
from pipelines.lake import Lake
from pipelines.schemas import SCHEMA_DIR
from pipelines.sql import check_read_only, connect, run_query


def tree_digest(*roots: Path) -> str:
    """Return a hash of every path and every byte under the given folders."""
    h = hashlib.sha256()
    for root in roots:
        for dirpath, dirnames, filenames in sorted(os.walk(root)):
            dirnames.sort()
            h.update(dirpath.encode())
            for f in sorted(filenames):
                p = Path(dirpath) / f
                h.update(str(p).encode())
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    lk = Lake(root / "lake")
    for pid in ("P001", "P002", "P003"):
        df = pd.DataFrame({"patient_id": pid, "modality": "T1", "encoder": "encA", "region": "roi",
                           "layer": [1, 1], "map": [0, 1], "feature": "cm_contrast",
                           "value": [1.0, 2.0], "run_id": "r1"})
        write_rows(lk, "features", df, name=pid,
                              partition={"modality": "T1", "encoder": "encA"})
    write_rows(lk, "clinical", pd.DataFrame({
        "patient_id": ["P001", "P002", "P003"], "age": [50.0, 60.0, 70.0],
        "gender": ["M", "F", "M"], "grade": ["GBM", "LGG", "GBM"],
        "survival_days": [100.0, 200.0, 300.0], "event": [1, 0, 1]}))
    outside = root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    return lk, outside


def _targets(lk: Lake, outside: Path) -> list[str]:
    return [f"{lk.root}/tables/features/evil.parquet", f"{outside}/evil.csv",
            "drlakero://tables/features/evil.parquet", str(SCHEMA_DIR / "clinical.json")]


def _write_statements(lk: Lake, outside: Path) -> dict[str, list[str]]:
    """Return, per statement family, statements that would write or change the session."""
    t = _targets(lk, outside)
    return {
        "COPY": [f"COPY (SELECT 42 AS x) TO '{p}' (FORMAT parquet)" for p in t]
        + [f"COPY features TO '{outside}/f.csv'"],
        "ATTACH": [f"ATTACH '{outside}/x.duckdb'", f"ATTACH '{lk.root}/x.duckdb' AS x"],
        "INSTALL": ["INSTALL httpfs", "FORCE INSTALL httpfs"],
        "LOAD": ["LOAD httpfs"],
        "SET": ["SET enable_external_access = true", "SET allowed_directories = ['/']",
                "SET lock_configuration = false", "RESET lock_configuration"],
        "PRAGMA": ["PRAGMA enable_profiling", f"PRAGMA profiling_output = '{outside}/p.txt'"],
        "CREATE": ["CREATE TABLE t AS SELECT 1", "CREATE OR REPLACE VIEW drf AS SELECT 1",
                   "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')"],
        "INSERT": ["INSERT INTO features SELECT * FROM features"],
        "EXPORT": [f"EXPORT DATABASE '{outside}/db'", f"EXPORT DATABASE '{lk.root}/db'"],
        "CALL": ["CALL checkpoint()", "CALL enable_logging()"],
    }


def _disguises(stmt: str, family: str) -> list[str]:
    """Return `stmt` in the forms that tried to hide a write from a prefix check."""
    forms = [stmt, f"-- just a comment\n{stmt}", f"/* SELECT */ {stmt}", f"SELECT 1; {stmt}",
             f"SELECT 1;\n-- next\n{stmt};", f"EXPLAIN ANALYZE {stmt}",
             f"EXPLAIN (ANALYZE) {stmt}", f"/* x */ EXPLAIN /* y */ ANALYZE {stmt}"]
    if family == "INSERT":
        forms.append("WITH a AS (SELECT * FROM features) INSERT INTO features SELECT * FROM a")
    if family == "COPY":
        forms.append(stmt.replace("(SELECT 42 AS x)", "(WITH a AS (SELECT 42 AS x) "
                                  "SELECT * FROM a)"))
    return forms


FAMILIES = ["COPY", "ATTACH", "INSTALL", "LOAD", "SET", "PRAGMA", "CREATE", "INSERT", "EXPORT",
            "CALL"]


@pytest.mark.parametrize("family", FAMILIES)
def test_no_write_statement_writes_a_byte(small_lake, family, tmp_path):
    lk, outside = small_lake
    before = tree_digest(Path(lk.root), outside, SCHEMA_DIR)
    tried = 0
    for stmt in _write_statements(lk, outside)[family]:
        for q in _disguises(stmt, family):
            tried += 1
            with pytest.raises(InputError) as err:
                run_query(lk, q)
            assert "Traceback" not in str(err.value)
    # the same through a `-f` file on the command line
    for i, stmt in enumerate(_write_statements(lk, outside)[family][:2]):
        f = tmp_path / f"q{i}.sql"
        f.write_text(f"-- hidden\nSELECT 1;\n{stmt};\n", encoding="utf-8")
        r = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", "-f", str(f),
                            "--lake", lk.root], capture_output=True, text=True)
        assert r.returncode == 2 and "read-only" in r.stderr and "Traceback" not in r.stderr
    assert tried >= 8
    assert tree_digest(Path(lk.root), outside, SCHEMA_DIR) == before


@pytest.mark.parametrize("query,name", [
    ("INSTALL httpfs", "INSTALL"), ("LOAD httpfs", "LOAD"), ("PRAGMA version", "PRAGMA"),
    ("SET threads = 1", "SET"), ("COPY features TO 'x.csv'", "COPY"),
    ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN ANALYZE"), ("CALL pragma_version()", "CALL"),
    ("ATTACH 'x.db'", "ATTACH"), ("DROP VIEW drf", "DROP"),
])
def test_refusals_name_the_statement(query, name):
    with pytest.raises(InputError, match=f"read-only: {name} statements are refused"):
        check_read_only(query)


@pytest.mark.parametrize("query", [
    "SELECT 1", "-- a comment first\nSELECT 1", "FROM features", "DESCRIBE features",
    "SHOW TABLES", "SUMMARIZE features", "EXPLAIN SELECT * FROM features",
    "EXPLAIN (FORMAT json) SELECT 1", "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
    "VALUES (1), (2)", "SELECT 1; SELECT 2",
])
def test_reading_statements_are_allowed(query):
    assert len(check_read_only(query)) >= 1


def test_sandbox_session_cannot_write_even_unchecked(small_lake):
    """Defence in depth: statements run directly on the sandbox connection (no parser check)."""
    lk, outside = small_lake
    before = tree_digest(Path(lk.root), outside, SCHEMA_DIR)
    con = connect(lk, sandbox=True)
    try:
        assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 6
        for stmt in itertools.chain(*_write_statements(lk, outside).values()):
            if stmt.startswith(("CREATE TABLE", "CREATE OR REPLACE VIEW", "INSERT", "CALL",
                                "PRAGMA enable_profiling", "CREATE SECRET")):
                continue  # in-memory only: they touch no file
            with pytest.raises(Exception):  # noqa: B017 - DuckDB raises several kinds
                con.execute(stmt)
        with pytest.raises(Exception):  # noqa: B017
            con.execute(f"SELECT * FROM read_csv('{outside}/keep.txt')")
        with pytest.raises(Exception):  # noqa: B017
            con.execute("SELECT * FROM read_csv('drlakero://../outside/keep.txt')")
    finally:
        con.close()
    assert tree_digest(Path(lk.root), outside, SCHEMA_DIR) == before


def test_explain_analyze_copy_reported_case(small_lake):
    """The reported escape: EXPLAIN ANALYZE COPY into the lake; afterwards the lake still works."""
    lk, outside = small_lake
    target = f"{lk.root}/tables/features/evil.parquet"
    with pytest.raises(InputError, match="EXPLAIN ANALYZE"):
        run_query(lk, f"EXPLAIN ANALYZE COPY (SELECT 42 AS x) TO '{target}' (FORMAT parquet)")
    assert not Path(target).exists()
    assert run_query(lk, "SELECT count(*) AS n FROM features")["n"][0] == 6


def test_lake_path_with_glob_characters(small_lake, tmp_path):
    lk, _ = small_lake
    odd = tmp_path / "lake[1]*?"
    shutil.copytree(lk.root, odd)
    assert run_query(str(odd), "SELECT count(*) AS n FROM features")["n"][0] == 6
    con = connect(str(odd))  # the analysis connection (no sandbox) too
    try:
        assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 6
    finally:
        con.close()


def test_cli_query_may_start_with_a_comment(small_lake):
    lk, _ = small_lake
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql",
                        "-- patients per grade\nSELECT count(*) AS n FROM clinical",
                        "--lake", lk.root, "--format", "csv"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["n", "3"]
