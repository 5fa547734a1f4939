"""Reproducible train/test splits of patient ids and leave-one-out folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.exceptions import InputError
from pipelines.stats.splits import loo_folds, train_test_split_ids

IDS = [f"P{i:03d}" for i in range(151)]


def test_sizes_disjoint_sorted_and_complete():
    train, test = train_test_split_ids(IDS, n_train=100, seed=0)
    assert (len(train), len(test)) == (100, 51)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(IDS)
    assert train == sorted(train) and test == sorted(test)


def test_reproducible_and_independent_of_input_order():
    a = train_test_split_ids(IDS, seed=3)
    shuffled = list(np.random.default_rng(9).permutation(IDS))
    assert train_test_split_ids(shuffled, seed=3) == a
    assert train_test_split_ids(IDS, seed=3) == a
    assert train_test_split_ids(IDS, seed=4) != a


def test_stratified_keeps_proportions_with_series_or_sequence():
    labels = pd.Series(np.r_[np.ones(50), np.zeros(101)].astype(int), index=IDS)
    train, test = train_test_split_ids(IDS, n_train=100, seed=1, stratify=labels)
    frac = labels.loc[train].mean()
    assert abs(frac - 50 / 151) < 0.01 and abs(labels.loc[test].mean() - 50 / 151) < 0.02
    # the same labels as a sequence aligned with a shuffled id list give the same split
    order = np.random.default_rng(2).permutation(len(IDS))
    ids2 = [IDS[i] for i in order]
    assert train_test_split_ids(ids2, 100, 1, stratify=labels.to_numpy()[order]) == (train, test)


@pytest.mark.parametrize("kwargs, match", [
    ({"ids": ["a", "a", "b"], "n_train": 1}, "unique"),
    ({"ids": ["a", "b"], "n_train": 2}, "n_train"),
    ({"ids": ["a", "b", "c"], "n_train": 1, "stratify": [0, 1]}, "one label per id"),
    ({"ids": ["a", "b", "c"], "n_train": 1, "stratify": pd.Series([0, 1], index=["a", "b"])},
     "no label"),
])
def test_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        train_test_split_ids(**kwargs)


def test_loo_folds():
    folds = loo_folds(5)
    assert len(folds) == 5
    for i, (train, test) in enumerate(folds):
        assert test.tolist() == [i]
        assert train.tolist() == [j for j in range(5) if j != i]
    with pytest.raises(InputError):
        loo_folds(1)
