"""Medical image readers: NIfTI, NRRD, MHA/MHD (SimpleITK) and DICOM series (a folder per series).

Every reader returns a SimpleITK image, so geometry (spacing, origin, direction) travels with the
voxels. Arrays come out in (z, y, x) order; spacing and origin stay in ITK's (x, y, z) LPS
convention in the image and are converted once, in `spatial_metadata`.

DICOM de-identification: only the typed header fields in `DICOM_ALLOWED_TAGS` are ever read into
drlake; names, ids, dates, free text, private tags and everything else never leave the source
files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.exceptions import InputError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

# The only DICOM attributes that may reach the lake, each with its type (DICOM PS3.15 basic
# profile): Modality and a few acquisition parameters. No free text (descriptions, protocol
# names, comments), no names, ids, dates or private tags; the geometry comes from the image
# itself (spatial_metadata), the sequence name from the manifest. "code": a DICOM code string
# (upper-case letters, digits, '_', ' '; at most 16 characters); "float": one number.
DICOM_ALLOWED_TAGS: dict[str, str] = {
    "Modality": "code",
    "MRAcquisitionType": "code",
    "MagneticFieldStrength": "float",
    "RepetitionTime": "float",
    "EchoTime": "float",
    "InversionTime": "float",
    "FlipAngle": "float",
    "SliceThickness": "float",
}


def read_image(path: str | Path) -> sitk.Image:
    """Return the image at `path` (a file, or a folder holding one DICOM series).

    Raises InputError naming the file when it is missing, unreadable or truncated.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        if p.is_dir():
            return _read_dicom_series(p)
        if image_format(p) == "nifti":
            return _read_nifti(p)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.LoadPrivateTagsOff()
        return reader.Execute()
    except InputError:
        raise
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"{p}: cannot read image ({_short_itk_message(detail)})") from None


