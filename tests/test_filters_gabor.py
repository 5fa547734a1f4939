"""Gabor filters against the IBSI 2 phase-1 maps 4.a.1-4.b.2, plus their conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_filters_reference import assert_matches, case_input, case_params, compare

from pipelines.exceptions import InputError
from pipelines.filters.gabor import gabor_filter, gabor_kernel, gabor_orientations


@pytest.mark.parametrize("test_id", case_params({"gabor"}))
def test_gabor_matches_the_ibsi2_reference(test_id, record_property):
    vol, spacing, params = case_input(test_id)
    assert_matches(test_id, gabor_filter(vol, spacing=spacing, **params), record_property)


@pytest.mark.parametrize("theta", [-math.pi / 3, math.pi / 6])
def test_the_reference_fixes_the_orientation_convention(theta):
    # theta turns from x (array axis 2) towards y (axis 1): the mirrored angles fail 4.a.1
    vol, spacing, params = case_input("4.a.1")
    params["theta"] = theta
    diff, tol = compare("4.a.1", gabor_filter(vol, spacing=spacing, **params))
    assert diff > tol


def test_kernel_is_unnormalised_and_oriented():
    k = gabor_kernel(2.0, 4.0, 1.0, 0.0)
    assert k.shape == (17, 17) and abs(k[8, 8]) == pytest.approx(1.0)
    # theta = 0: the carrier runs along x (columns), constant along y (rows)
    assert np.allclose(np.angle(k[:, 9]), np.angle(k[8, 9]))
    k90 = gabor_kernel(2.0, 4.0, 1.0, math.pi / 2)
    assert np.allclose(np.angle(k90[9, :]), np.angle(k90[9, 8]))


def test_orientations_span_a_full_turn():
    assert gabor_orientations(0.0, math.pi / 4) == pytest.approx(
        [k * math.pi / 4 for k in range(8)])
    with pytest.raises(InputError, match="divide a full turn"):
        gabor_orientations(0.0, 1.0)


def test_2d_gabor_does_not_mix_slices():
    vol = np.zeros((5, 15, 15))
    vol[2, 7, 7] = 1.0
    out = gabor_filter(vol, 2.0, 4.0, 1.0, boundary="zero")
    assert out[1].max() == 0 and out[2, 7, 7] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"gamma": 0}, "gamma"),
    ({"response": "phase"}, "modulus"),
    ({"planes": ()}, "at least one"),
    ({"planes": ("transverse",)}, "axial"),
])
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(InputError, match=match):
        gabor_filter(np.zeros((5, 5, 5)), **{"sigma_mm": 1.0, "lambda_mm": 2.0, "gamma": 1.0,
                                             **kwargs})
