"""Shape (morphology) features: IBSI phantom, analytic shapes, invariances, edge cases."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
from conftest import REFERENCE
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist
from scipy.special import elliprg, eval_legendre

from pipelines.exceptions import InputError
from pipelines.features.shape import (
    ALL_FEATURES,
    EXPENSIVE_FEATURES,
    INTENSITY_FEATURES,
    PAPER_FEATURES,
    box_counting_dimension,
    ellipsoid_area,
    hull_candidates,
    max_diameter,
    mvee_semi_axes,
    roi_mesh,
    shape_features,
    spatial_autocorrelation,
)

IBSI = REFERENCE / "ibsi"
PHANTOM_CSV = IBSI / "ibsi1_digital_phantom_reference_3D_subset.csv"


def _morph_reference_rows() -> list:
    """Return pytest params (tag, value, tolerance) of the phantom's morphology references."""
    if not PHANTOM_CSV.exists():
        return [pytest.param(None, None, None, marks=pytest.mark.skip(reason="no reference"))]
    with PHANTOM_CSV.open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["family"] == "Morphological features"]
    return [
        pytest.param(r["tag"], float(r["value"]), float(r["tolerance"]), id=r["tag"]) for r in rows
    ]


def _sphere(radius_mm: float, spacing, offset=(0.31, 0.17, 0.23)) -> np.ndarray:
    """Return a (z, y, x) boolean ball of the given radius (mm), centre off the voxel grid."""
    shape = [2 * math.ceil(radius_mm / s) + 5 for s in spacing]
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(
        ((g - (n - 1) / 2 - o) * s) ** 2
        for g, n, o, s in zip(grids, shape, offset, spacing, strict=True)
    )
    return d2 <= radius_mm**2


def _blob(seed: int, shape=(30, 32, 34), sigma=3.0) -> np.ndarray:
    """Return the largest connected component of thresholded smoothed noise (irregular ROI)."""
    rng = np.random.default_rng(seed)
    blob = ndimage.gaussian_filter(rng.random(shape), sigma) > 0.5
    lab, n = ndimage.label(blob)
    sizes = ndimage.sum(blob, lab, range(1, n + 1))
    return lab == 1 + int(np.argmax(sizes))


