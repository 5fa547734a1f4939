"""First-order features: IBSI 1 intensity-based statistics (section 3.3, ``stat_*``) and
intensity histogram features (section 3.4, ``ih_*``).

Percentiles (P10, P25, P50, P75, P90) use linear interpolation between order statistics (the
numpy default, Hyndman-Fan type 7); IBSI does not fix the method and notes that some tools give
4.2 instead of 4 for the phantom's 90th percentile (this one gives 4). The robust mean absolute
deviation is NaN when no value lies in [P10, P90] (possible with interpolated percentiles and
very few values, e.g. two). Histogram features work
on the discretised levels; the histogram has bins 1..Ng, empty bins included (IBSI: H must not
be sparse), so the histogram gradient needs Ng >= 2 and is NaN otherwise. Where IBSI leaves a
ratio undefined (coefficient of variation with mean 0, quartile coefficient of dispersion with
P75 + P25 = 0) the value is NaN; skewness and kurtosis are 0 for zero variance (IBSI).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from pipelines.features.discretise import require_levels

__all__ = ["intensity_statistics", "intensity_histogram", "STAT_FEATURES", "IH_FEATURES"]

#: IBSI tags of the intensity-based statistical features in IBSI order (values: IBSI codes).
STAT_FEATURES: dict[str, str] = {
    "stat_mean": "Q4LE", "stat_var": "ECT3", "stat_skew": "KE2A", "stat_kurt": "IPH6",
    "stat_median": "Y12H", "stat_min": "1GSF", "stat_p10": "QG58", "stat_p90": "8DWT",
    "stat_max": "84IY", "stat_iqr": "SALO", "stat_range": "2OJQ", "stat_mad": "4FUA",
    "stat_rmad": "1128", "stat_medad": "N72L", "stat_cov": "7TET", "stat_qcod": "9S40",
    "stat_energy": "N8CA", "stat_rms": "5ZWQ",
}

#: IBSI tags of the intensity histogram features in IBSI order (values: IBSI codes; the
#: manual's source gives 1PR8 to both ih_min and ih_p10).
IH_FEATURES: dict[str, str] = {
    "ih_mean": "X6K6", "ih_var": "CH89", "ih_skew": "88K1", "ih_kurt": "C3I7",
    "ih_median": "WIFQ", "ih_min": "1PR8", "ih_p10": "1PR8", "ih_p90": "GPMT", "ih_max": "3NCY",
    "ih_mode": "AMMC", "ih_iqr": "WR0O", "ih_range": "5Z3W", "ih_mad": "D2ZX", "ih_rmad": "WRZB",
    "ih_medad": "4RNL", "ih_cov": "CWYJ", "ih_qcod": "SLWD", "ih_entropy": "TLU2",
    "ih_uniformity": "BJ5W", "ih_max_grad": "12CE", "ih_max_grad_g": "8E6O",
    "ih_min_grad": "VQB3", "ih_min_grad_g": "RHQZ",
}

_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sums(x, median, i0, i1):  # pragma: no cover - numba
    """Return the sums behind the statistics of a sorted float64 array x, in one kernel.

    Returns (mean, sum x^2, variance, skewness, excess kurtosis, sum |x - mean|,
    sum |x - median|, sum |x[i0:i1] - mean(x[i0:i1])|). The central moments are taken of
    (x - mean) / max|x - mean| so that neither tiny nor huge intensities under- or overflow;
    skewness and kurtosis are 0 when the variance is 0 (IBSI).
    """
    n = x.size
    s1 = 0.0
    s2 = 0.0
    for k in range(n):
        v = x[k]
        s1 += v
        s2 += v * v
    mean = s1 / n if x[n - 1] > x[0] else x[0]  # exact for a constant ROI
    scale = max(x[n - 1] - mean, mean - x[0])
    if not scale > 0.0:
        scale = 1.0
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    ad = 0.0
    md = 0.0
    for k in range(n):
        d = x[k] - mean
        ad += abs(d)
        md += abs(x[k] - median)
        u = d / scale  # not d * (1 / scale): that overflows for subnormal spreads
        u2 = u * u
        m2 += u2
        m3 += u2 * u
        m4 += u2 * u2
    m2 /= n
    if m2 > 0.0 and x[n - 1] > x[0]:  # else constant: IBSI sets skewness = kurtosis = 0
        var = m2 * scale * scale
        skew = (m3 / n) / m2**1.5
        kurt = (m4 / n) / (m2 * m2) - 3.0
    else:
        var = 0.0
        skew = 0.0
        kurt = 0.0
    r1 = 0.0
    for k in range(i0, i1):
        r1 += x[k]
    rmean = r1 / (i1 - i0) if i1 > i0 else 0.0
    if i1 > i0 and x[i1 - 1] == x[i0]:
        rmean = x[i0]  # exact for a constant range
    rad = 0.0
    for k in range(i0, i1):
        rad += abs(x[k] - rmean)
    return mean, s2, var, skew, kurt, ad, md, rad


def _lerp(a: float, b: float, t: float) -> float:
    """Interpolate like numpy's percentile (from the nearer end, for symmetric rounding)."""
    d = b - a
    return a + d * t if t < 0.5 else b - d * (1.0 - t)


