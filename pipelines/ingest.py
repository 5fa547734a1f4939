"""Ingest stage: a manifest of image files (+ clinical, immune, expression and biopsy tables)
into the lake.

Every image is read with its geometry, checked (readable, finite, mask on the image's grid, mask
0/1 or the chosen label, non-empty), resampled to an isotropic grid (linear for images, nearest
for masks) and normalised to [0, 1]. The stage is all-or-nothing: volumes are staged under
temporary names and tables validated before anything becomes visible, so bad input leaves the
lake as it was. It is idempotent: a patient whose input files and settings have not changed is
skipped, and unchanged tables are not rewritten.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import SimpleITK as sitk

from pipelines import __version__
from pipelines.dicom_masks import load_mask, mask_kind
from pipelines.exceptions import DrlakeError, InputError, SchemaError
from pipelines.imageio import (
    dicom_allowed_header,
    image_format,
    read_image,
    read_image_information,
    spatial_metadata,
    to_array,
)
from pipelines.lake import (
    Lake,
    RunLog,
    canonical_json,
    file_sha256,
    new_run_id,
    process_token,
    sha256_text,
    validate_patient_id,
)
from pipelines.limits import (
    IngestLimits,
    check_memory,
    check_voxels,
    describe_size,
    ingest_peak_bytes,
)
from pipelines.preprocess import (
    isotropic_grid,
    isotropic_grid_size,
    normalise_unit_range,
    resample_onto,
    same_physical_space,
    unit_range_image,
)
from pipelines.regions import (
    Regions,
    parse_regions,
    region_voxel_counts,
    regions_text,
    stored_labels,
)
from pipelines.scheduler import SchedulerSpec, limit_task_threads, run_tasks
from pipelines.schemas import validate

log = logging.getLogger("drlake.ingest")

MANIFEST_COLUMNS = ("patient_id", "modality", "image", "mask")
# Version of the stored volume layout; part of every fingerprint so that a layout change
# (2: images as uint16 steps of 1/65535; 3: normalised in float64 from the source dtype, which
# can differ from 2 by one uint16 step; 4: DICOM headers reduced to the typed PS3.15 allow-list,
# so volumes that kept a SeriesDescription are rewritten; 5: masks stored as label maps with
# named regions) re-ingests instead of silently keeping old volumes.
VOLUME_FORMAT = 5


@dataclass(frozen=True)
class IngestSettings:
    """The settings of the ingest stage (hashed into every patient's fingerprint)."""

    # None: keep the first sequence's own grid ("--spacing native"; the others are resampled
    # onto it), for conventional radiomics whose IBSI settings resample later (drlake run
    # --settings); the CNN and filter encoders need an isotropic grid
    spacing_mm: float | None = 1.0
    label: int | None = None
    clip_percentiles: tuple[float, float] | None = None
    cohort: str = "main"
    modalities: tuple[str, ...] | None = None
    # RTSTRUCT ROI / SEG segment of masks whose manifest row has no roi (see dicom_masks)
    roi: str | None = None
    # named sub-regions of label masks, e.g. (("core", (1, 4)), ("whole", (1, 2, 4))); None: the
    # mask is binary (or --label picks one label) and its one region is "roi"
    regions: Regions | None = None

    def __post_init__(self):
        if isinstance(self.regions, str | list):
            object.__setattr__(self, "regions", parse_regions(self.regions))
        elif self.regions is not None:  # normalise and check a tuple given from Python
            object.__setattr__(self, "regions", parse_regions(regions_text(
                tuple((n, tuple(labs)) for n, labs in self.regions))))
        if self.regions is not None and self.label is not None:
            raise InputError("give --label (one ROI label) or --regions (named label sets), "
                             "not both")
        if self.roi is not None and not isinstance(self.roi, str):  # a list of alternatives
            object.__setattr__(self, "roi", "|".join(str(r) for r in self.roi))
        if self.roi is not None and not str(self.roi).strip():
            raise InputError("--roi must name an ROI (a name, NAME1|NAME2 or a regex), got ''")
        if self.spacing_mm is not None and not self.spacing_mm > 0:
            raise InputError(f"--spacing must be > 0 mm, got {self.spacing_mm}")
        if self.clip_percentiles is not None:
            lo, hi = self.clip_percentiles
            if not 0 <= lo < hi <= 100:
                raise InputError(f"clip percentiles must satisfy 0 <= lo < hi <= 100, got {lo, hi}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.cohort):
            raise InputError(f"cohort name {self.cohort!r}: use letters, digits, '-', '_'")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["clip_percentiles"] = list(self.clip_percentiles) if self.clip_percentiles else None
        d["modalities"] = list(self.modalities) if self.modalities else None
        d["regions"] = regions_text(self.regions) if self.regions else None
        return d


@dataclass
class PatientInputs:
    """The files of one patient: modality -> (image path, mask path), in manifest order."""

    patient_id: str
    files: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    # modality -> the manifest row's roi (RTSTRUCT ROI / SEG segment), if it gives one
    rois: dict[str, str] = field(default_factory=dict)

    def roi(self, modality: str, settings: IngestSettings) -> str | None:
        """Return the ROI selector of a modality's mask: the manifest's roi, else --roi."""
        return self.rois.get(modality) or settings.roi

    def fingerprint(self, settings: IngestSettings, cache: dict[Path, str]) -> str:
        digests = {}
        for mod, (img, msk) in self.files.items():
            for p in (img, msk):
                if p not in cache:
                    cache[p] = file_sha256(p)
            digests[mod] = [cache[img], cache[msk]]
            roi = self.roi(mod, settings)
            if roi and mask_kind(msk) != "labels":  # the ROI chosen counts, not --roi itself
                digests[mod].append(roi)
        hashed = {k: v for k, v in settings.as_dict().items() if k != "roi"}
        return sha256_text(canonical_json({"files": digests, "settings": hashed,
                                           "volume_format": VOLUME_FORMAT}))


@dataclass
class IngestSummary:
    """What an ingest run did."""

    run_id: str | None
    ingested: list[str]
    skipped: list[str]
    tables: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        tables = ", ".join(f"{k}: {v} rows" for k, v in self.tables.items()) or "none"
        return (
            f"ingested {len(self.ingested)} patient(s), skipped {len(self.skipped)} unchanged; "
            f"tables: {tables}; {self.seconds:.1f} s"
        )


# ---- manifest and tables ----------------------------------------------------------------------
def read_csv_table(path: str | Path, sep: str = ",") -> pd.DataFrame:
    """Return a CSV/TSV file as a DataFrame of strings, or raise InputError naming the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{p}: cannot parse table ({exc})") from None
    _check_unique_header(p, sep)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _check_unique_header(path: Path, sep: str) -> None:
    """Raise InputError naming the file and column if the header row repeats a column name.

    pandas renames a repeated 'age' to 'age.1' (and a marker 'T Cells CD8' to 'T Cells CD8.1'),
    so duplicates are found in the header row itself.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = [c.strip() for c in next(csv.reader(f, delimiter=sep), [])]
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name and name in seen:
            raise InputError(
                f"{path}: column {name!r} appears twice in the header (columns {seen[name]} and "
                f"{i}); remove or rename one of them"
            )
        seen[name] = i


def read_manifest(path: str | Path, settings: IngestSettings) -> list[PatientInputs]:
    """Return the patients of a manifest (patient_id, modality, image, mask; paths relative to it).

    An optional roi column chooses the RTSTRUCT ROI or SEG segment of a row's DICOM mask (it
    wins over settings.roi; label-image masks ignore it).

    Raises InputError naming the manifest row for a bad id, a duplicate (patient, modality), a
    missing file, or a patient lacking one of the cohort's modalities.
    """
    path = Path(path)
    df = read_csv_table(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    patients: dict[str, PatientInputs] = {}
    base = path.parent
    for i, row in enumerate(df.itertuples(index=False), start=2):
        where = f"{path}, line {i}"
        pid = validate_patient_id(row.patient_id, where)
        mod = "" if pd.isna(row.modality) else str(row.modality).strip()
        if not mod:
            raise InputError(f"{where}: empty modality: name the sequence (e.g. T1) of every row")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", mod):
            raise InputError(f"{where}: invalid modality name {mod!r}")
        p = patients.setdefault(pid, PatientInputs(pid))
        if mod in p.files:
            raise InputError(f"{where}: duplicate patient id/modality {pid} {mod}")
        files = []
        for col in ("image", "mask"):
            val = getattr(row, col)
            if not isinstance(val, str) or not val.strip():
                raise InputError(f"{where}: empty {col} path")
            f = (base / val.strip()).resolve()
            if not f.exists():
                raise InputError(f"{where}: {col} file {f} not found")
            files.append(f)
        p.files[mod] = (files[0], files[1])
        roi = getattr(row, "roi", None) if "roi" in df.columns else None
        if isinstance(roi, str) and roi.strip():  # the RTSTRUCT ROI / SEG segment of this mask
            p.rois[mod] = roi.strip()
    if not patients:
        raise InputError(f"{path}: manifest has no rows")
    expected = list(settings.modalities or _union_in_order(p.files for p in patients.values()))
    for p in patients.values():
        lacking = [m for m in expected if m not in p.files]
        if lacking:
            raise InputError(
                f"{path}: patient {p.patient_id} has no {', '.join(lacking)} image "
                f"(every patient needs {', '.join(expected)})"
            )
        p.files = {m: p.files[m] for m in expected}
    return list(patients.values())


def check_lake_sequences(patients: list[PatientInputs], existing: pd.DataFrame, cohort: str,
                         manifest: str | Path) -> None:
    """Raise InputError naming the patient unless its sequences are those of the lake's other
    patients in the cohort; order each patient's sequences as the lake does.

    A lake of T1/T1CE/T2/FLAIR patients that takes a patient with only T1 would give tables and
    analyses with holes that nobody asked for.
    """
    ids = {p.patient_id for p in patients}
    others = existing[(existing["cohort"] == cohort) & ~existing["patient_id"].isin(ids)]
    if not len(others):
        return
    lake_mods = _union_in_order(str(m).split(",") for m in others["modalities"])
    for p in patients:
        missing = [m for m in lake_mods if m not in p.files]
        extra = [m for m in p.files if m not in lake_mods]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"has no {', '.join(missing)} image")
            if extra:
                problems.append(f"has {', '.join(extra)}, which they do not")
            raise InputError(
                f"{manifest}: patient {p.patient_id} {' and '.join(problems)}, but the lake's "
                f"{len(others)} other patient(s) of cohort {cohort!r} have "
                f"{', '.join(lake_mods)}: give every patient the same sequences (add the missing "
                "ones to the manifest), or ingest into another --cohort or lake"
            )
        p.files = {m: p.files[m] for m in lake_mods}


def _union_in_order(dicts) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        for k in d:
            seen.setdefault(k, None)
    return list(seen)


def _check_known(df: pd.DataFrame, col: str, known: set[str], path: Path) -> None:
    for i, pid in enumerate(df[col].tolist(), start=2):
        validate_patient_id(pid, f"{path}, line {i}")
        if str(pid) not in known:
            raise InputError(
                f"{path}, line {i}: patient {pid!r} is not in the manifest or the lake"
            )


def _validated(table: str, df: pd.DataFrame, path: Path) -> pd.DataFrame:
    try:
        return validate(table, df).to_pandas()
    except SchemaError as exc:
        raise InputError(f"{path}: {exc}") from None


def snake_case(name: str) -> str:
    """Return a column name in snake case ('T Cells CD8' -> 't_cells_cd8')."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def clinical_rows(path: Path, known: set[str]) -> pd.DataFrame:
    """Return the validated clinical table (columns of schemas/clinical.json)."""
    df = read_csv_table(path)
    if "patient_id" not in df.columns:
        raise InputError(f"{path}: missing column patient_id")
    _check_known(df, "patient_id", known, path)
    cols = ["patient_id", "age", "gender", "grade", "survival_days", "event"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    return _validated("clinical", df[cols], path)


def immune_rows(path: Path, known: set[str]) -> pd.DataFrame:
    """Return the immune table melted to long (patient_id, marker, value), validated."""
    df = read_csv_table(path)
    if "patient_id" not in df.columns:
        raise InputError(f"{path}: missing column patient_id")
    _check_known(df, "patient_id", known, path)
    if df["patient_id"].duplicated().any():
        dup = df["patient_id"][df["patient_id"].duplicated()].iloc[0]
        raise InputError(f"{path}: duplicate patient id {dup!r}")
    markers = [c for c in df.columns if c != "patient_id"]
    if not markers:
        raise InputError(f"{path}: no marker columns")
    renamed = {c: snake_case(c) for c in markers}
    first: dict[str, str] = {}
    for c, name in renamed.items():
        if name in first:
            raise InputError(
                f"{path}: columns {first[name]!r} and {c!r} are the same marker {name!r}; "
                "remove or rename one of them"
            )
        first[name] = c
    long = df.rename(columns=renamed).melt(
        id_vars="patient_id", var_name="marker", value_name="value"
    )
    return _validated("immune_markers", long, path)


def expression_rows(path: Path, known: set[str]) -> pd.DataFrame:
    """Return a genes x samples TPM matrix (TSV) as long rows of genomic_expression.

    Sample columns are patient ids, or TCGA-style sample ids that start with '<patient_id>-'.
    """
    df = read_csv_table(path, sep="\t")
    gene_col = df.columns[0]
    samples = list(df.columns[1:])
    if not samples:
        raise InputError(f"{path}: no sample columns")
    sample_patient = {}
    for s in samples:
        pid = s if s in known else next((k for k in known if s.startswith(k + "-")), None)
        if pid is None:
            raise InputError(f"{path}: sample column {s!r} matches no patient in the manifest/lake")
        sample_patient[s] = pid
    long = df.rename(columns={gene_col: "gene"}).melt(
        id_vars="gene", var_name="sample_id", value_name="tpm"
    )
    long["patient_id"] = long["sample_id"].map(sample_patient)
    long["sample_type"] = "tumour"
    return _validated(
        "genomic_expression", long[["sample_id", "patient_id", "sample_type", "gene", "tpm"]], path
    )


def biopsy_rows(path: Path, known: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (biopsies, genomic_expression rows) from a biopsy table.

    Columns: patient_id, biopsy_id, x_mm, y_mm, z_mm, then one TPM column per gene.
    """
    df = read_csv_table(path)
    base = ["patient_id", "biopsy_id", "x_mm", "y_mm", "z_mm"]
    missing = [c for c in base if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    _check_known(df, "patient_id", known, path)
    biopsies = _validated("biopsies", df[["biopsy_id", "patient_id", "x_mm", "y_mm", "z_mm"]], path)
    genes = [c for c in df.columns if c not in base]
    expr = df[["biopsy_id", "patient_id", *genes]].melt(
        id_vars=["biopsy_id", "patient_id"], var_name="gene", value_name="tpm"
    )
    expr = expr.rename(columns={"biopsy_id": "sample_id"})
    expr["sample_type"] = "biopsy"
    expr = _validated(
        "genomic_expression", expr[["sample_id", "patient_id", "sample_type", "gene", "tpm"]], path
    )
    return biopsies, expr


# ---- one patient ------------------------------------------------------------------------------
def native_grid(img: sitk.Image) -> sitk.Image:
    """Return an empty reference image on `img`'s own grid (size, spacing, origin, direction)."""
    ref = sitk.Image(img.GetSize(), sitk.sitkUInt8)
    ref.CopyInformation(img)
    return ref


def grid_words(settings: IngestSettings) -> str:
    """Return the lake grid of these settings in words ("1 mm", "the native grid")."""
    return "the native grid" if settings.spacing_mm is None else f"{settings.spacing_mm:g} mm"


def prepare_patient(p: PatientInputs, settings: IngestSettings, fingerprint: str, run_id: str,
                    limits: IngestLimits | None = None):
    """Return (images, masks, attrs, patients row) of one patient, ready for the lake.

    images: modality -> (z, y, x) float32 in [0, 1]; masks: modality -> (z, y, x) uint8. The grid
    is isotropic at settings.spacing_mm over the first modality's physical extent (at most
    limits.max_voxels voxels).
    """
    images, masks, sources, norm, region_voxels = {}, {}, {}, {}, {}
    regions = None
    reference = None
    mask_cache: dict[tuple, tuple[sitk.Image, dict]] = {}
    resampled: dict[tuple, tuple] = {}  # the same key -> (lake mask, regions, counts, voxels)
    ref_spacing = None
    for mod, (img_path, mask_path) in p.files.items():
        img = read_image(img_path)
        if img.GetDimension() != 3:
            raise InputError(f"{img_path}: expected a 3D image, got {img.GetDimension()}D")
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{img_path}: expected a scalar image, got a vector image")
        # a label image as it is; an RTSTRUCT ROI / SEG segment rasterised onto this image's grid
        roi_choice = p.roi(mod, settings)
        key = (mask_path, roi_choice, img.GetSize(), img.GetSpacing(), img.GetOrigin(),
               img.GetDirection())
        if key not in mask_cache:
            mask_cache[key] = load_mask(mask_path, img, roi=roi_choice, image_path=img_path)
        mimg, mask_info = mask_cache[key]
        diff = same_physical_space(img, mimg)
        if diff:
            raise InputError(
                f"{mask_path}: mask is not on the grid of image {img_path}: {diff}; "
                "resample the mask onto the image (nearest neighbour) before ingest"
            )
        if reference is None:
            reference = (native_grid(img) if settings.spacing_mm is None else
                         isotropic_grid(img, settings.spacing_mm, f"{img_path}: --spacing",
                                        limits))
            ref_spacing = img.GetSpacing()
        if key not in resampled:  # one mask on one grid is resampled once (not per sequence)
            label = settings.label if mask_info["format"] == "labels" else None  # DICOM: 0/1
            roi, regions = stored_labels(to_array(mimg), label, settings.regions, str(mask_path))
            roi_img = sitk.GetImageFromArray(roi)
            roi_img.CopyInformation(mimg)
            rmask = sitk.GetArrayFromImage(resample_onto(roi_img, reference, "mask"))
            if not rmask.any():
                raise InputError(
                    f"{mask_path}: ROI vanishes after resampling to {grid_words(settings)} "
                    "(mask smaller than one voxel)"
                )
            counts = region_voxel_counts(rmask, regions)
            for (name, _), n in zip(regions, counts, strict=True):
                if n == 0:
                    log.warning("%s: region %s has no voxel after resampling; its features will "
                                "be missing", mask_path, name)
            resampled[key] = (rmask.astype(np.uint8, copy=False), regions,
                              {name: int(n) for (name, _), n in zip(regions, counts, strict=True)},
                              int(np.count_nonzero(roi)))
            del roi, roi_img, rmask
        masks[mod], regions, region_voxels[mod], roi_voxels = resampled[key]
        src = {
            "format": image_format(img_path),
            "spacing_xyz": list(img.GetSpacing()),
            "size_xyz": list(img.GetSize()),
            "pixel_type": img.GetPixelIDTypeAsString(),
            "roi_voxels": roi_voxels,
            "mask": {**mask_info, "roi": roi_choice} if mask_info["format"] != "labels"
            else mask_info,
        }
        if image_format(img_path) == "dicom":  # Modality + typed acquisition parameters only
            src["dicom"] = dicom_allowed_header(img_path)
        sources[mod] = src
        # Intensities: mapped onto [0, 1] in float64 arithmetic (int32 near 2**31 and float64
        # beyond float32 keep every level), then resampled and min-max normalised in place. Each
        # buffer is dropped as soon as the next exists: at most the source and one float32 copy,
        # or two float32 grids, are alive at once.
        unit, low, high = unit_range_image(img, str(img_path))
        del img
        rimg = resample_onto(unit, reference, "image")
        del unit
        arr = sitk.GetArrayFromImage(rimg)
        del rimg
        images[mod], norm[mod] = normalise_unit_range(
            arr, settings.clip_percentiles, source_range=(low, high), inplace=True
        )
        del arr
    meta = spatial_metadata(reference)
    first = next(iter(p.files))
    attrs = {
        "patient_id": p.patient_id,
        "cohort": settings.cohort,
        "modalities": list(p.files),
        **meta,
        "preprocessing": [
            {
                "step": "resample",
                "spacing_mm": settings.spacing_mm,  # None: the native grid
                "reference_modality": first,
                "image_interpolator": "linear",
                "mask_interpolator": "nearest",
                "library": f"SimpleITK {sitk.Version.VersionString()}",
            },
            {"step": "normalise", "per_modality": norm},
        ],
        "mask": {"label": settings.label if settings.label is not None else 1}
        if settings.regions is None else {"labels": "as in the mask"},
        # region name -> the stored labels it takes; the first is the primary region
        "regions": {name: list(labs) for name, labs in regions},
        "region_voxels": region_voxels,
        "source": sources,
        "fingerprint": fingerprint,
        "run_id": run_id,
        "drlake_version": __version__,
        "ome": _ome_metadata(list(p.files), meta),
    }
    row = {
        "patient_id": p.patient_id,
        "cohort": settings.cohort,
        "modalities": ",".join(p.files),
        "volume_path": None,  # set where the volume is staged (the lake knows its layout)
        "size_z": meta["shape_zyx"][0],
        "size_y": meta["shape_zyx"][1],
        "size_x": meta["shape_zyx"][2],
        # a native grid (--spacing native): its smallest voxel edge; source_spacing_* give all
        "spacing_mm": float(settings.spacing_mm if settings.spacing_mm is not None
                            else min(ref_spacing)),
        "source_spacing_x": float(ref_spacing[0]),
        "source_spacing_y": float(ref_spacing[1]),
        "source_spacing_z": float(ref_spacing[2]),
        "mask_voxels": int(np.count_nonzero(masks[first])),
        "regions": regions_text(regions),
        "fingerprint": fingerprint,
        "run_id": run_id,
    }
    return images, masks, attrs, row


def check_image_sizes(p: PatientInputs, settings: IngestSettings, limits: IngestLimits) -> None:
    """Raise InputError before any voxel is read (headers only) if an image of the patient or
    its resampled grid is over limits.max_voxels, or ingesting it needs more memory than there
    is. Also refuses what the header readers refuse (zero NIfTI spacing, uneven DICOM slices)."""
    grid = None
    for k, (img_path, _) in enumerate(p.files.values()):
        info = read_image_information(img_path)
        if info["dimension"] < 3:
            continue  # prepare_patient says what is wrong with it
        size, spacing = info["size"][:3], info["spacing"][:3]
        check_voxels(str(img_path), size, limits, "the image",
                     "crop or downsample it before ingest")
        if grid is None:
            grid = (tuple(size) if settings.spacing_mm is None
                    else isotropic_grid_size(spacing, size, settings.spacing_mm))
            check_voxels(f"{img_path}: --spacing {settings.spacing_mm or 'native'}", grid, limits,
                         f"the grid resampled to {grid_words(settings)}",
                         "use a coarser --spacing")
        n_src, n_grid = int(np.prod(size, dtype=np.int64)), int(np.prod(grid, dtype=np.int64))
        check_memory(
            f"{img_path} ({describe_size(size)})",
            ingest_peak_bytes(n_src, info["bytes_per_voxel"], n_grid, modalities=k + 1),
            limits,
            "crop or downsample the image, use a coarser --spacing, or ingest on a machine with "
            "more memory (--memory-limit GIB sets the limit)",
        )


def _ome_metadata(modalities: list[str], meta: dict) -> dict:
    """Return OME-Zarr (NGFF 0.5) multiscales metadata for the image arrays of a volume group."""
    axes = [{"name": a, "type": "space", "unit": "millimeter"} for a in ("z", "y", "x")]
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": mod,
                "axes": axes,
                "datasets": [
                    {
                        "path": f"images/{mod}",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": meta["spacing_zyx"]},
                            {"type": "translation", "translation": meta["origin_xyz"][::-1]},
                        ],
                    }
                ],
            }
            for mod in modalities
        ],
    }


