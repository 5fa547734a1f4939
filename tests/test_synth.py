"""Synthetic cohort: layout, geometry, determinism and the planted / null effects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.stats import spearmanr

from pipelines.synth import anatomy as A
from pipelines.synth import biopsy as B
from pipelines.synth import latent as L
from pipelines.synth import make_cohort, make_tables
from pipelines.synth.cohort import MODALITIES, SITES, site_geometry

DRIVEN = {c: (f, s) for f, up, down, _ in L.IMMUNE_PAIRS for c, s in ((up, 1), (down, -1))}


def _grid_of(img: sitk.Image) -> tuple:
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    """A 3-patient small cohort with a 2-patient biopsy cohort."""
    out = tmp_path_factory.mktemp("synth") / "c3"
    paths = make_cohort(out, n_patients=3, seed=7, size="small", biopsy_patients=2, progress=False)
    return {"out": out, "paths": paths, "gt": json.loads((out / "ground_truth.json").read_text())}


@pytest.fixture(scope="module")
def big_tables() -> dict:
    return make_tables(1000, seed=11)


@pytest.fixture(scope="module")
def null_tables() -> dict:
    return make_tables(500, seed=12, effect_scale=0.0)


# --- tables ---------------------------------------------------------------------------------


def test_tables_deterministic_and_independent_of_cohort_size():
    a, b, c = make_tables(5, seed=3), make_tables(5, seed=3), make_tables(3, seed=3)
    for name in ("clinical", "immune", "latent"):
        pd.testing.assert_frame_equal(a[name], b[name])
        pd.testing.assert_frame_equal(a[name].iloc[:3], c[name])
    pd.testing.assert_frame_equal(a["expression"].iloc[:, :4], c["expression"])
    assert not a["clinical"].equals(make_tables(5, seed=4)["clinical"])


def test_clinical_columns_and_ranges(big_tables):
    c = big_tables["clinical"]
    assert list(c.columns) == ["patient_id", "age", "gender", "grade", "survival_days", "event"]
    assert c.patient_id.iloc[0] == "TCGA-SYN-0001" and c.patient_id.is_unique
    assert set(c.gender) == {"M", "F"} and set(c.grade) == {"LGG", "GBM"}
    assert c.age.between(19, 85).all() and np.allclose(c.age, c.age.round(1))
    assert c.survival_days.dtype.kind == "i" and (c.survival_days > 0).all()
    assert set(c.event) == {0, 1}
    assert 0.50 < (c.gender == "M").mean() < 0.64  # Table 1: 86/151 = 0.57
    assert 0.38 < (c.grade == "GBM").mean() < 0.52  # 68/151 = 0.45
    assert 48 < c.age.median() < 57  # 53
    assert c[c.grade == "GBM"].age.median() > c[c.grade == "LGG"].age.median() + 8
    assert 0.45 < 1 - c.event.mean() < 0.65  # 83/151 = 0.55 censored
    assert 330 < c.survival_days.median() < 530  # 14.4 months ~ 439 days


def test_immune_fractions_and_table1_presence(big_tables):
    im = big_tables["immune"]
    assert list(im.columns) == ["patient_id", *L.CELL_TYPES] and len(L.CELL_TYPES) == 22
    total = im[L.CELL_TYPES].sum(axis=1)
    assert (im[L.CELL_TYPES] >= 0).all().all()
    assert total.between(0.02, 0.5).all()  # CIBERSORT fractions (sum 1) x leukocyte fraction
    present = (im[L.CELL_TYPES] > 0).mean()
    expected = pd.Series(L.CELL_PRESENT) / L.TABLE1_N
    assert (present - expected).abs().max() < 0.05, (present - expected).abs().idxmax()
    assert (im.macrophages_m2 > 0).all()  # 151/0 in Table 1


def test_planted_markers_follow_their_factor_and_null_markers_do_not(big_tables):
    im = big_tables["immune"].iloc[:500]
    lat = big_tables["latent"].iloc[:500]
    for cell in L.CELL_TYPES:
        for factor in L.LATENT_FACTORS:
            rho = spearmanr(im[cell], lat[factor])[0]
            if DRIVEN.get(cell, (None,))[0] == factor:
                assert rho * DRIVEN[cell][1] > 0.3, (cell, factor, rho)
            else:
                assert abs(rho) < 0.15, (cell, factor, rho)


def test_cd3_genes_follow_tcell(big_tables):
    ex = big_tables["expression"]
    assert ex.columns[0] == "gene" and len(ex) >= 35
    assert {"CD3D", "CD3E", "CD3G", "PTPRC", "GFAP", "ACTB", "GAPDH"} <= set(ex.gene)
    values = ex.set_index("gene")
    assert (values > 0).all().all()
    tcell = big_tables["latent"].tcell.to_numpy()
    for gene in ("CD3D", "CD3E", "CD3G"):
        assert spearmanr(values.loc[gene].to_numpy(), tcell)[0] > 0.5
    assert abs(spearmanr(values.loc["GFAP"].to_numpy(), tcell)[0]) < 0.15


def test_survival_hazard_follows_factors(big_tables):
    c, lat = big_tables["clinical"], big_tables["latent"]
    died_early = (c.event == 1) & (c.survival_days < c.survival_days.median())
    high = lat.tcell > lat.tcell.median()
    assert died_early[high].mean() > 1.3 * died_early[~high].mean()
    gbm = c.grade == "GBM"
    assert died_early[gbm].mean() > 1.5 * died_early[~gbm].mean()


def test_null_cohort_has_no_effect(null_tables):
    im, lat, c = null_tables["immune"], null_tables["latent"], null_tables["clinical"]
    for factor in L.LATENT_FACTORS:
        for cell in L.CELL_TYPES:
            assert abs(spearmanr(im[cell], lat[factor])[0]) < 0.15, (cell, factor)
        cd3d = null_tables["expression"].set_index("gene").loc["CD3D"].to_numpy()
        assert abs(spearmanr(cd3d, lat[factor])[0]) < 0.15
        assert abs(spearmanr(c.survival_days, lat[factor])[0]) < 0.15
    assert (lat.linear_predictor == 0).all()
    # presence/absence still follows Table 1 in a null cohort
    present = (im[L.CELL_TYPES] > 0).mean()
    assert (present - pd.Series(L.CELL_PRESENT) / L.TABLE1_N).abs().max() < 0.07


# --- geometry -------------------------------------------------------------------------------


def test_axis_weights_partition_of_unity():
    src = np.arange(50, dtype=float)
    for width in (0.0, 0.5, 1.0, 5.0):
        w = A.axis_weights(src, np.linspace(10, 40, 17), width, 0.5)
        assert np.allclose(w.sum(axis=1), 1.0, atol=1e-5)
    w = A.axis_weights(src, np.array([-30.0, 80.0]), 5.0, 0.5)  # outside the source: air
    assert w.nnz == 0


@pytest.mark.parametrize("site", list(SITES))
def test_sampling_puts_a_point_where_simpleitk_says(site):
    grid = A.RenderGrid((-40.0, -30.0, -20.0), 1.0, (40, 60, 80))  # x, y, z origin; z, y, x shape
    vol = np.zeros((1,) + grid.shape, np.float32)
    point = np.array([-7.0, 4.0, 2.0])  # x, y, z mm
    k, j, i = (int((point[a] - grid.origin[a]) / grid.spacing) for a in (2, 1, 0))
    vol[0, k - 2 : k + 3, j - 2 : j + 3, i - 2 : i + 3] = 1.0  # a 5 mm cube centred on `point`
    geo = site_geometry(site, "small")
    origin = A.grid_origin((-1.0, 2.0, 0.5), geo["size"], geo["spacing"], geo["direction"])
    out = A.sample_to_grid(vol, grid, geo["size"], geo["spacing"], origin, geo["direction"])[0]
    assert out.shape == tuple(geo["size"][::-1])
    img = sitk.GetImageFromArray(out)
    img.SetSpacing(geo["spacing"])
    img.SetOrigin(tuple(origin))
    img.SetDirection(geo["direction"])
    idx = np.argwhere(out > 0.5 * out.max())[:, ::-1]  # (i, j, k)
    centre = np.mean([img.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in idx], axis=0)
    assert np.all(
        np.abs(centre - point)
        <= np.asarray(geo["spacing"])[np.argsort(A.grid_axes(geo["direction"])[0])] / 2 + 0.6
    ), (centre, point)
    assert abs(out.sum() * np.prod(geo["spacing"]) - 125.0) < 5.0  # volume is preserved


# --- written cohort -------------------------------------------------------------------------


def test_layout_and_tables(cohort):
    out, gt = cohort["out"], cohort["gt"]
    for name in (
        "manifest.csv",
        "clinical.csv",
        "immune.csv",
        "expression.tsv",
        "ground_truth.json",
        "biopsy/manifest.csv",
        "biopsy/biopsies.csv",
    ):
        assert (out / name).is_file(), name
    man = pd.read_csv(out / "manifest.csv")
    assert list(man.columns) == ["patient_id", "modality", "image", "mask"]
    assert len(man) == 3 * 4 and set(man.modality) == set(MODALITIES)
    assert list(pd.read_csv(out / "clinical.csv").patient_id) == [
        "TCGA-SYN-0001",
        "TCGA-SYN-0002",
        "TCGA-SYN-0003",
    ]
    ex = pd.read_csv(out / "expression.tsv", sep="\t")
    assert list(ex.columns) == ["gene", "TCGA-SYN-0001", "TCGA-SYN-0002", "TCGA-SYN-0003"]
    tables = make_tables(3, seed=7)
    pd.testing.assert_frame_equal(pd.read_csv(out / "clinical.csv"), tables["clinical"])
    assert np.allclose(
        pd.read_csv(out / "immune.csv")[L.CELL_TYPES],
        tables["immune"][L.CELL_TYPES],
        rtol=1e-5,
        atol=1e-12,
    )
    for key in (
        "seed",
        "n_patients",
        "size",
        "effect_scale",
        "latent_factors",
        "texture_drivers",
        "immune",
        "null_markers",
        "survival",
        "expression",
        "sites",
        "patients",
        "biopsy",
        "mask",
    ):
        assert key in gt, key
    assert set(gt["null_markers"]) == set(L.CELL_TYPES) - set(DRIVEN)
    assert gt["texture_drivers"]["tcell"]["sequences"] == ["T1CE", "FLAIR"]
    assert gt["texture_drivers"]["prolif"]["property"] == "heterogeneity"


def test_images_readable_on_declared_grids(cohort):
    out, gt = cohort["out"], cohort["gt"]
    man = pd.read_csv(out / "manifest.csv")
    for pid, rows in man.groupby("patient_id"):
        site = gt["patients"][pid]["site"]
        spec = gt["sites"][site]
        mask = sitk.ReadImage(str(out / rows["mask"].iloc[0]))
        assert mask.GetPixelID() == sitk.sitkUInt8
        m = sitk.GetArrayFromImage(mask)
        assert set(np.unique(m)) <= {0, 1, 2, 4} and {0, 1, 2} <= set(np.unique(m))
        assert np.isin(m, [1, 4]).sum() > 50  # the gross tumour (region core)
        assert np.allclose(mask.GetSpacing(), spec["spacing"], atol=1e-4)
        assert list(mask.GetSize()) == spec["size"]
        assert np.allclose(mask.GetDirection(), spec["direction"], atol=1e-6)
        for _, r in rows.iterrows():
            img = sitk.ReadImage(str(out / r.image))
            size, spacing, origin, direction = _grid_of(img)
            assert size == mask.GetSize()
            assert np.allclose(spacing, mask.GetSpacing()) and np.allclose(origin, mask.GetOrigin())
            assert np.allclose(direction, mask.GetDirection())
            arr = sitk.GetArrayFromImage(img)
            assert arr.dtype == np.dtype(spec["intensity"]["dtype"])
            if spec["intensity"]["range"] is not None:
                lo, hi = spec["intensity"]["range"]
                assert arr.min() >= lo and arr.max() <= hi
            air = np.abs(arr[:, :4, :4].astype(float)).mean()  # corners of the field of view
            assert arr[m == 1].mean() > 3 * air + 1e-6  # the tumour is bright, the corner is air
        # mask centroid sits near the true tumour centre (physical space)
        idx = np.argwhere(m == 1)[:, ::-1]
        pts = np.array([mask.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in idx])
        truth = gt["patients"][pid]["tumour"]
        assert np.linalg.norm(pts.mean(axis=0) - truth["centre_mm"]) < 0.5 * truth["radius_mm"]


def test_rendered_contrasts_are_brain_like():
    rng = np.random.default_rng(5)
    centre = (0.0, 10.0, 20.0)
    grid = A.render_grid("small", centre)
    head = A.draw_head(rng, "small")
    tumour = A.draw_tumour(rng, "small", head, gbm=1, effect_scale=3.0)  # necrotic, enhancing
    labels = A.add_tumour(A.head_labels(grid, centre, head), grid, centre, tumour)
    assert {A.CSF, A.GM, A.WM, A.NECROSIS, A.RIM, A.BODY, A.OEDEMA} <= set(np.unique(labels))
    tex = A.draw_texture(rng, {"tcell": 0.0, "prolif": 0.0}, 1.0)
    v = A.render_sequences(labels, MODALITIES, tumour["enhancement"], tex, rng)

    def mean(seq, lab):
        return v[seq][labels == lab].mean()

    assert mean("T1", A.WM) > mean("T1", A.GM) > mean("T1", A.CSF)
    assert mean("T2", A.CSF) > mean("T2", A.GM) > mean("T2", A.WM)
    assert mean("FLAIR", A.CSF) < mean("FLAIR", A.WM) < mean("FLAIR", A.OEDEMA)
    assert mean("T1CE", A.RIM) > mean("T1CE", A.WM) and mean("T1", A.RIM) < mean("T1", A.WM)
    assert mean("T1CE", A.NECROSIS) < mean("T1CE", A.RIM)
    mask = A.tumour_mask(labels)
    assert mask.sum() > 0 and not mask[labels == A.OEDEMA].any()


def test_texture_grain_follows_tcell_and_amplitude_follows_prolif():
    rng = np.random.default_rng(0)
    lo = A.draw_texture(rng, {"tcell": -1.5, "prolif": -1.5}, 1.0)
    hi = A.draw_texture(np.random.default_rng(0), {"tcell": 1.5, "prolif": 1.5}, 1.0)
    assert hi["grain_sigma_mm"] > 2.5 * lo["grain_sigma_mm"]
    assert hi["het_amplitude"] > 2.5 * lo["het_amplitude"]
    null_lo = A.draw_texture(np.random.default_rng(0), {"tcell": -1.5, "prolif": -1.5}, 0.0)
    null_hi = A.draw_texture(np.random.default_rng(0), {"tcell": 1.5, "prolif": 1.5}, 0.0)
    assert null_lo == null_hi
    white = np.random.default_rng(1).standard_normal((40, 40, 40))
    fine, coarse = A.smooth_noise(white, 1.0), A.smooth_noise(white, 3.0)
    lag1 = [np.mean(f[:, :, 1:] * f[:, :, :-1]) for f in (fine, coarse)]
    assert lag1[1] > lag1[0] + 0.15 and np.isclose(fine.std(), 1.0, atol=1e-5)


def test_cohort_is_deterministic_and_patients_do_not_depend_on_n(cohort, tmp_path):
    out = cohort["out"]
    again = make_cohort(
        tmp_path / "again", n_patients=3, seed=7, size="small", biopsy_patients=2, progress=False
    )
    for name in (
        "manifest.csv",
        "clinical.csv",
        "immune.csv",
        "expression.tsv",
        "ground_truth.json",
        "biopsy/biopsies.csv",
        "biopsy/manifest.csv",
    ):
        assert (out / name).read_bytes() == (Path(again["out_dir"]) / name).read_bytes(), name
    bigger = make_cohort(
        tmp_path / "five", n_patients=5, seed=7, size="small", biopsy_patients=0, progress=False
    )
    for pid, files in cohort["paths"]["images"].items():
        for key, path in files.items():
            a = sitk.ReadImage(path)
            b = sitk.ReadImage(bigger["images"][pid][key])
            assert _grid_of(a) == _grid_of(b)
            assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)), (pid, key)
    five = pd.read_csv(Path(bigger["out_dir"]) / "clinical.csv")
    pd.testing.assert_frame_equal(five.iloc[:3], pd.read_csv(out / "clinical.csv"))
    assert bigger["biopsy"] is None and not (Path(bigger["out_dir"]) / "biopsy").exists()


# --- biopsy cohort --------------------------------------------------------------------------


def test_biopsy_images_share_one_grid_and_sites_are_in_the_tumour(cohort):
    out, gt = cohort["out"] / "biopsy", cohort["gt"]["biopsy"]
    man = pd.read_csv(out / "manifest.csv")
    assert list(man.patient_id.unique()) == ["BIO-0001", "BIO-0002"]
    bx = pd.read_csv(out / "biopsies.csv")
    assert list(bx.columns) == [
        "patient_id",
        "biopsy_id",
        "x_mm",
        "y_mm",
        "z_mm",
        "CD3D",
        "CD3E",
        "CD3G",
    ]
    assert gt["n_biopsies"] == len(bx) and bx.biopsy_id.is_unique
    for pid, rows in man.groupby("patient_id"):
        assert list(rows.modality) == list(B.BIOPSY_SEQUENCES)
        mask = sitk.ReadImage(str(out / rows["mask"].iloc[0]))
        for path in rows.image:
            assert _grid_of(sitk.ReadImage(str(out / path))) == _grid_of(mask)
        field_img = sitk.ReadImage(str(out / f"truth/{pid}_infiltration.nii.gz"))
        assert _grid_of(field_img) == _grid_of(mask)
        assert field_img.GetPixelID() == sitk.sitkFloat32
        field, m = sitk.GetArrayFromImage(field_img), sitk.GetArrayFromImage(mask)
        assert (field[m == 0] == 0).all() and field[m == 1].max() > 0
        sites = bx[bx.patient_id == pid]
        assert 1 <= len(sites) <= 6
        pts = sites[["x_mm", "y_mm", "z_mm"]].to_numpy()
        for p, bid in zip(pts, sites.biopsy_id, strict=True):
            i, j, k = mask.TransformPhysicalPointToIndex(tuple(float(v) for v in p))
            assert m[k, j, i] == 1, bid
            ni, nj, _ = mask.GetSize()
            assert 8 <= i < ni - 8 and 8 <= j < nj - 8
            assert field[k, j, i] == pytest.approx(gt["patients"][pid]["field_at_biopsies"][bid])
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        assert (d[np.triu_indices(len(pts), 1)] > 4.0).all()  # >= 5 mm minus the jitter


def test_cd3_expression_follows_the_field():
    rng = np.random.default_rng(0)
    fields = [rng.uniform(0, 1.2, 4) for _ in range(60)]  # 60 patients x 4 biopsies
    on = [B.biopsy_expression(np.random.default_rng(k), f, 1.0) for k, f in enumerate(fields)]
    off = [B.biopsy_expression(np.random.default_rng(k), f, 0.0) for k, f in enumerate(fields)]
    f = np.concatenate(fields)
    cd3d = np.concatenate([e["CD3D"] for e in on])
    assert spearmanr(cd3d, f)[0] > 0.5
    assert spearmanr(cd3d, np.concatenate([e["CD3E"] for e in on]))[0] > 0.6
    assert abs(spearmanr(np.concatenate([e["CD3D"] for e in off]), f)[0]) < 0.15
    assert 0.5 < np.median(np.concatenate([e["CD3D"] for e in off])) < 2.0  # ~1 TPM


def test_choose_sites_respects_distance_and_margins():
    mask = np.zeros((20, 40, 40), bool)
    mask[2:18, 5:35, 5:35] = True
    ijk = B.choose_sites(mask, 6, np.random.default_rng(1), (1.0, 1.0, 1.0), 5.0, 8)
    assert len(ijk) == 6
    assert ((ijk[:, :2] >= 8) & (ijk[:, :2] < 32)).all() and mask[
        ijk[:, 2], ijk[:, 1], ijk[:, 0]
    ].all()
    d = np.linalg.norm(ijk[:, None] - ijk[None], axis=-1)
    assert (d[np.triu_indices(6, 1)] >= 5.0).all()


def test_label_map_core_is_the_thresholded_gross_tumour():
    from pipelines.synth.cohort import label_map

    rng = np.random.default_rng(0)
    gross = rng.uniform(0, 1, (4, 5, 6)).astype(np.float32)
    rim = gross * rng.uniform(0, 1, gross.shape).astype(np.float32)
    whole = np.clip(gross + rng.uniform(0, 0.5, gross.shape), 0, 1).astype(np.float32)
    out = label_map(gross, rim, whole)
    np.testing.assert_array_equal(np.isin(out, [1, 4]), gross >= 0.5)
    np.testing.assert_array_equal(out == 2, (whole >= 0.5) & (gross < 0.5))
    np.testing.assert_array_equal(out == 4, (gross >= 0.5) & (rim >= 0.3 * gross))
