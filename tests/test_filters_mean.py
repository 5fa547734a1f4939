"""The mean filter against the IBSI 2 phase-1 maps 1.a.1-1.b.1, plus input checks."""

from __future__ import annotations

import numpy as np
import pytest
from test_filters_reference import assert_matches, case_input, case_params, compare

from pipelines.exceptions import InputError
from pipelines.filters.mean import mean_filter


@pytest.mark.parametrize("test_id", case_params({"mean"}))
def test_mean_matches_the_ibsi2_reference(test_id, record_property):
    vol, _, params = case_input(test_id)
    assert_matches(test_id, mean_filter(vol, **params), record_property)


def test_the_reference_tells_the_boundaries_apart():
    # zero padding where 1.a.2 asks for nearest: the edge means drop by half
    vol, _, params = case_input("1.a.2")
    diff, tol = compare("1.a.2", mean_filter(vol, params["support"], "zero"))
    assert diff > tol


def test_mean_of_a_constant_is_the_constant_except_at_zero_borders():
    vol = np.full((9, 9, 9), 3.0)
    assert np.allclose(mean_filter(vol, 3, "nearest"), 3.0)
    z = mean_filter(vol, 3, "zero")
    assert z[4, 4, 4] == pytest.approx(3.0) and z[0, 0, 0] == pytest.approx(3.0 * 8 / 27)


def test_2d_mean_does_not_mix_slices():
    vol = np.zeros((5, 7, 7))
    vol[2, 3, 3] = 9.0
    out = mean_filter(vol, 3, "zero", plane="axial")
    assert out[1].max() == 0 and out[2, 3, 3] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"support": 4}, "odd"),
    ({"support": 0}, "positive"),
    ({"boundary": "reflect"}, "zero, nearest, periodic, mirror"),
    ({"plane": "transverse"}, "axial"),
])
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(InputError, match=match):
        mean_filter(np.zeros((5, 5, 5)), **{"support": 3, **kwargs})


@pytest.mark.parametrize("vol, match", [
    (np.zeros((5, 5)), "3D"),
    (np.full((3, 3, 3), np.nan), "NaN"),
    (np.zeros((0, 3, 3)), "empty"),
])
def test_bad_volumes_are_refused(vol, match):
    with pytest.raises(InputError, match=match):
        mean_filter(vol, 3)