def _sorted_quantiles(s: np.ndarray, qs=_QUANTILES) -> list[float]:
    """Return linear-interpolation quantiles of a sorted float64 array, exactly as
    ``np.percentile(s, 100 * q)`` (method "linear") computes them."""
    n = s.size
    out = []
    for q in qs:
        pos = (n - 1) * q
        k = int(math.floor(pos))
        if k >= n - 1:
            out.append(float(s[n - 1]))
        else:
            out.append(float(_lerp(float(s[k]), float(s[k + 1]), pos - k)))
    return out


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else float("nan")


def intensity_statistics(values) -> dict[str, float]:
    """Return the 18 IBSI intensity-based statistical features (tags ``stat_*``).

    ``values``: 1D array (any shape is flattened) of the ROI's intensities in image units,
    integer or float, finite. Units: intensity for mean, median, min, percentiles, max, IQR,
    range, MADs and RMS; intensity^2 for variance and energy; skewness, kurtosis (excess), COV
    and QCOD are dimensionless. ValueError for an empty or non-finite input.
    """
    x = np.asarray(values)
    if x.dtype == np.bool_ or not (
        np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    ):
        raise TypeError(f"values must be integer or float, got {x.dtype}")
    s = np.sort(x, axis=None).astype(np.float64, copy=False)
    n = s.size
    if n == 0:
        raise ValueError("no values: the ROI is empty")
    lo, hi = float(s[0]), float(s[-1])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("values contain NaN or inf")
    p10, p25, p50, p75, p90 = _sorted_quantiles(s)
    i0 = int(np.searchsorted(s, p10, side="left"))
    i1 = int(np.searchsorted(s, p90, side="right"))
    mean, s2, var, skew, kurt, ad, md, rad = _sums(s, p50, i0, i1)
    return {
        "stat_mean": mean,
        "stat_var": var,
        "stat_skew": skew,
        "stat_kurt": kurt,
        "stat_median": p50,
        "stat_min": lo,
        "stat_p10": p10,
        "stat_p90": p90,
        "stat_max": hi,
        "stat_iqr": p75 - p25,
        "stat_range": hi - lo,
        "stat_mad": ad / n,
        "stat_rmad": rad / (i1 - i0) if i1 > i0 else float("nan"),
        "stat_medad": md / n,
        "stat_cov": _ratio(math.sqrt(var), mean),
        "stat_qcod": _ratio(p75 - p25, p75 + p25),
        "stat_energy": s2,
        "stat_rms": math.sqrt(s2 / n),
    }


def _count_quantiles(cum: np.ndarray, n: int, qs=_QUANTILES) -> list[float]:
    """Return linear-interpolation quantiles of the levels whose cumulative counts are cum.

    The k-th smallest level (0-based) is ``searchsorted(cum, k, 'right') + 1``; the result is
    what numpy's default percentile gives on the expanded level list.
    """
    out = []
    for q in qs:
        pos = (n - 1) * q
        k = min(int(math.floor(pos)), n - 1)
        a = float(np.searchsorted(cum, k, side="right") + 1)
        b = float(np.searchsorted(cum, min(k + 1, n - 1), side="right") + 1)
        out.append(_lerp(a, b, pos - k) if k < n - 1 else a)
    return out


