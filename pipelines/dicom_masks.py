"""DICOM masks: RTSTRUCT ROIs and DICOM SEG segments rasterised onto an image series' voxel grid.

`load_mask(path, reference_image, roi=...)` is the entry point ingest uses (`read_mask` is the same
without the info dict): a label image (NIfTI, NRRD, ... or a DICOM series folder of labels) is
read as it is; an RTSTRUCT or SEG file (or a folder holding exactly one) becomes a 0/1 uint8
image on `reference_image`'s grid.

RTSTRUCT: contour points (patient LPS, mm) are mapped to continuous voxel index with the
reference image's origin, spacing and direction (`world_to_voxel_matrix`), each closed contour is
filled on its slice with `skimage.draw.polygon` (the voxels whose centres lie inside), and the
contours of one slice are combined by XOR (even-odd rule), so inner contours are holes. A contour
lying off a slice plane goes to the nearest slice when it is within `SLICE_TOLERANCE` slice
spacings of it, otherwise it is an error. SEG: read with highdicom, the chosen segment's volume
is placed onto the reference grid by nearest-neighbour resampling (exact where the SEG frames
sit on the image's voxels, as SEGs made from that series do).

ROI and segment names are free text from the file: they appear in error messages (printed to the
user) but are never returned for the lake.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.exceptions import InputError
from pipelines.imageio import dicom_series_files, image_format, read_image, world_to_voxel_matrix

log = logging.getLogger("drlake.dicom_masks")

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
)
# A contour may sit this far (fraction of the slice spacing) from the nearest slice centre plane.
SLICE_TOLERANCE = 0.25
_CLOSED = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")
_ROI_HINT = "choose one with a roi column in the manifest or --roi NAME"


@dataclass(frozen=True)
class DicomMaskFile:
    """A DICOM mask file: kind is "rtstruct" or "seg"."""

    kind: str
    path: Path


# ---- finding the file ------------------------------------------------------------------------
def dicom_kind(path: str | Path) -> str | None:
    """Return "rtstruct" or "seg" if the file is a DICOM RTSTRUCT or SEG, else None.

    Only Modality and SOPClassUID are read; files that are not DICOM give None.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["Modality", "SOPClassUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError):
        return None
    sop = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if sop == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "rtstruct"
    if sop in SEG_SOP_CLASSES or modality == "SEG":
        return "seg"
    return None


def find_dicom_mask(path: str | Path) -> DicomMaskFile | None:
    """Return the RTSTRUCT/SEG file a mask path stands for, or None for a label image.

    A file is one when its header says so; a folder when it holds exactly one RTSTRUCT or SEG
    file (a folder without any is a DICOM label series). Raises InputError for a folder that
    holds several.
    """
    p = Path(path)
    if p.is_dir():
        found = [(f, k) for f in sorted(p.iterdir()) if f.is_file() and (k := dicom_kind(f))]
        if len(found) > 1:
            names = ", ".join(f"{f.name} ({k.upper()})" for f, k in found[:5])
            raise InputError(
                f"{p}: the mask folder holds {len(found)} RTSTRUCT/SEG files ({names}); give "
                "the one file to use as the mask"
            )
        return DicomMaskFile(found[0][1], found[0][0]) if found else None
    if image_format(p) in ("nifti", "nrrd", "mha") or not p.is_file():
        return None
    kind = dicom_kind(p)
    return DicomMaskFile(kind, p) if kind else None


def mask_kind(path: str | Path) -> str:
    """Return the kind of a mask path: "rtstruct", "seg" or "labels" (a label image)."""
    found = find_dicom_mask(path)
    return found.kind if found else "labels"


def image_series_uids(image_path: str | Path | None) -> dict | None:
    """Return {"FrameOfReferenceUID", "SeriesInstanceUID"} of a DICOM image (series folder or
    .dcm file), or None for a non-DICOM image. Only those two attributes are read."""
    import pydicom

    if image_path is None:
        return None
    p = Path(image_path)
    if p.is_dir():
        first = dicom_series_files(p)[0]
    elif image_format(p) == "dicom" and p.is_file():
        first = p
    else:
        return None
    tags = ["FrameOfReferenceUID", "SeriesInstanceUID"]
    ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=tags)
    return {t: str(ds[t].value) if t in ds and ds[t].value else None for t in tags}


