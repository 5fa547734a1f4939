"""The lake layer: patient ids, Delta table commits, upserts, volumes and the run log."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from pipelines.exceptions import InputError, LakeError, SchemaError
from pipelines.lake import Lake, validate_patient_id


@pytest.mark.parametrize("pid", ["P001", "TCGA-02-0003", "a.b_c-1"])
def test_valid_patient_ids(pid):
    assert validate_patient_id(pid) == pid


@pytest.mark.parametrize("pid", ["../etc", "a/b", "a\\b", "", " ", ".hidden", "x..y", "a b", None])
def test_invalid_patient_ids_are_refused(pid):
    with pytest.raises(InputError, match="patient id"):
        validate_patient_id(pid)


def clinical_df(n=3):
    return pd.DataFrame({
        "patient_id": [f"P{i}" for i in range(n)],
        "age": [50.0 + i for i in range(n)],
        "gender": ["M", "F", "M"][:n],
        "grade": ["LGG", "GBM", "GBM"][:n],
        "survival_days": [100.0, 200.0, 300.0][:n],
        "event": [1, 0, 1][:n],
    })


def test_append_round_trip_is_one_delta_commit(tmp_path):
    lake = Lake(tmp_path / "lake")
    v = lake.append_rows("clinical", clinical_df())
    assert v == 0 and lake.table("clinical").version() == 0
    back = lake.read_table("clinical")
    pd.testing.assert_frame_equal(back, clinical_df(), check_dtype=False)
    assert os.path.isdir(lake.path("tables", "clinical", "_delta_log"))


def test_failed_write_leaves_the_table_as_it_was(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.append_rows("clinical", clinical_df())
    bad = clinical_df()
    bad.loc[1, "event"] = 7
    with pytest.raises(SchemaError, match=r"clinical.*event.*P1.*7"):
        lake.upsert_table("clinical", bad)
    assert lake.read_table("clinical")["event"].tolist() == [1, 0, 1]
    assert lake.table("clinical").version() == 0


def test_upsert_adds_and_replaces_by_key(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.upsert_table("clinical", clinical_df(2))
    new = clinical_df(3).iloc[[1, 2]].copy()
    new.loc[new.index[0], "age"] = 99.0
    lake.upsert_table("clinical", new)
    merged = lake.read_table("clinical").sort_values("patient_id")
    assert merged["patient_id"].tolist() == ["P0", "P1", "P2"]
    assert merged.set_index("patient_id").loc["P1", "age"] == 99.0
    # the older version is still there to read
    assert lake.read_table("clinical", version=0)["age"].tolist() == [50.0, 51.0]


def test_upsert_of_same_rows_makes_no_commit(tmp_path):
    lake = Lake(tmp_path / "lake")
    v = lake.upsert_table("clinical", clinical_df())
    assert lake.upsert_table("clinical", clinical_df()) == v
    assert lake.table("clinical").version() == v


def test_rows_of_runs_that_did_not_end_ok_are_invisible(tmp_path):
    from pipelines.lake import RunLog

    lake = Lake(tmp_path / "lake")
    rows = pd.DataFrame({"run_id": "analyze-x", "modality": "T1", "feature": "f",
                         "marker": "m", "n": 3, "rho": 0.5, "p": 0.1, "p_holm": 0.2}, index=[0])
    import datetime as dt

    log = RunLog(lake=lake, run_id="analyze-x", stage="analyze", parameters={},
                 input_fingerprints={}, encoder_hash=None, started_at=dt.datetime.now(dt.UTC))
    log.write("running")
    lake.append_rows("results_spearman", _fit(lake, "results_spearman", rows), run_id="analyze-x")
    assert lake.read_table("results_spearman").empty
    assert len(lake.read_table("results_spearman", committed=False)) == 1
    log.write("ok")
    assert len(lake.read_table("results_spearman")) == 1
    runs = lake.runs()
    assert runs["status"].tolist() == ["ok"]
    assert "results_spearman" in __import__("json").loads(runs["table_versions"].iloc[0])


def _fit(lake, table, rows):
    """Return rows with every column of the table's schema (test values for the missing)."""
    from pipelines.schemas import load_schema

    out = {}
    for c in load_schema(table).columns:
        if c.name in rows.columns:
            out[c.name] = rows[c.name]
        else:
            out[c.name] = {"string": "x", "int64": 1, "float64": 0.5, "bool": True}.get(c.type)
    return pd.DataFrame(out)


def test_a_dead_run_is_marked_and_its_staging_removed(tmp_path):
    import datetime as dt
    import subprocess
    import sys

    from pipelines.lake import RunLog

    lake = Lake(tmp_path / "lake")
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    log = RunLog(lake=lake, run_id="ingest-dead", stage="ingest", parameters={},
                 input_fingerprints={}, encoder_hash=None, started_at=dt.datetime.now(dt.UTC),
                 pid=p.pid)
    log.write("running")
    tmp, _ = lake.stage_group("volumes", "P1", token="ingest-dead")
    assert os.path.exists(tmp)
    runs = lake.runs()
    assert runs.set_index("run_id").loc["ingest-dead", "status"] == "dead"
    assert not os.path.exists(tmp)
    # a live run is left alone
    RunLog(lake=lake, run_id="ingest-live", stage="ingest", parameters={},
           input_fingerprints={}, encoder_hash=None,
           started_at=dt.datetime.now(dt.UTC)).write("running")
    assert lake.runs().set_index("run_id").loc["ingest-live", "status"] == "running"


