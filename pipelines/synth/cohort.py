"""Orchestration of the synthetic cohort and the only module of `pipelines.synth` doing I/O.

`make_cohort` writes, under ``out_dir``::

    manifest.csv                      patient_id,modality,image,mask (paths relative to out_dir)
    regions.toml                      the masks' named regions: core = [1, 4], whole = [1, 2, 4],
                                      enhancing = [4] (drlake ingest --regions-file)
    images/<pid>/<pid>_<MOD>.nii.gz   MOD in T1, T1CE, T2, FLAIR; <pid>_mask.nii.gz (uint8 BraTS
                                      labels: 1 core, 2 oedema, 4 enhancing)
    clinical.csv                      patient_id,age,gender,grade,survival_days,event
    immune.csv                        patient_id + 22 CIBERSORT cells (fraction of tissue)
    expression.tsv                    genes x samples TPM (column `gene`, then one per patient)
    ground_truth.json                 generating model, planted effects, per-patient truth
    biopsy/manifest.csv               same columns; paths relative to biopsy/
    biopsy/images/<pid>/<pid>_<MOD>.nii.gz  nine co-registered sequences + _mask
    biopsy/biopsies.csv               patient_id,biopsy_id,x_mm,y_mm,z_mm,CD3D,CD3E,CD3G
    biopsy/truth/<pid>_infiltration.nii.gz  latent T-cell infiltration field (float32)

Each main-cohort patient is acquired at one of four `SITES` (spacing, matrix, orientation,
origin and intensity storage differ), rendered on a 1 mm grid and sampled onto the site's grid
with partial-volume averaging.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm.auto import tqdm

from . import anatomy as A
from . import biopsy as B
from . import latent as L

MODALITIES = ("T1", "T1CE", "T2", "FLAIR")
#: Threads writing the main cohort's patients (each patient has its own random streams).
SYNTH_THREADS = 2

#: Acquisition sites. direction: row-major 3x3 whose column m is the world (LPS) direction of
#: index axis m; the thick axis is always k. extent: field of view per index axis as a fraction
#: of the size preset's head box along the matching world axis. gain: relative signal -> stored
#: value (times a per-patient U(0.85, 1.15) auto-scaling), clipped to range.
SITES = {
    "SITE-A": {
        "orientation": "axial 2D, LPS",
        "spacing": (0.9, 0.9, 5.0),
        "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1),
        "extent": (1.0, 1.0, 1.0),
        "dtype": "int16",
        "range": (0, 4095),
        "gain": 3000.0,
        "noise_sd": 0.03,
        "p": 0.35,
    },
    "SITE-B": {
        "orientation": "axial 2D, i and j flipped (i: left->right, j: posterior->anterior)",
        "spacing": (0.5, 0.5, 3.0),
        "direction": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
        "extent": (1.05, 1.05, 1.0),
        "dtype": "uint16",
        "range": (0, 1000),
        "gain": 700.0,
        "noise_sd": 0.045,
        "p": 0.25,
    },
    "SITE-C": {
        "orientation": "coronal 2D (i: x, j: superior->inferior, k: anterior->posterior)",
        "spacing": (1.2, 1.2, 2.0),
        "direction": (1, 0, 0, 0, 0, 1, 0, -1, 0),
        "extent": (0.95, 1.0, 1.0),
        "dtype": "float32",
        "range": None,
        "gain": 417.3,
        "noise_sd": 0.025,
        "p": 0.25,
    },
    "SITE-D": {
        "orientation": "sagittal 3D (i: anterior->posterior, j: superior->inferior, "
        "k: left->right)",
        "spacing": (1.0, 1.0, 1.0),
        "direction": (0, 0, -1, 1, 0, 0, 0, -1, 0),
        "extent": (1.0, 1.0, 1.0),
        "dtype": "int16",
        "range": (0, 32767),
        "gain": 20000.0,
        "noise_sd": 0.03,
        "p": 0.15,
    },
}
BIAS_SD = 0.08  # sd of the log-bias polynomial coefficients
HEAD_POSITION_MM = ((-10.0, 10.0), (-10.0, 30.0), (10.0, 30.0))  # uniform ranges, x, y, z
SITE_SHIFT_MM = 4.0  # the site grid's centre is off the head centre by up to this, per axis

MASK_DESCRIPTION = (
    "BraTS-style label map, uint8 on the image's grid: 1 necrotic core + non-enhancing tumour, "
    "4 enhancing rim, 2 peritumoral oedema, 0 elsewhere. The gross tumour (labels 1 and 4, the "
    "region 'core' of regions.toml) is the partial-volume sample of necrotic core + enhancing rim "
    "+ non-enhancing tumour thresholded at 0.5; inside it a voxel is 4 where the rim makes up "
    "at least 30% of its tumour; outside it, 2 where tumour + oedema reach 0.5"
)
#: A gross-tumour voxel is labelled enhancing when the rim is at least this share of its tumour
#: (a reader outlines enhancement that is visible, not only voxels that are mostly rim).
ENHANCING_SHARE = 0.3
#: BraTS labels of the synthetic masks (MASK_DESCRIPTION).
LABEL_CORE, LABEL_OEDEMA, LABEL_ENHANCING = 1, 2, 4
#: The named regions of the synthetic masks, primary first (written as regions.toml).
REGIONS = (("core", (1, 4)), ("whole", (1, 2, 4)), ("enhancing", (4,)))


def label_map(gross: np.ndarray, rim: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Return the uint8 BraTS label map from partial-volume fractions on the output grid.

    gross, rim, whole: fractions in [0, 1] of gross tumour, enhancing rim and tumour + oedema
    (z, y, x). Labels as MASK_DESCRIPTION says: the gross tumour is exactly gross >= 0.5.
    """
    tumour = gross >= 0.5
    out = np.zeros(gross.shape, np.uint8)
    out[(whole >= 0.5) & ~tumour] = LABEL_OEDEMA
    out[tumour] = np.where(rim[tumour] >= ENHANCING_SHARE * gross[tumour], LABEL_ENHANCING,
                           LABEL_CORE)
    return out


