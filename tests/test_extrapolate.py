"""The paper-sized table cohort drawn from a small image cohort's DRF-latent relation, and the
demo's paper-size check built on it."""

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.synth import make_tables
from pipelines.synth.extrapolate import LATENT_COLUMNS, extrapolated_drfs


def _latent(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"P{k:04d}" for k in range(n)], name="patient_id")
    return pd.DataFrame({"tcell": rng.normal(size=n), "prolif": rng.normal(size=n),
                         "gbm": rng.integers(0, 2, n).astype(float)}, index=ids)


def test_measured_rows_are_kept_and_an_exact_linear_relation_is_reproduced():
    lat = _latent(200, 0)
    measured = lat.index[:20]
    beta = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0], [2.0, 1.0]])  # [1, t, p, g] x 2
    z = np.column_stack([np.ones(len(lat)), lat[list(LATENT_COLUMNS)].to_numpy()])
    drf = pd.DataFrame(z[:20] @ beta, index=measured, columns=["T1__a", "T2__b"])
    drf["T2__empty"] = np.nan  # an all-NaN column is dropped
    got = extrapolated_drfs(drf, lat.loc[measured], lat.iloc[::-1], seed=3)
    assert list(got.index) == list(lat.index[::-1]) and list(got.columns) == ["T1__a", "T2__b"]
    pd.testing.assert_frame_equal(got.loc[measured], drf[["T1__a", "T2__b"]])
    np.testing.assert_allclose(got.loc[lat.index].to_numpy(), z @ beta, atol=1e-9)


def test_drawn_residuals_have_the_measured_covariance_and_ignore_everything_else():
    lat = _latent(20030, 1)
    measured = lat.index[:30]
    rng = np.random.default_rng(2)
    shared = rng.normal(size=30)
    drf = pd.DataFrame({"a": 2 * lat.loc[measured, "tcell"] + shared + rng.normal(0, .5, 30),
                        "b": -shared + rng.normal(0, .5, 30)}, index=measured)
    got = extrapolated_drfs(drf, lat.loc[measured], lat, seed=0).iloc[30:]
    z = np.column_stack([np.ones(30), lat.loc[measured, list(LATENT_COLUMNS)].to_numpy()])
    beta, *_ = np.linalg.lstsq(z, drf.to_numpy(), rcond=None)
    r = drf.to_numpy() - z @ beta
    zn = np.column_stack([np.ones(len(got)), lat.loc[got.index, list(LATENT_COLUMNS)]])
    drawn = got.to_numpy() - zn @ beta
    np.testing.assert_allclose(np.cov(drawn.T), r.T @ r / 26, rtol=0.05)
    assert np.corrcoef(drawn[:, 0], drawn[:, 1])[0, 1] < -0.3  # the shared part survives
    # independent of anything outside the latent factors (a null marker)
    other = np.random.default_rng(9).normal(size=len(got))
    assert abs(np.corrcoef(got["a"], other)[0, 1]) < 0.03
    # deterministic for a seed
    again = extrapolated_drfs(drf, lat.loc[measured], lat, seed=0).iloc[30:]
    pd.testing.assert_frame_equal(got, again)


def test_refuses_too_few_or_unknown_patients():
    lat = _latent(40, 0)
    drf = pd.DataFrame({"a": np.arange(9.0)}, index=lat.index[:9])
    with pytest.raises(ValueError, match="at least 10"):
        extrapolated_drfs(drf, lat.loc[drf.index], lat)
    drf = pd.DataFrame({"a": np.arange(12.0)}, index=[*lat.index[:11], "nobody"])
    with pytest.raises(ValueError, match="nobody"):
        extrapolated_drfs(drf, lat.loc[lat.index[:11]], lat)


def _truth(seed: int) -> dict:
    return {"seed": seed, "effect_scale": 1.0, "immune": {
        "t_cells_cd8": {"driver": "tcell", "weight": 1.6},
        "neutrophils": {"driver": "prolif", "weight": 1.4},
        "b_cells_memory": {"driver": None, "weight": 0.0},
        "eosinophils": {"driver": None, "weight": 0.0}}}


def test_paper_size_check_finds_planted_markers_from_24_measured_patients(tmp_path,
                                                                           monkeypatch):
    """24 measured patients whose DRFs follow tcell / prolif: at 151 patients (100 training)
    the planted markers are found, the null ones not, and survival is predicted above chance
    (the generator's survival follows the same factors)."""
    import pipelines.analyze as A
    from pipelines.demo import _paper_size_lines, paper_size_check

    t = make_tables(24, seed=4)
    lat = t["latent"].set_index("patient_id")
    rng = np.random.default_rng(0)
    drf = pd.DataFrame({"T1CE__grain": lat["tcell"] + rng.normal(0, .3, 24),
                        "T2__het": lat["prolif"] + rng.normal(0, .3, 24),
                        "T2__noise": rng.normal(size=24)}, index=lat.index)
    data = A.CohortData(drf, t["immune"].set_index("patient_id").astype(float),
                        t["clinical"].set_index("patient_id"), "enc")
    monkeypatch.setattr(A, "load_cohort", lambda lake, enc: data)
    truth = tmp_path / "ground_truth.json"
    truth.write_text(json.dumps(_truth(4)))

    class FakeLake:
        url = "mem://lake"

    got = paper_size_check(FakeLake(), "enc", truth, trees=30)
    assert (got["n"], got["measured"], got["n_train"], got["tests"]) == (151, 24, 100, 3 * 22)
    table = got["table"].set_index("marker")
    assert table.loc["t_cells_cd8", "found"] and table.loc["neutrophils", "found"]
    assert not table.loc["b_cells_memory", "found"] and not table.loc["eosinophils", "found"]
    assert got["survival"].n == 151 and got["survival"].auc_low95 > 0.5
    text = "\n".join(_paper_size_lines(got))
    assert "planted markers found (Holm): 2/2; null markers found: 0/2" in text

    # a lake that is not this synthetic cohort is refused
    data.markers.iloc[0, 0] += 1.0
    with pytest.raises(ValueError, match="not the synthetic cohort"):
        paper_size_check(FakeLake(), "enc", truth, trees=30)
