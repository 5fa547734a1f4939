"""Seed 004 patches: world -> voxel, extraction on asymmetric volumes, site checks naming the
biopsy, dihedral augmentation, normalisation, and the patches stage on a synthetic lake."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from pipelines.exceptions import InputError
from pipelines.imageio import world_to_voxel_matrix
from pipelines.lake import Lake
from pipelines.spatial import SEQUENCES
from pipelines.spatial.patches import (
    brain_mask,
    channel_names,
    check_sites,
    dihedral,
    extract_patches,
    nearest_voxel,
    normalise_volume,
    random_dihedral,
    world_to_index,
)
from pipelines.spatial.stage import (
    PatchSettings,
    load_patch_set,
    spatial_patches,
    synthetic_biopsy_lake,
)


@pytest.fixture(scope="session")
def biopsy_lake(tmp_path_factory):
    """A 4-patient synthetic biopsy lake, built once per session (shared by the spatial tests
    through a marker file under the session's base temp folder)."""
    return synthetic_biopsy_lake(tmp_path_factory.getbasetemp() / "spatial-cohort", 4, seed=0)


def coded_stack(shape=(3, 7, 23, 29)) -> np.ndarray:
    """A (C, z, y, x) stack whose value encodes its index: c * 1e6 + z * 1e4 + y * 100 + x."""
    c, z, y, x = np.indices(shape)
    return (c * 1_000_000 + z * 10_000 + y * 100 + x).astype(np.float32)


# --------------------------------------------------------------------------- geometry


def test_world_to_index_matches_simpleitk_with_oblique_flipped_grid():
    img = sitk.Image([11, 13, 7], sitk.sitkFloat32)
    img.SetSpacing([0.9, 1.1, 2.5])
    img.SetOrigin([12.0, -30.0, 5.5])
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection([c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0])
    pts = np.array([[15.2, -21.7, 1.0], [12.0, -30.0, 5.5], [20.0, -25.0, -8.0]])
    got = world_to_index(pts, world_to_voxel_matrix(img))
    for p, g in zip(pts, got, strict=True):
        ijk = img.TransformPhysicalPointToContinuousIndex([float(v) for v in p])
        np.testing.assert_allclose(g, ijk[::-1], atol=1e-9)


def test_nearest_voxel_rounds_half_up_per_axis():
    got = nearest_voxel([[0.49, 1.5, 2.51], [-0.5, -0.51, 3.0]])
    np.testing.assert_array_equal(got, [[0, 2, 3], [0, -1, 3]])


# --------------------------------------------------------------------------- extraction


def test_extract_patches_exact_values_on_asymmetric_stack():
    st = coded_stack()
    centres = np.array([[3, 10, 20], [1, 8, 8]])
    p = extract_patches(st, centres, radius=8)
    assert p.shape == (2, 3, 17, 17) and p.dtype == np.float32
    # the centre pixel is the site's voxel; rows are y, columns x
    np.testing.assert_array_equal(p[0, :, 8, 8], st[:, 3, 10, 20])
    assert p[0, 1, 0, 16] == st[1, 3, 10 - 8, 20 + 8]
    assert p[1, 2, 16, 0] == st[2, 1, 8 + 8, 8 - 8]


def test_extract_patches_adjacent_slices_are_sequence_major():
    st = coded_stack()
    p = extract_patches(st, [[3, 10, 20]], radius=2, adjacent=1)
    assert p.shape == (1, 9, 5, 5)
    names = channel_names(["A", "B", "C"], adjacent=1)
    assert names[:4] == ["A@z-1", "A@z+0", "A@z+1", "B@z-1"]
    for ch, name in enumerate(names):
        s, dz = "ABC".index(name[0]), int(name.split("z")[1])
        assert p[0, ch, 2, 2] == st[s, 3 + dz, 10, 20]


def test_extract_patches_refuses_to_pad():
    with pytest.raises(InputError, match="outside the volume"):
        extract_patches(coded_stack(), [[3, 5, 20]], radius=8)


@pytest.mark.parametrize("centre, pattern", [
    ([3, 10, 40], r"biopsy B2 .*outside the volume"),
    ([3, 5, 20], r"biopsy B2 .*17 x 17 patch .*extends outside the volume of shape \(7, 23"),
    ([0, 10, 20], r"biopsy B2 .*adjacent slice.*extends outside"),
    ([3, 10, 12], r"biopsy B2 .*outside the brain"),
])
def test_check_sites_names_the_biopsy(centre, pattern):
    ref = np.ones((7, 23, 29), np.float32)
    ref[:, :, :14] = 0.0  # background on the left
    centres = np.array([[3, 10, 20], centre])
    with pytest.raises(InputError, match=pattern):
        check_sites(centres, ref.shape, ["B1", "B2"], radius=8, adjacent=1, reference=ref,
                    points_xyz=[[0, 0, 0], [1, 2, 3]])
    check_sites(centres[:1], ref.shape, ["B1"], radius=8, adjacent=1, reference=ref)


# --------------------------------------------------------------------------- augmentation


def test_dihedral_gives_eight_distinct_transforms_fixing_the_centre():
    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    outs = [dihedral(x, k) for k in range(8)]
    np.testing.assert_array_equal(outs[0], x)
    assert len({o.tobytes() for o in outs}) == 8
    assert all(o[:, 2, 2].tolist() == x[:, 2, 2].tolist() for o in outs)
    # closed group: transforming any output gives one of the eight
    keys = {o.tobytes() for o in outs}
    assert all(dihedral(o, k).tobytes() in keys for o in outs for k in range(8))
    with pytest.raises(InputError):
        dihedral(x, 8)


def test_random_dihedral_keeps_channels_aligned_and_is_seeded():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(32, 3, 7, 7)).astype(np.float32)
    b[:, 1] = b[:, 0] * 2  # channel 1 is a function of channel 0, pixel by pixel
    a1 = random_dihedral(b, np.random.default_rng(5))
    a2 = random_dihedral(b, np.random.default_rng(5))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(a1[:, 1], a1[:, 0] * 2)
    assert not np.array_equal(a1, b)
    for i in range(len(b)):  # each sample is one of its eight transforms
        assert any(np.array_equal(a1[i], dihedral(b[i], k)) for k in range(8))