def regions_toml(regions=REGIONS) -> str:
    """Return the ``[regions]`` TOML table of a region set (``drlake ingest --regions-file``)."""
    lines = ["# named sub-regions of the masks (drlake ingest --regions-file); first = primary",
             "[regions]"]
    lines += [f"{name} = [{', '.join(str(v) for v in labs)}]" for name, labs in regions]
    return "\n".join(lines) + "\n"


# --- geometry -------------------------------------------------------------------------------


def site_geometry(site: str, size: str) -> dict:
    """Size (i, j, k), spacing (mm) and direction (row-major 9-tuple) of ``site`` for ``size``."""
    s = SITES[site]
    axis, _ = A.grid_axes(s["direction"])
    nz, ny, nx = A.SIZE_PRESETS[size]["render_shape"]
    box = np.array([nx, ny, nz], float) * A.RENDER_SPACING_MM  # world extent along x, y, z
    n = [max(1, int(round(box[axis[m]] * s["extent"][m] / s["spacing"][m]))) for m in range(3)]
    return {
        "size": tuple(n),
        "spacing": tuple(float(v) for v in s["spacing"]),
        "direction": tuple(float(v) for v in s["direction"]),
    }


def _store(values: np.ndarray, dtype: str, gain: float, value_range) -> np.ndarray:
    """Scale relative signal to the stored representation (rounded and clipped for integers)."""
    out = values * np.float32(gain)
    if value_range is not None:
        out = np.clip(out, value_range[0], value_range[1])
    if np.dtype(dtype).kind in "iu":
        out = np.rint(out)
    return out.astype(dtype)


# --- main cohort ----------------------------------------------------------------------------


