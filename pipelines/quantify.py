"""Quantify stage: texture quantifiers of every activation map plus shape, into the `features`
table (seed 000, section 2.3).

One Dask task per patient x sequence reads its activation crop from the lake and, for every named
region of the mask (core, whole, ...; "roi" for a binary mask), discretises each map (32 levels
over the region's range by default), computes the first-order, GLCM, GLSZM and NGTDM families on
every map of every layer and the shape features on the region's mask, and writes its fragment
as one uncommitted data file of the Delta table ``features``; the driver commits the stage's
fragments in one transaction. Each row records the hash of everything its fragment was computed
from (settings, activations) in ``fragment_hash``; a rerun skips fragments whose hash matches
and recomputes the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from pipelines.exceptions import InputError, LakeError
from pipelines.lake import Lake, canonical_json, sha256_text
from pipelines.scheduler import limit_task_threads

log = logging.getLogger("drlake.quantify")

#: Every non-shape IBSI 1 family quantify can compute on a map, in catalogue order.
TEXTURE_FAMILIES = ("localintensity", "firstorder", "ivh", "glcm", "glrlm", "glszm", "gldzm",
                    "ngtdm", "ngldm")
#: The paper's families (seed 000, Table 2): the default, so fragment hashes stay as they were.
DEFAULT_FAMILIES = ("firstorder", "glcm", "glszm", "ngtdm")
PAPER_SHAPE = ("morph_volume", "morph_area_mesh", "morph_fractal_dim", "morph_porosity")
HASH_KEY = b"drlake.params_hash"


@dataclass(frozen=True)
class QuantifySettings:
    """Settings of the quantify stage (hashed into every fragment).

    bin_count: fixed bin number (IBSI FBN, the paper's 32); bin_size: fixed bin size (FBS) in the
    map's units instead. aggregation: GLCM "averaged" over 13 directions or "merged". shape:
    "paper" (volume, surface area, fractal dimension, porosity), "all" IBSI morphology, or "none".
    """

    bin_count: int | None = 32
    bin_size: float | None = None
    aggregation: str = "averaged"
    # None: the encoder's default (the paper's four for the CNN and identity; intensity only,
    # "firstorder", for a filter bank, as IBSI 2 asks)
    families: tuple[str, ...] | None = None
    shape: str = "paper"

    def __post_init__(self):
        if (self.bin_count is None) == (self.bin_size is None):
            raise InputError("give exactly one of bin_count and bin_size")
        if self.bin_count is not None and self.bin_count < 2:
            raise InputError(f"bin count must be >= 2, got {self.bin_count}")
        if self.bin_size is not None and not self.bin_size > 0:
            raise InputError(f"bin size must be > 0, got {self.bin_size}")
        if self.aggregation not in ("averaged", "merged"):
            raise InputError(f"aggregation must be averaged or merged, got {self.aggregation!r}")
        if self.families is not None:
            object.__setattr__(self, "families", tuple(self.families))
        bad = [f for f in self.families or () if f not in TEXTURE_FAMILIES]
        if bad:
            raise InputError(f"unknown feature families {bad}; choose from {TEXTURE_FAMILIES}")
        if self.shape not in ("paper", "all", "none"):
            raise InputError(f"shape must be paper, all or none, got {self.shape!r}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["families"] = list(self.families) if self.families is not None else None
        return d


def fragment_hash(settings: QuantifySettings, activation_fp: str, modality: str) -> str:
    """Return the hash a fragment is keyed on: settings, activations and sequence."""
    return sha256_text(canonical_json(
        {"settings": settings.as_dict(), "activations": activation_fp, "modality": modality,
         "layout": "per-region"}
    ))


def fragment_rel(modality: str, encoder: str, patient_id: str) -> tuple[dict, str]:
    """Return (partition dict, file stem) of a features fragment."""
    return {"modality": modality, "encoder": encoder}, patient_id


def existing_fragment_hashes(lake: Lake, encoder: str) -> dict[tuple[str, str], str]:
    """Return (patient, sequence) -> fragment hash of the committed features of `encoder`."""
    import pyarrow.dataset as pads

    ds = lake.table("features").dataset()
    if ds is None:
        return {}
    tbl = ds.to_table(columns=["patient_id", "modality", "fragment_hash", "run_id"],
                      filter=pads.field("encoder") == encoder)
    df = tbl.to_pandas().drop_duplicates()
    df = df[df["run_id"].isin(lake.ok_run_ids())]
    return {(r.patient_id, r.modality): r.fragment_hash
            for r in df.itertuples() if isinstance(r.fragment_hash, str)}


def map_feature_rows(act: np.ndarray, mask: np.ndarray, spacing_mm: float,
                     settings: QuantifySettings) -> list[tuple[int, str, float]]:
    """Return (map, feature, value) of every texture feature of every map of one layer.

    act: (maps, z, y, x) float32; mask: (z, y, x) bool on the same grid; spacing in mm.
    """
    from pipelines.features.extract import compute_features

    rows = []
    sp = (spacing_mm,) * 3
    for m in range(act.shape[0]):
        feats = compute_features(
            act[m], mask, sp, families=settings.families, bin_count=settings.bin_count,
            bin_size=settings.bin_size, aggregation=settings.aggregation,
        )
        rows.extend((m, name, float(v)) for name, v in feats.items())
    return rows


def resolved_settings(settings: QuantifySettings, attrs: dict) -> QuantifySettings:
    """Return the settings with families None replaced by the encoder's default families (from
    an activations group's attributes; the paper's four where the encoder names none)."""
    if settings.families is not None:
        return settings
    fams = (attrs.get("encoder") or {}).get("default_families") or DEFAULT_FAMILIES
    return replace(settings, families=tuple(fams))


def activation_regions(attrs: dict) -> list[str]:
    """Return the region names of an activations group, in the order of its mask stacks."""
    return list(attrs.get("regions") or ["roi"])


def region_stack(mask: np.ndarray) -> np.ndarray:
    """Return a layer's mask as a (region, z, y, x) bool stack (an old (z, y, x) mask: 1 region)."""
    mask = np.asarray(mask).astype(bool)
    return mask[None] if mask.ndim == 3 else mask


