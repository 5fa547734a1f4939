"""Seed 004 maps: each prediction lands on its own voxel (identity-like models on an asymmetric
volume), slice selection, Spearman against truth, PNG and Zarr output, the map stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from pipelines.exceptions import InputError
from pipelines.imageio import spatial_metadata
from pipelines.lake import Lake
from pipelines.spatial.maps import (
    map_slices,
    map_voxels,
    overlay_png,
    predict_map,
    read_truth,
    spearman_in_mask,
    write_map,
)
from pipelines.spatial.patches import extract_patches
from pipelines.spatial.stage import (
    spatial_map,
    spatial_patches,
    spatial_train,
    synthetic_biopsy_lake,
)
from pipelines.spatial.train import TrainConfig, predict_proba

SHAPE = (9, 23, 31)  # z, y, x all different: an axis swap cannot go unnoticed


@pytest.fixture(scope="session")
def biopsy_lake(tmp_path_factory):
    """The 4-patient synthetic biopsy lake shared by the spatial tests (built once)."""
    return synthetic_biopsy_lake(tmp_path_factory.getbasetemp() / "spatial-cohort", 4, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def asymmetric_stack(c=2):
    z, y, x = np.indices(SHAPE)
    base = (z * 10_000 + y * 100 + x).astype(np.float32)
    return np.stack([base + 1_000_000 * k for k in range(c)])


def irregular_mask():
    m = np.zeros(SHAPE, np.uint8)
    m[2:7, 4:15, 6:27] = 1
    m[4, 9:12, 3:5] = 1  # a bump near the x edge (patches need padding there)
    m[3, 5, 20] = 0
    m[0, 0, 0] = 1  # a corner voxel
    return m


def test_identity_model_puts_each_prediction_on_its_voxel():
    st, m, r = asymmetric_stack(), irregular_mask(), 8

    def centre_of_channel0(p):  # the patch's centre pixel of sequence 0
        return p[:, 0, r, r]

    out = predict_map(st, m, centre_of_channel0, radius=r, batch_size=37)
    inside = m.astype(bool)
    np.testing.assert_array_equal(out[inside], st[0][inside])
    assert np.isnan(out[~inside]).all()


def test_off_centre_readout_checks_patch_orientation_and_adjacent_slices():
    st, m, r = asymmetric_stack(), irregular_mask(), 3
    # channel of sequence 1 at slice z+1 is 1 * 3 + 2 = 5; pixel (r - 1, r + 2) is (y-1, x+2)
    out = predict_map(st, m, lambda p: p[:, 5, r - 1, r + 2], radius=r, adjacent=1)
    for z, y, x in np.argwhere(m):
        zz, yy, xx = z + 1, y - 1, x + 2
        inside = 0 <= zz < SHAPE[0] and 0 <= yy < SHAPE[1] and 0 <= xx < SHAPE[2]
        expect = st[1, zz, yy, xx] if inside else st[1].min()  # padded with the minimum
        assert out[z, y, x] == expect, (z, y, x)


def test_map_patches_equal_extract_patches():
    st, r = asymmetric_stack(3), 4
    m = np.zeros(SHAPE, np.uint8)
    m[3:5, 6:9, 10:14] = 1
    seen = []
    predict_map(st, m, lambda p: (seen.append(p.copy()), np.zeros(len(p)))[1], radius=r,
                adjacent=1)
    np.testing.assert_array_equal(np.concatenate(seen),
                                  extract_patches(st, map_voxels(m), r, adjacent=1))


class CentreLogit(nn.Module):
    """A 'model' whose logit is the centre pixel of channel 0 (invariant under rotations)."""

    def forward(self, x):
        return x[:, 0, x.shape[2] // 2, x.shape[3] // 2]


def test_torch_identity_model_through_predict_proba_with_tta():
    st = asymmetric_stack() / 1e6 - 0.1  # logits around 0
    m = irregular_mask()
    out = predict_map(st, m, lambda p: predict_proba(CentreLogit(), p, tta=True), radius=8)
    inside = m.astype(bool)
    expect = 1 / (1 + np.exp(-st[0][inside].astype(np.float64)))
    np.testing.assert_allclose(out[inside], expect, rtol=1e-6)


def test_slices_and_voxels():
    m = irregular_mask()
    assert map_slices("all", m) is None
    assert map_slices("5, 3,3", m) == [3, 5]
    assert map_slices("sites", m, np.array([[4, 10, 10], [4, 12, 12], [2, 5, 5]])) == [2, 4]
    assert set(map_voxels(m, [4])[:, 0]) == {4}
    assert len(map_voxels(m)) == int(m.sum())
    with pytest.raises(InputError, match="slices"):
        map_slices("middle", m)
    with pytest.raises(InputError, match="outside"):
        map_voxels(m, [20])


def test_spearman_in_mask():
    truth = np.random.default_rng(0).random(SHAPE)
    m = irregular_mask()
    prob = np.where(m > 0, truth**2, np.nan)
    rho, p, n = spearman_in_mask(prob, truth, m)
    assert rho == pytest.approx(1.0) and n == int(m.sum()) and p < 1e-6
    assert np.isnan(spearman_in_mask(np.full(SHAPE, np.nan), truth)[0])


def test_overlay_png_is_a_png():
    bg = np.random.default_rng(0).random(SHAPE)
    prob = np.where(irregular_mask() > 0, 0.7, np.nan)
    png = overlay_png(bg, prob, [3, 4, 5], np.array([[4, 10, 10]]), ["B1"], title="demo")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_truth_resamples_onto_the_volume_grid(tmp_path):
    arr = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetOrigin([-10.0, 5.0, 2.0])
    path = tmp_path / "truth.nii.gz"
    sitk.WriteImage(img, str(path))
    np.testing.assert_allclose(read_truth(path, spatial_metadata(img)), arr, atol=1e-6)


def test_write_map_is_atomic_and_validates_names(tmp_path):
    lake = Lake(tmp_path / "lake")
    rel = write_map(lake, "m1", "P1", np.zeros(SHAPE, np.float32), {"k": 1})
    assert rel == "spatial_maps/m1/P1.zarr"
    g = lake.open_group(rel)
    assert g["probability"].shape == SHAPE and g.attrs["k"] == 1
    assert not [p for p in Path(lake.path("spatial_maps/m1")).iterdir() if
                p.name.startswith(".")]
    with pytest.raises(InputError):
        write_map(lake, "../evil", "P1", np.zeros(SHAPE, np.float32), {})


def test_map_stage_on_synthetic_lake(biopsy_lake):
    lake = Lake(biopsy_lake["lake"])
    ps = spatial_patches(lake)["patch_set"]
    s = spatial_train(lake, ps, TrainConfig(epochs=3, patience=3, seed=0, threads=1))
    assert spatial_train(lake, ps, TrainConfig(epochs=3, patience=3, seed=0, threads=1))[
        "skipped"]
    df = spatial_map(lake, s["model"], truth_dir=biopsy_lake["truth_dir"], tta=False)
    assert len(df) >= 1 and df["heldout"].all()
    row = df.iloc[0]
    g = lake.open_group(row["map_path"])
    prob = g["probability"][...]
    vol = lake.read_volume(row["patient_id"], modalities=["T1Gd"])
    assert prob.shape == vol.images["T1Gd"].shape
    mapped = np.isfinite(prob)
    assert mapped.sum() == row["n_voxels"] > 0
    assert not (mapped & (vol.masks["T1Gd"] == 0)).any()
    zs = sorted(set(np.argwhere(mapped)[:, 0]))
    assert ",".join(map(str, zs)) == row["slices"]
    assert ((prob[mapped] >= 0) & (prob[mapped] <= 1)).all()
    assert lake.exists(row["png_path"])
    assert -1 <= row["rho_vs_truth"] <= 1
    again = spatial_map(lake, s["model"], tta=False)
    assert again.iloc[0]["map_path"] == row["map_path"]
    np.testing.assert_array_equal(lake.open_group(row["map_path"])["probability"][...], prob)
    runs = lake.runs()
    assert {"spatial_train", "spatial_map"} <= set(runs["stage"])
    with pytest.raises(InputError, match="no truth field"):
        spatial_map(lake, s["model"], truth_dir=biopsy_lake["truth_dir"] + "/nowhere")


def test_cli_patches_train_evaluate_map(biopsy_lake):
    from typer.testing import CliRunner

    from pipelines.spatial.cli import app

    lk = ["--lake", biopsy_lake["lake"]]
    run = CliRunner().invoke
    r = run(app, ["patches", *lk, "--gene", "CD3D"])
    assert r.exit_code == 0, r.output
    assert "CD3D-r8-a0-brain-zscore" in r.output
    r = run(app, ["train", *lk, "--epochs", "2", "--seed", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "small-CD3D-r8-a0-brain-zscore-s1" in r.output
    r = run(app, ["evaluate", *lk, "--epochs", "1", "--evaluation", "kfold", "--folds", "2",
                  "--split", "biopsy", "--no-rf", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "seed paper" in r.output and "biopsy - grouped (kfold, cnn)" in r.output
    r = run(app, ["map", *lk, "--model", "small-CD3D-r8-a0-brain-zscore-s1", "--slices", "sites",
                  "--truth-dir", biopsy_lake["truth_dir"], "--no-tta", "--no-png"])
    assert r.exit_code == 0, r.output
    assert "rho vs truth" in r.output
    r = run(app, ["map", *lk, "--model", "nope"])
    assert r.exit_code != 0 and "no model" in str(r.exception)