# ---- choosing an ROI / segment ----------------------------------------------------------------
def select_name(names: Sequence[str], selector: str | Sequence[str]) -> list[int]:
    """Return the positions in `names` that a selector picks (empty list: no match).

    The selector is an exact name, a list of alternatives (a sequence, or one string split on
    "|"), or a regular expression. Tried in order, the first step that matches wins: the exact
    string; then each alternative in turn, case-insensitively; then the whole selector as a
    case-insensitive regex that must match the entire name.
    """
    names = [str(n) for n in names]
    alternatives = ([str(s) for s in selector] if not isinstance(selector, str)
                    else selector.split("|"))
    alternatives = [a.strip() for a in alternatives if a.strip()]
    whole = selector if isinstance(selector, str) else "|".join(alternatives)
    hits = [i for i, n in enumerate(names) if n == whole]
    if hits:
        return hits
    for alt in alternatives:
        hits = [i for i, n in enumerate(names) if n.strip().casefold() == alt.casefold()]
        if hits:
            return hits
    try:
        pattern = re.compile(whole, re.IGNORECASE)
    except re.error:
        return []
    return [i for i, n in enumerate(names) if pattern.fullmatch(n.strip())]


def _choose(where: str, what: str, names: list[str], selector, numbers: list[int] | None = None
            ) -> int:
    """Return the position of the ROI/segment `selector` picks among `names`, or raise."""
    if isinstance(selector, int):
        selector = str(selector)
    listed = ", ".join(repr(n) for n in names) or "none"
    if numbers is not None:
        listed = ", ".join(f"{n} {name!r}" for n, name in zip(numbers, names, strict=True))
    if selector is None or (isinstance(selector, str) and not selector.strip()):
        if len(names) == 1:
            return 0
        raise InputError(
            f"{where}: the file holds {len(names)} {what}s ({listed}); {_ROI_HINT}"
        )
    if numbers is not None and isinstance(selector, str) and selector.strip().isdigit():
        n = int(selector)
        if n in numbers:
            return numbers.index(n)
        raise InputError(
            f"{where}: no {what} number {n}; the file holds {what}s {listed}; {_ROI_HINT}"
        )
    hits = select_name(names, selector)
    if not hits:
        raise InputError(
            f"{where}: no {what} matches {_shown(selector)}; the file holds {what}s {listed}; "
            f"{_ROI_HINT}"
        )
    if len(hits) > 1:
        dup = ", ".join(repr(names[i]) for i in hits)
        raise InputError(
            f"{where}: {_shown(selector)} matches {len(hits)} {what}s ({dup}); give one exact "
            f"name ({_ROI_HINT})"
        )
    return hits[0]


def _shown(selector) -> str:
    return repr(selector if isinstance(selector, str) else "|".join(map(str, selector)))


# ---- geometry checks --------------------------------------------------------------------------
def _check_references(where: str, image: str, uids: dict | None, frames: set[str],
                      series: set[str]) -> None:
    """Raise InputError if a mask's frame of reference or referenced series is not the image's."""
    if not uids:
        return
    for_uid, series_uid = uids.get("FrameOfReferenceUID"), uids.get("SeriesInstanceUID")
    if for_uid and frames and for_uid not in frames:
        raise InputError(
            f"{where}: the mask refers to another series: its FrameOfReferenceUID "
            f"{', '.join(sorted(frames))} is not the image's ({for_uid}, {image}); give the mask "
            "that was drawn on this image series"
        )
    if series_uid and series and series_uid not in series:
        raise InputError(
            f"{where}: the mask refers to another series: ReferencedSeriesInstanceUID "
            f"{', '.join(sorted(series))} is not the image's SeriesInstanceUID ({series_uid}, "
            f"{image}); give the mask that was drawn on this image series"
        )


