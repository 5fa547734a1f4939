"""SQL over the lake: views, the Spearman/Holm analysis queries against scipy/statsmodels, joins,
read-only enforcement, and a lake on an S3 server."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import make_cohort_files, write_rows
from scipy import stats
from statsmodels.stats.multitest import multipletests

from pipelines.exceptions import InputError
from pipelines.lake import Lake
from pipelines.sql import check_read_only, connect, run_query

MARKERS = ["t_cells_cd8", "neutrophils", "macrophages_m1"]
FEATS = ["cm_contrast", "szm_lze", "morph_volume"]


@pytest.fixture
def stat_lake(tmp_path):
    """A lake with features, immune markers, clinical and expression rows written directly,
    with many ties (values rounded) so that average ranks matter."""
    rng = np.random.default_rng(7)
    n = 40
    pids = [f"P{i:03d}" for i in range(n)]
    lk = Lake(tmp_path / "lake")
    latent = rng.normal(size=n)
    frames = []
    for mod in ("T1", "FLAIR"):
        for i, pid in enumerate(pids):
            rows = []
            for f in FEATS:
                if f.startswith("morph_"):
                    rows.append((0, 0, f, float(np.round(latent[i] + rng.normal(), 0))))
                    continue
                base = np.round(2 * latent[i] + rng.normal(), 0)  # integers: ties
                for layer in (1, 2):
                    for m in range(3):
                        rows.append((layer, m, f, float(base + 0.5 * (m - 1))))
            df = pd.DataFrame(rows, columns=["layer", "map", "feature", "value"])
            df.insert(0, "patient_id", pid)
            df.insert(1, "modality", mod)
            df.insert(2, "encoder", "encA")
            df.insert(3, "region", "roi")
            df["run_id"] = "r1"
            frames.append(df)
    write_rows(lk, "features", pd.concat(frames, ignore_index=True))  # one commit
    imm = pd.DataFrame([(p, mk, float(np.clip(np.round(0.1 + 0.05 * latent[i] * (k == 0)
                                                        + 0.02 * rng.normal(), 2), 0, 1)))
                        for i, p in enumerate(pids) for k, mk in enumerate(MARKERS)],
                       columns=["patient_id", "marker", "value"])
    write_rows(lk, "immune_markers", imm)
    clin = pd.DataFrame({
        "patient_id": pids, "age": rng.uniform(20, 80, n).round(1),
        "gender": rng.choice(["M", "F"], n), "grade": rng.choice(["LGG", "GBM"], n),
        "survival_days": rng.integers(30, 2000, n).astype(float),
        "event": rng.integers(0, 2, n)})
    write_rows(lk, "clinical", clin)
    expr = pd.DataFrame({"sample_id": pids, "patient_id": pids, "sample_type": "tumour",
                         "gene": "CD3D", "tpm": np.exp(latent + rng.normal(size=n)).round(2)})
    write_rows(lk, "genomic_expression", expr)
    return lk


def test_views_exist_and_drf_is_wide(stat_lake):
    con = connect(stat_lake)
    views = {r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"features", "drf", "drf_long", "patients", "clinical", "immune_markers",
            "immune_markers_wide", "expression", "biopsies", "runs",
            "drf_immune_spearman_all"} <= views
    wide = con.execute("SELECT * FROM immune_markers_wide ORDER BY patient_id").df()
    assert list(wide.columns) == ["patient_id", *sorted(MARKERS)] and len(wide) == 40
    drf = con.execute("SELECT * FROM drf").df()
    assert {"T1__cm_contrast", "FLAIR__szm_lze", "T1__morph_volume"} <= set(drf.columns)
    con.close()


def test_spearman_and_holm_in_sql_match_scipy_and_statsmodels(stat_lake):
    con = connect(stat_lake)
    got = con.execute("SELECT * FROM drf_immune_spearman_all").df()
    drf = con.execute("SELECT * FROM drf_long").df()
    imm = con.execute("SELECT * FROM immune_markers").df()
    con.close()
    assert len(got) == 2 * len(FEATS) * len(MARKERS)
    ref = []
    for (mod, feat), d in drf.groupby(["modality", "feature"]):
        for mk, m in imm.groupby("marker"):
            j = d.merge(m, on="patient_id")
            assert j["value_x"].duplicated().any()  # ties present
            rho, p = stats.spearmanr(j["value_x"], j["value_y"])
            ref.append((mod, feat, mk, rho, p))
    ref = pd.DataFrame(ref, columns=["modality", "feature", "marker", "rho_ref", "p_ref"])
    ref["holm_ref"] = multipletests(ref["p_ref"], method="holm")[1]
    m = got.merge(ref, on=["modality", "feature", "marker"])
    assert len(m) == len(ref)
    np.testing.assert_allclose(m["rho"], m["rho_ref"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(m["p"], m["p_ref"], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(m["p_holm"], m["holm_ref"], rtol=1e-9, atol=1e-15)
    assert (m["p_holm"] < 0.05).any()  # the planted t_cells_cd8 association is found


def test_holm_macro_matches_statsmodels_with_nulls(tmp_path):
    con = connect(Lake(tmp_path / "empty"))
    rng = np.random.default_rng(3)
    p = np.round(rng.uniform(0, 0.2, 25), 3)  # ties in p
    df = pd.DataFrame({"k": range(26), "p": [*p, None]})
    con.register("ps", df)
    got = con.execute("SELECT k, p_holm FROM holm_adjust('ps') ORDER BY k").df()
    con.close()
    np.testing.assert_allclose(got["p_holm"][:25], multipletests(p, method="holm")[1],
                               rtol=1e-12)
    assert pd.isna(got["p_holm"].iloc[25])


JOINS = {
    "drf_with_immune": """
        SELECT d.patient_id, d."T1__szm_lze", w.t_cells_cd8
        FROM drf AS d JOIN immune_markers_wide AS w USING (patient_id)
        WHERE d.encoder = 'encA' ORDER BY d.patient_id""",
    "drf_vs_cd3d": """
        SELECT d.feature, d.modality, corr(d.value, ln(e.tpm)) AS r, count(*) AS n
        FROM drf_long AS d JOIN expression AS e USING (patient_id)
        WHERE e.gene = 'CD3D' AND e.sample_type = 'tumour' GROUP BY ALL ORDER BY ALL""",
    "marker_median_split_survival": """
        WITH m AS (SELECT patient_id, value,
                          value > median(value) OVER () AS high
                   FROM immune_markers WHERE marker = 't_cells_cd8')
        SELECT high, count(*) AS n, median(c.survival_days) AS median_days, sum(c.event) AS deaths
        FROM m JOIN clinical AS c USING (patient_id) GROUP BY high ORDER BY high""",
    "one_patient_across_encoders": """
        SELECT encoder, modality, feature, avg(value) AS value
        FROM features WHERE patient_id = 'P001' GROUP BY ALL ORDER BY ALL""",
}


@pytest.mark.parametrize("name", list(JOINS))
def test_documented_join_queries_run(stat_lake, name):
    df = run_query(stat_lake, JOINS[name])
    assert len(df) > 0
    if name == "drf_with_immune":
        assert len(df) == 40 and df.notna().all().all()
    if name == "marker_median_split_survival":
        assert df["n"].sum() == 40 and set(df["high"]) == {False, True}
    if name == "drf_vs_cd3d":
        assert (df["n"] == 40).all()


@pytest.mark.parametrize("query", [
    "CREATE TABLE t AS SELECT 1", "DROP VIEW drf", "COPY (SELECT 1) TO '/tmp/x.csv'",
    "ATTACH '/tmp/other.duckdb'", "INSTALL httpfs", "SET threads = 1",
    "SELECT 1; DELETE FROM features",
])
def test_writes_are_refused(query):
    with pytest.raises(InputError, match="read-only"):
        check_read_only(query)


def test_reading_outside_the_lake_is_refused(stat_lake):
    with pytest.raises(InputError, match="Permission"):
        run_query(stat_lake, "SELECT * FROM read_csv('/etc/hostname')")


def test_sql_cli_formats_and_errors(stat_lake, tmp_path):
    def drlake(*a):
        return subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", *map(str, a),
                               "--lake", stat_lake.root], capture_output=True, text=True)

    r = drlake("SELECT patient_id, age FROM clinical ORDER BY 1 LIMIT 3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["patient_id", "age"] and lines[1].split() == ["VARCHAR", "DOUBLE"]
    r = drlake("SELECT count(*) AS n FROM clinical", "--format", "json")
    assert r.stdout.strip() == '[{"n":40}]'
    out = tmp_path / "x.parquet"
    r = drlake("SELECT * FROM drf", "--format", "parquet", "--out", out)
    assert r.returncode == 0 and len(pd.read_parquet(out)) == 40
    q = tmp_path / "q.sql"
    q.write_text("SELECT count(*) AS n FROM features;")
    r = drlake("-f", q, "--format", "csv")
    assert r.stdout.splitlines() == ["n", str(40 * 2 * (2 * 3 * 2 + 1))]
    r = drlake("SELECT * FROM no_such_view")
    assert r.returncode == 2 and "SQL error" in r.stderr and "Traceback" not in r.stderr
    r = drlake("DROP VIEW drf")
    assert r.returncode == 2 and "read-only" in r.stderr


def test_pipeline_and_sql_on_an_s3_lake(tmp_path, s3_server):
    from pipelines.encoder import EncoderSpec
    from pipelines.ingest import ingest
    from pipelines.pipeline import run_activations, run_quantify
    from pipelines.scheduler import SchedulerSpec

    manifest = make_cohort_files(tmp_path / "c", n=2)
    lake = Lake("s3://drlake/lake")
    assert not lake.is_local
    s = ingest(manifest, lake, clinical=tmp_path / "c" / "clinical.csv",
               immune=tmp_path / "c" / "immune.csv", progress=False)
    assert s.ingested == ["P001", "P002"]
    assert ingest(manifest, lake, progress=False).ingested == []  # idempotent on S3 too
    act = run_activations(lake, EncoderSpec(blocks=(2, 2)), SchedulerSpec("sync"),
                          progress=False)
    q = run_quantify(lake, act["encoder"], sched=SchedulerSpec("threads", 2), progress=False)
    assert q["written"] == 4
    # the same numbers as a local lake built from the same files
    local = Lake(tmp_path / "local")
    ingest(manifest, local, progress=False)
    run_activations(local, EncoderSpec(blocks=(2, 2)), SchedulerSpec("sync"), progress=False)
    run_quantify(local, act["encoder"], sched=SchedulerSpec("sync"), progress=False)
    query = "SELECT patient_id, modality, feature, layer, map, value FROM features ORDER BY ALL"
    pd.testing.assert_frame_equal(run_query(lake, query), run_query(local, query))
    drf = run_query(lake, "SELECT * FROM drf")
    assert len(drf) == 2
    # and from the command line, with the endpoint taken from the environment
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql",
                        "SELECT count(*) AS n FROM clinical", "--lake", "s3://drlake/lake",
                        "--format", "csv"], capture_output=True, text=True,
                       env={**os.environ, **s3_server})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["n", "2"]


def test_a_schema_column_no_file_has_yet_reads_as_null(tmp_path):
    """A table written before a column was added (here features without region and
    fragment_hash) still opens: the missing columns read as null."""
    import datetime as dt

    import pyarrow as pa
    from deltalake import write_deltalake

    from pipelines.lake import RunLog

    lk = Lake(tmp_path / "lake")
    lk.ensure()
    write_deltalake(lk.table("features").uri,
                    pa.table({"patient_id": ["P1"], "modality": ["T1"], "encoder": ["e"],
                              "layer": [1], "map": [0], "feature": ["cm_contrast"],
                              "value": [1.5], "run_id": ["r"]}),
                    partition_by=["modality", "encoder"])
    RunLog(lake=lk, run_id="r", stage="quantify", parameters={}, input_fingerprints={},
           encoder_hash=None, started_at=dt.datetime.now(dt.UTC)).write("ok")
    assert lk.read_table("features")[["patient_id", "region", "value"]].values.tolist() == [
        ["P1", None, 1.5]]
    for sandbox in (False, True):
        con = connect(lk, sandbox=sandbox)
        try:
            rows = con.execute("SELECT patient_id, region, value FROM features").fetchall()
        finally:
            con.close()
        assert rows == [("P1", None, 1.5)]
