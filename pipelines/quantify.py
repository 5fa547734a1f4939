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
from pipelines.lake import Lake, canonical_json, decode_array, sha256_text
from pipelines.processing import ImageProcessing
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

    processing: IBSI settings (:class:`pipelines.processing.ImageProcessing`, from ``drlake run
    --settings``): the whole IBSI chain of ``drlake quantify`` runs on every map and region, and
    its families, discretisation and aggregations replace the five options above. For the
    identity encoder the chain reads the lake's volume in source intensity units (see
    :func:`source_intensities`), so that a lake reproduces ``drlake quantify`` of its files.
    """

    bin_count: int | None = 32
    bin_size: float | None = None
    aggregation: str = "averaged"
    # None: the encoder's default (the paper's four for the CNN and identity; intensity only,
    # "firstorder", for a filter bank, as IBSI 2 asks)
    families: tuple[str, ...] | None = None
    shape: str = "paper"
    processing: ImageProcessing | None = None

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
        if self.processing is not None and not isinstance(self.processing, ImageProcessing):
            raise InputError("processing must be IBSI settings (pipelines.processing."
                             f"ImageProcessing), got {type(self.processing).__name__}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["families"] = list(self.families) if self.families is not None else None
        d.pop("processing")
        if self.processing is not None:  # absent otherwise: earlier fragments keep their hash
            d["processing"] = {**self.processing.as_dict(), "sha256": self.processing.sha256}
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
    if settings.families is not None or settings.processing is not None:
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


def stored_feature_name(tag: str, aggregation: str, processing: ImageProcessing) -> str:
    """Return the ``feature`` value of a processed feature in the long table: the IBSI tag, with
    ``|<aggregation words>`` appended when the settings ask for several aggregations (e.g.
    ``cm_joint_max|3D, merged``; whole-ROI features never carry one)."""
    return f"{tag}|{aggregation}" if aggregation and len(processing.aggregations) > 1 else tag


def source_intensities(unit: np.ndarray, vol_attrs: dict, modality: str) -> np.ndarray:
    """Return a lake volume's [0, 1] intensities in the source's units (float64, same shape).

    Ingest stored ``(s - low) / (high - low)`` (clipped) with low / high recorded in source units
    (``preprocessing`` step "normalise"). Where ingest kept the source grid (no resampling) and
    the source pixels are integers, the values are rounded back to those integers, so that
    intensity ranges and fixed bin sizes see exactly the source's values (float32 storage alone
    is off by about 1e-7 of the range).
    """
    norm = next(st for st in vol_attrs["preprocessing"] if st["step"] == "normalise")
    p = norm["per_modality"][modality]
    low, high = float(p["low"]), float(p["high"])
    out = low + unit.astype(np.float64) * (high - low)
    src = (vol_attrs.get("source") or {}).get(modality) or {}
    native = (list(src.get("size_xyz") or []) == list(reversed(unit.shape))
              and np.allclose(src.get("spacing_xyz") or [np.nan] * 3,
                              list(reversed(vol_attrs["spacing_zyx"])), rtol=0, atol=1e-9))
    pixel = str(src.get("pixel_type", ""))
    if native and "integer" in pixel.lower():
        np.rint(out, out=out)
    return out


def _sitk_image(arr: np.ndarray, spacing_zyx):
    """Return a SimpleITK image of a (z, y, x) array with that spacing (mm)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(v) for v in reversed(spacing_zyx)])
    return img


def processed_fragment_rows(lake: Lake, patient_id: str, modality: str, attrs: dict, g,
                            processing: ImageProcessing) -> list[tuple[str, int, int, str, float]]:
    """Return (region, layer, map, feature, value) rows of one patient and sequence under IBSI
    settings: the chain of ``drlake quantify`` per region (identity encoder: on the whole
    volume in source units, layer 1 map 0; other encoders: on every map of every layer's crop).
    """
    import SimpleITK as sitk

    from pipelines.features.case import processed_features
    from pipelines.regions import region_masks, volume_regions

    rows: list[tuple[str, int, int, str, float]] = []
    where = f"{patient_id} {modality}"
    if (attrs.get("encoder") or {}).get("weights") == "identity":
        vattrs = lake.volume_attrs(patient_id)
        vol = lake.volume(patient_id).open()
        image = _sitk_image(source_intensities(decode_array(vol["images"][modality]), vattrs,
                                               modality), vattrs["spacing_zyx"])
        labels = vol["masks"][modality][...]
        regions = volume_regions(vattrs)
        for (region, _), mask in zip(regions, region_masks(labels, regions), strict=True):
            if not mask.any():
                continue
            roi = sitk.GetImageFromArray(mask.astype(np.uint8))
            roi.CopyInformation(image)
            feats, _ = processed_features(image, roi, processing, where=f"{where} {region}")
            rows.extend((region, 1, 0, stored_feature_name(t, a, processing), float(v))
                        for t, a, v in feats)
        return rows
    regions = activation_regions(attrs)
    for info in attrs["per_modality"][modality]["layers"]:
        k = int(info["layer"])
        sp = (float(info["spacing_mm"]),) * 3
        masks = region_stack(g[f"mask{k}"][...])
        act = g[f"layer{k}"][...]
        for region, mask in zip(regions, masks, strict=True):
            if not mask.any():
                continue
            roi = _sitk_image(mask.astype(np.uint8), sp)
            for m in range(act.shape[0]):
                feats, _ = processed_features(_sitk_image(act[m].astype(np.float64), sp), roi,
                                              processing, where=f"{where} {region} layer {k}")
                rows.extend((region, k, m, stored_feature_name(t, a, processing), float(v))
                            for t, a, v in feats)
    return rows


def paper_fragment_rows(patient_id: str, modality: str, attrs: dict, g,
                        settings: QuantifySettings) -> list[tuple[str, int, int, str, float]]:
    """Return (region, layer, map, feature, value) rows of one patient and sequence without IBSI
    processing settings: the texture families of every map of every layer (seed 000, 2.3) plus
    shape on each region's layer-1 mask (layer 0, map 0)."""
    if attrs.get("spacing_zyx"):
        raise InputError(f"{patient_id}: the lake volume's grid is anisotropic "
                         f"({attrs['spacing_zyx']} mm, --spacing native): quantify it with "
                         "--settings (the IBSI chain resamples), or ingest with --spacing MM")
    regions = activation_regions(attrs)
    rows: list[tuple[str, int, int, str, float]] = []
    for info in attrs["per_modality"][modality]["layers"]:
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

        spacing = float(attrs["spacing_mm"])
        which = PAPER_SHAPE if settings.shape == "paper" else "all"
        for region, mask1 in zip(regions, region_stack(g["mask1"][...]), strict=True):
            if mask1.any():
                for f, v in shape_features(mask1, (spacing,) * 3, features=which).items():
                    rows.append((region, 0, 0, f, float(v)))
    return rows


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
    g = group[modality]
    if settings.processing is not None:
        rows = processed_fragment_rows(lake, patient_id, modality, attrs, g, settings.processing)
    else:
        rows = paper_fragment_rows(patient_id, modality, attrs, g, settings)
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
