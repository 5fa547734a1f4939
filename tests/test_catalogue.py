"""The feature catalogue (schemas/features.csv) and its presets."""

from __future__ import annotations

import collections
import csv

import numpy as np
import pytest

from pipelines.exceptions import InputError
from pipelines.features.catalogue import CATALOGUE_PATH, feature_catalogue, preset
from pipelines.features.extract import compute_features
from pipelines.features.firstorder import IH_FEATURES, STAT_FEATURES
from pipelines.features.glcm import GLCM_FEATURES
from pipelines.features.gldzm import GLDZM_FEATURES
from pipelines.features.glrlm import GLRLM_FEATURES
from pipelines.features.glszm import GLSZM_FEATURES
from pipelines.features.ivh import IVH_FEATURES
from pipelines.features.localintensity import LOCAL_INTENSITY_FEATURES
from pipelines.features.ngldm import NGLDM_FEATURES
from pipelines.features.ngtdm import NGTDM_FEATURES

FAMILY_TABLES = {  # catalogue (IBSI) order
    "localintensity": LOCAL_INTENSITY_FEATURES,
    "firstorder": {**STAT_FEATURES, **IH_FEATURES},
    "ivh": IVH_FEATURES,
    "glcm": GLCM_FEATURES,
    "glrlm": GLRLM_FEATURES,
    "glszm": GLSZM_FEATURES,
    "gldzm": GLDZM_FEATURES,
    "ngtdm": NGTDM_FEATURES,
    "ngldm": NGLDM_FEATURES,
}
PAPER_SHAPE = {"morph_volume", "morph_area_mesh", "morph_fractal_dim", "morph_porosity"}


def test_columns_and_types():
    with CATALOGUE_PATH.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == ["name", "family", "ibsi_code", "unit", "paper_name", "paper41", "paper45"]
    rows = feature_catalogue()
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    for r in rows:
        assert r["family"] in {*FAMILY_TABLES, "shape"}
        assert isinstance(r["paper41"], bool) and isinstance(r["paper45"], bool)
        assert r["unit"], r["name"]
        assert bool(r["paper_name"]) == r["paper45"], r["name"]


def test_catalogue_is_cached_but_copies_are_returned():
    a = feature_catalogue()
    a[0]["name"] = "changed"
    assert feature_catalogue()[0]["name"] != "changed"


def test_every_computed_feature_is_catalogued_with_its_code():
    cat = {r["name"]: r for r in feature_catalogue()}
    for family, table in FAMILY_TABLES.items():
        for name, code in table.items():
            assert cat[name]["family"] == family and cat[name]["ibsi_code"] == code, name
    f = compute_features(np.arange(64.0).reshape(4, 4, 4), np.ones((4, 4, 4)), (1, 1, 1),
                         tuple(FAMILY_TABLES))
    assert set(f) <= set(cat)
    non_shape = [r["name"] for r in feature_catalogue() if r["family"] != "shape"]
    assert list(f) == non_shape  # catalogue order is the output order


def test_codes_agree_with_the_ibsi_reference(shared_reference):
    cat = {r["name"]: r for r in feature_catalogue()}
    path = shared_reference / "ibsi" / "ibsi1_digital_phantom_reference_3D_subset.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seen = set()
    for r in rows:
        name = r["tag"]
        for suffix in ("_3D_avg", "_3D_comb", "_3D"):
            name = name.removesuffix(suffix)
        assert cat[name]["ibsi_code"] == r["ibsi_code"], name  # match by name, not code
        seen.add(name)
    full = shared_reference / "ibsi" / "ibsi1_digital_phantom_reference.csv"
    with full.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["aggregation"] in ("", "3D", "3D, averaged",
                                                                       "3D, merged")]
    for r in rows:  # the five families the 3D subset leaves out, from the full reference
        name = r["tag"]
        for suffix in ("_3D_avg", "_3D_comb", "_3D"):
            name = name.removesuffix(suffix)
        assert cat[name]["ibsi_code"] == r["ibsi_code"], name
        seen.add(name)
    assert {cat[n]["family"] for n in seen} == {*FAMILY_TABLES, "shape"}
    morph = {n for n in seen if n.startswith("morph_")}
    shape_rows = {n for n, r in cat.items() if r["family"] == "shape"}
    assert morph | {"morph_fractal_dim", "morph_porosity"} <= shape_rows
    assert cat["morph_fractal_dim"]["ibsi_code"] == cat["morph_porosity"]["ibsi_code"] == ""


def test_presets():
    p41, p45, everything = preset("paper41"), preset("paper45"), preset("all")
    assert len(p41) == 41 and len(p45) == 45 and len(everything) == len(feature_catalogue())
    assert set(p45) == set(p41) | PAPER_SHAPE
    cat = {r["name"]: r for r in feature_catalogue()}
    fams = collections.Counter(cat[n]["family"] for n in p41)
    assert fams == {"firstorder": 6, "glcm": 19, "glszm": 11, "ngtdm": 5}
    histogram = {n for n in p41 if cat[n]["family"] == "firstorder"}
    assert histogram == {"ih_mean", "ih_var", "ih_skew", "ih_kurt", "ih_uniformity",
                         "ih_entropy"}
    assert set(preset("paper41")) == {n for n in everything if cat[n]["paper41"]}
    with pytest.raises(InputError, match="preset"):
        preset("paper46")


def test_paper_names_of_table_2_features():
    names = {r["paper_name"]: r["name"] for r in feature_catalogue() if r["paper_name"]}
    assert names["Large Zone Size Emphasis-GLSZM"] == "szm_lze"
    assert names["Maximum Probability-GLCM"] == "cm_joint_max"
    assert names["Sum of squares variance-GLCM"] == "cm_joint_var"
    assert names["Angular second moment-GLCM"] == "cm_energy"
    assert names["Texture Strength-NGTDM"] == "ngt_strength"
    assert names["Energy"] == "ih_uniformity"
    assert names["Porosity"] == "morph_porosity"
