"""Laws kernels against the IBSI 2 phase-1 maps 3.a.1-3.c.3, plus their conventions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from test_filters_reference import assert_matches, case_input, case_params, compare

from pipelines.exceptions import InputError
from pipelines.filters.laws import KERNELS, laws_axis_kernels, laws_filter, parse_kernel_name
from pipelines.filters.rotation import rotate_kernels, rotations_3d


@pytest.mark.parametrize("test_id", case_params({"laws"}))
def test_laws_matches_the_ibsi2_reference(test_id, record_property):
    vol, _, params = case_input(test_id)
    assert_matches(test_id, laws_filter(vol, **params), record_property)


def test_correlation_instead_of_convolution_fails_the_reference():
    vol, _, _ = case_input("3.a.1")
    kz, ky, kx = laws_axis_kernels("E5L5S5")
    wrong = vol
    for axis, k in enumerate((kz, ky, kx)):
        wrong = ndimage.correlate1d(wrong, k, axis=axis, mode="constant")
    diff, tol = compare("3.a.1", wrong)
    assert diff > tol


def test_kernel_letters_go_to_x_y_z():
    kz, ky, kx = laws_axis_kernels("E5L5S5")
    assert np.array_equal(kx, KERNELS["E5"]) and np.array_equal(ky, KERNELS["L5"])
    assert np.array_equal(kz, KERNELS["S5"])
    kz, ky, kx = laws_axis_kernels("L5S5", "axial")
    assert len(kz) == 1 and np.array_equal(kx, KERNELS["L5"])


def test_kernels_are_normalised():
    for k in KERNELS.values():
        assert np.linalg.norm(k) == pytest.approx(1.0)


def test_24_rotations_give_12_distinct_kernels():
    from pipelines.filters.laws import unique_kernel_sets

    rots = rotations_3d()
    assert len(rots) == 24 and len({r for r in rots}) == 24
    base = laws_axis_kernels("E5L5S5")
    assert len(unique_kernel_sets([rotate_kernels(base, r) for r in rots])) == 12


def test_energy_is_nonnegative_and_rotation_invariant_max_dominates():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(12, 12, 12))
    plain = laws_filter(vol, "E5L5S5", "mirror")
    pooled = laws_filter(vol, "E5L5S5", "mirror", rotation_invariant=True)
    assert (pooled >= plain - 1e-12).all()
    assert (laws_filter(vol, "E5L5S5", "mirror", energy_delta=2) >= 0).all()


@pytest.mark.parametrize("name, plane, match", [
    ("E5L5", None, "2D"),
    ("E5L5S5", "axial", "3D"),
    ("E5X5", None, "not 2 or 3"),
    ("E5", None, "not 2 or 3"),
    ("E5L5S5W5", None, "not 2 or 3"),
])
def test_bad_kernel_names_say_what_to_do(name, plane, match):
    with pytest.raises(InputError, match=match):
        laws_filter(np.zeros((5, 5, 5)), name, plane=plane)


def test_parse_kernel_name():
    assert parse_kernel_name("e3w5r5") == ["E3", "W5", "R5"]
