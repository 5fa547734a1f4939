"""compute_features (validation, edge cases, invariances, the phantom end to end) and
quantify_case (reading NIfTI / NRRD / MHA / DICOM series)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ibsi_reference, write_image
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipelines.exceptions import InputError
from pipelines.features import case as case_mod
from pipelines.features.catalogue import feature_catalogue
from pipelines.features.discretise import discretise_fixed_bin_number
from pipelines.features.extract import compute_features
from pipelines.features.firstorder import IH_FEATURES, STAT_FEATURES, intensity_statistics
from pipelines.features.glcm import GLCM_FEATURES, glcm_features, glcm_matrices
from pipelines.features.glszm import GLSZM_FEATURES
from pipelines.features.ngtdm import NGTDM_FEATURES

TEXTURE = ("firstorder", "glcm", "glszm", "ngtdm")
SUFFIXES = {"3D, averaged": ("_3D_avg", "averaged"), "3D, merged": ("_3D_comb", "merged"),
            "3D": ("_3D", "averaged"), "": ("", "averaged")}


def _reference() -> list:
    return ibsi_reference(lambda t: not t.startswith("morph_"))


@pytest.fixture(scope="module")
def phantom(shared_reference):
    base = shared_reference / "ibsi" / "digital_phantom" / "nifti"
    img = sitk.ReadImage(str(base / "image" / "phantom.nii.gz"))
    mask = sitk.ReadImage(str(base / "mask" / "mask.nii.gz"))
    return sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(mask), img.GetSpacing()[::-1]


@pytest.fixture(scope="module")
def phantom_features(phantom):
    """All texture features of the phantom; bins of width 1 from the ROI minimum (1) keep the
    phantom's grey levels 1..6 as they are, as IBSI's reference values assume."""
    img, mask, spacing = phantom
    return {agg: compute_features(img, mask, spacing, TEXTURE, bin_size=1.0, aggregation=agg)
            for agg in ("averaged", "merged")}


@pytest.mark.parametrize("row", _reference())
def test_phantom_end_to_end(phantom_features, row):
    """Every non-morphological 3D reference value of the IBSI phantom (137 rows minus 25)."""
    suffix, agg = SUFFIXES[row["aggregation"]]
    name = row["tag"].removesuffix(suffix)
    value = phantom_features[agg][name]
    ref = float(row["value"])
    if row["tolerance"]:
        assert abs(value - ref) <= float(row["tolerance"]), (name, value, ref)
    else:  # the reference gives 3 significant figures
        assert float(f"{value:.3g}") == float(f"{ref:.3g}"), (name, value, ref)


def test_output_names_and_order(phantom_features):
    f = phantom_features["averaged"]
    want = [*STAT_FEATURES, *IH_FEATURES, *GLCM_FEATURES, *GLSZM_FEATURES, *NGTDM_FEATURES]
    assert list(f) == want and len(f) == 87
    assert all(isinstance(v, float) for v in f.values())


def test_families_order_is_kept(phantom):
    img, mask, sp = phantom
    f = compute_features(img, mask, sp, ("ngtdm", "glszm"))
    assert list(f) == [*NGTDM_FEATURES, *GLSZM_FEATURES]


def test_default_discretisation_is_32_bins(phantom):
    img, mask, sp = phantom
    f = compute_features(img, mask, sp, ("firstorder",))
    assert f["ih_max"] == 32 and f["ih_min"] == 1 and f["stat_max"] == 6


# --------------------------------------------------------------------------- validation


def test_empty_mask_is_a_clear_error():
    with pytest.raises(InputError, match="mask is empty"):
        compute_features(np.zeros((3, 3, 3)), np.zeros((3, 3, 3), bool), (1, 1, 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask": np.ones((3, 3, 4), bool)}, "differs from image shape"),
        ({"spacing": (1, 1)}, "spacing"),
        ({"spacing": (1, -1, 1)}, "spacing"),
        ({"spacing": "abc"}, "spacing"),
        ({"families": ("glcm", "wavelet")}, "unknown feature families"),
        ({"aggregation": "mean"}, "aggregation"),
        ({"image": np.zeros((3, 3, 3), complex)}, "integer or float"),
        ({"image": np.zeros((3, 3, 3), bool)}, "integer or float"),
        ({"image": np.zeros((3, 3))}, "3D"),
        ({"mask": np.ones((3, 3, 3), "U1")}, "boolean or numeric"),
        ({"bin_count": None}, "bin_count or bin_size"),
        ({"bin_count": 0}, "n_bins"),
        ({"bin_size": -2.0}, "bin_size"),
        ({"bin_size": 1e-6}, "grey levels"),
        ({"bin_count": 2000}, "above 1024"),
        ({"bin_count": 10**6, "families": ("firstorder",)}, "above 65535"),
    ],
)
def test_invalid_input(kwargs, message):
    args = {"image": np.arange(27.0).reshape(3, 3, 3), "mask": np.ones((3, 3, 3), bool),
            "spacing": (1.0, 1.0, 1.0)}
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        compute_features(**args)


def test_nonfinite_values_inside_but_not_outside_the_mask():
    img = np.arange(27.0).reshape(3, 3, 3)
    mask = np.zeros(img.shape, bool)
    mask[1] = True
    img[0, 0, 0] = np.nan  # outside: ignored
    compute_features(img, mask, (1, 1, 1))
    img[1, 1, 1] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        compute_features(img, mask, (1, 1, 1))


@pytest.mark.parametrize("dtype", [">i2", ">f8", "float16", "uint16", "int64", "float32"])
def test_image_dtypes(dtype):
    img = (np.arange(125).reshape(5, 5, 5) % 11).astype(dtype)
    mask = np.zeros(img.shape, bool)
    mask[1:4, 0:5, 2:5] = True
    want = compute_features(img.astype(np.float64), mask, (1, 1, 1), TEXTURE)
    assert _same(compute_features(img, mask, (1, 1, 1), TEXTURE), want, rel=0)


def test_numeric_mask_and_integer_image():
    img = (np.arange(64).reshape(4, 4, 4) % 7).astype(np.int16)
    mask = np.zeros(img.shape, np.uint8)
    mask[1:3, 1:3, 1:3] = 5
    a = compute_features(img, mask, (1, 1, 1), TEXTURE)
    b = compute_features(img.astype(float), mask > 0, (1, 1, 1), TEXTURE)
    assert _same(a, b, rel=0)


# --------------------------------------------------------------------------- edge cases


def _clean_run(img, mask, **kw) -> dict[str, float]:
    """compute_features with every warning and floating-point error turned into an error."""
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        f = compute_features(img, mask, (1.0, 1.0, 1.0), TEXTURE, **kw)
    assert all(isinstance(v, float) and not math.isinf(v) for v in f.values())
    return f


def test_one_voxel_roi():
    img = np.random.default_rng(0).normal(size=(4, 4, 4))
    mask = np.zeros(img.shape, bool)
    mask[2, 1, 3] = True
    f = _clean_run(img, mask)
    assert f["stat_var"] == 0 and f["stat_skew"] == 0 and f["ih_mean"] == 1
    assert all(math.isnan(f[k]) for k in GLCM_FEATURES)
    assert all(math.isnan(f[k]) for k in NGTDM_FEATURES)
    assert f["szm_sze"] == 1 and f["szm_z_perc"] == 1 and f["szm_zs_entr"] == 0


def test_constant_roi():
    img = np.full((5, 5, 5), 42.0)
    mask = np.zeros(img.shape, bool)
    mask[1:4, 1:4, 1:4] = True
    f = _clean_run(img, mask)
    assert f["stat_var"] == 0 and f["ih_var"] == 0 and f["ih_max"] == 1
    assert math.isnan(f["cm_corr"]) and math.isnan(f["cm_info_corr1"])
    assert f["cm_energy"] == 1 and f["cm_contrast"] == 0
    assert f["ngt_coarseness"] == 1e6 and f["ngt_strength"] == 0 and f["ngt_busyness"] == 0
    assert f["szm_lze"] == 27**2 and f["szm_z_perc"] == 1 / 27
    nan = {k for k, v in f.items() if math.isnan(v)}
    assert nan == {"cm_corr", "cm_info_corr1"}


def test_roi_touching_the_array_border():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(4, 5, 6))
    mask = np.ones(img.shape, bool)  # the ROI is the whole array: every face touches a border
    inner = np.zeros((6, 7, 8))
    inner[1:-1, 1:-1, 1:-1] = img
    inner_mask = np.zeros(inner.shape, bool)
    inner_mask[1:-1, 1:-1, 1:-1] = True
    assert _same(_clean_run(img, mask), _clean_run(inner, inner_mask), rel=0)


def test_mask_with_holes():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 100, (7, 7, 7)).astype(np.int16)
    mask = np.ones(img.shape, bool)
    mask[3, 3, 3] = mask[1, 5, 2] = mask[5, 1, 4] = False
    f = _clean_run(img, mask)
    assert not any(math.isnan(v) for v in f.values())
    n_zones = f["szm_z_perc"] * (7**3 - 3)  # N_v counts ROI voxels only, not the holes
    assert n_zones == pytest.approx(round(n_zones))
    stats = intensity_statistics(img[mask])
    assert all(f[k] == stats[k] for k in stats)
    levels, _ = discretise_fixed_bin_number(img, mask, 32)
    assert f["cm_contrast"] == pytest.approx(
        glcm_features(glcm_matrices(levels, mask, 32))["cm_contrast"], rel=1e-12)


def test_two_voxel_line():
    img = np.zeros((3, 3, 3))
    img[1, 1, 2] = 1.0
    mask = np.zeros(img.shape, bool)
    mask[1, 1, 1:3] = True
    f = _clean_run(img, mask)
    assert f["cm_contrast"] == 31**2  # levels 1 and 32, one pair in the x direction
    assert f["ngt_coarseness"] == pytest.approx(1 / 31)
    assert math.isnan(f["stat_rmad"]) and math.isnan(f["ih_rmad"])  # nothing in [P10, P90]


# --------------------------------------------------------------------------- invariances


def _same(a: dict, b: dict, rel: float = 1e-9) -> bool:
    if list(a) != list(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if math.isnan(x) or math.isnan(y):
            if not (math.isnan(x) and math.isnan(y)):
                return False
        elif not math.isclose(x, y, rel_tol=rel, abs_tol=rel * 1e-3):
            return False
    return True


cases = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(np.float64, shape, elements=st.floats(-100, 100, width=32)),
        hnp.arrays(np.bool_, shape),
    )
).filter(lambda t: t[1].any())


@settings(max_examples=40, deadline=None)
@given(cases, st.integers(0, 3), st.floats(-1e6, 1e6))
def test_invariant_to_padding_outside_the_mask(case, pad, fill):
    img, mask = case
    padded = np.pad(img, pad, constant_values=fill)
    pmask = np.pad(mask, pad)
    for agg in ("averaged", "merged"):
        a = compute_features(img, mask, (1, 1, 1), TEXTURE, aggregation=agg)
        b = compute_features(padded, pmask, (1, 1, 1), TEXTURE, aggregation=agg)
        assert _same(a, b, rel=0)


@settings(max_examples=40, deadline=None)
@given(cases, st.sampled_from([(0,), (1,), (2,), (0, 1), (0, 1, 2)]))
def test_invariant_to_flipping(case, axes):
    img, mask = case
    for agg in ("averaged", "merged"):
        a = compute_features(img, mask, (1, 1, 1), TEXTURE, aggregation=agg)
        b = compute_features(np.flip(img, axes), np.flip(mask, axes), (1, 1, 1), TEXTURE,
                             aggregation=agg)
        assert _same(a, b)


@settings(max_examples=40, deadline=None)
@given(cases, st.permutations((0, 1, 2)))
def test_invariant_to_transposing_axes(case, perm):
    img, mask = case
    for agg in ("averaged", "merged"):
        a = compute_features(img, mask, (1, 1, 1), TEXTURE, aggregation=agg)
        b = compute_features(img.transpose(perm), mask.transpose(perm), (1, 1, 1), TEXTURE,
                             aggregation=agg)
        assert _same(a, b)


def test_shape_family_is_delegated(monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("pipelines.features.shape")

    def shape_features(mask, spacing):
        calls.append((mask.shape, spacing))
        return {"morph_volume": float(mask.sum() * np.prod(spacing))}

    fake.shape_features = shape_features
    monkeypatch.setitem(sys.modules, "pipelines.features.shape", fake)
    mask = np.zeros((5, 6, 7), bool)
    mask[1:3, 2:4, 3:6] = True
    f = compute_features(np.ones(mask.shape), mask, (3.0, 2.0, 1.0), ("shape", "firstorder"))
    assert list(f)[0] == "morph_volume" and f["morph_volume"] == 12 * 6.0
    assert calls == [((2, 2, 3), (3.0, 2.0, 1.0))]  # the cropped mask, spacing as given


# --------------------------------------------------------------------------- quantify_case


def _write_dicom_series(folder: Path, arr: np.ndarray, spacing_xyz) -> Path:
    """Write a (z, y, x) int16 array as a DICOM series, one file per slice."""
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing(spacing_xyz)
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.4242"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for tag, value in (("0020|000e", uid), ("0020|000d", uid + ".1"),
                           ("0008|0060", "CT"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(
                               str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, k)))),
                           ("0018|0050", str(spacing_xyz[2]))):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


@pytest.fixture
def small_case():
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 200, (6, 8, 9)).astype(np.int16)
    labels = np.zeros(arr.shape, np.uint8)
    labels[1:5, 2:6, 2:7] = 1
    labels[2:4, 3:5, 3:5] = 2
    return arr, labels, (0.8, 0.9, 2.5)  # spacing (x, y, z)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_quantify_case_file_formats(tmp_path, small_case, ext):
    arr, labels, sp = small_case
    ip = write_image(tmp_path / f"img{ext}", arr, sp)
    mp = write_image(tmp_path / f"mask{ext}", labels, sp)
    rows = case_mod.quantify_case(ip, mp, label=2, families=TEXTURE)
    want = compute_features(arr, labels == 2, sp[::-1], TEXTURE)
    assert [r["name"] for r in rows] == list(want)
    assert _same({r["name"]: r["value"] for r in rows}, want, rel=0)
    cat = {r["name"]: r for r in feature_catalogue()}
    for r in rows:
        assert set(r) == {"name", "family", "ibsi_code", "aggregation", "value"}
        assert r["aggregation"] == {"firstorder": "", "glcm": "3D, averaged", "glszm": "3D",
                                    "ngtdm": "3D"}[r["family"]]
        assert r["family"] == cat[r["name"]]["family"]
        assert r["ibsi_code"] == cat[r["name"]]["ibsi_code"]


def test_quantify_case_dicom_series(tmp_path, small_case):
    arr, labels, sp = small_case
    folder = _write_dicom_series(tmp_path / "dicom", arr, sp)
    mp = write_image(tmp_path / "mask.nii.gz", labels, sp)
    rows = case_mod.quantify_case(folder, mp, label=1, families=("firstorder", "glszm"))
    want = compute_features(arr, labels == 1, sp[::-1], ("firstorder", "glszm"))
    assert _same({r["name"]: r["value"] for r in rows}, want, rel=0)


def test_quantify_case_passes_spacing_in_array_order(tmp_path, small_case, monkeypatch):
    arr, labels, sp = small_case
    ip = write_image(tmp_path / "img.nrrd", arr, sp)
    mp = write_image(tmp_path / "mask.nrrd", labels, sp)
    seen = {}

    def spy(image, mask, spacing, **kw):
        seen.update(shape=image.shape, spacing=spacing, n=int(mask.sum()))
        return {"stat_mean": 0.0}

    monkeypatch.setattr(case_mod, "compute_features", spy)
    case_mod.quantify_case(ip, mp, label=1)
    assert seen == {"shape": arr.shape, "spacing": pytest.approx(sp[::-1]),
                    "n": int((labels == 1).sum())}


def test_quantify_case_rejects_other_physical_space(tmp_path, small_case):
    arr, labels, sp = small_case
    ip = write_image(tmp_path / "img.nii.gz", arr, sp)
    with pytest.raises(InputError, match="spacing"):
        case_mod.quantify_case(ip, write_image(tmp_path / "m1.nii.gz", labels, (1, 1, 1)))
    with pytest.raises(InputError, match="origin"):
        case_mod.quantify_case(ip, write_image(tmp_path / "m2.nii.gz", labels, sp,
                                               origin=(5.0, 0.0, 0.0)))
    with pytest.raises(InputError, match="size"):
        case_mod.quantify_case(ip, write_image(tmp_path / "m3.nii.gz", labels[:-1], sp))
    with pytest.raises(InputError, match="direction"):
        case_mod.quantify_case(ip, write_image(tmp_path / "m4.nii.gz", labels, sp,
                                               direction=(0, 1, 0, 1, 0, 0, 0, 0, 1)))


def test_quantify_case_unreadable_and_empty(tmp_path, small_case):
    arr, labels, sp = small_case
    ip = write_image(tmp_path / "img.nii.gz", arr, sp)
    mp = write_image(tmp_path / "mask.nii.gz", labels, sp)
    with pytest.raises(InputError, match="no voxel has label 7"):
        case_mod.quantify_case(ip, mp, label=7)
    with pytest.raises(InputError, match="file not found"):
        case_mod.quantify_case(tmp_path / "missing.nii.gz", mp)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        case_mod.quantify_case(bad, mp)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        case_mod.quantify_case(tmp_path / "empty", mp)


# --------------------------------------------------------------------------- the five new families

NEW = ("localintensity", "ivh", "glrlm", "gldzm", "ngldm")
NEW_LEVELS = ("ivh", "glrlm", "gldzm", "ngldm")  # read only the discretised ROI
FULL_SUFFIXES = {"3D, averaged": ("_3D_avg", "averaged"), "3D, merged": ("_3D_comb", "merged"),
                 "3D": ("_3D", "averaged"), "": ("", "averaged")}


def _new_reference() -> list:
    """One param per 3D reference row of the five new families (full phantom reference)."""
    import csv

    from conftest import REFERENCE

    path = REFERENCE / "ibsi" / "ibsi1_digital_phantom_reference.csv"
    if not path.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason="no reference data"))]
    with path.open(newline="", encoding="utf-8") as f:
        return [pytest.param(r, id=r["tag"]) for r in csv.DictReader(f)
                if r["tag"].startswith(("loc_", "ivh_", "rlm_", "dzm_", "ngl_"))
                and r["aggregation"] in FULL_SUFFIXES]


@pytest.fixture(scope="module")
def phantom_new_features(phantom):
    img, mask, spacing = phantom
    return {agg: compute_features(img, mask, spacing, NEW, bin_size=1.0, aggregation=agg)
            for agg in ("averaged", "merged")}


def test_new_reference_rows_are_all_there():
    rows = [p.values[0] for p in _new_reference()]
    if rows == [None]:
        pytest.skip("no reference data")
    assert len(rows) == 2 + 6 + 32 + 16 + 17


@pytest.mark.parametrize("row", _new_reference())
def test_phantom_end_to_end_new_families(phantom_new_features, row):
    suffix, agg = FULL_SUFFIXES[row["aggregation"]]
    name = row["tag"].removesuffix(suffix)
    value = phantom_new_features[agg][name]
    ref = float(row["value"])
    if row["tolerance"]:
        assert abs(value - ref) <= float(row["tolerance"]), (name, value, ref)
    else:
        assert float(f"{value:.3g}") == float(f"{ref:.3g}"), (name, value, ref)


def test_defaults_are_unchanged_and_every_family_is_registered(phantom):
    from pipelines.features.extract import ALL_FAMILIES, FAMILIES

    assert FAMILIES == ("firstorder", "glcm", "glszm", "ngtdm", "shape")
    assert ALL_FAMILIES == ("localintensity", "firstorder", "ivh", "glcm", "glrlm", "glszm",
                            "gldzm", "ngtdm", "ngldm", "shape")
    img, mask, sp = phantom
    default = compute_features(img, mask, sp)
    assert list(default) == list(compute_features(img, mask, sp, FAMILIES))
    assert not any(k.startswith(("loc_", "ivh_", "rlm_", "dzm_", "ngl_")) for k in default)
    cat_families = list(dict.fromkeys(r["family"] for r in feature_catalogue()))
    assert cat_families == list(ALL_FAMILIES)


def test_new_families_output_order(phantom_new_features):
    from pipelines.features.gldzm import GLDZM_FEATURES
    from pipelines.features.glrlm import GLRLM_FEATURES
    from pipelines.features.ivh import IVH_FEATURES
    from pipelines.features.localintensity import LOCAL_INTENSITY_FEATURES
    from pipelines.features.ngldm import NGLDM_FEATURES

    want = [*LOCAL_INTENSITY_FEATURES, *IVH_FEATURES, *GLRLM_FEATURES, *GLDZM_FEATURES,
            *NGLDM_FEATURES]
    assert list(phantom_new_features["averaged"]) == want
    assert all(isinstance(v, float) for v in phantom_new_features["merged"].values())


def test_local_intensity_reads_outside_the_mask_and_uses_spacing():
    img = np.zeros((15, 15, 15))
    img[7, 7, 7] = 100.0
    img[7, 7, 9] = 50.0  # outside the ROI, 2 voxels away along x
    mask = np.zeros(img.shape, bool)
    mask[7, 7, 7] = True
    near = compute_features(img, mask, (1, 1, 1), ("localintensity",))
    far = compute_features(img, mask, (1, 1, 4), ("localintensity",))  # 8 mm away: left out
    d = np.indices((15, 15, 15)) - 7
    n_near = ((d**2).sum(axis=0) <= 6.2035**2).sum()
    n_far = ((d[0] ** 2 + d[1] ** 2 + (4 * d[2]) ** 2) <= 6.2035**2).sum()
    assert near["loc_peak_loc"] == pytest.approx(150.0 / n_near)
    assert far["loc_peak_loc"] == pytest.approx(100.0 / n_far)
    bad = img.copy()
    bad[7, 7, 7] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        compute_features(bad, mask, (1, 1, 1), ("localintensity",))


def test_new_families_one_voxel_and_constant_roi():
    img = np.random.default_rng(0).normal(size=(4, 4, 4))
    mask = np.zeros(img.shape, bool)
    mask[2, 1, 3] = True
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        one = compute_features(img, mask, (1.0, 1.0, 1.0), NEW)
        const = compute_features(np.full((5, 5, 5), 3.0), np.ones((5, 5, 5), bool), (1, 1, 1),
                                 NEW)
    assert not any(math.isnan(v) or math.isinf(v) for v in one.values())
    assert one["loc_peak_loc"] == one["loc_peak_glob"]
    assert one["rlm_sre"] == 1 and one["rlm_r_perc"] == 1
    assert one["dzm_sde"] == 1 and one["ngl_lde"] == 1 and one["ngl_dc_energy"] == 1
    assert one["ivh_v10"] == 0  # level 1 of G = [1, 32]: no voxel at 10 % intensity
    assert const["loc_peak_glob"] == pytest.approx(3.0) and const["ivh_i50"] == 2
    # 5^3 cube: dependence = product over axes of 2 (end) or 3 (inside) voxels, so
    # mean j^2 = ((2 * 2^2 + 3 * 3^2) / 5)^3 = 7^3
    assert const["dzm_lde"] == 1 and const["ngl_hde"] == pytest.approx(7**3)
    assert const["rlm_glnu_norm"] == 1


@settings(max_examples=30, deadline=None)
@given(cases, st.integers(0, 3), st.floats(-1e6, 1e6))
def test_new_families_invariant_to_padding_outside_the_mask(case, pad, fill):
    img, mask = case
    padded = np.pad(img, pad, constant_values=fill)
    pmask = np.pad(mask, pad)
    for agg in ("averaged", "merged"):
        a = compute_features(img, mask, (1, 1, 1), NEW_LEVELS, aggregation=agg)
        b = compute_features(padded, pmask, (1, 1, 1), NEW_LEVELS, aggregation=agg)
        assert _same(a, b, rel=0)


@settings(max_examples=30, deadline=None)
@given(cases, st.sampled_from([(0,), (1,), (2,), (0, 1), (0, 1, 2)]), st.permutations((0, 1, 2)))
def test_new_families_invariant_to_flips_and_transposes(case, axes, perm):
    img, mask = case
    for agg in ("averaged", "merged"):
        a = compute_features(img, mask, (1, 1, 1), NEW, aggregation=agg)
        b = compute_features(np.flip(img, axes).transpose(perm),
                             np.flip(mask, axes).transpose(perm), (1, 1, 1), NEW,
                             aggregation=agg)
        assert _same(a, b)
