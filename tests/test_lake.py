"""The lake layer: patient ids, atomic Parquet writes, upserts, volumes and the run log."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from pipelines.exceptions import InputError, SchemaError
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


def test_write_table_atomic_round_trip_and_no_temp_files(tmp_path):
    lake = Lake(tmp_path / "lake")
    path = lake.write_table_atomic("clinical", clinical_df())
    back = lake.read_table("clinical")
    pd.testing.assert_frame_equal(back, clinical_df(), check_dtype=False)
    folder = os.path.dirname(path)
    assert sorted(os.listdir(folder)) == ["data.parquet"]


def test_rewrite_replaces_instead_of_duplicating(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write_table_atomic("clinical", clinical_df())
    lake.write_table_atomic("clinical", clinical_df())
    assert len(lake.read_table("clinical")) == 3


def test_failed_write_leaves_old_file(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write_table_atomic("clinical", clinical_df())
    bad = clinical_df()
    bad.loc[1, "event"] = 7
    with pytest.raises(SchemaError, match=r"clinical.*event.*P1.*7"):
        lake.write_table_atomic("clinical", bad)
    assert lake.read_table("clinical")["event"].tolist() == [1, 0, 1]


def test_upsert_adds_and_replaces_by_key(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.upsert_table("clinical", clinical_df(2))
    new = clinical_df(3).iloc[[1, 2]].copy()
    new.loc[new.index[0], "age"] = 99.0
    merged = lake.upsert_table("clinical", new)
    assert merged["patient_id"].tolist() == ["P0", "P1", "P2"]
    assert merged.set_index("patient_id").loc["P1", "age"] == 99.0


def test_upsert_of_same_rows_does_not_rewrite(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.upsert_table("clinical", clinical_df())
    f = lake.table_files("clinical")[0]
    before = os.stat(f).st_mtime_ns
    lake.upsert_table("clinical", clinical_df())
    assert os.stat(f).st_mtime_ns == before


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
