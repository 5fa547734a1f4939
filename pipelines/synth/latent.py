"""Latent patient factors and the tables derived from them (pure: no I/O).

Every patient k draws from its own random streams, keyed by ``(seed, stream, k, part)``
(`patient_rng`), so patient k's values never depend on how many patients are generated.

Latent factors (standard normal, independent of each other and of grade):

- ``tcell``: T-cell infiltration. Drives the texture grain size of T1CE and FLAIR, the
  immune markers ``t_cells_cd8`` (+) and ``t_cells_cd4_memory_resting`` (-), the CD3 genes and
  survival.
- ``prolif``: proliferation / tissue heterogeneity. Drives the texture amplitude of T1 and T2,
  ``neutrophils`` (+) and ``macrophages_m1`` (-), MKI67/TOP2A and survival.

Clinical variables (grade, age, gender) follow Table 1 of the seed paper; grade and age also
drive survival (and grade the tumour's size and enhancement, see `anatomy`). Every effect of a
factor or of grade on survival, markers, genes or images is multiplied by ``effect_scale``; at
``effect_scale=0`` the cohort is NULL: all of them are random but mutually independent.

Immune markers are CIBERSORT-like fractions (summing to 1 over the 22 cells) times a leukocyte
fraction. Null cells and the two driven *pairs* are "units" whose abundances never depend on a
factor; a factor only moves the split of its pair's share between the pair's two cells. Hence
null markers are exactly independent of every factor although the fractions sum to 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit, ndtri
from scipy.stats import truncnorm

# --- random streams -------------------------------------------------------------------------

STREAM_MAIN = 0
STREAM_BIOPSY = 1

PART_CLINICAL = 0
PART_IMMUNE = 1
PART_EXPRESSION = 2
PART_ANATOMY = 3
PART_ACQUISITION = 4
PART_BIOPSY = 5


def patient_rng(seed: int, stream: int, index: int, part: int) -> np.random.Generator:
    """Return the generator of one patient's one part (clinical, immune, ...).

    The key ``(stream, index, part)`` is a `SeedSequence` spawn key, so the draws of patient
    ``index`` are the same whatever the cohort size.
    """
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(stream, index, part))
    return np.random.default_rng(ss)


def patient_id(index: int, prefix: str = "TCGA-SYN-") -> str:
    """Return the id of patient ``index`` (0-based): ``TCGA-SYN-0001`` for index 0."""
    return f"{prefix}{index + 1:04d}"


# --- constants ------------------------------------------------------------------------------

LATENT_FACTORS = {
    "tcell": "T-cell infiltration (standard normal); drives T1CE/FLAIR texture grain size, "
    "t_cells_cd8 (+), t_cells_cd4_memory_resting (-), CD3D/CD3E/CD3G and other T-cell genes, "
    "and the hazard of death (+)",
    "prolif": "proliferation / tissue heterogeneity (standard normal); drives T1/T2 texture "
    "amplitude, neutrophils (+), macrophages_m1 (-), MKI67/TOP2A and the hazard of death (+)",
}

#: Table 1 of seed 000: number of patients (out of 151) in whom each cell type is present.
CELL_PRESENT = {
    "b_cells_memory": 102,
    "b_cells_naive": 75,
    "dendritic_cells_activated": 74,
    "dendritic_cells_resting": 31,
    "eosinophils": 45,
    "macrophages_m0": 43,
    "macrophages_m1": 112,
    "macrophages_m2": 151,
    "mast_cells_activated": 91,
    "mast_cells_resting": 63,
    "monocytes": 139,
    "neutrophils": 120,
    "nk_cells_activated": 107,
    "nk_cells_resting": 74,
    "plasma_cells": 59,
    "t_cells_cd4_memory_activated": 12,
    "t_cells_cd4_memory_resting": 135,
    "t_cells_cd4_naive": 47,
    "t_cells_cd8": 111,
    "t_cells_follicular_helper": 132,
    "t_cells_gamma_delta": 29,
    "t_cells_regulatory_tregs": 34,
}
CELL_TYPES = list(CELL_PRESENT)
TABLE1_N = 151

#: Typical CIBERSORT fraction of a present cell (glioma: M2 macrophages dominate).
CELL_TYPICAL = {
    "b_cells_memory": 0.03,
    "b_cells_naive": 0.02,
    "dendritic_cells_activated": 0.02,
    "dendritic_cells_resting": 0.01,
    "eosinophils": 0.01,
    "macrophages_m0": 0.05,
    "macrophages_m1": 0.05,
    "macrophages_m2": 0.30,
    "mast_cells_activated": 0.04,
    "mast_cells_resting": 0.03,
    "monocytes": 0.10,
    "neutrophils": 0.04,
    "nk_cells_activated": 0.04,
    "nk_cells_resting": 0.02,
    "plasma_cells": 0.02,
    "t_cells_cd4_memory_activated": 0.01,
    "t_cells_cd4_memory_resting": 0.08,
    "t_cells_cd4_naive": 0.02,
    "t_cells_cd8": 0.05,
    "t_cells_follicular_helper": 0.03,
    "t_cells_gamma_delta": 0.01,
    "t_cells_regulatory_tregs": 0.01,
}

#: Driven pairs: (factor, cell moved up by the factor, cell moved down, logit weight).
IMMUNE_PAIRS = (
    ("tcell", "t_cells_cd8", "t_cells_cd4_memory_resting", 1.6),
    ("prolif", "neutrophils", "macrophages_m1", 1.4),
)
PAIR_SPLIT_NOISE = 0.8  # sd of the non-factor part of the split logit
NULL_ABUNDANCE_SD = 0.6  # log-sd of a null cell's abundance
PAIR_ABUNDANCE_SD = 0.3  # log-sd of a driven pair's total abundance
LEUKOCYTE_RANGE = (0.02, 0.5)
LEUKOCYTE_BETA = (3.0, 9.0)

#: Clinical model (Table 1: 86 M / 65 F, 83 LGG / 68 GBM, age median 53, 19-84.8).
P_MALE = 86 / 151
P_GBM = 68 / 151
AGE_LGG = (45.0, 13.0)  # mean, sd (years)
AGE_GBM = (60.0, 11.0)
AGE_RANGE = (19.0, 85.0)
AGE_CENTRE, AGE_SCALE = 52.0, 14.0  # fixed standardisation of age in the hazard

#: Weibull proportional hazards: h(t) = h0(t) exp(effect_scale * lp).
SURVIVAL_COEFFICIENTS = {"age_z": 0.5, "gbm": 1.3, "tcell": 1.0, "prolif": 0.8}
WEIBULL_SHAPE = 1.1
WEIBULL_SCALE_DAYS = 1700.0  # scale at lp = 0
ADMIN_CENSOR_DAYS = (30.0, 3200.0)  # uniform follow-up window
DROPOUT_MEAN_DAYS = 2500.0

#: Expression: gene -> (median TPM, driver or None, weight on log TPM per SD of the driver).
GENES = {
    "CD3D": (8.0, "tcell", 0.8),
    "CD3E": (5.0, "tcell", 0.75),
    "CD3G": (3.0, "tcell", 0.7),
    "CD2": (4.0, "tcell", 0.5),
    "CD8A": (3.0, "tcell", 0.5),
    "CD8B": (1.5, "tcell", 0.4),
    "CD247": (2.0, "tcell", 0.4),
    "MKI67": (6.0, "prolif", 0.6),
    "TOP2A": (12.0, "prolif", 0.6),
    "PTPRC": (20.0, None, 0.0),
    "CD4": (25.0, None, 0.0),
    "FOXP3": (0.8, None, 0.0),
    "CD68": (150.0, None, 0.0),
    "CD163": (60.0, None, 0.0),
    "CD14": (120.0, None, 0.0),
    "ITGAM": (15.0, None, 0.0),
    "CSF1R": (80.0, None, 0.0),
    "AIF1": (200.0, None, 0.0),
    "GFAP": (2500.0, None, 0.0),
    "OLIG2": (150.0, None, 0.0),
    "SOX2": (90.0, None, 0.0),
    "NES": (70.0, None, 0.0),
    "EGFR": (60.0, None, 0.0),
    "PDGFRA": (40.0, None, 0.0),
    "IDH1": (80.0, None, 0.0),
    "TP53": (30.0, None, 0.0),
    "PTEN": (25.0, None, 0.0),
    "CDKN2A": (10.0, None, 0.0),
    "PCNA": (50.0, None, 0.0),
    "MCM2": (15.0, None, 0.0),
    "VEGFA": (100.0, None, 0.0),
    "HIF1A": (60.0, None, 0.0),
    "CA9": (5.0, None, 0.0),
    "CHI3L1": (400.0, None, 0.0),
    "POSTN": (20.0, None, 0.0),
    "S100B": (500.0, None, 0.0),
    "B2M": (1500.0, None, 0.0),
    "TBP": (10.0, None, 0.0),
    "ACTB": (3000.0, None, 0.0),
    "GAPDH": (2000.0, None, 0.0),
}
T_CELL_GENES = ("CD3D", "CD3E", "CD3G", "CD2", "CD8A", "CD8B", "CD247")
GENE_NOISE_SD = 0.45  # gene-specific log-noise
T_MODULE_SD = 0.35  # log-noise shared by the T-cell genes (they co-vary beyond the factor)


# --- clinical and survival ------------------------------------------------------------------


def draw_clinical(rng: np.random.Generator) -> dict:
    """Draw one patient's gender, grade, age (years) and latent factors.

    Returns a dict with ``gender`` ("M"/"F"), ``gbm`` (0/1), ``age`` (float, years),
    ``tcell`` and ``prolif`` (standard normal).
    """
    male = rng.random() < P_MALE
    gbm = int(rng.random() < P_GBM)
    mean, sd = AGE_GBM if gbm else AGE_LGG
    lo, hi = (AGE_RANGE[0] - mean) / sd, (AGE_RANGE[1] - mean) / sd
    age = float(truncnorm.ppf(rng.random(), lo, hi, loc=mean, scale=sd))
    tcell, prolif = rng.standard_normal(2)
    return {
        "gender": "M" if male else "F",
        "gbm": gbm,
        "age": round(age, 1),
        "tcell": float(tcell),
        "prolif": float(prolif),
    }


def linear_predictor(age: float, gbm: int, tcell: float, prolif: float) -> float:
    """Return the log-hazard (before ``effect_scale``) of the survival model.

    Terms are centred (age at 52 years in units of 14 years, GBM at its prevalence) so that the
    baseline stays comparable between effect scales.
    """
    c = SURVIVAL_COEFFICIENTS
    age_z = (age - AGE_CENTRE) / AGE_SCALE
    return float(
        c["age_z"] * age_z + c["gbm"] * (gbm - P_GBM) + c["tcell"] * tcell + c["prolif"] * prolif
    )


def draw_survival(rng: np.random.Generator, lp: float, effect_scale: float) -> tuple[int, int]:
    """Draw (survival_days, event) from the Weibull PH model with censoring.

    The event time is ``scale * (E / exp(effect_scale * lp)) ** (1 / shape)`` with E ~ Exp(1);
    censoring is the earlier of an administrative follow-up (uniform window) and a random
    dropout (exponential). Returns days (int >= 1) and event (1 = death, 0 = censored).
    """
    e = rng.standard_exponential()
    t_event = WEIBULL_SCALE_DAYS * (e / np.exp(effect_scale * lp)) ** (1.0 / WEIBULL_SHAPE)
    t_admin = rng.uniform(*ADMIN_CENSOR_DAYS)
    t_drop = rng.exponential(DROPOUT_MEAN_DAYS)
    t_cens = min(t_admin, t_drop)
    event = int(t_event <= t_cens)
    days = max(1, int(np.ceil(t_event if event else t_cens)))
    return days, event


# --- immune markers -------------------------------------------------------------------------


def _pair_thresholds(weight: float, effect_scale: float, q_up: float, q_down: float):
    """Split-logit thresholds below / above which the up / down cell of a pair is absent.

    The split logit is ``weight * effect_scale * factor + N(0, PAIR_SPLIT_NOISE)``, a normal
    with known sd, so the thresholds give absence probabilities ``q_up`` and ``q_down``.
    """
    sd = float(np.hypot(weight * effect_scale, PAIR_SPLIT_NOISE))
    return sd * ndtri(q_up), sd * ndtri(1.0 - q_down)


def draw_immune(rng: np.random.Generator, factors: dict, effect_scale: float) -> dict:
    """Draw one patient's 22 immune-cell markers (fractions of tissue).

    Returns ``{cell: value}``: CIBERSORT fractions (sum to 1 over the 22 cells) multiplied by a
    leukocyte fraction in ``LEUKOCYTE_RANGE``; absent cells are exactly 0. Null cells and the
    driven pairs' total share never depend on ``factors``; a factor moves only the split of its
    pair (weight ``w``): logit = ``w * effect_scale * factor + noise``.
    """
    paired = {c for _, up, down, _ in IMMUNE_PAIRS for c in (up, down)}
    null_cells = [c for c in CELL_TYPES if c not in paired]
    # abundances of the units, all independent of the factors
    u_presence = rng.random(len(null_cells))
    u_null = rng.standard_normal(len(null_cells))
    u_pair = rng.standard_normal(len(IMMUNE_PAIRS))
    split_noise = rng.standard_normal(len(IMMUNE_PAIRS))
    leuk_u = rng.beta(*LEUKOCYTE_BETA)

    p_present = np.array([CELL_PRESENT[c] / TABLE1_N for c in null_cells])
    typical = np.array([CELL_TYPICAL[c] for c in null_cells])
    null_ab = (u_presence < p_present) * typical * np.exp(NULL_ABUNDANCE_SD * u_null)
    pair_typ = np.array([CELL_TYPICAL[up] + CELL_TYPICAL[dn] for _, up, dn, _ in IMMUNE_PAIRS])
    pair_ab = pair_typ * np.exp(PAIR_ABUNDANCE_SD * u_pair)
    total = null_ab.sum() + pair_ab.sum()

    frac = dict(zip(null_cells, null_ab / total, strict=True))
    for i, (factor, up, down, w) in enumerate(IMMUNE_PAIRS):
        share = pair_ab[i] / total
        s = w * effect_scale * factors[factor] + PAIR_SPLIT_NOISE * split_noise[i]
        q_up = 1.0 - CELL_PRESENT[up] / TABLE1_N
        q_down = 1.0 - CELL_PRESENT[down] / TABLE1_N
        lo, hi = _pair_thresholds(w, effect_scale, q_up, q_down)
        prior = np.log(CELL_TYPICAL[up] / CELL_TYPICAL[down])
        p_up = expit(s + prior)
        if s < lo:
            p_up = 0.0
        elif s > hi:
            p_up = 1.0
        frac[up] = share * p_up
        frac[down] = share * (1.0 - p_up)

    lo_l, hi_l = LEUKOCYTE_RANGE
    leuk = lo_l + (hi_l - lo_l) * leuk_u
    return {c: float(frac[c] * leuk) for c in CELL_TYPES}


def immune_truth(effect_scale: float) -> tuple[dict, list]:
    """Return ``({marker: {"driver", "weight"}}, null_markers)`` for the ground truth."""
    out = {c: {"driver": None, "weight": 0.0} for c in CELL_TYPES}
    for factor, up, down, w in IMMUNE_PAIRS:
        if effect_scale != 0:
            out[up] = {"driver": factor, "weight": w * effect_scale}
            out[down] = {"driver": factor, "weight": -w * effect_scale}
    nulls = [c for c in CELL_TYPES if out[c]["driver"] is None]
    return out, nulls


# --- expression -----------------------------------------------------------------------------


def draw_expression(rng: np.random.Generator, factors: dict, effect_scale: float) -> dict:
    """Draw one sample's TPM for every gene in `GENES`.

    ``log TPM = log(median) + weight * effect_scale * driver + module + noise``, where the
    T-cell genes share a module noise (so CD3D/CD3E/CD3G co-vary beyond the factor).
    Returns ``{gene: TPM}`` (float, > 0).
    """
    noise = rng.standard_normal(len(GENES))
    module = T_MODULE_SD * rng.standard_normal()
    out = {}
    for (gene, (median, driver, w)), z in zip(GENES.items(), noise, strict=True):
        log_tpm = np.log(median) + GENE_NOISE_SD * z
        if driver is not None:
            log_tpm += w * effect_scale * factors[driver]
        if gene in T_CELL_GENES:
            log_tpm += module
        out[gene] = float(np.exp(log_tpm))
    return out


def expression_truth(effect_scale: float) -> dict:
    """Return the expression model for the ground truth."""
    return {
        "model": "log TPM = log(median) + weight * driver + shared T-cell module noise "
        f"(sd {T_MODULE_SD}, T-cell genes only) + gene noise (sd {GENE_NOISE_SD})",
        "genes": {
            g: {
                "median_tpm": m,
                "driver": d if effect_scale != 0 else None,
                "weight": w * effect_scale,
            }
            for g, (m, d, w) in GENES.items()
        },
    }


def survival_truth(effect_scale: float) -> dict:
    """Return the survival model for the ground truth."""
    return {
        "model": "Weibull proportional hazards; event time = scale * (E / exp(lp)) ** (1/shape), "
        "E ~ Exp(1); lp = sum(coefficient * covariate); censoring = min(uniform administrative "
        "follow-up, exponential dropout)",
        "coefficients": {k: v * effect_scale for k, v in SURVIVAL_COEFFICIENTS.items()},
        "covariates": {
            "age_z": f"(age - {AGE_CENTRE}) / {AGE_SCALE}",
            "gbm": f"1 if grade == 'GBM' else 0, centred at {P_GBM:.4f}",
            "tcell": "latent factor",
            "prolif": "latent factor",
        },
        "baseline": {
            "distribution": "weibull",
            "shape": WEIBULL_SHAPE,
            "scale_days": WEIBULL_SCALE_DAYS,
            "admin_censor_days_uniform": list(ADMIN_CENSOR_DAYS),
            "dropout_mean_days": DROPOUT_MEAN_DAYS,
        },
    }


# --- tables ---------------------------------------------------------------------------------


def draw_patient_tables(seed: int, index: int, effect_scale: float) -> dict:
    """Draw everything tabular about main-cohort patient ``index``.

    Returns ``{"patient_id", "clinical": {...}, "latent": {...}, "immune": {...},
    "expression": {...}}``; each part uses its own stream so it is reproducible on its own.
    """
    pid = patient_id(index)
    rng = patient_rng(seed, STREAM_MAIN, index, PART_CLINICAL)
    c = draw_clinical(rng)
    lp = linear_predictor(c["age"], c["gbm"], c["tcell"], c["prolif"])
    days, event = draw_survival(rng, lp, effect_scale)
    factors = {"tcell": c["tcell"], "prolif": c["prolif"]}
    immune = draw_immune(patient_rng(seed, STREAM_MAIN, index, PART_IMMUNE), factors, effect_scale)
    expr = draw_expression(
        patient_rng(seed, STREAM_MAIN, index, PART_EXPRESSION), factors, effect_scale
    )
    return {
        "patient_id": pid,
        "clinical": {
            "patient_id": pid,
            "age": c["age"],
            "gender": c["gender"],
            "grade": "GBM" if c["gbm"] else "LGG",
            "survival_days": days,
            "event": event,
        },
        "latent": {
            "patient_id": pid,
            "tcell": c["tcell"],
            "prolif": c["prolif"],
            "gbm": c["gbm"],
            "linear_predictor": effect_scale * lp,
        },
        "immune": {"patient_id": pid, **immune},
        "expression": expr,
    }


def make_tables(n_patients: int = 151, seed: int = 0, effect_scale: float = 1.0) -> dict:
    """Generate the main cohort's tables without any image.

    Returns ``{"clinical", "immune", "expression", "latent"}`` as DataFrames: clinical
    (patient_id, age, gender, grade, survival_days, event), immune (patient_id + 22 cells),
    expression (``gene`` column + one TPM column per patient, genes in rows) and latent
    (patient_id, tcell, prolif, gbm, linear_predictor). Identical to the tables `make_cohort`
    writes for the same arguments.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    rows = [draw_patient_tables(seed, k, effect_scale) for k in range(n_patients)]
    clinical = pd.DataFrame([r["clinical"] for r in rows])
    immune = pd.DataFrame([r["immune"] for r in rows], columns=["patient_id", *CELL_TYPES])
    latent = pd.DataFrame([r["latent"] for r in rows])
    expr = pd.DataFrame({r["patient_id"]: r["expression"] for r in rows})
    expr.index.name = "gene"
    expr = expr.reset_index()
    return {"clinical": clinical, "immune": immune, "expression": expr, "latent": latent}
