"""An installed wheel carries its table schemas, SQL views, filter banks and presets: built
here, unpacked away from the source tree, and used to query a lake through `drlake sql`."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
from conftest import write_rows

from pipelines.lake import Lake
from pipelines.resources import data_dir

ROOT = Path(__file__).resolve().parents[1]


def test_source_checkout_uses_the_top_level_folders():
    assert data_dir("schemas") == ROOT / "schemas"
    assert data_dir("sql") == ROOT / "sql"


def test_wheel_has_schemas_and_views_and_works_outside_the_source_tree(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("drlake-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("schemas/features.csv", "schemas/features.json", "sql/drf.sql", "sql/macros.sql"):
        assert f"pipelines/_data/{f}" in names
    assert {n for n in names if n.startswith("pipelines/filters/banks/")} >= {
        "pipelines/filters/banks/pyradiomics.toml", "pipelines/filters/banks/ibsi2-phase2.toml"}
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)

    lake = Lake(tmp_path / "lake")
    write_rows(lake, "features", pd.DataFrame({
        "patient_id": ["P1", "P1"], "modality": "T1", "encoder": "e", "region": "roi",
        "layer": [1, 0], "map": 0, "feature": ["cm_contrast", "morph_volume"],
        "value": [2.0, 10.0], "run_id": "r"}), name="P1", partition={"modality": "T1",
                                                                      "encoder": "e"})
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import pipelines, pipelines.resources as r; "
         "print(pipelines.__file__); print(r.data_dir('sql'))"],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    pkg, sql_dir = where.stdout.split()
    assert pkg.startswith(str(site)) and sql_dir.startswith(str(site))
    q = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "sql", "--lake", str(tmp_path / "lake"),
         "--format", "csv", "SELECT \"T1__cm_contrast\", \"T1__morph_volume\" FROM drf"],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    assert q.stdout.splitlines()[-1] == "2.0,10.0"
