"""The filter registry and banks: frozen hashed specs, checked parameters, maps in order."""

from __future__ import annotations

import numpy as np
import pytest
from test_filters_reference import CASES, assert_matches, case_input, case_params

from pipelines.exceptions import InputError
from pipelines.filters.bank import REGISTRY, FilterBank, filter_bank, filter_spec
from pipelines.lake import canonical_json, sha256_text


def test_every_reference_case_is_a_valid_spec():
    for name, params in CASES.values():
        filter_spec(name, params, check=False)


@pytest.mark.parametrize("test_id", [p for p in case_params(set(REGISTRY))
                                     if p.id in ("2.a", "3.c.3", "5.a.1", "8.a.2")])
def test_a_spec_applies_its_filter(test_id, record_property):
    vol, spacing, _ = case_input(test_id)
    name, params = CASES[test_id]
    assert_matches(test_id, filter_spec(name, params).apply(vol, spacing), record_property)


def test_the_hash_is_canonical_json_sha256_with_defaults_filled():
    a = filter_spec("log", {"sigma_mm": 1})
    b = filter_spec("log", {"sigma_mm": 1.0, "truncate": 4, "boundary": "mirror"})
    assert a == b and a.sha256 == b.sha256
    assert a.sha256 == sha256_text(canonical_json(
        {"filter": "log", "params": {"boundary": "mirror", "plane": None, "sigma_mm": 1.0,
                                     "truncate": 4.0}}))
    assert filter_spec("log", {"sigma_mm": 2}).sha256 != a.sha256


def test_specs_are_frozen():
    spec = filter_spec("mean", {"support": 3})
    with pytest.raises(AttributeError):
        spec.filter = "log"
    p = spec.params
    p["support"] = 5
    assert spec.params["support"] == 3


@pytest.mark.parametrize("name, params, match", [
    ("median", {}, "unknown filter"),
    ("log", {}, "needs parameter 'sigma_mm'"),
    ("log", {"sigma": 1}, "unknown parameter"),
    ("log", {"sigma_mm": "one"}, "kind float"),
    ("log", {"sigma_mm": -1}, "sigma"),
    ("mean", {"support": 2.5}, "kind int"),
    ("laws", {"kernel": "E5L5S5", "rotation_invariant": "yes"}, "kind bool"),
    ("laws", {"kernel": "Q5"}, "not 2 or 3"),
    ("wavelet", {"wavelet": "db2", "subband": "LHL", "boundary": "reflect"}, "mirror"),
])
def test_bad_specs_fail_when_read(name, params, match):
    with pytest.raises(InputError, match=match):
        filter_spec(name, params)


def test_a_bank_gives_float32_maps_in_order_with_names():
    bank = filter_bank("demo", [
        {"filter": "log", "sigma_mm": 1.0},
        {"filter": "wavelet", "params": {"wavelet": "coif1", "subband": "HLL"}},
    ])
    vol = np.random.default_rng(0).normal(size=(6, 7, 8))
    maps = bank.apply(vol, (1.0, 1.0, 1.0))
    assert maps.shape == (2, 6, 7, 8) and maps.dtype == np.float32
    assert np.allclose(maps[0], bank.specs[0].apply(vol), atol=1e-5)
    assert bank.map_names[0].startswith("log(sigma_mm=1)-")
    assert bank.map_names[1].startswith("wavelet(subband=HLL,wavelet=coif1)-")


def test_the_bank_hash_follows_its_filters_not_its_name():
    f = [{"filter": "mean", "support": 3}, {"filter": "log", "sigma_mm": 2}]
    assert filter_bank("a", f).sha256 == filter_bank("b", f).sha256
    assert filter_bank("a", f).sha256 != filter_bank("a", f[::-1]).sha256


def test_bad_banks_are_refused():
    with pytest.raises(InputError, match="no filters"):
        FilterBank("empty", ())
    with pytest.raises(InputError, match="same filter twice"):
        filter_bank("dup", [{"filter": "mean"}, {"filter": "mean", "support": 15}])
    with pytest.raises(InputError, match="'filter' key"):
        filter_bank("bad", [{"sigma_mm": 1}])