def generate_patient_images(
    seed: int, index: int, size: str, effect_scale: float, latent_row: dict
) -> dict:
    """Generate one main-cohort patient's four images and mask (no I/O).

    ``latent_row``: ``{"tcell", "prolif", "gbm"}``. Returns ``{"images": {mod: array [k, j, i]},
    "mask": uint8 [k, j, i], "geometry": {"spacing", "origin", "direction"}, "truth": {...}}``.
    """
    arng = L.patient_rng(seed, L.STREAM_MAIN, index, L.PART_ANATOMY)
    qrng = L.patient_rng(seed, L.STREAM_MAIN, index, L.PART_ACQUISITION)
    names = list(SITES)
    site = names[int(qrng.choice(len(names), p=[SITES[n]["p"] for n in names]))]
    spec = SITES[site]
    geo = site_geometry(site, size)

    centre = np.array([arng.uniform(lo, hi) for lo, hi in HEAD_POSITION_MM])
    head = A.draw_head(arng, size)
    tumour = A.draw_tumour(arng, size, head, int(latent_row["gbm"]), effect_scale)
    factors = {"tcell": latent_row["tcell"], "prolif": latent_row["prolif"]}
    texture = A.draw_texture(arng, factors, effect_scale)
    grid = A.render_grid(size, centre)
    labels = A.add_tumour(A.head_labels(grid, centre, head), grid, centre, tumour)
    vols = A.render_sequences(labels, MODALITIES, tumour["enhancement"], texture, arng)
    mask = A.tumour_mask(labels)

    stack = np.empty((len(MODALITIES) + 3,) + grid.shape, np.float32)
    for c, mod in enumerate(MODALITIES):
        stack[c] = vols[mod] * A.bias_field(grid.shape, qrng.normal(0.0, BIAS_SD, (3, 2)))
    stack[-3] = mask
    stack[-2] = labels == A.RIM
    stack[-1] = mask | (labels == A.OEDEMA)
    shift = qrng.uniform(-SITE_SHIFT_MM, SITE_SHIFT_MM, 3)
    origin = A.grid_origin(centre + shift, geo["size"], geo["spacing"], geo["direction"])
    sampled = A.sample_to_grid(stack, grid, geo["size"], geo["spacing"], origin, geo["direction"])
    gain = spec["gain"] * qrng.uniform(0.85, 1.15)
    images = {}
    for c, mod in enumerate(MODALITIES):
        noisy = A.rician(sampled[c], spec["noise_sd"], qrng)
        images[mod] = _store(noisy, spec["dtype"], gain, spec["range"])
    out_mask = label_map(sampled[-3], sampled[-2], sampled[-1])

    truth = {
        "grade": "GBM" if latent_row["gbm"] else "LGG",
        "tcell": float(latent_row["tcell"]),
        "prolif": float(latent_row["prolif"]),
        "site": site,
        "head_centre_mm": [round(float(v), 3) for v in centre],
        "tumour": {
            "centre_mm": [round(float(v), 3) for v in centre + tumour["offset_mm"]],
            "radius_mm": tumour["radius_mm"],
            "core_fraction": tumour["core_fraction"],
            "rim_width": tumour["rim_width"],
            "enhancement": tumour["enhancement"],
            "oedema_extent": tumour["oedema_extent"],
            "mask_volume_ml_render": float(mask.sum() * A.RENDER_SPACING_MM**3 / 1000),
        },
        "texture": texture,
        "intensity_gain": float(gain),
    }
    return {
        "images": images,
        "mask": out_mask,
        "geometry": {
            "spacing": geo["spacing"],
            "origin": tuple(float(v) for v in origin),
            "direction": geo["direction"],
        },
        "truth": truth,
    }


def write_nifti(array: np.ndarray, path: Path, spacing, origin, direction) -> None:
    """Write a ``[k, j, i]`` array as NIfTI with the given SimpleITK geometry."""
    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(v) for v in spacing])
    img.SetOrigin([float(v) for v in origin])
    img.SetDirection([float(v) for v in direction])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)


def _write_table(df: pd.DataFrame, path: Path, sep: str = ",", float_format: str = "%.6g") -> None:
    """Write a table deterministically (fixed float format, LF line endings)."""
    df.to_csv(path, sep=sep, index=False, float_format=float_format, lineterminator="\n")


# --- biopsy cohort --------------------------------------------------------------------------