def test_a_v01_lake_names_drlake_migrate_and_migrate_converts_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.exceptions import LakeError
    from pipelines.maintenance import migrate_lake

    lake = Lake(tmp_path / "lake")
    folder = tmp_path / "lake" / "tables" / "clinical"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(clinical_df(), preserve_index=False),
                   folder / "data.parquet")
    feats = tmp_path / "lake" / "tables" / "features" / "modality=T1" / "encoder=e"
    feats.mkdir(parents=True)
    pq.write_table(pa.table({"patient_id": ["P1"], "modality": ["T1"], "encoder": ["e"],
                             "layer": [1], "map": [0], "feature": ["cm_contrast"],
                             "value": [1.5], "run_id": ["r"]}), feats / "P1.parquet")
    with pytest.raises(LakeError, match="drlake migrate"):
        lake.read_table("clinical")
    assert migrate_lake(lake) == {"clinical": 3, "features": 1}
    pd.testing.assert_frame_equal(lake.read_table("clinical"), clinical_df(), check_dtype=False)
    f = lake.read_table("features", committed=False)
    assert f[["patient_id", "modality", "encoder", "region", "value"]].values.tolist() == [
        ["P1", "T1", "e", "roi", 1.5]]
    assert not (folder / "data.parquet").exists()
    assert migrate_lake(lake) == {}


def test_volume_round_trip_and_replace(tmp_path):
    lake = Lake(tmp_path / "lake")
    rng = np.random.default_rng(0)
    img = rng.random((70, 20, 30), dtype=np.float32)
    mask = (img > 0.5).astype(np.uint8)
    attrs = {"modalities": ["T1"], "spacing_zyx": [1.0, 1.0, 1.0]}
    lake.write_volume("P1", {"T1": img}, {"T1": mask}, attrs)
    rec = lake.read_volume("P1")
    # stored as uint16 steps of 1/65535: within half a step of the input
    np.testing.assert_allclose(rec.images["T1"], img, atol=0.5 / 65535 + 1e-7, rtol=0)
    assert rec.images["T1"].dtype == np.float32
    np.testing.assert_array_equal(rec.masks["T1"], mask)
    assert rec.attrs["spacing_zyx"] == [1.0, 1.0, 1.0]
    lake.write_volume("P1", {"T1": img * 0}, {"T1": mask}, attrs)
    assert lake.read_volume("P1").images["T1"].max() == 0
    leftovers = [n for n in os.listdir(lake.path("volumes")) if n.startswith(".")]
    assert leftovers == []


def test_discarded_stage_is_invisible(tmp_path):
    lake = Lake(tmp_path / "lake")
    tmp = lake.stage_volume("P1", {"T1": np.zeros((2, 2, 2), np.float32)},
                            {"T1": np.ones((2, 2, 2), np.uint8)}, {"modalities": ["T1"]})
    assert lake.fs.exists(tmp)
    lake.discard_staged(tmp)
    assert os.listdir(lake.path("volumes")) == []


def test_run_log_records_ok_and_failed(tmp_path):
    lake = Lake(tmp_path / "lake")
    with lake.run("unit", {"a": 1}, {"x": "abc"}) as run:
        run.message = "fine"
    with pytest.raises(RuntimeError), lake.run("unit", {"a": 2}):
        raise RuntimeError("boom")
    runs = lake.runs()
    assert runs["status"].tolist() == ["ok", "failed"]
    assert runs["message"].tolist()[0] == "fine"
    assert "boom" in runs["message"].tolist()[1]
    assert runs["params_hash"].nunique() == 2
    assert runs["ended_at"].notna().all()


# ---- the lake owns its layout: typed locations over two storage backends ---------------------
@pytest.fixture(params=["local", "s3"])
def any_lake(request, tmp_path):
    """An empty lake on each backend: a local folder, a prefix on the loopback S3 server."""
    if request.param == "local":
        return Lake(tmp_path / "lake")
    request.getfixturevalue("s3_server")
    return Lake("s3://drlake/lake")


