"""Multiple-testing correction (Holm-Bonferroni), a thin wrapper of statsmodels.

The seed paper corrects "all p-values obtained from significance testing ... simultaneously
according to the Holm-Bonferroni method": every p-value of one heatmap or table is one family.
"""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

from pipelines.exceptions import InputError

__all__ = ["holm_adjust"]


def holm_adjust(p) -> np.ndarray:
    """Return Holm-Bonferroni adjusted p-values, same shape as ``p`` (float64).

    Wraps ``statsmodels.stats.multitest.multipletests(method="holm")``. NaN p-values (tests that
    could not be computed) are passed through as NaN and do not count in the number of tests m.
    Adjusted values are monotone in the raw ones and capped at 1.
    """
    arr = np.asarray(p, dtype=float)
    flat = arr.ravel()
    ok = ~np.isnan(flat)
    if np.any((flat[ok] < 0) | (flat[ok] > 1)):
        raise InputError("p-values must lie in [0, 1] (or be NaN for tests not computed)")
    out = np.full(flat.shape, np.nan)
    if ok.any():
        out[ok] = multipletests(flat[ok], method="holm")[1]
    return out.reshape(arr.shape)
