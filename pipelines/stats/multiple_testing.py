"""Multiple-testing correction (Holm-Bonferroni).

The seed paper corrects "all p-values obtained from significance testing ... simultaneously
according to the Holm-Bonferroni method": every p-value of one heatmap or table is one family.
"""

from __future__ import annotations

import numpy as np

from pipelines.exceptions import InputError

__all__ = ["holm_adjust"]


def holm_adjust(p) -> np.ndarray:
    """Return Holm-Bonferroni adjusted p-values, same shape as ``p`` (float64).

    The step-down adjustment of Holm (1979): with the m p-values sorted ascending,
    p_(i) * (m - i + 1), made monotone by a running maximum and capped at 1; the same numbers as
    ``statsmodels.stats.multitest.multipletests(method="holm")`` (the tests compare the two).
    Computed here because statsmodels runs a full ``gc.collect()`` on every Holm call, about
    0.1 s in a process holding torch and the lake, and analyze corrects many families. NaN
    p-values (tests that could not be computed) are passed through as NaN and do not count in
    the number of tests m.
    """
    arr = np.asarray(p, dtype=float)
    flat = arr.ravel()
    ok = ~np.isnan(flat)
    if np.any((flat[ok] < 0) | (flat[ok] > 1)):
        raise InputError("p-values must lie in [0, 1] (or be NaN for tests not computed)")
    out = np.full(flat.shape, np.nan)
    vals = flat[ok]
    if vals.size:
        order = np.argsort(vals, kind="stable")
        m = vals.size
        adj = np.maximum.accumulate(vals[order] * np.arange(m, 0, -1))
        res = np.empty(m)
        res[order] = np.minimum(adj, 1.0)
        out[ok] = res
    return out.reshape(arr.shape)