def test_each_backend_writes_then_reads_every_kind_of_location(any_lake):
    """One write-then-read test that both storage backends run (local rename, object copy)."""
    import pickle

    lake = any_lake
    lake.ensure()
    assert lake.is_local == (type(lake.storage).__name__ == "LocalStorage")
    # a Zarr group: staged (invisible), committed, replaced
    loc = lake.spatial_map("m1", "P1")
    tmp, g = loc.stage("run-1")
    g.attrs["v"] = 1
    assert not loc.exists() and tmp == loc.staged("run-1")
    assert loc.commit(tmp) == loc.rel and loc.attrs() == {"v": 1}
    tmp, g = loc.stage("run-2")
    g.attrs["v"] = 2
    loc.commit(tmp)
    assert loc.attrs() == {"v": 2} and not lake.fs.exists(tmp)
    # a file: written whole, read back, removed
    blob = lake.spatial_model("m1")
    blob.write_atomic(b"first")
    blob.write_atomic(b"second")
    assert blob.read_bytes() == b"second" and lake.blob(blob.rel).read_bytes() == b"second"
    blob.remove()
    assert not blob.exists()
    with pytest.raises(LakeError, match="does not exist"):
        blob.read_bytes()
    # a model folder
    m = lake.model("enc")
    m.file("weights-a.pt").write_atomic(b"a")
    m.file("weights-b.pt").write_atomic(b"b")
    m.file("model.json").write_atomic(b"{}")
    assert [f.rel.rsplit("/", 1)[-1] for f in m.files("weights-*.pt")] == [
        "weights-a.pt", "weights-b.pt"]
    assert lake.model_names() == ["enc"]
    # a volume through the lake's own helpers, and a Lake that crossed a pickle reads it
    lake.write_volume("P1", {"T1": np.full((4, 4, 4), 0.5, np.float32)},
                      {"T1": np.ones((4, 4, 4), np.uint8)}, {"modalities": ["T1"]})
    other = pickle.loads(pickle.dumps(lake))
    assert other.url == lake.url
    vol = other.read_volume("P1")
    assert np.allclose(vol.images["T1"], 0.5, atol=1e-4) and vol.masks["T1"].sum() == 64
    # a table
    lake.append_rows("clinical", pd.DataFrame({
        "patient_id": ["P1"], "age": [50.0], "gender": ["F"], "grade": ["GBM"],
        "survival_days": [100.0], "event": [1]}))
    assert list(other.read_table("clinical")["patient_id"]) == ["P1"]


def test_a_replaced_volume_is_switched_whole_and_compact_removes_the_old_one(any_lake):
    """Replacing a committed group: readers opening it see the old or the new group, whole.
    On an object store the new one is a hidden version a pointer names (one PUT), so a reader
    that opened the old group before keeps reading it, until `compact` removes it."""
    from pipelines.maintenance import compact_lake

    lake = any_lake
    lake.ensure()

    def write(value: float) -> str:
        return lake.write_volume("P1", {"T1": np.full((4, 4, 4), value, np.float32)},
                                 {"T1": np.ones((4, 4, 4), np.uint8)}, {"modalities": ["T1"]})

    first = write(0.5)
    assert first == lake.volume("P1").rel == "volumes/P1.zarr"
    before = lake.volume("P1").open()
    second = write(0.25)
    assert second == lake.volume("P1").rel
    assert np.allclose(lake.read_volume("P1").images["T1"], 0.25, atol=1e-4)
    if not lake.is_local:
        assert second != first and second.startswith("volumes/.v-P1-")
        old = before["images/T1"][...]  # the old group, whole (stored as uint16 steps)
        assert (old == round(0.5 * 65535)).all()
        third = write(0.75)
        assert third not in (first, second)
    compact_lake(lake)
    assert np.allclose(lake.read_volume("P1").images["T1"], 0.75 if not lake.is_local
                       else 0.25, atol=1e-4)
    if not lake.is_local:
        left = sorted(p.rsplit("/", 1)[-1] for p in lake.fs.ls(lake.path("volumes")))
        assert left == [".P1.current", third.rsplit("/", 1)[-1]]


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", ""])
def test_locations_refuse_unsafe_names(tmp_path, bad):
    lake = Lake(tmp_path / "lake")
    for make in (lambda: lake.activations(bad, "P1"), lambda: lake.patch_set(bad),
                 lambda: lake.spatial_model(bad), lambda: lake.model(bad)):
        with pytest.raises(InputError):
            make()
    for rel in ("../x", "a/../../x", "a/.hidden"):
        with pytest.raises(InputError):
            lake.blob(rel)


def _string_constants(tree) -> list[tuple[int, str]]:
    """Return (line, text) of the string constants of a module that are not docstrings."""
    import ast

    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                id(node) not in docstrings:
            out.append((node.lineno, node.value))
    return out


def test_no_module_outside_the_lake_names_a_lake_path_or_touches_its_filesystem():
    """Stages reach files through typed locations only (`Lake.volume`, `Lake.activations`,
    ...): no path string of the layout and no ``lake.fs`` outside the lake module."""
    import ast
    from pathlib import Path

    import pipelines

    root = Path(pipelines.__file__).parent
    lake_modules = {"lake.py", "tables.py", "maintenance.py"}  # the lake and its table layer
    bad = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if rel in lake_modules:
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for line, text in _string_constants(tree):
            for needle in ("volumes/", "activations/", "tables/", ".zarr"):
                if needle in text:
                    bad.append(f"{rel}:{line}: {needle!r} in {text!r}")
        if rel == "sql.py":  # the SQL edge registers the lake's filesystem with DuckDB
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("fs", "path", "root") and \
                    isinstance(node.value, ast.Name) and node.value.id == "lake":
                bad.append(f"{rel}:{node.lineno}: lake.{node.attr}")
    assert bad == []
