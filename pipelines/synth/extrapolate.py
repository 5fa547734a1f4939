"""A paper-sized table cohort whose DRFs follow the relation measured on a small image cohort.

The demo's image cohort (24 patients, 16 in the training split) is too small for any DRF-marker
correlation to survive Holm over the whole heatmap. To show what the same statistics find at the
paper's size without rendering 151 patients' images, the DRFs measured on the image patients are
regressed on the synthetic latent factors (T-cell infiltration, proliferation, grade) and the
extra patients' DRFs are drawn from that fit: the fitted mean of their own latent factors plus a
residual with the measured residual covariance. Their markers, clinical data and survival come
from the synthetic generator (:func:`pipelines.synth.make_tables`), identical to what the image
cohort of the same seed holds for its patients. Nothing of the markers is used in the fit, so a
null marker stays independent of every drawn DRF.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Latent factors the DRFs are regressed on (the synthetic generator's drivers).
LATENT_COLUMNS = ("tcell", "prolif", "gbm")


def latent_design(latent: pd.DataFrame) -> np.ndarray:
    """Return the least-squares design ``[1, tcell, prolif, gbm]``, shape (n, 4), float64."""
    z = latent.loc[:, list(LATENT_COLUMNS)].to_numpy(dtype=float)
    return np.column_stack([np.ones(len(z)), z])


def extrapolated_drfs(drf: pd.DataFrame, latent: pd.DataFrame, latent_all: pd.DataFrame,
                      seed: int = 0) -> pd.DataFrame:
    """Return a DRF table for every patient of ``latent_all``: measured rows kept, others drawn.

    drf: (n, p) DRFs of the measured patients (index patient_id; NaN allowed, filled with the
    column median for the fit; all-NaN columns are dropped); latent: their latent factors
    (columns ``LATENT_COLUMNS``); latent_all: the latent factors of the whole cohort, a superset
    of drf's patients. Each column is fitted as ``Z B`` by least squares; a drawn patient's row
    is ``z B + w R`` with R the (n, p) residual rows and w ~ N(0, 1 / (n - 4)) per entry, so the
    drawn residuals have the measured residual covariance ``R'R / (n - 4)`` (the correlation
    between DRFs included). Needs n >= 10 measured patients.
    """
    drf = drf.dropna(axis=1, how="all")
    missing = sorted(set(drf.index) - set(latent_all.index))
    if missing:
        raise ValueError(f"patients without latent factors: {', '.join(missing[:5])}")
    n = len(drf)
    if n < 10:
        raise ValueError(f"at least 10 measured patients are needed, got {n}")
    x = drf.to_numpy(dtype=float)
    x = np.where(np.isnan(x), np.nanmedian(x, axis=0), x)
    z = latent_design(latent.loc[drf.index])
    beta, *_ = np.linalg.lstsq(z, x, rcond=None)
    resid = x - z @ beta
    new_ids = [p for p in latent_all.index if p not in set(drf.index)]
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((len(new_ids), n)) / np.sqrt(n - z.shape[1])
    drawn = latent_design(latent_all.loc[new_ids]) @ beta + w @ resid
    out = pd.concat([drf, pd.DataFrame(drawn, index=pd.Index(new_ids, name=drf.index.name),
                                       columns=drf.columns)])
    return out.loc[list(latent_all.index)]
