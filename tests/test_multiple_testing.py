"""Holm-Bonferroni adjustment against statsmodels, a hand-worked example and its properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from pipelines.exceptions import InputError
from pipelines.stats.multiple_testing import holm_adjust


def test_hand_worked_example():
    # m = 3, sorted p: 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, 1*0.04 = 0.04,
    # then running max: 0.03, 0.06, 0.06; back in input order (0.01, 0.04, 0.03):
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


@pytest.mark.parametrize("seed", range(5))
def test_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, 50)
    p[rng.integers(0, 50, 10)] = p[0]  # ties
    p[:3] = [0.0, 1.0, 0.5]
    np.testing.assert_allclose(holm_adjust(p), multipletests(p, method="holm")[1], rtol=0,
                               atol=1e-15)


def test_nan_passed_through_and_not_counted():
    p = np.array([0.01, np.nan, 0.02, np.nan, 0.5])
    out = holm_adjust(p)
    assert np.isnan(out[[1, 3]]).all()
    # m = 3, not 5
    np.testing.assert_allclose(out[[0, 2, 4]], multipletests([0.01, 0.02, 0.5], method="holm")[1])


def test_shape_kept_empty_and_all_nan():
    p = np.array([[0.01, 0.2], [0.03, np.nan]])
    out = holm_adjust(p)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out.ravel()[:3], multipletests([0.01, 0.2, 0.03], method="holm")[1])
    assert holm_adjust([]).shape == (0,)
    assert np.isnan(holm_adjust([np.nan, np.nan])).all()


@pytest.mark.parametrize("bad", [[0.1, 1.2], [-0.01]])
def test_rejects_values_outside_unit_interval(bad):
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        holm_adjust(bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_properties(p):
    p = np.array(p)
    adj = holm_adjust(p)
    assert np.all(adj >= p - 1e-15) and np.all(adj <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-15)  # monotone in the raw p-values
    assert adj.min() == pytest.approx(min(1.0, p.min() * p.size))