# --------------------------------------------------------------------------- normalisation


def test_brain_zscore_centres_and_scales_on_the_region():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.2, 0.9, (6, 10, 10)).astype(np.float32)
    a[:, :, :3] = 0.0
    region = brain_mask(a)
    assert not region[:, :, :3].any() and region[:, :, 3:].all()
    out = normalise_volume({"A": a, "B": 3 * a}, "brain-zscore", region)
    for v in out.values():
        q25, q50, q75 = np.percentile(v[region], [25, 50, 75])
        assert abs(q50) < 1e-5 and abs(q75 - q25 - 1) < 1e-5
    np.testing.assert_allclose(out["A"], out["B"], atol=1e-5)  # gain-invariant
    np.testing.assert_array_equal(normalise_volume({"A": a}, "none")["A"], a)
    with pytest.raises(InputError, match="normalisation must be one of"):
        normalise_volume({"A": a}, "zscore")


# --------------------------------------------------------------------------- the stage


def test_patches_stage_writes_zarr_and_label_table(biopsy_lake):
    lake = Lake(biopsy_lake["lake"])
    s = spatial_patches(lake)
    assert s["patch_set"] == "CD3D-r8-a0-brain-zscore" and s["n"] >= 8
    ps = load_patch_set(lake, s["patch_set"])
    assert ps.patches.shape == (s["n"], 9, 17, 17)
    t = ps.table
    assert list(t["patch_index"]) == list(range(s["n"]))
    assert (t["label"] == (t["tpm"] > t["tpm"].median()).astype(int)).all()
    assert set(t["patient_id"]) == set(lake.read_table("biopsies")["patient_id"])
    # each patch is the normalised stack around the biopsy's voxel
    row = t.iloc[-1]
    vol = lake.read_volume(row["patient_id"])
    normed = normalise_volume(vol.images, "brain-zscore", brain_mask(vol.images["T1"]))
    z, y, x = row["voxel_z"], row["voxel_y"], row["voxel_x"]
    np.testing.assert_array_equal(ps.patches[-1, 1], normed["T1Gd"][z, y - 8:y + 9, x - 8:x + 9])
    b = lake.read_table("biopsies").set_index("biopsy_id").loc[row["biopsy_id"]]
    idx = world_to_index([[b.x_mm, b.y_mm, b.z_mm]], vol.attrs["world_to_voxel"])[0]
    assert np.all(np.abs(idx - [z, y, x]) <= 0.5)
    # rerun: unchanged, same patches
    again = spatial_patches(lake)
    assert again["skipped"] and again["run_id"] == s["run_id"]
    np.testing.assert_array_equal(load_patch_set(lake, s["patch_set"]).patches, ps.patches)


def test_adjacent_slices_give_27_channels(biopsy_lake):
    lake = Lake(biopsy_lake["lake"])
    s = spatial_patches(lake, PatchSettings(adjacent=1))
    ps = load_patch_set(lake, s["patch_set"])
    assert ps.patches.shape[1:] == (27, 17, 17)
    assert ps.attrs["channels"][:3] == ["T1@z-1", "T1@z+0", "T1@z+1"]
    base = load_patch_set(lake, spatial_patches(lake)["patch_set"]).patches
    np.testing.assert_array_equal(ps.patches[:, 1::3], base)  # the z+0 slices


@pytest.mark.parametrize("shift, pattern", [
    ({"x_mm": 500.0}, "outside the volume"),
    ({"y_mm": None}, "outside the brain"),
])
def test_bad_biopsy_coordinates_raise_naming_the_biopsy(biopsy_lake, tmp_path, shift, pattern):
    root = tmp_path / "lake"
    shutil.copytree(biopsy_lake["lake"], root)
    lake = Lake(root)
    b = lake.read_table("biopsies").sort_values("biopsy_id").reset_index(drop=True)
    bad = b.iloc[[0]].copy()
    attrs = lake.volume_attrs(bad["patient_id"].iloc[0])
    if shift.get("y_mm", 0) is None:  # a background voxel in the volume's corner, same slice
        o = np.asarray(attrs["origin_xyz"])
        bad["x_mm"], bad["y_mm"] = o[0] + 9.0, o[1] + 9.0
    else:
        for k, v in shift.items():
            bad[k] = v
    lake.upsert_table("biopsies", pd.concat([b.iloc[1:], bad]))
    with pytest.raises(InputError, match=f"biopsy {bad['biopsy_id'].iloc[0]} .*{pattern}"):
        spatial_patches(lake, force=True)
    runs = lake.runs()
    assert runs.iloc[-1]["stage"] == "spatial_patches" and runs.iloc[-1]["status"] == "failed"


def test_sequences_constant_matches_the_seed():
    assert SEQUENCES == ("T1", "T1Gd", "T2", "FLAIR", "FA", "MD", "EPI", "rCBV", "nrCBV")
