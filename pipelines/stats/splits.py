"""Reproducible patient splits: the paper's single 100/51 train/test split and LOOCV folds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipelines.exceptions import InputError

__all__ = ["loo_folds", "train_test_split_ids"]


def _stratify_values(stratify, ids: list, order: np.ndarray) -> np.ndarray | None:
    """Return the stratification labels in sorted-id order (None when not stratified)."""
    if stratify is None:
        return None
    if isinstance(stratify, pd.Series):
        missing = set(ids) - set(stratify.index)
        if missing:
            raise InputError(f"stratify has no label for ids {sorted(missing)[:5]}")
        vals = stratify.loc[[ids[i] for i in order]].to_numpy()
    else:
        vals = np.asarray(stratify)
        if vals.shape != (len(ids),):
            raise InputError(f"stratify must have one label per id ({len(ids)}), "
                             f"got shape {vals.shape}")
        vals = vals[order]
    if pd.isna(vals).any():
        raise InputError("stratify labels must not be missing")
    return vals


def train_test_split_ids(ids: Sequence, n_train: int = 100, seed: int = 0,
                         stratify=None) -> tuple[list, list]:
    """Split patient ids into a training set of ``n_train`` ids and a test set of the rest.

    The ids are sorted first, so the split depends only on the set of ids, ``n_train``, ``seed``
    and ``stratify``, never on the input order. ``stratify`` (optional): labels to keep in the
    same proportion on both sides, either a Series indexed by id or a sequence aligned with
    ``ids``. Wraps ``sklearn.model_selection.train_test_split(random_state=seed)``.

    Returns (train_ids, test_ids), each a sorted list.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise InputError("ids must be unique")
    if not 1 <= n_train < len(ids):
        raise InputError(f"n_train must be between 1 and {len(ids) - 1} for {len(ids)} ids, "
                         f"got {n_train}")
    order = np.array(sorted(range(len(ids)), key=lambda i: ids[i]), dtype=int)
    strat = _stratify_values(stratify, ids, order)
    sorted_ids = [ids[i] for i in order]
    train, test = train_test_split(sorted_ids, train_size=n_train, random_state=seed,
                                   shuffle=True, stratify=strat)
    return sorted(train), sorted(test)


def loo_folds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the n leave-one-out folds as (train positions, test positions) integer arrays.

    Fold i tests row i and trains on all other rows, in increasing order.
    """
    if n < 2:
        raise InputError(f"leave-one-out needs at least 2 rows, got {n}")
    rows = np.arange(n)
    return [(np.delete(rows, i), np.array([i])) for i in range(n)]
