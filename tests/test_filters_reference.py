"""The IBSI 2 phase-1 reference maps and the parameters of every test id, shared by the
tests/test_filters_<family>.py files; the tests here check the table covers the references.

Each case gives the registered filter name (pipelines.filters.bank) and its parameters as the
reference README and manual/phase1_test_configurations.md list them. Arrays are (z, y, x): a
nibabel-loaded phantom (x, y, z) is transposed, so the README's "array axes (0, 1)" plane is the
axial (y, x) plane here and its "letters go to axes 0, 1, 2" is x, y, z.
"""

from __future__ import annotations

import csv
import math
from functools import cache

import numpy as np
import pytest
from conftest import REFERENCE

IBSI2 = REFERENCE / "ibsi2"
INDEX = IBSI2 / "reference_responses" / "index.csv"
PI = math.pi
ALL_PLANES = ["axial", "coronal", "sagittal"]

#: test id -> (filter name in the registry, parameters)
CASES: dict[str, tuple[str, dict]] = {
    "1.a.1": ("mean", {"support": 15, "boundary": "zero"}),
    "1.a.2": ("mean", {"support": 15, "boundary": "nearest"}),
    "1.a.3": ("mean", {"support": 15, "boundary": "periodic"}),
    "1.a.4": ("mean", {"support": 15, "boundary": "mirror"}),
    "1.b.1": ("mean", {"support": 15, "boundary": "zero", "plane": "axial"}),
    "2.a": ("log", {"sigma_mm": 3.0, "truncate": 4.0, "boundary": "zero"}),
    "2.b": ("log", {"sigma_mm": 5.0, "truncate": 4.0, "boundary": "mirror"}),
    "2.c": ("log", {"sigma_mm": 5.0, "truncate": 4.0, "boundary": "mirror", "plane": "axial"}),
    "3.a.1": ("laws", {"kernel": "E5L5S5", "boundary": "zero"}),
    "3.a.2": ("laws", {"kernel": "E5L5S5", "boundary": "zero", "rotation_invariant": True,
                       "pooling": "max"}),
    "3.a.3": ("laws", {"kernel": "E5L5S5", "boundary": "zero", "rotation_invariant": True,
                       "pooling": "max", "energy_delta": 7}),
    "3.b.1": ("laws", {"kernel": "E3W5R5", "boundary": "mirror"}),
    "3.b.2": ("laws", {"kernel": "E3W5R5", "boundary": "mirror", "rotation_invariant": True,
                       "pooling": "max"}),
    "3.b.3": ("laws", {"kernel": "E3W5R5", "boundary": "mirror", "rotation_invariant": True,
                       "pooling": "max", "energy_delta": 7}),
    "3.c.1": ("laws", {"kernel": "L5S5", "boundary": "mirror", "plane": "axial"}),
    "3.c.2": ("laws", {"kernel": "L5S5", "boundary": "mirror", "plane": "axial",
                       "rotation_invariant": True, "pooling": "max"}),
    "3.c.3": ("laws", {"kernel": "L5S5", "boundary": "mirror", "plane": "axial",
                       "rotation_invariant": True, "pooling": "max", "energy_delta": 7}),
    "4.a.1": ("gabor", {"sigma_mm": 10.0, "lambda_mm": 4.0, "gamma": 0.5, "theta": PI / 3,
                        "boundary": "zero", "response": "modulus"}),
    "4.a.2": ("gabor", {"sigma_mm": 10.0, "lambda_mm": 4.0, "gamma": 0.5, "theta": 0.0,
                        "delta_theta": PI / 4, "pooling": "mean", "planes": ALL_PLANES,
                        "boundary": "zero", "response": "modulus"}),
    "4.b.1": ("gabor", {"sigma_mm": 20.0, "lambda_mm": 8.0, "gamma": 2.5, "theta": 5 * PI / 4,
                        "boundary": "mirror", "response": "modulus"}),
    "4.b.2": ("gabor", {"sigma_mm": 20.0, "lambda_mm": 8.0, "gamma": 2.5, "theta": 0.0,
                        "delta_theta": PI / 8, "pooling": "mean", "planes": ALL_PLANES,
                        "boundary": "mirror", "response": "modulus"}),
    "5.a.1": ("wavelet", {"wavelet": "db2", "subband": "LHL", "level": 1, "boundary": "zero"}),
    "5.a.2": ("wavelet", {"wavelet": "db2", "subband": "LHL", "level": 1, "boundary": "zero",
                          "rotation_invariant": True, "pooling": "mean"}),
    "6.a.1": ("wavelet", {"wavelet": "coif1", "subband": "HHL", "level": 1,
                          "boundary": "periodic"}),
    "6.a.2": ("wavelet", {"wavelet": "coif1", "subband": "HHL", "level": 1,
                          "boundary": "periodic", "rotation_invariant": True,
                          "pooling": "mean"}),
    "7.a.1": ("wavelet", {"wavelet": "haar", "subband": "LLL", "level": 2, "boundary": "mirror",
                          "rotation_invariant": True, "pooling": "mean"}),
    "7.a.2": ("wavelet", {"wavelet": "haar", "subband": "HHH", "level": 2, "boundary": "mirror",
                          "rotation_invariant": True, "pooling": "mean"}),
    "8.a.1": ("simoncelli", {"level": 1, "boundary": "periodic"}),
    "8.a.2": ("simoncelli", {"level": 2, "boundary": "periodic"}),
    "8.a.3": ("simoncelli", {"level": 3, "boundary": "periodic"}),
    "9.a": ("riesz_log", {"sigma_mm": 3.0, "truncate": 4.0, "order": [1, 0, 0],
                          "boundary": "zero"}),
    "9.b.1": ("riesz_log", {"sigma_mm": 3.0, "truncate": 4.0, "order": [0, 2, 0],
                            "boundary": "zero"}),
    # the index says "zero or nearest": nearest reproduces the map (0.13 of 1.26), zero does not
    "10.b.1": ("riesz_simoncelli", {"level": 1, "order": [0, 2, 0], "boundary": "nearest"}),
}

