"""An installed wheel carries its table schemas, SQL views, filter banks and presets, and works:
the wheel is built from a copy of the sources, installed (not editable) into a fresh venv outside
the checkout, and its `drlake` console script runs `quantify` on a reference case and
`synth` + `ingest` + `run` + `sql` on a 2-patient lake there."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import IBSI_FULL_CSV, agrees_with_reference

from pipelines.resources import data_dir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("pipelines", "schemas", "sql")  # with every top-level file (pyproject, setup.py)


def test_source_checkout_uses_the_top_level_folders():
    assert data_dir("schemas") == ROOT / "schemas"
    assert data_dir("sql") == ROOT / "sql"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a clean copy of the sources (as CI's clean clone; no build/ or
    egg-info of the checkout involved), offline with this interpreter's setuptools."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    for name in PACKAGE_DIRS:
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for p in ROOT.iterdir():
        if p.is_file():
            shutil.copy2(p, src / p.name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(base / "dist")],
        capture_output=True, text=True, cwd=base, timeout=300)
    assert build.returncode == 0, build.stderr
    (whl,) = (base / "dist").glob("drlake-*.whl")
    return whl


def test_wheel_has_schemas_views_banks_and_presets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("schemas/features.csv", "schemas/features.json", "sql/drf.sql", "sql/macros.sql"):
        assert f"pipelines/_data/{f}" in names
    for folder in ("schemas", "sql"):  # every data file of the checkout, none forgotten
        want = {f"pipelines/_data/{p.relative_to(ROOT).as_posix()}"
                for p in (ROOT / folder).rglob("*") if p.is_file()}
        assert want <= names, sorted(want - names)
    assert {n for n in names if n.startswith("pipelines/filters/banks/")} >= {
        "pipelines/filters/banks/pyradiomics.toml", "pipelines/filters/banks/ibsi2-phase2.toml"}
    presets = {f"pipelines/presets/{p.name}" for p in (ROOT / "pipelines/presets").glob("*.toml")}
    assert presets and presets <= names, sorted(presets - names)


def _dependency_dirs() -> list[str]:
    """Site-packages folders of this interpreter (the project's third-party dependencies)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(p for p in (paths["purelib"], paths["platlib"])
                              if Path(p).is_dir()))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv outside the checkout with the wheel pip-installed (non-editable); the
    dependencies come from this interpreter's site-packages through a plain-path .pth line
    (nothing downloaded; that folder's own .pth files, the checkout's editable finder among
    them, are not processed). Returns {"venv", "site", "drlake", "env", "cwd"}."""
    base = tmp_path_factory.mktemp("installed")
    assert not base.resolve().is_relative_to(ROOT), "tmp_path must be outside the checkout"
    venv = base / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                          text=True, timeout=300)
    py = venv / "bin" / "python"
    if made.returncode != 0 or not py.exists():
        pytest.skip(f"cannot create a venv with `{sys.executable} -m venv` here: "
                    f"{(made.stderr or made.stdout).strip()[-500:]}")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(PYTHONUTF8="1", PYTHONNOUSERSITE="1", PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    cwd = base / "work"
    cwd.mkdir()
    # install before the dependency .pth exists: pip sees no other drlake (the checkout's
    # editable one) and so cannot consider replacing it
    inst = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           str(wheel)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)
    assert inst.returncode == 0, inst.stderr
    site = Path(subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, env=env, check=True).stdout.strip())
    assert site.is_relative_to(venv)
    (site / "_drlake_test_deps.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    drlake = venv / "bin" / "drlake"
    assert drlake.exists(), "the wheel installed no `drlake` console script"
    assert drlake.read_text().splitlines()[0] == f"#!{py}"
    return {"venv": venv, "site": site, "drlake": drlake, "env": env, "cwd": cwd}


def _drlake(inst: dict, *args) -> subprocess.CompletedProcess:
    r = subprocess.run([str(inst["drlake"]), *map(str, args)], capture_output=True, text=True,
                       encoding="utf-8", env=inst["env"], cwd=inst["cwd"], timeout=600)
    assert r.returncode == 0, f"drlake {' '.join(map(str, args))}:\n{r.stderr[-3000:]}"
    return r


def test_installed_package_resolves_inside_the_fresh_venv(installed):
    probe = ("import json, sys, importlib.metadata as md, pipelines, pipelines.cli, "
             "pipelines.resources as r; d = md.distribution('drlake'); "
             "print(json.dumps({'pkg': pipelines.__file__, 'sql': str(r.data_dir('sql')), "
             "'schemas': str(r.data_dir('schemas')), 'dist': str(d.locate_file('')), "
             "'url': json.loads(d.read_text('direct_url.json') or '{}'), "
             "'editable': [m for m in sys.modules if 'editable' in m]}))")
    r = subprocess.run([str(installed["venv"] / "bin" / "python"), "-c", probe],
                       capture_output=True, text=True, env=installed["env"],
                       cwd=installed["cwd"])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    site = installed["site"]
    assert Path(got["pkg"]) == site / "pipelines" / "__init__.py"
    assert Path(got["sql"]) == site / "pipelines" / "_data" / "sql"
    assert Path(got["schemas"]) == site / "pipelines" / "_data" / "schemas"
    assert Path(got["dist"]) == site  # the wheel's dist-info, not the checkout's editable one
    assert "archive_info" in got["url"] and "dir_info" not in got["url"], got["url"]
    assert got["editable"] == []


def test_installed_quantify_of_the_ibsi_phantom(installed, shared_reference):
    from typer.testing import CliRunner

    from pipelines.cli import app

    base = shared_reference / "ibsi" / "digital_phantom" / "nifti"
    args = ["quantify", base / "image" / "phantom.nii.gz", base / "mask" / "mask.nii.gz",
            "--settings", "ibsi1-digital-phantom", "--families", "shape,glcm",
            "--aggregation", "averaged", "--format", "json"]
    rows = json.loads(_drlake(installed, *args).stdout)
    got = {(x["name"], x["aggregation"]): x["value"] for x in rows}
    here = CliRunner().invoke(app, list(map(str, args)))  # the checkout, in process
    assert here.exit_code == 0, here.output
    direct = {(x["name"], x["aggregation"]): x["value"] for x in json.loads(here.stdout)}
    assert set(got) == set(direct) and len(got) > 40
    for key, value in direct.items():  # None: an undefined (NaN) feature
        assert (got[key] is None if value is None
                else got[key] == pytest.approx(value, rel=1e-12)), (key, got[key], value)
    with IBSI_FULL_CSV.open(newline="", encoding="utf-8") as f:
        ref = {r["tag"]: r for r in csv.DictReader(f)}
    for tag, key in (("morph_volume", ("morph_volume", "")),
                     ("cm_contrast_3D_avg", ("cm_contrast", "3D, averaged")),
                     ("cm_joint_max_3D_avg", ("cm_joint_max", "3D, averaged"))):
        assert agrees_with_reference(got[key], ref[tag]), (tag, got[key], ref[tag]["value"])


def _sql(installed, lake, query) -> list[dict]:
    return json.loads(_drlake(installed, "sql", "--lake", lake, "--format", "json", query).stdout)


def test_installed_synth_ingest_run_and_sql(installed):
    cohort, lake = installed["cwd"] / "cohort", installed["cwd"] / "lake"
    _drlake(installed, "-q", "synth", cohort, "--patients", 2, "--biopsy-patients", 0,
            "--size", "small")
    _drlake(installed, "-q", "ingest", cohort / "manifest.csv", "--lake", lake, "--clinical",
            cohort / "clinical.csv", "--immune", cohort / "immune.csv", "--label", 1,
            "--scheduler", "sync")
    out = _drlake(installed, "-q", "run", "--lake", lake, "--blocks", "1,1", "--families",
                  "firstorder", "--scheduler", "sync").stdout
    assert "2 computed" in out and "2 patients x" in out, out
    (count,) = _sql(installed, lake, "SELECT count(*) AS n, count(DISTINCT encoder) AS e, "
                    "min(region) AS region, (SELECT count(*) FROM clinical) AS clinical "
                    "FROM drf")
    assert count == {"n": 2, "e": 1, "region": "roi", "clinical": 2}
    per = _sql(installed, lake, """
        SELECT f.patient_id, f.m, f.l, f.ih_mean, d."FLAIR__ih_mean" AS drf_ih_mean
        FROM (SELECT patient_id, count(DISTINCT modality) AS m, count(DISTINCT layer) AS l,
                     avg(value) FILTER (feature = 'ih_mean' AND modality = 'FLAIR') AS ih_mean
              FROM features GROUP BY patient_id) AS f
        JOIN drf AS d USING (patient_id) ORDER BY f.patient_id""")
    assert [(r["m"], r["l"]) for r in per] == [(4, 3), (4, 3)]  # layer 0: shape
    for r in per:  # the drf view averages the features view's maps
        assert r["drf_ih_mean"] == pytest.approx(r["ih_mean"], rel=1e-9) and r["ih_mean"] > 0