# ---- RTSTRUCT ---------------------------------------------------------------------------------
def rasterise_contours(
    contours: Sequence[np.ndarray],
    reference: sitk.Image,
    where: str = "contours",
    slice_tolerance: float = SLICE_TOLERANCE,
) -> np.ndarray:
    """Return the even-odd fill of closed planar contours on the reference grid.

    contours: arrays of shape (n, 3), points in patient LPS mm (x, y, z). Returns a boolean
    (z, y, x) array of the reference image's size: voxels whose centres lie inside an odd number
    of a slice's contours. Each contour goes to the nearest slice if it lies within
    `slice_tolerance` (fraction of the slice spacing) of its plane; otherwise, or outside the
    image's slices, InputError naming `where` and the contour.
    """
    from skimage.draw import polygon

    if reference.GetDimension() != 3:
        raise InputError(f"{where}: the image must be 3D to place contours on it")
    nx, ny, nz = reference.GetSize()
    m = world_to_voxel_matrix(reference)
    dz = float(reference.GetSpacing()[2])
    out = np.zeros((nz, ny, nx), dtype=bool)
    for i, pts in enumerate(contours, start=1):
        pts = np.asarray(pts, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 3 or not np.isfinite(pts).all():
            raise InputError(
                f"{where}: contour {i} has {len(pts)} point(s) or non-finite coordinates; a "
                "closed contour needs at least 3 finite (x, y, z) points"
            )
        idx = pts @ m[:3, :3].T + m[:3, 3]  # continuous (z, y, x) index of each point
        z = idx[:, 0]
        k = int(np.rint(np.median(z)))
        off = float(np.max(np.abs(z - k)))
        if off > slice_tolerance:
            if float(z.max() - z.min()) > 2 * slice_tolerance:
                raise InputError(
                    f"{where}: contour {i} is not in a slice plane of the image (it spans "
                    f"{(z.max() - z.min()) * dz:.2f} mm across slices); the contours were drawn "
                    "on a differently oriented series: give the image series they belong to"
                )
            raise InputError(
                f"{where}: contour {i} lies {off * dz:.2f} mm from the nearest slice plane of "
                f"the image (tolerance {slice_tolerance * dz:.2f} mm); the contours were drawn on "
                "another slice grid: give the image series they belong to"
            )
        if not 0 <= k < nz:
            raise InputError(
                f"{where}: contour {i} lies on slice {k}, outside the image's {nz} slices; "
                "give the image series the contours belong to"
            )
        rr, cc = polygon(idx[:, 1], idx[:, 2], shape=(ny, nx))
        if rr.size:
            r0, c0 = rr.min(), cc.min()
            fill = np.zeros((rr.max() - r0 + 1, cc.max() - c0 + 1), dtype=bool)
            fill[rr - r0, cc - c0] = True
            region = out[k, r0:r0 + fill.shape[0], c0:c0 + fill.shape[1]]
            np.logical_xor(region, fill, out=region)
    return out


def rtstruct_roi_contours(ds, roi, where: str, image: str = "the image",
                          uids: dict | None = None) -> tuple[list[np.ndarray], dict]:
    """Return (closed contours of the chosen ROI as (n, 3) LPS mm arrays, info).

    info: {"roi_number": int, "contours": int} (no free text). Raises InputError listing the
    file's ROI names when `roi` matches none, naming a frame-of-reference or series mismatch
    with `uids` (see `image_series_uids`), or for an ROI without closed contours.
    """
    rois = list(ds.get("StructureSetROISequence", []))
    if not rois:
        raise InputError(f"{where}: the RTSTRUCT holds no ROI (empty StructureSetROISequence)")
    names = [str(r.get("ROIName", "")) for r in rois]
    chosen = rois[_choose(where, "ROI", names, roi)]
    name, number = str(chosen.get("ROIName", "")), int(chosen.get("ROINumber", -1))

    frames = {str(chosen.ReferencedFrameOfReferenceUID)} if chosen.get(
        "ReferencedFrameOfReferenceUID") else set()
    series: set[str] = set()
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in ref.get("RTReferencedStudySequence", []):
            for s in study.get("RTReferencedSeriesSequence", []):
                if s.get("SeriesInstanceUID"):
                    series.add(str(s.SeriesInstanceUID))
        if not frames and ref.get("FrameOfReferenceUID"):
            frames.add(str(ref.FrameOfReferenceUID))
    _check_references(where, image, uids, frames, series)

    items = [c for c in ds.get("ROIContourSequence", [])
             if int(c.get("ReferencedROINumber", -2)) == number]
    contours, skipped = [], 0
    for item in items:
        for c in item.get("ContourSequence", []):
            kind = str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            data = c.get("ContourData")
            if kind not in _CLOSED or not data:
                skipped += 1
                continue
            arr = np.asarray([float(v) for v in data], dtype=float)
            if arr.size % 3:
                raise InputError(
                    f"{where}: ROI {name!r} has a contour with {arr.size} coordinates, not a "
                    "multiple of 3; the file is damaged: export the structure set again"
                )
            contours.append(arr.reshape(-1, 3))
    if not contours:
        what = f" (only {skipped} point/open contour(s))" if skipped else ""
        raise InputError(
            f"{where}: ROI {name!r} (number {number}) has no closed contours{what}; choose "
            f"another ROI ({_ROI_HINT}) or export the structure set again"
        )
    if skipped:
        log.warning("%s: ROI number %d: %d point/open contour(s) ignored", where, number, skipped)
    return contours, {"roi_number": number, "contours": len(contours)}


def rtstruct_mask(path: str | Path, reference: sitk.Image, roi=None,
                  image_path: str | Path | None = None) -> tuple[sitk.Image, dict]:
    """Return (the chosen ROI of an RTSTRUCT file as a 0/1 uint8 image on `reference`'s grid,
    info {"format", "roi_number", "contours"})."""
    import pydicom

    path = Path(path)
    where = str(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types for damaged files
        raise InputError(f"{where}: cannot read RTSTRUCT ({type(exc).__name__}: {exc})") from None
    image = str(image_path) if image_path else "the image"
    contours, info = rtstruct_roi_contours(ds, roi, where, image, image_series_uids(image_path))
    arr = rasterise_contours(contours, reference, where)
    if not arr.any():
        raise InputError(
            f"{where}: the chosen ROI covers no voxel centre of {image} (its contours lie outside "
            "the image or are smaller than a voxel); check that the mask belongs to this image"
        )
    return _on_grid(arr, reference), {"format": "rtstruct", **info}


# ---- SEG --------------------------------------------------------------------------------------
def seg_mask(path: str | Path, reference: sitk.Image, segment=None,
             image_path: str | Path | None = None) -> tuple[sitk.Image, dict]:
    """Return (the chosen segment of a DICOM SEG as a 0/1 uint8 image on `reference`'s grid,
    info {"format", "segment_number"}).

    `segment` is a segment number (int or digits) or a label selector (see `select_name`);
    None picks the only segment. Fractional segments are thresholded at 0.5.
    """
    import highdicom as hd

    path = Path(path)
    where = str(path)
    image = str(image_path) if image_path else "the image"
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom/pydicom raise several types for damaged files
        raise InputError(f"{where}: cannot read DICOM SEG ({type(exc).__name__}: {exc})") from None
    numbers = [int(n) for n in seg.segment_numbers]
    labels = [str(seg.get_segment_description(n).SegmentLabel) for n in numbers]
    if not numbers:
        raise InputError(f"{where}: the SEG holds no segment")
    number = numbers[_choose(where, "segment", labels, segment, numbers)]

    frames = {str(seg.FrameOfReferenceUID)} if seg.get("FrameOfReferenceUID") else set()
    series = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])
              if s.get("SeriesInstanceUID")}
    _check_references(where, image, image_series_uids(image_path), frames, series)

    try:
        vol = seg.get_volume(segment_numbers=[number], combine_segments=False)
    except Exception as exc:  # highdicom raises ValueError/RuntimeError for irregular frames
        raise InputError(
            f"{where}: the SEG's frames do not form a regular volume ({exc}); give a SEG made "
            "on the image series' slices"
        ) from None
    arr = np.asarray(vol.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    fractional = str(seg.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL"
    on = arr >= 0.5 if fractional else arr > 0
    label = labels[numbers.index(number)]
    if not on.any():
        raise InputError(
            f"{where}: segment {number} ({label!r}) is empty (no voxel); choose another segment "
            f"({_ROI_HINT}) or export the SEG again"
        )
    src = vol.with_array(on.astype(np.uint8)).to_simpleitk()
    out = sitk.Resample(src, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                        sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(out).any():
        raise InputError(
            f"{where}: segment {number} ({label!r}) lies outside {image}; check that the SEG "
            "belongs to this image"
        )
    return out, {"format": "seg", "segment_number": number}


# ---- entry point ------------------------------------------------------------------------------
def load_mask(path: str | Path, reference_image: sitk.Image, roi=None,
              image_path: str | Path | None = None) -> tuple[sitk.Image, dict]:
    """Return (mask image, info). Label images are read as they are (info {"format": "labels"},
    `roi` unused); RTSTRUCT/SEG masks become 0/1 uint8 images on `reference_image`'s grid."""
    found = find_dicom_mask(path)
    if found is None:
        return read_image(path), {"format": "labels"}
    if found.kind == "rtstruct":
        return rtstruct_mask(found.path, reference_image, roi, image_path)
    return seg_mask(found.path, reference_image, roi, image_path)


def read_mask(path: str | Path, reference_image: sitk.Image, roi=None,
              image_path: str | Path | None = None) -> sitk.Image:
    """Return the mask at `path`: a label image as read, or the RTSTRUCT ROI / SEG segment
    chosen by `roi` as a 0/1 uint8 image on `reference_image`'s grid (see `load_mask`)."""
    return load_mask(path, reference_image, roi, image_path)[0]


def _on_grid(arr: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Return a (z, y, x) boolean array as a uint8 image with the reference's geometry."""
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(reference)
    return img
