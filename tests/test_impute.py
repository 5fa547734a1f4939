"""MedianImputer gives SimpleImputer(strategy="median", keep_empty_features=True)'s arrays."""

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer

from pipelines.stats.impute import MedianImputer


def _data(seed: int, n: int, p: int, missing: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, p)) * rng.uniform(0.1, 1000, p)
    a[rng.random((n, p)) < missing] = np.nan
    return a


@pytest.mark.parametrize("seed, n, p, missing", [
    (0, 16, 45, 0.0), (1, 17, 45, 0.1), (2, 151, 180, 0.3), (3, 24, 5, 0.6), (4, 2, 3, 0.5),
])
def test_median_imputer_equals_simple_imputer_to_the_bit(seed, n, p, missing):
    train, test = _data(seed, n, p, missing), _data(seed + 100, 7, p, missing)
    train[:, 0] = np.nan  # an all-NaN column is kept and filled with 0, as keep_empty_features
    ref = SimpleImputer(strategy="median", keep_empty_features=True).fit(train)
    ours = MedianImputer().fit(train)
    np.testing.assert_array_equal(ours.statistics_, ref.statistics_)
    for x in (train, test, pd.DataFrame(test)):
        got, want = ours.transform(x), ref.transform(x)
        assert got.dtype == want.dtype == np.float64
        np.testing.assert_array_equal(got, want)


def test_median_imputer_does_not_alias_or_modify_its_input():
    a = _data(5, 10, 4, 0.0)
    before = a.copy()
    out = MedianImputer().fit(a).transform(a)
    assert out is not a
    out[:] = 0
    np.testing.assert_array_equal(a, before)


def test_median_imputer_refuses_infinity_and_a_wrong_width():
    a = _data(6, 8, 3, 0.0)
    bad = a.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        MedianImputer().fit(bad)
    with pytest.raises(ValueError, match="3 features"):
        MedianImputer().fit(a[:, :2]).transform(a)