def _no_warnings(fn, *args, **kwargs):
    """Call fn turning every warning into an error (the suite also runs with -W error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


# --------------------------------------------------------------------------- IBSI phantom


@pytest.fixture(scope="module")
def phantom_features() -> dict[str, float]:
    sitk = pytest.importorskip("SimpleITK")
    mask_path = IBSI / "digital_phantom" / "nifti" / "mask" / "mask.nii.gz"
    image_path = IBSI / "digital_phantom" / "nifti" / "image" / "phantom.nii.gz"
    if not (mask_path.exists() and image_path.exists()):
        pytest.skip(f"IBSI phantom not found under {IBSI}")
    mask_img = sitk.ReadImage(str(mask_path))
    mask = sitk.GetArrayFromImage(mask_img) > 0
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path))).astype(np.float64)
    spacing_zyx = tuple(mask_img.GetSpacing()[::-1])
    assert spacing_zyx == (2.0, 2.0, 2.0)
    return _no_warnings(shape_features, mask, spacing_zyx, image=image)


@pytest.mark.parametrize(("tag", "value", "tolerance"), _morph_reference_rows())
def test_phantom_matches_ibsi_reference(phantom_features, tag, value, tolerance):
    assert tag in phantom_features, f"{tag} not computed"
    assert abs(phantom_features[tag] - value) <= tolerance, (tag, phantom_features[tag], value)


def test_phantom_extra_features_are_sane(phantom_features):
    f = phantom_features
    assert f["morph_porosity"] == pytest.approx(1.0 - f["morph_vol_dens_conv_hull"])
    assert 0.0 < f["morph_porosity"] < 0.1
    # The phantom (4 x 4 x 5 voxels) is too small for two box sizes >= 2 voxels.
    assert math.isnan(f["morph_fractal_dim"])
    # Enclosing shapes are at least as large as the ROI: densities <= 1 (up to tolerance).
    assert 0.0 < f["morph_vol_dens_mvee"] <= f["morph_vol_dens_ombb"] + 1e-9
    assert f["morph_vol_dens_ombb"] <= 1.0
    assert f["morph_vol_dens_ombb"] >= f["morph_vol_dens_aabb"] - 1e-12


# --------------------------------------------------------------------------- analytic shapes


@pytest.mark.parametrize(
    ("spacing", "area_bias"),
    [((1.0, 1.0, 1.0), (0.06, 0.10)), ((2.0, 0.8, 0.8), (0.10, 0.18))],
    ids=["iso1mm", "aniso2x0.8"],
)
def test_sphere_volume_and_area(spacing, area_bias):
    """Mesh volume is within 2% of 4/3 pi r^3 (observed < 0.5%). The IBSI mesh (marching cubes
    at 0.5 on a binary mask) overestimates the area systematically, independent of r: observed
    +8.7% at 1 mm isotropic and +14.6% at (2, 0.8, 0.8) mm, so a 3% bound on the area cannot hold
    for an IBSI-conformant mesh; the test pins the observed bias band instead."""
    r = 20.0
    f = _no_warnings(shape_features, _sphere(r, spacing), spacing, features="fast")
    assert f["morph_volume"] == pytest.approx(4.0 / 3.0 * math.pi * r**3, rel=0.02)
    area_err = f["morph_area_mesh"] / (4.0 * math.pi * r**2) - 1.0
    assert area_bias[0] < area_err < area_bias[1]
    assert f["morph_diam"] == pytest.approx(2 * r, abs=2 * max(spacing))
    assert f["morph_pca_elongation"] == pytest.approx(1.0, abs=0.02)
    assert f["morph_pca_flatness"] == pytest.approx(1.0, abs=0.03)
    assert f["morph_vol_approx"] == pytest.approx(4.0 / 3.0 * math.pi * r**3, rel=0.02)


def test_sphere_is_nearly_convex_and_c_shape_is_porous():
    sphere = _no_warnings(shape_features, _sphere(20.0, (1, 1, 1)), (1, 1, 1), features="paper")
    assert 0.0 <= sphere["morph_porosity"] < 0.05  # observed 0.034: voxel staircase dents
    cube = np.zeros((12, 12, 12), bool)
    cube[2:10, 3:9, 1:11] = True
    cube_f = shape_features(cube, (1.0, 2.0, 0.5), features=["morph_porosity"])
    assert cube_f["morph_porosity"] == pytest.approx(0.0, abs=1e-9)  # its mesh is convex
    c_shape = np.zeros((20, 30, 30), bool)
    c_shape[2:18, 2:28, 2:28] = True
    c_shape[2:18, 8:22, 8:28] = False  # carve a slot open on one side
    c_f = shape_features(c_shape, (1.0, 1.0, 1.0), features="paper")
    assert c_f["morph_porosity"] > 0.2
    ell = np.zeros((10, 30, 30), bool)
    ell[2:8, 2:28, 2:8] = True
    ell[2:8, 22:28, 2:28] = True
    assert shape_features(ell, (1, 1, 1), features="paper")["morph_porosity"] > 0.3


@pytest.mark.parametrize(("radius", "tol"), [(20.0, 0.15), (40.0, 0.10)])
def test_fractal_dimension_of_sphere_surface_is_near_2(radius, tol):
    """Observed 1.90 (r = 20 voxels) and 1.94 (r = 40): a closed surface saturates the coarsest
    boxes, so finite spheres read slightly below 2."""
    f = shape_features(_sphere(radius, (1, 1, 1)), (1, 1, 1), features=["morph_fractal_dim"])
    assert abs(f["morph_fractal_dim"] - 2.0) < tol


def test_box_counting_dimension_of_solid_plane_and_line():
    cube = np.zeros((70, 70, 70), bool)
    cube[3:67, 3:67, 3:67] = True
    assert box_counting_dimension(cube) == pytest.approx(3.0, abs=1e-9)
    plane = np.zeros((3, 70, 70), bool)
    plane[1, 3:67, 3:67] = True
    assert box_counting_dimension(plane) == pytest.approx(2.0, abs=1e-9)
    line = np.zeros((3, 3, 70), bool)
    line[1, 1, 3:67] = True
    assert box_counting_dimension(line) == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(box_counting_dimension(np.ones((7, 7, 7), bool)))  # < 2 box sizes


def test_oriented_box_finds_rotated_cuboid():
    z, y, x = (
        np.indices((40, 60, 60), dtype=float) - np.array([19.5, 29.5, 29.5])[:, None, None, None]
    )
    a, b = math.radians(30), math.radians(20)
    u = np.cos(a) * x + np.sin(a) * y
    v = -np.sin(a) * x + np.cos(a) * y
    w = np.cos(b) * z + np.sin(b) * v
    v2 = -np.sin(b) * z + np.cos(b) * v
    box = (np.abs(u) <= 20) & (np.abs(v2) <= 10) & (np.abs(w) <= 6)
    f = shape_features(box, (1, 1, 1), features=["morph_vol_dens_ombb", "morph_vol_dens_aabb"])
    assert f["morph_vol_dens_aabb"] < 0.5
    assert f["morph_vol_dens_ombb"] > 0.85  # 40 x 20 x 12 box, voxelisation loses a little


def test_mvee_of_sphere_and_ellipsoid_area_series():
    pts = np.random.default_rng(0).normal(size=(2000, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    pts *= np.array([5.0, 3.0, 2.0])
    assert mvee_semi_axes(pts) == pytest.approx([5.0, 3.0, 2.0], rel=0.01)
    for a, b, c in [(1.0, 1.0, 1.0), (3.0, 2.0, 1.5), (5.0, 4.0, 1.0), (2.0, 1.9, 1.8)]:
        # The IBSI manual's series (alpha from b/a, beta from c/a), summed directly.
        alpha, beta = math.sqrt(1 - (b / a) ** 2), math.sqrt(1 - (c / a) ** 2)
        ibsi = 4 * math.pi * a * b
        if alpha * beta > 0:
            x = (alpha**2 + beta**2) / (2 * alpha * beta)
            ibsi *= sum(
                (alpha * beta) ** v / (1 - 4 * v * v) * eval_legendre(v, x) for v in range(21)
            )
        assert ellipsoid_area(a, b, c) == pytest.approx(ibsi, rel=1e-10)
    # ... which is the true area for spheres (not in general, see ellipsoid_area's docstring).
    exact = 4.0 * math.pi * elliprg(4.0**2, 4.0**2, 4.0**2)
    assert ellipsoid_area(2.0, 2.0, 2.0) == pytest.approx(exact, rel=1e-12)
    assert math.isnan(ellipsoid_area(0.0, 0.0, 0.0))


def test_moran_and_geary_match_brute_force():
    rng = np.random.default_rng(1)
    coords = np.unique(rng.integers(0, 9, size=(300, 3)), axis=0) * np.array([2.0, 1.0, 0.5])
    values = rng.normal(size=len(coords)) + coords[:, 0]
    n = len(values)
    d = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))
    w = np.zeros_like(d)
    np.divide(1.0, d, out=w, where=d > 0)
    dev = values - values.mean()
    moran = n / w.sum() * (dev @ w @ dev) / (dev @ dev)
    geary = (n - 1) / (2 * w.sum()) * (w * (values[:, None] - values[None, :]) ** 2).sum()
    geary /= dev @ dev
    got = spatial_autocorrelation(coords, values, block_pairs=1000)  # many blocks
    assert got == pytest.approx((moran, geary), rel=1e-10)
    assert all(math.isnan(v) for v in spatial_autocorrelation(coords, np.ones(n)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hull_candidates_give_the_mesh_hull(seed):
    mask = _blob(seed)
    padded = np.pad(mask[ndimage.find_objects(mask.astype(int))[0]], 1)
    spacing = np.array([1.7, 0.9, 0.6])
    verts, _ = roi_mesh(padded, spacing)
    full = ConvexHull(verts)
    cand = hull_candidates(padded, spacing)
    fast = ConvexHull(cand)
    assert len(cand) < len(verts)
    assert fast.volume == pytest.approx(full.volume, rel=1e-12)
    assert fast.area == pytest.approx(full.area, rel=1e-12)
    hv = cand[fast.vertices]
    assert max_diameter(hv) == pytest.approx(pdist(verts).max(), rel=1e-12)


# --------------------------------------------------------------------------- invariances


@pytest.fixture(scope="module")
def blob_case():
    mask = _blob(7, shape=(18, 20, 22), sigma=2.0)  # ~3,900 voxels: Moran's I stays cheap
    image = np.random.default_rng(7).normal(100.0, 10.0, mask.shape)
    spacing = (1.5, 1.0, 0.8)
    return mask, image, spacing, shape_features(mask, spacing, image=image)


def test_features_invariant_to_zero_padding(blob_case):
    mask, image, spacing, ref = blob_case
    big = np.zeros((50, 45, 60), bool)
    big_img = np.full(big.shape, -1000.0)
    sl = (slice(13, 13 + mask.shape[0]), slice(4, 4 + mask.shape[1]), slice(21, 21 + mask.shape[2]))
    big[sl] = mask
    big_img[sl] = image
    got = shape_features(big, spacing, image=big_img)
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12, nan_ok=True), k


@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 1, 2)])
def test_features_invariant_to_flips(blob_case, axes):
    mask, image, spacing, ref = blob_case
    got = shape_features(np.flip(mask, axes), spacing, image=np.flip(image, axes))
    for k in ref:
        tol = 0.05 if k == "morph_fractal_dim" else 1e-9  # the box grid may shift one voxel
        assert got[k] == pytest.approx(ref[k], rel=tol, abs=1e-12, nan_ok=True), k


# --------------------------------------------------------------------------- selection


def test_feature_selection(blob_case):
    mask, image, spacing, ref = blob_case
    paper = shape_features(mask, spacing, features="paper")
    assert tuple(paper) == tuple(t for t in ALL_FEATURES if t in PAPER_FEATURES)
    for k, v in paper.items():
        assert v == pytest.approx(ref[k], rel=1e-12)
    no_image = shape_features(mask, spacing)
    assert set(no_image) == set(ALL_FEATURES) - set(INTENSITY_FEATURES)
    fast = shape_features(mask, spacing, image=image, features="fast")
    assert set(fast) == set(ALL_FEATURES) - set(EXPENSIVE_FEATURES)
    one = shape_features(mask, spacing, features=["morph_diam"])
    assert one == {"morph_diam": pytest.approx(ref["morph_diam"])}
    assert tuple(ref) == ALL_FEATURES


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": "everything"}, "features must be"),
        ({"features": ["morph_nope"]}, "unknown feature"),
        ({"features": ["morph_moran_i"]}, "need the image"),
        ({"image": np.zeros((2, 2, 2))}, "image shape"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, float("nan"), 1.0)}, "spacing"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs, match):
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    args = {"spacing": (1.0, 1.0, 1.0), **kwargs}
    with pytest.raises(InputError, match=match):
        shape_features(mask, **args)


# --------------------------------------------------------------------------- edge cases


def test_empty_or_non_3d_mask_raises_input_error():
    with pytest.raises(InputError, match="empty"):
        shape_features(np.zeros((5, 5, 5), bool), (1, 1, 1))
    with pytest.raises(InputError, match="3D"):
        shape_features(np.ones((5, 5), bool), (1, 1, 1))


def _edge_masks() -> dict[str, np.ndarray]:
    one = np.zeros((5, 6, 7), bool)
    one[2, 3, 4] = True
    flat = np.zeros((5, 12, 14), bool)
    flat[2, 1:11, 2:13] = True
    border = np.zeros((6, 7, 9), bool)
    border[:, :3, :] = True  # touches five faces of the array
    line = np.zeros((3, 3, 9), bool)
    line[1, 1, :] = True
    tiny = np.ones((1, 1, 1), bool)
    return {"one_voxel": one, "flat": flat, "border": border, "line": line, "whole_1x1x1": tiny}


@pytest.mark.parametrize("name", list(_edge_masks()))
def test_degenerate_masks_give_finite_or_nan_without_warnings(name):
    mask = _edge_masks()[name]
    image = np.arange(mask.size, dtype=float).reshape(mask.shape) % 7
    f = _no_warnings(shape_features, mask, (2.0, 1.0, 0.5), image=image)
    assert tuple(f) == ALL_FEATURES
    assert all(isinstance(v, float) and not math.isinf(v) for v in f.values())
    for tag in ("morph_volume", "morph_area_mesh", "morph_diam", "morph_vol_approx"):
        assert f[tag] > 0, tag
    assert 0.0 <= f["morph_porosity"] < 1.0
    assert f["morph_vol_approx"] == pytest.approx(mask.sum() * 1.0)


def test_one_voxel_values():
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    f = _no_warnings(shape_features, mask, (1.0, 1.0, 1.0), image=np.ones((3, 3, 3)))
    assert f["morph_volume"] == pytest.approx(1.0 / 6.0)  # marching cubes octahedron
    assert f["morph_porosity"] == pytest.approx(0.0, abs=1e-12)
    assert f["morph_pca_maj_axis"] == 0.0
    assert math.isnan(f["morph_pca_elongation"])
    assert math.isnan(f["morph_fractal_dim"])
    assert math.isnan(f["morph_moran_i"])  # a single intensity: undefined
    assert f["morph_com"] == 0.0


def test_flat_mask_values():
    mask = _edge_masks()["flat"]
    f = _no_warnings(shape_features, mask, (1.0, 1.0, 1.0))
    assert f["morph_pca_least_axis"] == pytest.approx(0.0, abs=1e-9)
    assert f["morph_pca_flatness"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(f["morph_vol_dens_aee"])  # the ellipsoid has no volume
    assert np.isfinite(f["morph_fractal_dim"])


@settings(max_examples=40, deadline=None)
@given(
    mask=arrays(bool, st.tuples(*[st.integers(1, 6)] * 3)).filter(lambda m: m.any()),
    spacing=st.tuples(*[st.sampled_from([0.5, 1.0, 2.5])] * 3),
)
def test_random_small_masks_never_warn_and_keep_the_hull(mask, spacing):
    f = _no_warnings(shape_features, mask, spacing, image=np.ones(mask.shape))
    assert tuple(f) == ALL_FEATURES
    assert not any(math.isinf(v) for v in f.values())
    assert f["morph_volume"] > 0 and 0.0 <= f["morph_porosity"] < 1.0
    padded = np.pad(mask, 1)
    verts, _ = roi_mesh(padded, np.asarray(spacing))
    assert f["morph_diam"] == pytest.approx(pdist(verts).max(), rel=1e-9)
    hull_volume = ConvexHull(verts).volume
    assert f["morph_vol_dens_conv_hull"] == pytest.approx(f["morph_volume"] / hull_volume)