def quantify_patient_modality(
    lake: Lake, patient_id: str, modality: str, encoder: str,
    settings: QuantifySettings, run_id: str, threads: int = 1, force: bool = False,
    existing_hash: str | None = None,
) -> dict:
    """Compute one features fragment and write it as an uncommitted data file of the features
    table; return a small summary with the file's add action (never the data).

    The fragment is skipped when `existing_hash` (the committed fragment's) equals the hash of
    these settings and activations, unless `force`.
    """
    limit_task_threads(threads)
    t0 = time.perf_counter()
    loc = lake.activations(encoder, patient_id)
    group = loc.open()
    attrs = dict(group.attrs)
    if modality not in attrs["modalities"]:
        raise LakeError(f"{loc.rel}: no activations for sequence {modality}")
    settings = resolved_settings(settings, attrs)
    want = fragment_hash(settings, attrs["fingerprint"], modality)
    if not force and existing_hash == want:
        return {"patient_id": patient_id, "modality": modality, "skipped": True, "rows": 0}
    spacing = float(attrs["spacing_mm"])
    regions = activation_regions(attrs)
    rows: list[tuple[str, int, int, str, float]] = []
    g = group[modality]
    layers = attrs["per_modality"][modality]["layers"]
    for info in layers:
        k = int(info["layer"])
        masks = region_stack(g[f"mask{k}"][...])
        act = None
        for region, mask in zip(regions, masks, strict=True):
            if not mask.any():
                log.warning("%s %s region %s layer %d: no voxel at stride %d; skipped",
                            patient_id, modality, region, k, info["stride"])
                continue
            act = g[f"layer{k}"][...] if act is None else act
            rows.extend((region, k, m, f, v) for m, f, v in map_feature_rows(
                act, mask, info["spacing_mm"], settings))
        del act
    if settings.shape != "none":
        from pipelines.features.shape import shape_features

        which = PAPER_SHAPE if settings.shape == "paper" else "all"
        for region, mask1 in zip(regions, region_stack(g["mask1"][...]), strict=True):
            if mask1.any():
                for f, v in shape_features(mask1, (spacing,) * 3, features=which).items():
                    rows.append((region, 0, 0, f, float(v)))
    df = pd.DataFrame(rows, columns=["region", "layer", "map", "feature", "value"])
    df.insert(0, "patient_id", patient_id)
    df.insert(1, "modality", modality)
    df.insert(2, "encoder", encoder)
    df["run_id"] = run_id
    df["fragment_hash"] = want

    part, stem = fragment_rel(modality, encoder, patient_id)
    add = lake.table("features").write_file(df, part, stem)
    add["replaces"] = [patient_id]
    return {"patient_id": patient_id, "modality": modality, "skipped": False, "rows": len(df),
            "seconds": time.perf_counter() - t0, "add": add}