def generate_biopsy_patient(seed: int, index: int, size: str, effect_scale: float) -> dict:
    """Generate one biopsy-cohort patient (no I/O).

    Returns ``{"images": {seq: array [k, j, i]}, "mask", "field" (float32),
    "geometry", "biopsies": DataFrame rows (dicts), "truth"}``. All nine sequences, the mask
    and the field share one 1 mm grid (identity direction).
    """
    pid = L.patient_id(index, "BIO-")
    rng = L.patient_rng(seed, L.STREAM_BIOPSY, index, L.PART_ANATOMY)
    qrng = L.patient_rng(seed, L.STREAM_BIOPSY, index, L.PART_ACQUISITION)
    brng = L.patient_rng(seed, L.STREAM_BIOPSY, index, L.PART_BIOPSY)

    centre = np.array([rng.uniform(lo, hi) for lo, hi in HEAD_POSITION_MM])
    head = A.draw_head(rng, size)
    tumour = A.draw_tumour(rng, size, head, 1, 1.0)  # glioblastomas (a trial cohort)
    grid = A.render_grid(size, centre)
    labels = A.add_tumour(A.head_labels(grid, centre, head), grid, centre, tumour)
    mask = A.tumour_mask(labels)
    zs, ys, xs = grid.axes()
    kk, jj, ii = np.nonzero(mask)
    points = np.stack([xs[ii], ys[jj], zs[kk]], axis=1)
    blobs = B.draw_blobs(rng, points, tumour["radius_mm"])
    field = B.infiltration_field(grid, blobs, mask)
    vols = B.render_biopsy_sequences(labels, field, tumour["enhancement"], effect_scale, rng)

    # normal-appearing contralateral white matter: reference for nrCBV
    contra = (xs - centre[0]) * np.sign(tumour["offset_mm"][0]) < 0
    wm_ref = ((labels == A.WM) & contra[None, None, :]).astype(np.float32)
    brain = (labels >= A.CSF).astype(np.float32)  # derived maps are skull-stripped

    size_ijk = grid.shape[::-1]
    spacing = (grid.spacing,) * 3
    direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    origin = tuple(float(v) for v in grid.origin)
    images: dict = {}
    groups: dict = {}
    for seq, (_, _, _, _, psf) in B.STORAGE.items():
        groups.setdefault(psf, []).append(seq)
    out_mask = None
    for psf, seqs in groups.items():
        stack = [
            vols[s] * A.bias_field(grid.shape, qrng.normal(0.0, BIAS_SD, (3, 2))) for s in seqs
        ]
        extra = ["brain"]
        stack.append(brain)
        if "rCBV" in seqs:
            extra.append("wm_ref")
            stack.append(wm_ref)
        if "T1Gd" in seqs:  # the mask is drawn on the contrast-enhanced T1
            extra.append("mask")
            stack.append(mask.astype(np.float32))
        sampled = A.sample_to_grid(
            np.stack(stack), grid, size_ijk, spacing, origin, direction, psf_sd=psf
        )
        in_brain = sampled[len(seqs) + extra.index("brain")] >= 0.5
        for c, s in enumerate(seqs):
            dtype, gain, rng_range, noise, _ = B.STORAGE[s]
            noisy = A.rician(sampled[c], noise, qrng)
            if dtype == "float32":
                noisy *= in_brain
            if s == "rCBV":
                ref = sampled[len(seqs) + extra.index("wm_ref")] > 0.9
                wm_level = float(np.median(noisy[ref])) if ref.any() else 1.0
                images["nrCBV"] = (noisy / np.float32(wm_level)).astype(np.float32)
                gain = gain * qrng.uniform(0.5, 2.0)  # arbitrary DSC units
            images[s] = _store(noisy, dtype, gain, rng_range)
        if "mask" in extra:
            out_mask = (sampled[len(seqs) + extra.index("mask")] >= 0.5).astype(np.uint8)
    images = {s: images[s] for s in B.BIOPSY_SEQUENCES}
    field_out = B.infiltration_field(grid, blobs, out_mask.astype(bool))  # 0 outside the mask

    n_want = int(
        brng.choice(
            list(B.SITE_MODEL["per_patient_p"]), p=list(B.SITE_MODEL["per_patient_p"].values())
        )
    )
    sites = B.choose_sites(
        out_mask,
        n_want,
        brng,
        spacing,
        B.SITE_MODEL["min_distance_mm"],
        B.SITE_MODEL["edge_margin_vox"],
    )
    jitter = brng.uniform(-1, 1, sites.shape) * B.SITE_MODEL["jitter_vox"]
    xyz = B.index_to_physical(sites + jitter, origin, spacing, direction)
    fvals = field_out[sites[:, 2], sites[:, 1], sites[:, 0]]
    expr = B.biopsy_expression(brng, fvals, effect_scale)
    rows = [
        {
            "patient_id": pid,
            "biopsy_id": f"{pid}-B{b + 1}",
            "x_mm": round(float(p[0]), 3),
            "y_mm": round(float(p[1]), 3),
            "z_mm": round(float(p[2]), 3),
            **{g: float(v[b]) for g, v in expr.items()},
        }
        for b, p in enumerate(xyz)
    ]
    truth = {
        "tumour_centre_mm": [round(float(v), 3) for v in centre + tumour["offset_mm"]],
        "tumour_radius_mm": tumour["radius_mm"],
        "blobs": {k: np.round(v, 4).tolist() for k, v in blobs.items()},
        "field_at_biopsies": {r["biopsy_id"]: float(f) for r, f in zip(rows, fvals, strict=True)},
    }
    return {
        "patient_id": pid,
        "images": images,
        "mask": out_mask,
        "field": field_out,
        "geometry": {"spacing": spacing, "origin": origin, "direction": direction},
        "biopsies": rows,
        "truth": truth,
    }


