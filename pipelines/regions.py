"""Named tumour sub-regions of a label mask (e.g. BraTS: core = 1,4, whole = 1,2,4, enhancing = 4).

A region set is an ordered tuple of (name, labels); the first region is the lake's primary one
(the one `drlake analyze` takes by default). Parsed from ``--regions "core=1,4 whole=1,2,4"`` or
from a TOML file with a ``[regions]`` table; every label of a mask must belong to some region,
so that a mapping that does not fit the masks is refused rather than silently ignored.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np

from pipelines.exceptions import InputError

__all__ = [
    "DEFAULT_REGION", "MAX_LABEL", "Regions", "check_region_labels", "parse_regions",
    "in_any_region", "read_regions_file", "region_masks", "region_voxel_counts", "stored_labels",
    "volume_regions", "regions_text", "union_labels",
]

#: The region of a binary mask (or of the one label chosen with --label) when none are named.
DEFAULT_REGION = "roi"
#: Labels are stored as uint8 in the lake.
MAX_LABEL = 255

Regions = tuple[tuple[str, tuple[int, ...]], ...]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _label(text: str, where: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InputError(f"{where}: label {text!r} is not an integer") from None
    if not 1 <= value <= MAX_LABEL:
        raise InputError(f"{where}: label {value} is outside 1..{MAX_LABEL} (0 is background)")
    return value


def _checked(pairs: list[tuple[str, list]], where: str) -> Regions:
    if not pairs:
        raise InputError(f"{where}: no region given; write e.g. core=1,4 whole=1,2,4")
    out, seen = [], set()
    for name, labels in pairs:
        name = str(name).strip()
        if not _NAME.fullmatch(name):
            raise InputError(f"{where}: region name {name!r}: use lower-case letters, digits and "
                             "'_', starting with a letter (at most 32 characters)")
        if name in seen:
            raise InputError(f"{where}: region {name!r} is named twice")
        seen.add(name)
        labs = tuple(sorted({_label(v, where) for v in labels}))
        if not labs:
            raise InputError(f"{where}: region {name!r} has no label")
        out.append((name, labs))
    return tuple(out)


def parse_regions(spec: str | list[str] | tuple[str, ...]) -> Regions:
    """Return the region set of a spec such as ``"core=1,4 whole=1,2,4 enhancing=4"``.

    Items are separated by spaces or ';' (or given as a list); each is NAME=LABEL[,LABEL...].
    """
    items = spec if isinstance(spec, list | tuple) else [spec]
    parts = [p for item in items for p in re.split(r"[\s;]+", str(item).strip()) if p]
    pairs = []
    for p in parts:
        if "=" not in p:
            raise InputError(f"--regions: {p!r} is not NAME=LABELS (e.g. core=1,4)")
        name, labels = p.split("=", 1)
        pairs.append((name, [v for v in labels.split(",") if v.strip()]))
    return _checked(pairs, "--regions")


def read_regions_file(path: Path) -> Regions:
    """Return the region set of a TOML file's ``[regions]`` table (name = [labels], in order)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: regions file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a TOML file ({e})") from None
    table = doc.get("regions")
    if not isinstance(table, dict):
        raise InputError(f"{path}: no [regions] table (write e.g. core = [1, 4])")
    pairs = []
    for name, labels in table.items():
        if isinstance(labels, int):
            labels = [labels]
        if not isinstance(labels, list):
            raise InputError(f"{path}: region {name!r} must be a label or a list of labels")
        pairs.append((name, labels))
    return _checked(pairs, str(path))


def regions_text(regions: Regions) -> str:
    """Return the canonical spec of a region set: ``"core=1,4 whole=1,2,4"``."""
    return " ".join(f"{n}={','.join(str(v) for v in labs)}" for n, labs in regions)


def union_labels(regions: Regions) -> tuple[int, ...]:
    """Return the sorted labels used by any region."""
    return tuple(sorted({v for _, labs in regions for v in labs}))


def check_region_labels(present, regions: Regions, where: str) -> None:
    """Raise InputError naming `where` if a non-zero label in `present` belongs to no region."""
    used = set(union_labels(regions))
    stray = sorted(int(v) for v in present if int(v) != 0 and int(v) not in used)
    if stray:
        raise InputError(
            f"{where}: label(s) {', '.join(map(str, stray))} belong to no region "
            f"({regions_text(regions)}); add them to a region or remove them from the mask"
        )


def region_masks(labels: np.ndarray, regions: Regions) -> np.ndarray:
    """Return a (regions, z, y, x) bool stack: voxel in region r if its label is one of r's."""
    lut = np.zeros((len(regions), MAX_LABEL + 1), dtype=bool)  # region x label -> member
    for r, (_, labs) in enumerate(regions):
        lut[r, list(labs)] = True
    return lut[:, np.asarray(labels, dtype=np.uint8)]


def in_any_region(labels: np.ndarray, regions: Regions) -> np.ndarray:
    """Return a (z, y, x) bool mask of the voxels in at least one region (the union of
    `region_masks`). When every non-zero label present belongs to a region (as ingest
    guarantees) this is ``labels != 0``, one vectorised pass instead of a table look-up."""
    labels = np.asarray(labels)
    member = np.zeros(MAX_LABEL + 1, dtype=bool)
    for _, labs in regions:
        member[list(labs)] = True
    nonzero = labels != 0
    present = np.flatnonzero(np.bincount(labels[nonzero].astype(np.intp, copy=False),
                                         minlength=MAX_LABEL + 1))
    if member[present].all():
        return nonzero
    return member[labels.astype(np.uint8, copy=False)]


def region_voxel_counts(labels: np.ndarray, regions: Regions) -> list[int]:
    """Return the number of voxels of each region of a (z, y, x) integer label map."""
    per_label = np.bincount(labels.ravel(), minlength=MAX_LABEL + 1)
    return [int(per_label[list(labs)].sum()) for _, labs in regions]


def stored_labels(arr: np.ndarray, label: int | None, regions: Regions | None,
                  where: str) -> tuple[np.ndarray, Regions]:
    """Return (the mask as stored in the lake, (z, y, x) uint8, and its region set).

    With `regions`, the label map is kept as it is (every non-zero label must belong to a region,
    labels 1..255); otherwise the ROI (0/1, or the voxels of `label`) becomes label 1 of the one
    region ``roi``. Raises InputError naming `where` for a mask that fits neither.
    """
    from pipelines.preprocess import binary_mask

    if regions is None:
        return binary_mask(arr, label, where).astype(np.uint8), ((DEFAULT_REGION, (1,)),)
    values = np.unique(arr)
    if np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values)):
        raise InputError(f"{where}: mask values are not integer labels")
    if values.min() < 0 or values.max() > MAX_LABEL:
        raise InputError(f"{where}: mask labels must lie in 0..{MAX_LABEL}, found "
                         f"{values.min():g}..{values.max():g}")
    check_region_labels(values, regions, where)
    if not np.any(values != 0):
        raise InputError(f"{where}: mask is empty (no voxel of any region)")
    return arr.astype(np.uint8, copy=False), regions


def volume_regions(attrs: dict) -> Regions:
    """Return the region set recorded in a volume group's attributes (``roi=1`` if none is)."""
    recorded = attrs.get("regions")
    if not recorded:
        return ((DEFAULT_REGION, (1,)),)
    return tuple((str(n), tuple(int(v) for v in labs)) for n, labs in recorded.items())
