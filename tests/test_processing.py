"""The IBSI image-processing chain (pipelines/processing.py): grid, interpolation, masks,
re-segmentation, settings objects, presets, settings files and PyRadiomics parameter files."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from pipelines.exceptions import InputError
from pipelines.features.extract import compute_feature_sets, compute_features
from pipelines.processing import (
    ImageProcessing,
    from_pyradiomics,
    ibsi_grid,
    interpolate_mask,
    load_settings,
    process,
    resample,
    resegment,
    settings_from_options,
    shipped_presets,
)


def _image(arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    img = sitk.GetImageFromArray(np.asarray(arr, dtype=np.float64))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _centre(img: sitk.Image) -> np.ndarray:
    return np.array(img.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in img.GetSize()]))


# --------------------------------------------------------------------------- grid


@pytest.mark.parametrize("size, spacing, target", [
    ((204, 201, 60), (0.977, 0.977, 3.0), (2.0, 2.0, 2.0)),
    ((5, 4, 4), (2.0, 2.0, 2.0), (1.0, 1.0, 1.0)),
    ((7, 9, 3), (1.0, 0.5, 4.0), (0.7, 1.3, 2.5)),
])
def test_grid_centres_are_aligned_and_size_is_rounded_up(size, spacing, target):
    img = sitk.Image(list(size), sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin((-12.5, 3.0, 100.0))
    grid = ibsi_grid(img, target)
    want = [math.ceil(n * s / t) for n, s, t in zip(size, spacing, target, strict=True)]
    assert list(grid.GetSize()) == want
    assert grid.GetSpacing() == pytest.approx(target)
    assert _centre(grid) == pytest.approx(_centre(img), abs=1e-9)


def test_grid_follows_the_direction_and_keeps_an_axis_for_in_plane_resampling():
    img = sitk.Image([10, 11, 12], sitk.sitkFloat32)
    img.SetSpacing((0.8, 0.8, 3.0))
    img.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))  # a rotated patient frame
    grid = ibsi_grid(img, (2.0, 2.0, None))
    assert grid.GetSize() == (4, 5, 12)
    assert grid.GetSpacing() == pytest.approx((2.0, 2.0, 3.0))
    assert grid.GetDirection() == img.GetDirection()
    assert _centre(grid) == pytest.approx(_centre(img), abs=1e-9)


# --------------------------------------------------------------------------- interpolation


def test_linear_is_exact_on_a_ramp_and_extrapolates_the_nearest_value():
    z, y, x = np.meshgrid(np.arange(6), np.arange(6), np.arange(6), indexing="ij")
    img = _image(3.0 * x + 2.0 * y - z)
    grid = ibsi_grid(img, (0.7, 0.7, 0.7))  # extends past the original grid on every side
    out = sitk.GetArrayFromImage(resample(img, grid, "linear"))
    pts = np.array([grid.TransformIndexToPhysicalPoint([int(i), int(j), int(k)])
                    for k, j, i in np.ndindex(out.shape)])
    clipped = np.clip(pts, 0.0, 5.0)  # nearest-value extrapolation = clamp to the grid
    want = 3.0 * clipped[:, 0] + 2.0 * clipped[:, 1] - clipped[:, 2]
    assert out.ravel() == pytest.approx(want, abs=1e-9)
    assert (pts < 0).any()  # the test does exercise extrapolation


@pytest.mark.parametrize("interpolator", ["nearest", "linear", "bspline"])
def test_interpolators_keep_a_constant_image(interpolator):
    img = _image(np.full((5, 6, 7), -42.0), spacing=(0.9, 0.9, 3.0))
    out = sitk.GetArrayFromImage(resample(img, ibsi_grid(img, (2, 2, 2)), interpolator))
    assert out == pytest.approx(-42.0)


def test_bspline_differs_from_linear_on_a_curved_image():
    z, y, x = np.meshgrid(*(np.arange(8.0),) * 3, indexing="ij")
    img = _image(x ** 3)
    grid = ibsi_grid(img, (0.6, 0.6, 0.6))
    lin = sitk.GetArrayFromImage(resample(img, grid, "linear"))
    spl = sitk.GetArrayFromImage(resample(img, grid, "bspline"))
    assert np.abs(lin - spl).max() > 0.1


def test_mask_partial_volume_threshold():
    m = np.zeros((9, 9, 9))
    m[2:7, 2:7, 2:7] = 1
    mask = _image(m)
    grid = ibsi_grid(mask, (0.7, 0.7, 0.7))
    counts = [interpolate_mask(mask, grid, "linear", t).sum() for t in (0.2, 0.5, 0.9)]
    assert counts[0] > counts[1] > counts[2] > 0
    same = interpolate_mask(mask, ibsi_grid(mask, (1, 1, 1)), "linear", 0.5)
    assert np.array_equal(same, m > 0)


# --------------------------------------------------------------------------- re-segmentation


def test_range_and_outlier_resegmentation_are_intersected():
    rng = np.random.default_rng(0)
    img = rng.normal(0.0, 100.0, (10, 10, 10))
    img[5, 5, 5] = 2000.0
    roi = np.ones(img.shape, bool)
    roi[0] = False
    keep, steps = resegment(img, roi, (-150.0, None), 3.0)
    v = img[roi]
    lo, hi = v.mean() - 3 * v.std(), v.mean() + 3 * v.std()
    want = roi & (img >= -150) & (img >= lo) & (img <= hi)
    assert np.array_equal(keep, want)
    assert not keep[5, 5, 5] and not keep[0].any()
    assert [s["step"] for s in steps] == ["resegment_range", "outlier_filter"]
    assert steps[1]["range"] == pytest.approx([lo, hi])


def test_process_keeps_morphological_and_intensity_masks_apart():
    rng = np.random.default_rng(1)
    arr = rng.integers(-1200, 600, (12, 14, 16)).astype(np.float64)
    m = np.zeros(arr.shape)
    m[3:9, 4:11, 5:12] = 1
    s = ImageProcessing(spacing=(1.5, 1.5, 1.5), round_intensities=True,
                        resegment_range=(-1000.0, 400.0), outlier_sigma=3.0)
    p = process(_image(arr, (1.0, 1.1, 1.2)), _image(m, (1.0, 1.1, 1.2)), s)
    assert p.image.shape == p.morph_mask.shape == p.intensity_mask.shape
    assert np.array_equal(p.image, np.rint(p.image))
    assert (p.intensity_mask <= p.morph_mask).all()
    assert p.intensity_mask.sum() < p.morph_mask.sum()
    vals = p.image[p.intensity_mask]
    assert vals.min() >= -1000 and vals.max() <= 400
    assert p.spacing == pytest.approx((1.5, 1.5, 1.5))
    assert [x["step"] for x in p.steps] == ["input", "interpolate_image", "interpolate_mask",
                                            "round_intensities", "resegment_range",
                                            "outlier_filter", "discretise"]
    json.dumps(p.steps)  # the run log takes them as they are


def test_process_errors_name_the_fix():
    arr = np.zeros((4, 4, 4))
    m = np.zeros((4, 4, 4))
    m[1, 1, 1] = 1
    with pytest.raises(InputError, match="widen resegment_range"):
        process(_image(arr), _image(m), ImageProcessing(resegment_range=(10.0, 20.0)))


# --------------------------------------------------------------------------- discretisation


def test_fbs_bins_start_at_the_resegmentation_lower_bound():
    img = np.arange(27, dtype=np.float64).reshape(3, 3, 3) * 10.0 - 95.0  # -95 .. 165
    roi = np.ones(img.shape, bool)
    anchored = compute_features(img, roi, (1, 1, 1), ("firstorder",), bin_count=None,
                                bin_size=25.0, min_value=-100.0)
    at_min = compute_features(img, roi, (1, 1, 1), ("firstorder",), bin_count=None,
                              bin_size=25.0)
    # from -100: levels floor((x + 100) / 25) + 1; from the ROI minimum -95: (x + 95) / 25
    want = np.floor((img + 100.0) / 25.0) + 1
    assert anchored["ih_mean"] == pytest.approx(want.mean())
    assert at_min["ih_mean"] == pytest.approx((np.floor((img + 95.0) / 25.0) + 1).mean())
    assert anchored["ih_mean"] != at_min["ih_mean"]
    with pytest.raises(InputError, match="re-segment"):
        compute_features(img, roi, (1, 1, 1), ("firstorder",), bin_count=None, bin_size=25.0,
                         min_value=-90.0)


def test_ivh_discretisations():
    img = np.array([-1000.0, -500.0, 0.0, 0.0, 100.0, 400.0]).reshape(1, 2, 3)
    roi = np.ones(img.shape, bool)
    kw = {"bin_count": None, "bin_size": 25.0, "min_value": -1000.0}
    fbs = compute_features(img, roi, (1, 1, 1), ("ivh",), **kw,
                           ivh={"method": "fbs", "bin_size": 2.5, "range": (-1000.0, 400.0)})
    # bin centres: 2 of 6 voxels lie above the bin [0, 2.5) of 0, whose successor's centre
    # is 3.75; 1/6 > 10 % hold the top intensity, so i10 is one step past the top bin
    assert fbs["ivh_i50"] == pytest.approx(3.75)
    assert fbs["ivh_i10"] == pytest.approx(400.0 + 1.25 + 2.5)
    disc = compute_features(img, roi, (1, 1, 1), ("ivh",), **kw,
                            ivh={"method": "none", "range": (-1000.0, 400.0)})
    assert (disc["ivh_i50"], disc["ivh_i10"]) == (1.0, 401.0)
    fbn = compute_features(img, roi, (1, 1, 1), ("ivh",), **kw,
                           ivh={"method": "fbn", "bin_count": 1000})
    assert fbn["ivh_i10"] == 1001.0
    assert fbn["ivh_i50"] == pytest.approx(math.floor(1000 * 1000 / 1400) + 2)
    with pytest.raises(InputError, match="discrete"):
        compute_features(img + 0.5, roi, (1, 1, 1), ("ivh",), bin_count=8,
                         ivh={"method": "none", "range": (-1000.0, 400.0)})


# --------------------------------------------------------------------------- 2D / 2.5D


def _slab(rng, z=1):
    img = rng.integers(1, 6, (z, 9, 10)).astype(np.float64)
    roi = rng.random(img.shape) > 0.2
    return img, roi


def test_one_slice_2d_equals_3d():
    """One slice: the 3D directions with pairs are the 4 in-plane ones, zones are planar."""
    from pipelines.features.extract import IN_PLANE
    from pipelines.features.glrlm import glrlm_features, glrlm_matrices

    img, roi = _slab(np.random.default_rng(2))
    fams = ("glcm", "glszm", "ngtdm", "ngldm")
    kw = {"bin_count": None, "bin_size": 1.0}
    avg3 = compute_features(img, roi, (1, 1, 1), fams, aggregation="averaged", **kw)
    avg2 = compute_features(img, roi, (1, 1, 1), fams, aggregation="2D, averaged", **kw)
    mrg3 = compute_features(img, roi, (1, 1, 1), ("glcm",), aggregation="merged", **kw)
    mrg25 = compute_features(img, roi, (1, 1, 1), ("glcm",), aggregation="2.5D, merged", **kw)
    for k, v in avg3.items():
        assert avg2[k] == pytest.approx(v, rel=1e-9, nan_ok=True), k
    for k, v in mrg3.items():
        assert mrg25[k] == pytest.approx(v, rel=1e-9, nan_ok=True), k
    # distances: 3D sees every voxel of one slice on the ROI's edge, 2D measures in-plane
    dz = {agg: compute_features(img, roi, (1, 1, 1), ("gldzm",), aggregation=agg, **kw)
          for agg in ("averaged", "2D, averaged")}
    assert dz["averaged"]["dzm_sde"] == 1.0 and dz["2D, averaged"]["dzm_sde"] < 1.0
    # runs: 3D also counts the length-1 runs across the slice, 2D only the in-plane ones
    rl = glrlm_matrices((img - img[roi].min() + 1).astype(int), roi, int(img[roi].max()))
    rl2 = compute_features(img, roi, (1, 1, 1), ("glrlm",), aggregation="2D, averaged", **kw)
    assert rl2 == pytest.approx(glrlm_features(rl[list(IN_PLANE)], "averaged"), rel=1e-9)
    assert rl2 != pytest.approx(compute_features(img, roi, (1, 1, 1), ("glrlm",), **kw))


def test_2d_is_per_slice_and_2_5d_merges_slices():
    rng = np.random.default_rng(3)
    a, ra = _slab(rng)
    b, rb = _slab(rng)
    img, roi = np.concatenate([a, b]), np.concatenate([ra, rb])
    kw = {"bin_count": None, "bin_size": 1.0, "min_value": 1.0}
    both = compute_features(img, roi, (1, 1, 1), ("glcm", "glszm"), aggregation="2D, averaged",
                            **kw)
    one = [compute_features(i, r, (1, 1, 1), ("glcm", "glszm"), aggregation="2D, averaged", **kw)
           for i, r in ((a, ra), (b, rb))]
    for k in both:
        assert both[k] == pytest.approx((one[0][k] + one[1][k]) / 2, rel=1e-9), k
    merged = compute_features(img, roi, (1, 1, 1), ("glszm",), aggregation="2.5D, merged", **kw)
    assert merged["szm_z_perc"] == pytest.approx(
        (one[0]["szm_z_perc"] * ra.sum() + one[1]["szm_z_perc"] * rb.sum())
        / roi.sum())  # zones of both slices over all voxels


def test_feature_sets_label_aggregations_in_ibsi_words():
    img, roi = _slab(np.random.default_rng(4), z=3)
    rows = compute_feature_sets(img, roi, (1, 1, 1), ("firstorder", "glcm", "ngtdm"),
                                ("3D, averaged", "3D, merged", "2D, slice-merged"), bin_count=8)
    labels = {(t.split("_")[0], a) for t, a, _ in rows}
    assert labels == {("stat", ""), ("ih", ""), ("cm", "3D, averaged"), ("cm", "3D, merged"),
                      ("cm", "2D, slice-merged"), ("ngt", "3D"), ("ngt", "2D")}


def test_morphological_mask_drives_gldzm_and_shape():
    img = np.ones((8, 8, 8))
    img[2, 2:6, 2:6] = 2.0  # a zone 2 voxels deep in the morphological mask, 1 in its own
    morph = np.zeros(img.shape, bool)
    morph[1:7, 1:7, 1:7] = True
    inten = morph.copy()
    inten[1] = False  # re-segmented away
    kw = {"bin_count": None, "bin_size": 1.0}
    own = compute_features(img, inten, (1, 1, 1), ("gldzm", "shape"), **kw)
    with_morph = compute_features(img, inten, (1, 1, 1), ("gldzm", "shape"), morph_mask=morph,
                                  **kw)
    assert with_morph["morph_volume"] > own["morph_volume"]
    assert with_morph["dzm_sde"] != own["dzm_sde"]
    with pytest.raises(InputError, match="inside the morphological"):
        compute_features(img, morph, (1, 1, 1), ("gldzm",), morph_mask=inten, **kw)


# --------------------------------------------------------------------------- settings


def test_every_shipped_preset_loads_and_hashes():
    names = shipped_presets()
    assert {"paper", "ibsi1-digital-phantom", *(f"ibsi1-ct-{c}" for c in "ABCDE")} <= set(names)
    hashes = {load_settings(n).sha256 for n in names}
    assert len(hashes) == len(names)
    assert load_settings(None) == load_settings("paper")
    paper = load_settings("paper")
    assert (paper.spacing, paper.discretisation, paper.bin_count, paper.aggregations) == (
        None, "fbn", 32, ("3D, averaged",))
    c = load_settings("ibsi1-ct-C")
    assert c.texture_levels == {"bin_count": None, "bin_size": 25.0, "min_value": -1000.0}
    assert load_settings("ibsi1-ct-B").spacing == (2.0, 2.0, None)


def test_hash_ignores_the_name_and_sees_every_setting():
    a = ImageProcessing(name="x")
    assert a.sha256 == ImageProcessing(name="y").sha256
    for change in ({"bin_count": 16}, {"mask_threshold": 0.4}, {"outlier_sigma": 3},
                   {"aggregations": ("3D, merged",)}, {"interpolator": "bspline"}):
        assert a.with_options(**change).sha256 != a.sha256, change


@pytest.mark.parametrize("kwargs, message", [
    ({"interpolator": "cubic"}, "interpolator"),
    ({"mask_interpolator": "bspline"}, "mask_interpolator"),
    ({"mask_threshold": 0}, "mask_threshold"),
    ({"spacing": (1, 2)}, "spacing"),
    ({"spacing": (1, -2, 1)}, "spacing"),
    ({"resegment_range": (400, -1000)}, "resegment_range"),
    ({"discretisation": "fbs"}, "bin_size"),
    ({"bin_count": 0}, "bin_count"),
    ({"ivh": "fbn"}, "ivh_bin_count"),
    ({"aggregations": ("3D, avg",)}, "aggregations"),
    ({"families": ("glcm", "texture")}, "families"),
])
def test_invalid_settings_name_the_setting(kwargs, message):
    with pytest.raises(InputError, match=message):
        ImageProcessing(**kwargs)


def test_settings_files_toml_yaml_and_errors(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("interpolation:\n  spacing: [2, 2, 2]\n  interpolator: linear\n"
                   "  round_intensities: true\n  mask_interpolator: linear\n"
                   "resegmentation:\n  resegment_range: [-1000, 400]\n"
                   "discretisation:\n  discretisation: fbs\n  bin_size: 25\n"
                   "  ivh: fbs\n  ivh_bin_size: 2.5\n"
                   "features:\n  aggregations: ['3D, averaged', '3D, merged']\n"
                   "  families: [shape, morph_intensity, localintensity, firstorder, ivh, glcm,"
                   " glrlm, glszm, gldzm, ngtdm, ngldm]\n")
    assert load_settings(yml).sha256 == load_settings("ibsi1-ct-C").sha256
    open_range = tmp_path / "open.toml"
    open_range.write_text('resegment_range = [-1000, "none"]\n')
    assert load_settings(open_range).resegment_range == (-1000.0, None)
    bad = tmp_path / "bad.toml"
    bad.write_text("bin_count = 32\nbins = 3\n")
    with pytest.raises(InputError, match=r"bad.toml: unknown settings \['bins'\]"):
        load_settings(bad)
    with pytest.raises(InputError, match="unknown settings preset"):
        load_settings("ibsi1-ct-F")
    with pytest.raises(InputError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_cli_options_override_the_preset():
    s = settings_from_options("ibsi1-ct-C", bin_count=16, resegment_range="-500,",
                              aggregations=["merged"], families="glcm,ngldm")
    assert (s.discretisation, s.bin_count, s.bin_size) == ("fbn", 16, None)
    assert s.resegment_range == (-500.0, None)
    assert s.aggregations == ("3D, merged",) and s.families == ("glcm", "ngldm")
    assert s.spacing == (2.0, 2.0, 2.0)  # the preset's value stays
    with pytest.raises(InputError, match="not both"):
        settings_from_options(bin_count=8, bin_size=2.0)


def test_settings_file_and_cli_options_give_one_hash(tmp_path):
    """Round trip: a settings file and the same settings as drlake quantify options."""
    from pipelines.cli import app

    f = tmp_path / "mine.toml"
    f.write_text('spacing = [1.0, 1.0, "none"]\ninterpolator = "bspline"\n'
                 'round_intensities = true\nmask_threshold = 0.4\n'
                 'resegment_range = [-200.0, 300.0]\noutlier_sigma = 3.0\n'
                 'discretisation = "fbs"\nbin_size = 10.0\nivh = "none"\n'
                 'aggregations = ["2D, averaged", "2.5D, merged"]\n'
                 'families = ["firstorder", "glcm", "ngtdm"]\n')
    runner = CliRunner()

    def resolved(*args):
        r = runner.invoke(app, ["quantify", "img.nii", "mask.nii", *args, "--print-settings"])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    from_file = resolved("--settings", str(f))
    from_options = resolved(
        "--spacing", "1,1,none", "--interpolator", "bspline", "--round-intensities",
        "--mask-threshold", "0.4", "--resegment-range", "-200,300", "--outlier-sigma", "3",
        "--bin-size", "10", "--ivh", "none", "--aggregation", "2D, averaged",
        "--aggregation", "2.5D, merged", "--families", "firstorder,glcm,ngtdm")
    assert from_file["sha256"] == from_options["sha256"] == load_settings(f).sha256
    assert from_file["sha256"] != resolved()["sha256"]


# --------------------------------------------------------------------------- PyRadiomics


def test_pyradiomics_parameter_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("imageType:\n  Original: {}\nfeatureClass:\n  firstorder:\n  glcm:\n  gldm:\n"
                 "setting:\n  binWidth: 25\n  resampledPixelSpacing: [2, 2, 0]\n"
                 "  interpolator: sitkLinear\n  resegmentRange: [-1000, 400]\n"
                 "  label: 1\n  force2D: true\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = load_settings(p)
    assert any("label" in str(x.message) for x in w)
    assert s.spacing == (2.0, 2.0, None) and s.interpolator == "linear"
    assert (s.discretisation, s.bin_size, s.resegment_range) == ("fbs", 25.0, (-1000.0, 400.0))
    assert s.families == ("firstorder", "glcm", "ngldm")
    assert s.aggregations == ("2D, averaged",)
    sig = from_pyradiomics({"setting": {"binCount": 32, "resegmentRange": [-3, 3],
                                        "resegmentMode": "sigma"}})
    assert (sig.outlier_sigma, sig.bin_count) == (3.0, 32)


def test_pyradiomics_unsupported_keys_are_listed():
    with pytest.raises(InputError, match=r"normalize.*gldm_a") as e:
        from_pyradiomics({"setting": {"normalize": True, "gldm_a": 1}})
    assert "unsupported PyRadiomics settings" in str(e.value)
    with pytest.raises(InputError, match="imageType"):
        from_pyradiomics({"imageType": {"LoG": {"sigma": [1.0]}}})
    with pytest.raises(InputError, match=r"unknown PyRadiomics settings \['binwidth'\]"):
        from_pyradiomics({"setting": {"binwidth": 25}})
