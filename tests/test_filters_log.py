"""The Laplacian of Gaussian against the IBSI 2 phase-1 maps 2.a-2.c, plus its conventions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from test_filters_reference import assert_matches, case_input, case_params, compare

from pipelines.exceptions import InputError
from pipelines.filters.log import log_filter, log_sigmas_voxels


@pytest.mark.parametrize("test_id", case_params({"log"}))
def test_log_matches_the_ibsi2_reference(test_id, record_property):
    vol, spacing, params = case_input(test_id)
    assert_matches(test_id, log_filter(vol, spacing=spacing, **params), record_property)


def test_scipy_mirror_mode_is_not_the_ibsi_mirror():
    vol, spacing, params = case_input("2.b")
    wrong = ndimage.gaussian_laplace(vol, params["sigma_mm"] / spacing[0], mode="mirror")
    diff, tol = compare("2.b", wrong)
    assert diff > tol


def test_2d_log_is_not_scipy_laplace_with_a_zero_sigma():
    vol, spacing, params = case_input("2.c")
    s = params["sigma_mm"] / spacing[1]
    wrong = ndimage.gaussian_laplace(vol, (0, s, s), mode="reflect")
    assert compare("2.c", wrong)[0] > compare("2.c", wrong)[1]


def test_sigma_is_in_mm_per_axis():
    assert log_sigmas_voxels(3.0, (3.0, 1.5, 1.0), None) == (1.0, 2.0, 3.0)
    assert log_sigmas_voxels(3.0, 1.5, "axial") == (0.0, 2.0, 2.0)


def test_impulse_response_is_isotropic_in_3d_and_flat_across_slices_in_2d():
    vol = np.zeros((21, 21, 21))
    vol[10, 10, 10] = 1.0
    out = log_filter(vol, 2.0, boundary="zero")
    assert out[10, 10, 10] < 0
    assert np.allclose(out, out.transpose(2, 0, 1)) and np.allclose(out, out[::-1])
    flat = log_filter(vol, 2.0, boundary="zero", plane="axial")
    assert np.abs(flat[9]).max() == 0 and flat[10, 10, 10] < 0


@pytest.mark.parametrize("kwargs, match", [
    ({"sigma_mm": -1.0}, "sigma"),
    ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ({"truncate": 0}, "truncation"),
])
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(InputError, match=match):
        log_filter(np.zeros((5, 5, 5)), **{"sigma_mm": 1.0, **kwargs})