def histogram_features(counts) -> dict[str, float]:
    """Return the 23 IBSI intensity histogram features (tags ``ih_*``) of a level histogram.

    ``counts``: (Ng,) voxel counts of levels 1..Ng (counts[i - 1] for level i), Ng the number
    of bins of the discretisation (empty bins included). Features are in grey levels (variance
    in levels^2, gradients in voxels per level), entropy in bits.
    """
    c = np.asarray(counts, dtype=np.float64)
    ng = c.size
    n = c.sum()
    if n <= 0:
        raise ValueError("empty histogram: the ROI is empty")
    i = np.arange(1, ng + 1, dtype=np.float64)
    p = c / n
    mean = float(p @ i)
    present = np.flatnonzero(c)
    lmin, lmax = float(present[0] + 1), float(present[-1] + 1)
    if present.size == 1:
        var, skew, kurt = 0.0, 0.0, 0.0
    else:
        d = i - mean
        var = float(p @ d**2)
        skew = float(p @ d**3) / var**1.5
        kurt = float(p @ d**4) / var**2 - 3.0
    p10, p25, p50, p75, p90 = _count_quantiles(np.cumsum(c), int(round(n)))
    top = np.flatnonzero(c == c.max()) + 1.0
    dist = np.abs(top - mean)
    mode = float(top[np.flatnonzero(dist == dist.min())[0]])  # ties: the lower (left) one
    sel = (i >= p10) & (i <= p90)
    cr, ir = c[sel], i[sel]
    nr = float(cr.sum())
    rmad = float(cr @ np.abs(ir - float(cr @ ir) / nr)) / nr if nr > 0 else float("nan")
    nz = p[p > 0]
    if ng >= 2:
        grad = np.gradient(c)
        gmax, gmin = int(np.argmax(grad)), int(np.argmin(grad))
        max_grad, max_grad_g = float(grad[gmax]), float(gmax + 1)
        min_grad, min_grad_g = float(grad[gmin]), float(gmin + 1)
    else:
        max_grad = max_grad_g = min_grad = min_grad_g = float("nan")
    return {
        "ih_mean": mean,
        "ih_var": var,
        "ih_skew": skew,
        "ih_kurt": kurt,
        "ih_median": p50,
        "ih_min": lmin,
        "ih_p10": p10,
        "ih_p90": p90,
        "ih_max": lmax,
        "ih_mode": mode,
        "ih_iqr": p75 - p25,
        "ih_range": lmax - lmin,
        "ih_mad": float(p @ np.abs(i - mean)),
        "ih_rmad": rmad,
        "ih_medad": float(p @ np.abs(i - p50)),
        "ih_cov": math.sqrt(var) / mean,
        "ih_qcod": _ratio(p75 - p25, p75 + p25),
        "ih_entropy": float(-(nz @ np.log2(nz))),
        "ih_uniformity": float(p @ p),
        "ih_max_grad": max_grad,
        "ih_max_grad_g": max_grad_g,
        "ih_min_grad": min_grad,
        "ih_min_grad_g": min_grad_g,
    }


def intensity_histogram(levels_values, n_levels: int) -> dict[str, float]:
    """Return the 23 IBSI intensity histogram features (tags ``ih_*``) of discretised levels.

    ``levels_values``: integer array of the ROI's discretised levels 1..n_levels (TypeError for
    float input: discretise first); ``n_levels``: number of bins Ng (the histogram spans
    1..Ng, empty bins included). See :func:`histogram_features` for units.
    """
    lev = require_levels(levels_values, "levels_values").ravel()
    if lev.size == 0:
        raise ValueError("no levels: the ROI is empty")
    if lev.min() < 1 or lev.max() > n_levels:
        raise ValueError(f"levels span {lev.min()}..{lev.max()}, outside 1..{n_levels}")
    counts = np.bincount(lev.astype(np.int64), minlength=int(n_levels) + 1)[1:]
    return histogram_features(counts)
