"""Simoncelli non-separable wavelets against the IBSI 2 phase-1 maps 8.a.1-8.a.3."""

from __future__ import annotations

import numpy as np
import pytest
from test_filters_reference import assert_matches, case_input, case_params, compare

from pipelines.exceptions import InputError
from pipelines.filters.simoncelli import (
    centred_frequencies,
    simoncelli_filter,
    simoncelli_transfer,
)


@pytest.mark.parametrize("test_id", case_params({"simoncelli"}))
def test_simoncelli_matches_the_ibsi2_reference(test_id, record_property):
    vol, _, params = case_input(test_id)
    assert_matches(test_id, simoncelli_filter(vol, **params), record_property)


def test_the_dft_frequency_grid_fails_level_2():
    # the plain DFT grid (fftfreq) is half a sample off the consensus grid for even sizes
    vol, _, _ = case_input("8.a.2")
    f = [2 * np.fft.fftfreq(n) for n in vol.shape]
    r = np.sqrt(f[0][:, None, None] ** 2 + f[1][None, :, None] ** 2 + f[2][None, None, :] ** 2)
    w = 0.5
    h = np.where((r >= w / 4) & (r <= w), np.cos(np.pi / 2 * np.log2(2 * r / w + 1e-300)), 0)
    diff, tol = compare("8.a.2", np.fft.ifftn(np.fft.fftn(vol) * h).real)
    assert diff > tol


def test_centred_grid_spans_minus_one_to_one():
    f = np.fft.fftshift(centred_frequencies(8))
    assert f[0] == -1 and f[-1] == 1 and np.allclose(f, -f[::-1])


def test_transfer_is_a_band_pass_peaking_at_half_its_top():
    h = simoncelli_transfer((33, 33, 33), 1)
    assert h[0, 0, 0] == 0 and h.max() == pytest.approx(1.0, abs=1e-3)
    assert simoncelli_transfer((33, 33, 33), 2).sum() < h.sum()


def test_constant_volume_has_no_band_response():
    assert np.abs(simoncelli_filter(np.full((8, 8, 8), 5.0), 1)).max() < 1e-9


def test_non_periodic_boundaries_pad_and_crop():
    out = simoncelli_filter(np.random.default_rng(0).normal(size=(6, 8, 10)), 1, "mirror")
    assert out.shape == (6, 8, 10)


@pytest.mark.parametrize("kwargs, match", [
    ({"level": 0}, "level"),
    ({"boundary": "wrap"}, "periodic"),
    ({"pad_voxels": (1, 2)}, "three"),
])
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(InputError, match=match):
        simoncelli_filter(np.zeros((5, 5, 5)), **kwargs)