#: phase-1 test ids the references leave open: no consensus map was published (README)
UNRESOLVED = {
    "9.b.2": "steered (structure-tensor aligned) Riesz of LoG: alignment parameters unknown",
    "10.a": "Riesz of Simoncelli on the impulse: no consensus among 4 submissions",
    "10.b.2": "steered Riesz of Simoncelli: alignment parameters unknown",
}


@cache
def index_rows() -> dict[str, dict]:
    """Return the reference index, test id -> row."""
    with INDEX.open(newline="", encoding="utf-8") as f:
        return {r["test_id"]: r for r in csv.DictReader(f)}


def _load_zyx(path) -> tuple[np.ndarray, tuple[float, float, float]]:
    nib = pytest.importorskip("nibabel")
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj, dtype=np.float64).transpose(2, 1, 0)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])[::-1]
    return np.ascontiguousarray(arr), zooms


@cache
def phantom(name: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Return a digital phantom as a (z, y, x) float64 array and its (z, y, x) spacing, mm."""
    arr, sp = _load_zyx(IBSI2 / "digital_phantom" / "nifti" / name / "image" / f"{name}.nii.gz")
    arr.setflags(write=False)
    return arr, sp


def reference_map(test_id: str) -> np.ndarray:
    """Return a consensus response map as a (z, y, x) float64 array."""
    return _load_zyx(IBSI2 / index_rows()[test_id]["reference_map"])[0]


def case_params(filter_names) -> list:
    """Return pytest params (test id) for the cases of the given registered filters."""
    if not INDEX.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason="no IBSI 2 reference data"))]
    return [pytest.param(tid, id=tid) for tid, (f, _) in CASES.items() if f in filter_names]


def compare(test_id: str, response: np.ndarray) -> tuple[float, float]:
    """Return (max |response - reference|, tolerance) of a test id, printing one line."""
    ref = reference_map(test_id)
    assert response.shape == ref.shape, f"{test_id}: shape {response.shape} vs {ref.shape}"
    tol = float(index_rows()[test_id]["tolerance_abs"])
    diff = float(np.abs(response - ref).max())
    print(f"IBSI2 {test_id}: max abs diff {diff:.4g} tolerance {tol:.4g}")
    return diff, tol


def assert_matches(test_id: str, response: np.ndarray, record_property=None) -> None:
    """Assert a response map is within its reference map's tolerance (1% of its range)."""
    diff, tol = compare(test_id, response)
    if record_property is not None:
        record_property("max_abs_diff", diff)
        record_property("tolerance", tol)
    assert diff <= tol, f"{test_id}: max abs diff {diff:.4g} exceeds tolerance {tol:.4g}"


def case_input(test_id: str) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Return (phantom volume, spacing, filter parameters) of a test id."""
    vol, sp = phantom(index_rows()[test_id]["phantom"])
    return vol, sp, dict(CASES[test_id][1])


# --- the table itself ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows():
    if not INDEX.exists():
        pytest.skip("no IBSI 2 reference data")
    return index_rows()


def test_every_reference_map_has_a_case(rows):
    with_map = {t for t, r in rows.items() if r["reference_map"]}
    assert len(with_map) == 33
    assert set(CASES) == with_map


def test_the_open_tests_are_listed_not_skipped(rows):
    without_map = {t for t, r in rows.items() if not r["reference_map"]}
    assert without_map == set(UNRESOLVED)


def test_the_case_phantoms_are_the_ones_listed(rows):
    for tid in CASES:
        vol, sp = phantom(rows[tid]["phantom"])
        assert vol.shape == (64, 64, 64) and sp == (2.0, 2.0, 2.0), tid
    imp, _ = phantom("impulse")
    assert imp[31, 31, 31] == 255 and np.count_nonzero(imp) == 1