def read_image_information(path: str | Path) -> dict:
    """Return the geometry of an image file without reading its voxels (size, spacing, ...,
    bytes_per_voxel). A DICOM folder: the first slice's header, the number of slices and the
    slice step; raises InputError for uneven slices (see `check_slice_spacing`)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    files = dicom_series_files(p) if p.is_dir() else None
    step = check_slice_spacing(p, files) if files else None
    if image_format(p) == "nifti":
        check_nifti_spacing(p)
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0] if files else str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"{p}: cannot read image ({_short_itk_message(detail)})") from None
    size, spacing = list(reader.GetSize()), list(reader.GetSpacing())
    if files:
        size[2] = len(files)
        spacing[2] = step or spacing[2]
    one_voxel = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(),
                           reader.GetNumberOfComponents())
    return {
        "size": tuple(int(s) for s in size),
        "spacing": tuple(float(s) for s in spacing),
        "origin": tuple(float(s) for s in reader.GetOrigin()),
        "direction": tuple(float(s) for s in reader.GetDirection()),
        "dimension": int(reader.GetDimension()),
        "bytes_per_voxel": int(sitk.GetArrayViewFromImage(one_voxel).nbytes),
    }


def geometry_of(img: sitk.Image) -> dict:
    """Return size, spacing, origin and direction of an image, ITK (x, y, z) order."""
    return {
        "size": tuple(int(s) for s in img.GetSize()),
        "spacing": tuple(float(s) for s in img.GetSpacing()),
        "origin": tuple(float(s) for s in img.GetOrigin()),
        "direction": tuple(float(s) for s in img.GetDirection()),
        "dimension": int(img.GetDimension()),
    }


def _read_nifti(path: Path) -> sitk.Image:
    """Return a NIfTI image: voxels read by nibabel, geometry by ITK (LPS) from the header.

    SimpleITK's NIfTI reader silently turns NaN voxels into 0 and accepts truncated files;
    nibabel reports both, so it reads the voxels (in the file's own index order, the same order
    ITK uses) while ITK converts the qform/sform to its LPS geometry.
    """
    import nibabel as nib

    check_nifti_spacing(path)
    info = sitk.ImageFileReader()
    info.SetFileName(str(path))
    info.ReadImageInformation()
    try:
        nimg = nib.load(str(path))
        data = np.asanyarray(nimg.dataobj)
    except Exception as exc:  # nibabel raises several types for truncated/corrupt data
        raise InputError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3 or tuple(data.shape) != tuple(info.GetSize()[:3]):
        raise InputError(f"{path}: expected a 3D image, got array shape {data.shape}")
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    img.SetSpacing(info.GetSpacing()[:3])
    img.SetOrigin(info.GetOrigin()[:3])
    img.SetDirection(info.GetDirection() if len(info.GetDirection()) == 9 else
                     np.asarray(info.GetDirection()).reshape(4, 4)[:3, :3].ravel().tolist())
    return img


def check_nifti_spacing(path: str | Path) -> None:
    """Raise InputError naming the file and axis if a NIfTI header gives a voxel size of 0.

    ITK and nibabel both replace a 0 in pixdim[1..3] by 1 mm without a word; every resampled
    volume and shape feature would then be wrong, so ingest refuses the file instead. The raw
    header is read (nibabel's checks off), since nibabel's own checks "fix" the value.
    """
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as f:
            raw = f.read(540)
        sizeof_hdr = {int.from_bytes(raw[:4], "big"), int.from_bytes(raw[:4], "little")}
        klass = nib.Nifti2Header if 540 in sizeof_hdr else nib.Nifti1Header
        hdr = klass(binaryblock=raw[: klass.template_dtype.itemsize], check=False)
        pixdim = np.asarray(hdr["pixdim"], dtype=float)[1:4]
        sform = hdr.get_sform(coded=True)[0]
    except Exception:  # unreadable header: the reader itself reports it
        return
    for axis, name in enumerate("xyz"):
        if pixdim[axis] == 0 or not np.isfinite(pixdim[axis]):
            hint = ""
            if sform is not None and np.linalg.norm(sform[:3, axis]) > 0:
                hint = f"; the sform gives {np.linalg.norm(sform[:3, axis]):g} mm"
            raise InputError(
                f"{path}: voxel spacing along {name} is {pixdim[axis]:g} in the header "
                f"(NIfTI pixdim[{axis + 1}]; readers would silently use 1 mm{hint}): write the "
                "true voxel size (mm) into the header, e.g. with nibabel's header.set_zooms, "
                "then ingest again"
            )


def dicom_series_files(folder: str | Path) -> list[str]:
    """Return the files of the one DICOM series in `folder`, in slice order (GDCM's list).

    Other files in the folder (README, .DS_Store, a second series' files) are not in it.
    """
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"{folder}: no DICOM series found in the folder")
    if len(ids) > 1:
        raise InputError(
            f"{folder}: {len(ids)} DICOM series in one folder; put each series in its own folder"
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def dicom_slice_positions(files: list[str]) -> np.ndarray | None:
    """Return each file's position (mm) along the slice normal, from ImagePositionPatient and
    ImageOrientationPatient (None if a file lacks them)."""
    import pydicom

    tags = ["ImagePositionPatient", "ImageOrientationPatient"]
    ipp, iop = [], None
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=tags)
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            return None
        ipp.append([float(v) for v in ds.ImagePositionPatient])
        iop = iop or [float(v) for v in ds.ImageOrientationPatient]
    normal = np.cross(iop[:3], iop[3:])
    return np.asarray(ipp) @ normal


def check_slice_spacing(folder: str | Path, files: list[str], rtol: float = 0.01) -> float | None:
    """Return the slice step (mm) of a DICOM series, or raise InputError naming the gaps.

    A missing (or duplicated) slice makes ITK stack the others as if evenly spaced, with only a
    warning: every slice after the gap lands in the wrong place. Steps must agree within `rtol`.
    """
    pos = dicom_slice_positions(files)
    if pos is None or len(pos) < 2:
        return None
    order = np.argsort(pos, kind="stable")
    p = pos[order]
    steps = np.diff(p)
    step = float(np.median(steps))
    if step <= 1e-6:
        raise InputError(
            f"{folder}: {len(p)} DICOM slices share {len(np.unique(p.round(3)))} position(s): "
            "the folder holds several volumes (echoes, time points) in one series; put one "
            "volume per folder"
        )
    bad = np.flatnonzero(np.abs(steps - step) > rtol * step)
    if bad.size:
        names = [Path(files[i]).name for i in order]
        gaps = "; ".join(
            f"{p[i]:.2f} -> {p[i + 1]:.2f} mm ({names[i]} -> {names[i + 1]})" for i in bad[:3]
        )
        more = f" and {bad.size - 3} more" if bad.size > 3 else ""
        raise InputError(
            f"{folder}: DICOM slices are not evenly spaced: the step is {step:.4g} mm but slice "
            f"positions jump {gaps}{more}; a slice is missing or duplicated: complete the "
            "series (or remove the extra files) and ingest again"
        )
    return step


def _read_dicom_series(folder: Path) -> sitk.Image:
    files = dicom_series_files(folder)
    check_slice_spacing(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOff()  # no header dictionary in memory: nothing to leak
    reader.LoadPrivateTagsOff()
    return reader.Execute()


def dicom_allowed_header(path: str | Path) -> dict:
    """Return every DICOM_ALLOWED_TAGS field of a DICOM series folder's first file (or of one
    .dcm file), converted to its type: str for codes, float (mm, ms, T, degrees as DICOM gives
    them) for numbers, None (JSON null) when absent, empty or malformed.

    Only these attributes are parsed (pydicom `specific_tags`): free text and private tags are
    never read, so they cannot reach the result.
    """
    import pydicom

    path = Path(path)
    # a folder: the series' own files, not a README or .DS_Store
    first = dicom_series_files(path)[0] if path.is_dir() else path
    ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=list(DICOM_ALLOWED_TAGS))
    out: dict[str, str | float | None] = {}
    for tag, kind in DICOM_ALLOWED_TAGS.items():
        value = ds[tag].value if tag in ds else None
        out[tag] = _dicom_code(value) if kind == "code" else _dicom_float(value)
    return out


def _dicom_code(value) -> str | None:
    """Return a DICOM code string (CS) value, or None if empty, multi-valued or not a code."""
    import re

    if value is None or not isinstance(value, str):
        return None
    text = value.strip()
    return text if re.fullmatch(r"[A-Z0-9_ ]{1,16}", text) else None


def _dicom_float(value) -> float | None:
    """Return a single-valued DICOM number (DS, IS, FD, ...) as a finite float, else None."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) == 1 else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def image_format(path: str | Path) -> str:
    """Return the format name of an image path: nifti, nrrd, mha, dicom."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() == ".dcm":
        return "dicom"
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith((".mha", ".mhd")):
        return "mha"
    return "other"


def to_array(img: sitk.Image) -> np.ndarray:
    """Return the voxels of an image as a (z, y, x) numpy array (a copy)."""
    return sitk.GetArrayFromImage(img)


def world_to_voxel_matrix(img: sitk.Image) -> np.ndarray:
    """Return the 4x4 matrix mapping LPS world mm (x, y, z, 1) to array index (z, y, x, 1).

    The array index is continuous: voxel centres sit at integer indices.
    """
    spacing = np.asarray(img.GetSpacing(), dtype=float)
    origin = np.asarray(img.GetOrigin(), dtype=float)
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    # world = origin + D @ diag(spacing) @ ijk  (ijk in ITK x, y, z order)
    voxel_to_world = direction @ np.diag(spacing)
    inv = np.linalg.inv(voxel_to_world)
    m_xyz = np.eye(4)
    m_xyz[:3, :3] = inv
    m_xyz[:3, 3] = -inv @ origin
    reorder = np.eye(4)[[2, 1, 0, 3]]  # (i, j, k) -> (k, j, i) = (z, y, x)
    return reorder @ m_xyz


def spatial_metadata(img: sitk.Image) -> dict:
    """Return the JSON-able spatial metadata of an image.

    spacing_xyz, origin_xyz (mm, LPS) and direction (row-major 3x3) in ITK order; spacing_zyx in
    array order; world_to_voxel as a 4x4 nested list (see `world_to_voxel_matrix`).
    """
    sp = [float(s) for s in img.GetSpacing()]
    return {
        "spacing_xyz": sp,
        "spacing_zyx": sp[::-1],
        "origin_xyz": [float(s) for s in img.GetOrigin()],
        "direction": [float(s) for s in img.GetDirection()],
        "shape_zyx": [int(s) for s in img.GetSize()][::-1],
        "world_to_voxel": world_to_voxel_matrix(img).tolist(),
        "world_frame": "LPS (ITK physical space), mm",
    }


def _short_itk_message(detail: str) -> str:
    """Return the informative tail of an ITK exception text (without source file paths)."""
    for marker in ("Description:", "description:"):
        if marker in detail:
            return detail.split(marker, 1)[1].strip()[:300]
    return detail[-300:]
