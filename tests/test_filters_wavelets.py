"""Undecimated separable wavelets against the IBSI 2 phase-1 maps 5.a-7.a, plus conventions."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
from scipy import ndimage
from test_filters_reference import assert_matches, case_input, case_params, compare

from pipelines.exceptions import InputError
from pipelines.filters.wavelets import all_subbands, wavelet_filter, wavelet_stages


@pytest.mark.parametrize("test_id", case_params({"wavelet"}))
def test_wavelet_matches_the_ibsi2_reference(test_id, record_property):
    vol, _, params = case_input(test_id)
    assert_matches(test_id, wavelet_filter(vol, **params), record_property)


def test_a_shifted_filter_fails_the_reference():
    vol, _, _ = case_input("5.a.1")
    w = pywt.Wavelet("db2")
    wrong = vol
    for axis, k in ((2, w.dec_lo), (1, w.dec_hi), (0, w.dec_lo)):
        wrong = ndimage.convolve1d(wrong, k, axis=axis, mode="constant", origin=-1)
    diff, tol = compare("5.a.1", wrong)
    assert diff > tol


def test_subband_letters_go_to_x_y_z_and_levels_dilate():
    lo, hi = (np.asarray(k) for k in (pywt.Wavelet("haar").dec_lo, pywt.Wavelet("haar").dec_hi))
    (st,) = wavelet_stages("haar", "HLL")
    assert np.allclose(st[2][:2], hi) and np.allclose(st[1][:2], lo)
    first, second = wavelet_stages("haar", "HHH", level=2)
    assert np.allclose(first[0][:2], lo)  # level 1 of a level-2 band is the all-low band
    assert len(second[0]) == 5 and second[0][1] == 0  # a trous: zeros between taps


def test_all_subbands():
    assert all_subbands() == ["LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH"]
    assert all_subbands("axial") == ["LL", "LH", "HL", "HH"]


def test_the_8_level_1_subbands_keep_the_energy():
    # orthonormal filters: |L|^2 + |H|^2 = 2 at every frequency, so the 8 undecimated
    # sub-bands hold 2^3 times the image's energy
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(16, 16, 16))
    energy = sum((wavelet_filter(vol, "db2", b, boundary="periodic") ** 2).sum()
                 for b in all_subbands())
    assert energy == pytest.approx(8 * (vol**2).sum())


@pytest.mark.parametrize("kwargs, match", [
    ({"wavelet": "bior1.3"}, "not Haar"),
    ({"wavelet": "nope"}, "unknown wavelet"),
    ({"subband": "LH"}, "3 letters"),
    ({"subband": "LLX"}, "3 letters"),
    ({"level": 0}, "level"),
])
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(InputError, match=match):
        wavelet_filter(np.zeros((5, 5, 5)), **{"wavelet": "haar", "subband": "LLH", **kwargs})