def make_biopsy_cohort(
    out_dir: Path, n_patients: int, seed: int, size: str, effect_scale: float, progress: bool = True
) -> dict:
    """Write the biopsy cohort under ``out_dir`` (usually ``OUT/biopsy``); return its paths and
    ground truth."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def one_patient(k: int) -> tuple[str, list, list, dict]:
        """Generate and write biopsy patient k (its own random streams: any order, any thread
        gives the same files); return (pid, manifest rows, biopsy rows, truth)."""
        p = generate_biopsy_patient(seed, k, size, effect_scale)
        pid, geo = p["patient_id"], p["geometry"]
        rel_mask = f"images/{pid}/{pid}_mask.nii.gz"
        write_nifti(p["mask"], out_dir / rel_mask, **geo)
        rows = []
        for seq, arr in p["images"].items():
            rel = f"images/{pid}/{pid}_{seq}.nii.gz"
            write_nifti(arr, out_dir / rel, **geo)
            rows.append({"patient_id": pid, "modality": seq, "image": rel, "mask": rel_mask})
        write_nifti(p["field"], out_dir / "truth" / f"{pid}_infiltration.nii.gz", **geo)
        return pid, rows, p["biopsies"], p["truth"]

    manifest, biopsies, truth = [], [], {}
    with ThreadPoolExecutor(max_workers=SYNTH_THREADS) as pool:
        done = pool.map(one_patient, range(n_patients))
        for pid, rows, bio, t in tqdm(done, total=n_patients, desc="synth biopsy",
                                      disable=not progress):
            manifest.extend(rows)
            biopsies.extend(bio)
            truth[pid] = t
    cols = ["patient_id", "biopsy_id", "x_mm", "y_mm", "z_mm", "CD3D", "CD3E", "CD3G"]
    _write_table(pd.DataFrame(manifest), out_dir / "manifest.csv")
    _write_table(pd.DataFrame(biopsies, columns=cols), out_dir / "biopsies.csv")
    return {
        "manifest": str(out_dir / "manifest.csv"),
        "biopsies": str(out_dir / "biopsies.csv"),
        "truth_dir": str(out_dir / "truth"),
        "n_biopsies": len(biopsies),
        "patients": truth,
    }


# --- ground truth and entry point ------------------------------------------------------------


def _ground_truth(seed, n_patients, size, effect_scale, patients, biopsy) -> dict:
    immune, nulls = L.immune_truth(effect_scale)
    tex = {}
    for name, t in A.TEXTURE_MODEL.items():
        param = "sigma_mm" if name == "grain" else "amplitude"
        tex[t["factor"]] = {
            "sequences": list(t["sequences"]),
            "property": t["property"],
            "effect": {
                "parameter": (
                    "Gaussian sd (mm) of the filtered noise texture inside the mask"
                    if name == "grain"
                    else "sd (relative signal units) of the noise texture inside the mask"
                ),
                "formula": f"{param} = {t[param]} * exp({t['log_slope']} * (effect_scale * "
                f"{t['factor']} + {t['nuisance_sd']} * N(0,1)))",
                "log_slope_per_sd": t["log_slope"] * effect_scale,
                "nuisance_sd": t["nuisance_sd"],
            },
        }
    sites = {}
    for name, s in SITES.items():
        g = site_geometry(name, size)
        sites[name] = {
            "spacing": list(g["spacing"]),
            "size": list(g["size"]),
            "direction": list(g["direction"]),
            "orientation": s["orientation"],
            "intensity": {
                "dtype": s["dtype"],
                "range": list(s["range"]) if s["range"] is not None else None,
                "gain": s["gain"],
                "gain_jitter": [0.85, 1.15],
                "rician_noise_sd_relative": s["noise_sd"],
            },
            "probability": s["p"],
        }
    gt = {
        "seed": seed,
        "n_patients": n_patients,
        "size": size,
        "effect_scale": effect_scale,
        "latent_factors": dict(L.LATENT_FACTORS),
        "texture_drivers": tex,
        "morphology": {
            "driver": "grade",
            "effect": "times effect_scale: GBM tumours are larger, more necrotic, more enhancing "
            "and have more oedema (probit shifts of +-0.8 to +-1.2 SD)",
            "tumour_radius_mm": list(A.SIZE_PRESETS[size]["tumour_radius_mm"]),
        },
        "immune": immune,
        "null_markers": nulls,
        "immune_model": "CIBERSORT fractions (sum 1 over 22 cells) x leukocyte fraction in "
        f"{list(L.LEUKOCYTE_RANGE)}; driven pairs share a factor-independent "
        "total split by logit = weight * factor + N(0, "
        f"{L.PAIR_SPLIT_NOISE}); presence probabilities follow Table 1",
        "survival": L.survival_truth(effect_scale),
        "expression": L.expression_truth(effect_scale),
        "sites": sites,
        "mask": MASK_DESCRIPTION,
        "regions": {name: list(labs) for name, labs in REGIONS},
        "patients": patients,
    }
    if biopsy is not None:
        gt["biopsy"] = biopsy
    return gt


def make_cohort(
    out_dir,
    n_patients: int = 151,
    seed: int = 0,
    size: str = "small",
    biopsy_patients: int = 45,
    effect_scale: float = 1.0,
    progress: bool = True,
) -> dict:
    """Write a synthetic cohort with planted effects under ``out_dir``; see the module doc.

    ``size``: "small" (~100 mm field of view, fast) or "paper" (~240 mm, 256-ish matrices).
    ``effect_scale`` multiplies every planted effect; 0 gives a NULL cohort. Deterministic for
    given arguments, and patient k is the same whatever ``n_patients``. Returns the paths
    written: ``{"out_dir", "manifest", "clinical", "immune", "expression", "ground_truth",
    "images": {pid: {mod: path, "mask": path}}, "biopsy": {...} or None, "seconds"}``.
    """
    if size not in A.SIZE_PRESETS:
        raise ValueError(f"size must be one of {sorted(A.SIZE_PRESETS)}, got {size!r}")
    if n_patients < 1 or biopsy_patients < 0:
        raise ValueError("n_patients must be >= 1 and biopsy_patients >= 0")
    if effect_scale < 0:
        raise ValueError(f"effect_scale must be >= 0, got {effect_scale}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = L.make_tables(n_patients, seed, effect_scale)
    latent = tables["latent"].set_index("patient_id")

    def one_patient(k: int) -> tuple[str, dict, list, dict]:
        """Generate and write patient k's images (its own random streams: any order, any
        thread gives the same files); return (pid, image paths, manifest rows, truth)."""
        pid = L.patient_id(k)
        row = latent.loc[pid]
        p = generate_patient_images(
            seed, k, size, effect_scale, {"tcell": row.tcell, "prolif": row.prolif, "gbm": row.gbm}
        )
        rel_mask = f"images/{pid}/{pid}_mask.nii.gz"
        write_nifti(p["mask"], out / rel_mask, **p["geometry"])
        paths_k, rows_k = {"mask": str(out / rel_mask)}, []
        for mod, arr in p["images"].items():
            rel = f"images/{pid}/{pid}_{mod}.nii.gz"
            write_nifti(arr, out / rel, **p["geometry"])
            paths_k[mod] = str(out / rel)
            rows_k.append({"patient_id": pid, "modality": mod, "image": rel, "mask": rel_mask})
        truth = {**p["truth"], "age": float(tables["clinical"].age.iloc[k]),
                 "linear_predictor": float(row.linear_predictor)}
        return pid, paths_k, rows_k, truth

    manifest, images, patients = [], {}, {}
    # two threads: NumPy, SciPy and zlib release the GIL for most of a patient's work
    with ThreadPoolExecutor(max_workers=SYNTH_THREADS) as pool:
        done = pool.map(one_patient, range(n_patients))
        for pid, paths_k, rows_k, truth in tqdm(done, total=n_patients, desc="synth patients",
                                                disable=not progress):
            images[pid], patients[pid] = paths_k, truth
            manifest.extend(rows_k)

    paths = {
        "out_dir": str(out),
        "manifest": str(out / "manifest.csv"),
        "clinical": str(out / "clinical.csv"),
        "immune": str(out / "immune.csv"),
        "expression": str(out / "expression.tsv"),
        "ground_truth": str(out / "ground_truth.json"),
        "regions": str(out / "regions.toml"),
        "images": images,
        "biopsy": None,
    }
    _write_table(pd.DataFrame(manifest), out / "manifest.csv")
    (out / "regions.toml").write_text(regions_toml(), encoding="utf-8")
    _write_table(tables["clinical"], out / "clinical.csv", float_format="%.1f")
    _write_table(tables["immune"], out / "immune.csv")
    _write_table(tables["expression"], out / "expression.tsv", sep="\t")

    biopsy_truth = None
    if biopsy_patients > 0:
        b = make_biopsy_cohort(out / "biopsy", biopsy_patients, seed, size, effect_scale, progress)
        paths["biopsy"] = {k: b[k] for k in ("manifest", "biopsies", "truth_dir")}
        biopsy_truth = {
            "n_patients": biopsy_patients,
            "n_biopsies": b["n_biopsies"],
            "sequences": list(B.BIOPSY_SEQUENCES),
            "grid": "one 1 mm isotropic grid per patient, identity direction, shared by the nine "
            "sequences, the mask and the truth field",
            "field": "latent T-cell infiltration: sum of "
            f"{B.FIELD_MODEL['n_blobs'][0]}-{B.FIELD_MODEL['n_blobs'][1]} Gaussian blobs "
            "(centres inside the tumour, sd 0.25-0.5 x tumour radius, amplitude 0.5-1) "
            "times the mask; 0 outside the tumour",
            "image_effects": {
                "T1Gd": "texture grain coarsens locally from sd "
                f"{B.IMAGE_EFFECT['T1Gd_fine_sigma_mm']} mm to "
                f"{B.IMAGE_EFFECT['T1Gd_coarse_sigma_mm']} mm as effect_scale * field "
                "goes 0 -> 1",
                "rCBV": f"+{B.IMAGE_EFFECT['rCBV_per_field']} * effect_scale * field (WM = 1) "
                "plus an independent texture",
                "nrCBV": "rCBV / median rCBV of contralateral white matter",
            },
            "expression": {
                "model": "log TPM = log(median) + loading * (slope * effect_scale * (field - "
                "field_ref) + patient N(0, patient_sd) + N(0, noise_sd)) + "
                "N(0, gene sd)",
                "slope": B.EXPRESSION_MODEL["slope"] * effect_scale,
                "field_ref": B.EXPRESSION_MODEL["field_ref"],
                "patient_sd": B.EXPRESSION_MODEL["patient_sd"],
                "noise_sd": B.EXPRESSION_MODEL["noise_sd"],
                "genes": {
                    g: {"median_tpm": m, "loading": ld, "gene_sd": sd}
                    for g, (m, ld, sd) in B.EXPRESSION_MODEL["genes"].items()
                },
            },
            "sites": "2-6 per patient (p = 0.30, 0.30, 0.20, 0.12, 0.08), random voxels of the "
            "mask >= 5 mm apart and >= 8 voxels from the in-plane edges, jittered by "
            "up to 0.3 voxel; coordinates are LPS mm as SimpleITK's "
            "TransformContinuousIndexToPhysicalPoint",
            "truth_files": "biopsy/truth/<pid>_infiltration.nii.gz",
            "patients": b["patients"],
        }
    gt = _ground_truth(seed, n_patients, size, effect_scale, patients, biopsy_truth)
    (out / "ground_truth.json").write_text(json.dumps(gt, indent=2) + "\n")
    paths["seconds"] = round(time.perf_counter() - t0, 3)
    return paths