# ---- the stage --------------------------------------------------------------------------------
def stage_patient(lake: Lake, p: PatientInputs,
                  settings: IngestSettings, fingerprint: str, run_id: str,
                  limits: IngestLimits | None, token: str, threads: int = 1) -> dict:
    """Prepare one patient and stage its volume in the lake (one Dask task of ingest).

    Returns {patient_id, tmp (the staged path), row (its patients row)}, or {patient_id, error}
    for a user error (DrlakeError), so that the other tasks run to the end; bugs raise.
    """
    limit_task_threads(threads)
    try:
        images, masks, attrs, row = prepare_patient(p, settings, fingerprint, run_id, limits)
        row["volume_path"] = lake.volume(p.patient_id).rel
        tmp = lake.stage_volume(p.patient_id, images, masks, attrs, token=token)
    except DrlakeError as e:
        return {"patient_id": p.patient_id, "error": e}
    return {"patient_id": p.patient_id, "tmp": tmp, "row": row}


def ingest(
    manifest: str | Path,
    lake: Lake,
    clinical: str | Path | None = None,
    immune: str | Path | None = None,
    expression: str | Path | None = None,
    biopsies: str | Path | None = None,
    settings: IngestSettings | None = None,
    progress: bool = True,
    limits: IngestLimits | None = None,
    sched: SchedulerSpec | None = None,
) -> IngestSummary:
    """Ingest a cohort into the lake (all-or-nothing, idempotent). Returns what was done.

    Patients are read, resampled and staged by one Dask task each on `sched` (default: local
    threads, one per core; a cluster address works too), each bounded by one patient's memory.

    `limits` bounds the size of an image and its grid (voxels, memory); they are checked from
    the headers before any voxel is read. A failed run leaves the lake as it was; a failed first
    run leaves no lake folder behind.
    """
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    settings = settings or IngestSettings()
    limits = limits or IngestLimits()
    patients = read_manifest(manifest, settings)
    existing = lake.read_table("patients")
    check_lake_sequences(patients, existing, settings.cohort, manifest)
    known = {p.patient_id for p in patients} | set(existing["patient_id"])

    # 1. tables: validated before any voxel is read
    table_rows: dict[str, pd.DataFrame] = {}
    if clinical:
        table_rows["clinical"] = clinical_rows(Path(clinical), known)
    if immune:
        table_rows["immune_markers"] = immune_rows(Path(immune), known)
    expr_parts = []
    if expression:
        expr_parts.append(expression_rows(Path(expression), known))
    if biopsies:
        b, e = biopsy_rows(Path(biopsies), known)
        table_rows["biopsies"] = b
        expr_parts.append(e)
    if expr_parts:
        table_rows["genomic_expression"] = pd.concat(expr_parts, ignore_index=True)

    # 2. which patients changed
    cache: dict[Path, str] = {}
    old_fp = dict(zip(existing["patient_id"], existing["fingerprint"], strict=True))
    todo, skipped, fps = [], [], {}
    for p in patients:
        fps[p.patient_id] = p.fingerprint(settings, cache)
        if old_fp.get(p.patient_id) == fps[p.patient_id] and lake.volume(p.patient_id).exists():
            skipped.append(p.patient_id)
        else:
            todo.append(p)
    sched = sched or SchedulerSpec()
    if not sched.cluster_address and sched.scheduler != "sync":  # parallel patients share memory
        limits = dataclasses.replace(limits, share=min(sched.n_workers, max(1, len(todo))))
    for p in todo:  # sizes from the headers, before any voxel is read
        check_image_sizes(p, settings, limits)
    run_id = new_run_id("ingest")

    # tables whose rows are all there already are left alone (a rerun is a no-op)
    table_rows = {t: df for t, df in table_rows.items() if not lake.table(t).has_rows(df)}
    if not todo and not table_rows:
        summary = IngestSummary(run_id=None, ingested=[], skipped=skipped, tables={},
                                seconds=time.perf_counter() - t0)
        log.debug("%s", summary)
        return summary

    def undo(staged_tmp: list[str]) -> None:
        for tmp in staged_tmp:
            lake.discard_staged(tmp)
        lake.remove_empty_folders(created)

    # 3. stage volumes under temporary names (invisible), one Dask task per patient; any error
    # removes them all and the folders staging created (the lake's own folder too on a first
    # ingest), so a refused ingest leaves the lake as it was: no run-log row either. A user
    # error in one task does not stop the others, so that every staged volume is known and
    # removed before the first error (in manifest order) is raised. The staging names carry
    # this process's token, so a killed ingest's staging is removed by the next run
    # (`Lake.discard_orphan_staging`).
    created = lake.absent_folders("volumes")
    token = process_token(run_id)
    threads = sched.threads_per_task()
    tasks = [
        dask.delayed(stage_patient, pure=False)(
            lake, p, settings, fps[p.patient_id], run_id, limits,
            token, threads, dask_key_name=f"ingest-{p.patient_id}",
        )
        for p in todo
    ]
    try:
        results = run_tasks(tasks, sched, desc="ingest", progress=progress)
    except BaseException:
        undo([lake.volume(p.patient_id).staged(token) for p in todo])
        raise
    failed = [r for r in results if "error" in r]
    if failed:
        undo([r["tmp"] for r in results if "tmp" in r])
        raise failed[0]["error"]
    staged = [(r["patient_id"], r["tmp"]) for r in results]
    rows = [r["row"] for r in results]

    # 4. commit: a 'running' row (a killed commit is later marked dead), volumes, the cohort
    # tables, then `patients`, which makes the new volumes visible; the 'ok' row last, which
    # makes this run's patient rows visible (`Lake.read_table`).
    fingerprints = {pid: fps[pid] for pid in (r["patient_id"] for r in rows)}
    for name, path in (("clinical", clinical), ("immune", immune),
                       ("expression", expression), ("biopsies", biopsies)):
        if path:
            fingerprints[name] = file_sha256(path)
    runlog = RunLog(
        lake=lake, run_id=run_id, stage="ingest",
        parameters={**settings.as_dict(), "manifest_patients": len(patients)},
        input_fingerprints=fingerprints, encoder_hash=None, started_at=started,
    )
    lake.ensure()
    lake.mark_dead_runs()
    runlog.write("running")
    counts: dict[str, int] = {}
    changed_tables = []
    try:
        committed = {pid: lake.commit_volume(tmp, pid) for pid, tmp in staged}
        for r in rows:  # the committed group (on an object store, a replacement's version)
            r["volume_path"] = committed.get(r["patient_id"], r["volume_path"])
        for table, df in table_rows.items():
            before = lake.table(table).version()
            if lake.upsert_table(table, df, run_id=run_id) != before:
                changed_tables.append(table)
            counts[table] = len(df)
        if rows:
            lake.upsert_table("patients", pd.DataFrame(rows), run_id=run_id)
            counts["patients"] = len(rows)
    except BaseException as exc:
        runlog.write("failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    runlog.write(
        "ok",
        message=f"{len(rows)} patient(s) ingested, {len(skipped)} unchanged; "
        f"tables updated: {', '.join(changed_tables) or 'none'}",
    )
    summary = IngestSummary(
        run_id=run_id,
        ingested=[r["patient_id"] for r in rows],
        skipped=skipped,
        tables=counts,
        seconds=time.perf_counter() - t0,
    )
    log.debug("%s", summary)
    return summary
