"""Biopsy cohort (seed 004): nine co-registered sequences, a latent T-cell infiltration field
inside the tumour, biopsy sites and their CD3 expression. Pure functions; no I/O.

The infiltration field is a sum of a few Gaussian blobs centred inside the tumour, set to 0
outside the gross-tumour mask. Times ``effect_scale`` it (a) coarsens the T1Gd texture grain
locally, (b) raises rCBV (and so nrCBV) and (c) raises CD3D/CD3E/CD3G at the biopsy sites.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as A

BIOPSY_SEQUENCES = ("T1", "T1Gd", "T2", "FLAIR", "FA", "MD", "EPI", "rCBV", "nrCBV")

FIELD_MODEL = {
    "n_blobs": (2, 4),  # inclusive range
    "sigma_fraction": (0.25, 0.5),  # blob sd as a fraction of the tumour radius
    "amplitude": (0.5, 1.0),
}
IMAGE_EFFECT = {
    "T1Gd_fine_sigma_mm": 1.0,  # grain where the field is 0
    "T1Gd_coarse_sigma_mm": 3.0,  # grain where effect_scale * field >= 1
    "T1Gd_amplitude": 0.10,
    "rCBV_per_field": 1.2,  # rCBV (WM = 1) added per unit of field, times effect_scale
    "rCBV_texture_amplitude": 0.35,
    "rCBV_texture_sigma_mm": 2.0,
    "base_texture_amplitude": 0.06,  # T1, T2, FLAIR, EPI, FA, MD: field-independent texture
    "base_texture_sigma_mm": 1.4,
}
EXPRESSION_MODEL = {
    "field_ref": 0.17,  # typical field at a biopsy site: log TPM = log(median) there
    "slope": 2.5,  # d log TPM(CD3D) / d field, times effect_scale
    "patient_sd": 0.3,
    "noise_sd": 0.5,
    "genes": {  # gene: (median TPM, loading on the shared CD3 deviation, own noise sd)
        "CD3D": (1.03, 1.0, 0.15),
        "CD3E": (0.70, 0.95, 0.30),
        "CD3G": (0.45, 0.90, 0.35),
    },
}
SITE_MODEL = {
    "per_patient_p": {2: 0.30, 3: 0.30, 4: 0.20, 5: 0.12, 6: 0.08},
    "min_distance_mm": 5.0,
    "edge_margin_vox": 8,
    "jitter_vox": 0.3,
}

#: storage: dtype, gain (relative signal -> stored value), clip range, noise sd (relative),
#: PSF sd (mm; DTI and perfusion are blurrier)
STORAGE = {
    "T1": ("int16", 3000.0, (0, 4095), 0.03, 0.5),
    "T1Gd": ("int16", 3000.0, (0, 4095), 0.03, 0.5),
    "T2": ("int16", 3000.0, (0, 4095), 0.03, 0.5),
    "FLAIR": ("int16", 3000.0, (0, 4095), 0.03, 0.5),
    "FA": ("float32", 1.0, (0.0, 1.0), 0.03, 1.0),
    "MD": ("float32", 1.0, (0.0, 4.0), 0.05, 1.0),
    "EPI": ("int16", 2000.0, (0, 4095), 0.04, 1.2),
    "rCBV": ("float32", 100.0, None, 0.15, 1.2),
}


def draw_blobs(rng: np.random.Generator, tumour_points_mm: np.ndarray, radius_mm: float) -> dict:
    """Draw the infiltration blobs: centres among ``tumour_points_mm`` ((N, 3) x, y, z),
    sds (mm) and amplitudes. Returns ``{"centres_mm": (K, 3), "sigma_mm": (K,),
    "amplitude": (K,)}``."""
    lo, hi = FIELD_MODEL["n_blobs"]
    k = int(rng.integers(lo, hi + 1))
    pick = rng.choice(len(tumour_points_mm), size=k, replace=False)
    return {
        "centres_mm": tumour_points_mm[pick].astype(float),
        "sigma_mm": radius_mm * rng.uniform(*FIELD_MODEL["sigma_fraction"], k),
        "amplitude": rng.uniform(*FIELD_MODEL["amplitude"], k),
    }


def infiltration_field(grid: A.RenderGrid, blobs: dict, mask: np.ndarray) -> np.ndarray:
    """Sum of the Gaussian blobs on ``grid`` (float32 ``[z, y, x]``), 0 outside ``mask``."""
    zs, ys, xs = grid.axes()
    out = np.zeros(grid.shape, np.float32)
    if not mask.any():
        return out
    bb = A.bbox(mask)
    z, y, x = zs[bb[0]][:, None, None], ys[bb[1]][None, :, None], xs[bb[2]][None, None, :]
    sub = np.zeros(tuple(s.stop - s.start for s in bb), np.float32)
    for (cx, cy, cz), s, a in zip(
        blobs["centres_mm"], blobs["sigma_mm"], blobs["amplitude"], strict=True
    ):
        k = np.float32(-0.5 / s**2)
        sub += np.float32(a) * (
            np.exp(k * (x - cx) ** 2) * np.exp(k * (y - cy) ** 2) * np.exp(k * (z - cz) ** 2)
        )
    out[bb] = sub * mask[bb]
    return out


def render_biopsy_sequences(
    labels: np.ndarray,
    field: np.ndarray,
    enhancement: float,
    effect_scale: float,
    rng: np.random.Generator,
    spacing_mm: float = A.RENDER_SPACING_MM,
) -> dict:
    """Relative signal of the eight acquired sequences (nrCBV is derived later).

    Inside the tumour: T1Gd texture grain coarsens where ``effect_scale * field`` is high
    (mix of a fine and a coarse field, renormalised to unit variance); rCBV rises by
    ``rCBV_per_field * effect_scale * field`` plus its own texture; the other sequences get a
    field-independent texture. Returns ``{sequence: float32 [z, y, x]}`` (>= 0).
    """
    acquired = [s for s in BIOPSY_SEQUENCES if s != "nrCBV"]
    vols = {s: A.contrast_volume(labels, s, enhancement) for s in acquired}
    mask = A.tumour_mask(labels)
    if not mask.any():
        return vols
    bb = A.bbox(mask, margin=2)
    m = mask[bb]
    shape = tuple(s.stop - s.start for s in bb)
    white = rng.standard_normal(shape)
    white2 = rng.standard_normal(shape)
    e = IMAGE_EFFECT
    base = A.smooth_noise(white, e["base_texture_sigma_mm"] / spacing_mm)
    fine = A.smooth_noise(white, e["T1Gd_fine_sigma_mm"] / spacing_mm)
    coarse = A.smooth_noise(white, e["T1Gd_coarse_sigma_mm"] / spacing_mm)
    mix = np.clip(effect_scale * field[bb], 0.0, 1.0)
    grain = ((1 - mix) * fine + mix * coarse) / np.sqrt((1 - mix) ** 2 + mix**2)
    rcbv_tex = A.smooth_noise(white2, e["rCBV_texture_sigma_mm"] / spacing_mm)

    def add(seq: str, values: np.ndarray) -> None:
        view = vols[seq][bb]
        view[m] += values[m].astype(np.float32)

    for seq in ("T1", "T2", "FLAIR", "EPI"):
        add(seq, e["base_texture_amplitude"] * base)
    add("FA", 0.5 * e["base_texture_amplitude"] * base)
    add("MD", 2.0 * e["base_texture_amplitude"] * base)
    add("T1Gd", e["T1Gd_amplitude"] * grain)
    add(
        "rCBV",
        e["rCBV_per_field"] * effect_scale * field[bb] + e["rCBV_texture_amplitude"] * rcbv_tex,
    )
    for v in vols.values():
        np.maximum(v, 0, out=v)
    return vols


def choose_sites(
    mask: np.ndarray,
    n: int,
    rng: np.random.Generator,
    spacing_mm=(1.0, 1.0, 1.0),
    min_distance_mm: float = 5.0,
    edge_margin_vox: int = 8,
) -> np.ndarray:
    """Pick up to ``n`` biopsy voxels in ``mask`` (array ``[k, j, i]``).

    Sites are at least ``min_distance_mm`` apart and at least ``edge_margin_vox`` voxels from
    the in-plane (i, j) edges and 1 voxel from the k edges. Returns int (m, 3) indices
    ``(i, j, k)`` (SimpleITK order), m <= n (m < n only if the tumour is too small).
    """
    nk, nj, ni = mask.shape
    e = edge_margin_vox
    ok = np.zeros_like(mask, bool)
    ok[1 : nk - 1, e : nj - e, e : ni - e] = True
    cand = np.argwhere(mask & ok)[:, ::-1]  # (i, j, k)
    if len(cand) == 0:
        return np.zeros((0, 3), np.int64)
    cand = cand[rng.permutation(len(cand))]
    sp = np.asarray(spacing_mm, float)
    chosen: list[np.ndarray] = []
    for c in cand:
        if all(np.linalg.norm((c - p) * sp) >= min_distance_mm for p in chosen):
            chosen.append(c)
            if len(chosen) == n:
                break
    return np.array(chosen, np.int64).reshape(-1, 3)


def index_to_physical(index_ijk: np.ndarray, origin, spacing, direction) -> np.ndarray:
    """World mm (LPS) of continuous indices (n, 3) ``(i, j, k)``, as SimpleITK's
    ``TransformContinuousIndexToPhysicalPoint``: ``origin + direction @ (spacing * index)``."""
    d = np.asarray(direction, float).reshape(3, 3)
    return np.asarray(origin, float) + (np.asarray(index_ijk, float) * np.asarray(spacing)) @ d.T


def biopsy_expression(
    rng: np.random.Generator, field_values: np.ndarray, effect_scale: float
) -> dict:
    """CD3D/CD3E/CD3G TPM at biopsy sites with infiltration ``field_values`` (n,).

    A shared log deviation ``slope * effect_scale * (field - field_ref) + patient + noise``
    loads on each gene (``EXPRESSION_MODEL["genes"]``), plus gene noise. Returns
    ``{gene: (n,) float TPM}``.
    """
    m = EXPRESSION_MODEL
    n = len(field_values)
    patient = m["patient_sd"] * rng.standard_normal()
    shared = m["noise_sd"] * rng.standard_normal(n)
    dev = m["slope"] * effect_scale * (np.asarray(field_values) - m["field_ref"]) + patient + shared
    out = {}
    for gene, (median, loading, sd) in m["genes"].items():
        out[gene] = np.exp(np.log(median) + loading * dev + sd * rng.standard_normal(n))
    return out
