"""The IBSI 1 image-processing chain (reference manual chapter 2) as one frozen, hashed object.

:class:`ImageProcessing` holds every setting from interpolation to discretisation and the
texture aggregations; :func:`process` applies the chain to a SimpleITK image + ROI mask and
returns the image, the **morphological** mask (G5KJ: interpolated ROI, never re-segmented) and
the **intensity** mask (SEFI: re-segmented), plus one dict per step applied, for the run log.
The order is IBSI's: interpolation (2.3, on the "align grid centres" grid 3WE3, nearest-value
extrapolation), rounding of intensities, ROI interpolation with a partial-volume threshold
(2.3), range and outlier re-segmentation (2.5, intersected), then discretisation (2.7) which
:func:`pipelines.features.extract.compute_features` does from :meth:`feature_kwargs`.

Settings come from a named preset (``pipelines/presets/*.toml``), a TOML/YAML file
(:func:`load_settings`), or a PyRadiomics parameter file (:func:`from_pyradiomics`).
"""

from __future__ import annotations

import math
import tomllib
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.exceptions import InputError
from pipelines.features.extract import AGGREGATIONS, REGISTRY
from pipelines.lake import canonical_json, sha256_text

__all__ = ["ImageProcessing", "Processed", "process", "ibsi_grid", "resample",
           "interpolate_mask", "resegment", "load_settings", "from_pyradiomics",
           "shipped_presets", "PRESET_DIR", "AGGREGATIONS", "INTERPOLATORS"]

PRESET_DIR = Path(__file__).resolve().parent / "presets"

#: Interpolator names -> SimpleITK interpolators (IBSI 2.3: nearest, (tri)linear, cubic spline).
INTERPOLATORS = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear,
                 "bspline": sitk.sitkBSpline}
_DISCRETISATIONS = ("fbn", "fbs")
_IVH_METHODS = ("texture", "none", "fbn", "fbs")


def _opt_float(v, where: str) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be a number or empty, got {v!r}") from None
    if math.isnan(f):
        raise InputError(f"{where} must not be NaN")
    return f


@dataclass(frozen=True)
class ImageProcessing:
    """Every IBSI image-processing and feature setting of a quantification (hashed).

    spacing: target voxel size (x, y, z) in mm, an entry None keeps that axis (in-plane only
    resampling: ``(2, 2, None)``); None: no interpolation. interpolator: "nearest", "linear"
    or "bspline" (cubic). round_intensities: round to the nearest integer after
    interpolation (CT HU). mask_interpolator: "linear" (then ``>= mask_threshold``, partial
    volume) or "nearest". resegment_range: (lower, upper) in image units, either None for a
    half-open range. outlier_sigma: drop intensities beyond mean +- sigma SD of the ROI.
    discretisation "fbn" (bin_count bins over the ROI range) or "fbs" (bin_size from the
    re-segmentation lower bound, else the ROI minimum). ivh: "texture" (the texture levels),
    "none" (discrete intensities, w = 1), "fbn" (ivh_bin_count) or "fbs" (ivh_bin_size).
    aggregations: texture aggregations (:data:`AGGREGATIONS`). families: feature families
    (``pipelines.features.extract.ALL_FAMILIES`` plus "morph_intensity"; "all": every one).
    ``name`` labels the settings and is not hashed.
    """

    name: str = "custom"
    spacing: tuple[float | None, float | None, float | None] | None = None
    interpolator: str = "linear"
    round_intensities: bool = False
    mask_interpolator: str = "linear"
    mask_threshold: float = 0.5
    resegment_range: tuple[float | None, float | None] | None = None
    outlier_sigma: float | None = None
    discretisation: str = "fbn"
    bin_count: int | None = 32
    bin_size: float | None = None
    ivh: str = "texture"
    ivh_bin_count: int | None = None
    ivh_bin_size: float | None = None
    aggregations: tuple[str, ...] = ("3D, averaged",)
    families: tuple[str, ...] = ("firstorder", "glcm", "glszm", "ngtdm", "shape")

    def __post_init__(self):  # noqa: C901 - one check per setting, each with its own message
        put = object.__setattr__
        if self.spacing is not None:
            sp = tuple(self.spacing)
            if len(sp) != 3:
                raise InputError(f"settings {self.name}: spacing is (x, y, z) mm, got {sp!r}")
            sp = tuple(_opt_float(s, f"settings {self.name}: spacing") for s in sp)
            if any(s is not None and not s > 0 for s in sp):
                raise InputError(f"settings {self.name}: spacing must be > 0 mm, got {sp!r}")
            put(self, "spacing", None if all(s is None for s in sp) else sp)
        for key in ("interpolator", "mask_interpolator"):
            if getattr(self, key) not in INTERPOLATORS:
                raise InputError(f"settings {self.name}: {key} must be one of "
                                 f"{tuple(INTERPOLATORS)}, got {getattr(self, key)!r}")
        if self.mask_interpolator == "bspline":
            raise InputError(f"settings {self.name}: mask_interpolator must be nearest or "
                             "linear (IBSI 2.3: a spline gives no meaningful mask)")
        if not 0.0 < float(self.mask_threshold) <= 1.0:
            raise InputError(f"settings {self.name}: mask_threshold must be in (0, 1], got "
                             f"{self.mask_threshold!r}")
        put(self, "mask_threshold", float(self.mask_threshold))
        if self.resegment_range is not None:
            rr = tuple(self.resegment_range)
            if len(rr) != 2:
                raise InputError(f"settings {self.name}: resegment_range is [lower, upper]")
            lo, hi = (_opt_float(v, f"settings {self.name}: resegment_range") for v in rr)
            if lo is not None and hi is not None and lo > hi:
                raise InputError(f"settings {self.name}: resegment_range lower {lo} > upper {hi}")
            put(self, "resegment_range", None if lo is None and hi is None else (lo, hi))
        put(self, "outlier_sigma", _opt_float(self.outlier_sigma, "outlier_sigma"))
        if self.outlier_sigma is not None and not self.outlier_sigma > 0:
            raise InputError(f"settings {self.name}: outlier_sigma must be > 0")
        if self.discretisation not in _DISCRETISATIONS:
            raise InputError(f"settings {self.name}: discretisation must be fbn or fbs, got "
                             f"{self.discretisation!r}")
        self._check_bins("bin_count", "bin_size", self.discretisation)
        if self.ivh not in _IVH_METHODS:
            raise InputError(f"settings {self.name}: ivh must be one of {_IVH_METHODS}")
        if self.ivh in _DISCRETISATIONS:
            self._check_bins("ivh_bin_count", "ivh_bin_size", self.ivh)
        else:
            put(self, "ivh_bin_count", None)
            put(self, "ivh_bin_size", None)
        aggs = (self.aggregations,) if isinstance(self.aggregations, str) else self.aggregations
        put(self, "aggregations", tuple(dict.fromkeys(aggs)))
        bad = [a for a in self.aggregations if a not in AGGREGATIONS]
        if bad or not self.aggregations:
            raise InputError(f"settings {self.name}: aggregations {bad or '[]'}; choose from "
                             f"{AGGREGATIONS}")
        fams = (self.families,) if isinstance(self.families, str) else tuple(self.families)
        if fams == ("all",):  # every family, intensity morphology included
            fams = tuple(REGISTRY)
        put(self, "families", tuple(dict.fromkeys(fams)))
        unknown = [f for f in self.families if f not in REGISTRY]
        if unknown or not self.families:
            raise InputError(f"settings {self.name}: unknown feature families {unknown or '[]'};"
                             f" choose from {tuple(REGISTRY)}")

    def _check_bins(self, count_key: str, size_key: str, method: str) -> None:
        """Keep the bin setting of ``method`` (fbn: count, fbs: size), drop the other."""
        put = object.__setattr__
        if method == "fbn":
            n = getattr(self, count_key)
            if n is None or int(n) != n or n < 1:
                raise InputError(f"settings {self.name}: {count_key} must be an integer >= 1 "
                                 f"for fixed bin number, got {n!r}")
            put(self, count_key, int(n))
            put(self, size_key, None)
        else:
            w = _opt_float(getattr(self, size_key), size_key)
            if w is None or not (w > 0 and math.isfinite(w)):
                raise InputError(f"settings {self.name}: {size_key} must be > 0 for fixed bin "
                                 f"size, got {getattr(self, size_key)!r}")
            put(self, size_key, w)
            put(self, count_key, None)

    def as_dict(self) -> dict:
        """Return the settings as plain JSON-able data (lists for tuples), name included."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @property
    def sha256(self) -> str:
        """Hex sha256 of the canonical JSON of every setting but the name."""
        d = self.as_dict()
        d.pop("name")
        return sha256_text(canonical_json(d))

    @property
    def texture_levels(self) -> dict:
        """Return compute_features' discretisation keywords (bin_count / bin_size, min_value)."""
        lower = self.resegment_range[0] if self.resegment_range else None
        if self.discretisation == "fbs":
            return {"bin_count": None, "bin_size": self.bin_size, "min_value": lower}
        return {"bin_count": self.bin_count, "bin_size": None, "min_value": None}

    @property
    def ivh_spec(self) -> dict | None:
        """Return compute_features' ``ivh`` argument (None: IVH on the texture levels)."""
        if self.ivh == "texture":
            return None
        return {"method": self.ivh, "bin_count": self.ivh_bin_count,
                "bin_size": self.ivh_bin_size, "range": self.resegment_range}

    def with_options(self, **options) -> ImageProcessing:
        """Return a copy with the options that are not None replaced (CLI over preset)."""
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - {f.name for f in fields(self)})
        if unknown:
            raise InputError(f"unknown settings {unknown}")
        if "bin_size" in given and "discretisation" not in given:
            given["discretisation"] = "fbs"
        if "bin_count" in given and "discretisation" not in given:
            given["discretisation"] = "fbn"
        if "ivh_bin_size" in given and "ivh" not in given:
            given["ivh"] = "fbs"
        if "ivh_bin_count" in given and "ivh" not in given:
            given["ivh"] = "fbn"
        return replace(self, **given)


# --------------------------------------------------------------------------- the chain


@dataclass(frozen=True)
class Processed:
    """The outcome of :func:`process`: arrays in (z, y, x) order, spacing (dz, dy, dx) mm."""

    image: np.ndarray  # float64
    morph_mask: np.ndarray  # bool, the interpolated ROI (G5KJ)
    intensity_mask: np.ndarray  # bool, the re-segmented ROI (SEFI)
    spacing: tuple[float, float, float]
    steps: tuple[dict, ...]


def ibsi_grid(image: sitk.Image, spacing) -> sitk.Image:
    """Return an empty reference image on the IBSI "align grid centres" grid (3WE3).

    ``spacing``: (x, y, z) mm, an entry None keeps that axis' spacing and size. Per axis
    ``n_b = ceil(n_a s_a / s_b)`` and the origin moves by ``(s_a (n_a - 1) - s_b (n_b - 1)) / 2``
    along the axis' direction, so both grids share their centre.
    """
    s_a = np.array(image.GetSpacing(), dtype=np.float64)
    n_a = np.array(image.GetSize(), dtype=np.int64)
    s_b = np.array([a if b is None else float(b) for a, b in zip(s_a, spacing, strict=True)])
    n_b = np.array([a if b is None else max(1, math.ceil(a * sa / b - 1e-9))
                    for a, sa, b in zip(n_a, s_a, spacing, strict=True)], dtype=np.int64)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    shift = (s_a * (n_a - 1) - s_b * (n_b - 1)) / 2.0
    ref = sitk.Image([int(n) for n in n_b], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in s_b])
    ref.SetOrigin([float(v) for v in np.array(image.GetOrigin()) + direction @ shift])
    ref.SetDirection(image.GetDirection())
    return ref


def resample(image: sitk.Image, grid: sitk.Image, interpolator: str) -> sitk.Image:
    """Return ``image`` as float64 on ``grid`` with nearest-value extrapolation (IBSI 2.3).

    ``interpolator``: a key of :data:`INTERPOLATORS`. Points outside the source take the
    value of the nearest source voxel (not a constant), as IBSI asks of the padded border.
    """
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(grid)
    f.SetInterpolator(INTERPOLATORS[interpolator])
    f.SetOutputPixelType(sitk.sitkFloat64)
    f.SetUseNearestNeighborExtrapolator(True)
    f.SetTransform(sitk.Transform())
    return f.Execute(sitk.Cast(image, sitk.sitkFloat64))


def interpolate_mask(mask: sitk.Image, grid: sitk.Image, interpolator: str,
                     threshold: float) -> np.ndarray:
    """Return the ROI on ``grid`` as a bool (z, y, x) array: ``R_interp >= threshold`` (IBSI).

    ``mask``: 0/1 image; linear interpolation gives partial-volume fractions, binarised at the
    partial-volume threshold; nearest needs no threshold.
    """
    arr = sitk.GetArrayFromImage(resample(mask, grid, interpolator))
    return arr >= threshold - 1e-9 if interpolator != "nearest" else arr > 0.5


def resegment(image: np.ndarray, roi: np.ndarray, value_range=None,
              sigma: float | None = None) -> tuple[np.ndarray, list[dict]]:
    """Return (intensity mask, steps): the ROI re-segmented by range and outliers (IBSI 2.5).

    ``value_range``: (lower, upper), None for an open side (USB3); ``sigma``: keep voxels within
    mean +- sigma SD of the ROI's intensities (population SD; outlier filtering, IBSI 2.5). The
    two masks are intersected, as the manual combines re-segmentation methods.
    """
    keep = roi.copy()
    steps: list[dict] = []
    if value_range is not None:
        lo, hi = value_range
        if lo is not None:
            keep &= image >= lo
        if hi is not None:
            keep &= image <= hi
        steps.append({"step": "resegment_range", "range": [lo, hi],
                      "voxels": int(keep.sum())})
    if sigma is not None:
        values = image[roi]
        mu, sd = float(values.mean()), float(values.std())
        lo, hi = mu - sigma * sd, mu + sigma * sd
        keep &= (image >= lo) & (image <= hi)
        steps.append({"step": "outlier_filter", "sigma": sigma, "range": [lo, hi],
                      "voxels": int(keep.sum())})
    return keep, steps


def process(image: sitk.Image, roi: sitk.Image, settings: ImageProcessing,
            where: str = "image") -> Processed:
    """Return the processed image and its two masks, with the steps applied (IBSI chapter 2).

    ``image``: any scalar SimpleITK image; ``roi``: 0/1 image on the same grid. Raises InputError
    naming ``where`` when the ROI is empty after interpolation or re-segmentation.
    """
    steps: list[dict] = [{"step": "input", "size": list(image.GetSize()),
                          "spacing_mm": list(image.GetSpacing())}]
    if settings.spacing is not None:
        grid = ibsi_grid(image, settings.spacing)
        out = resample(image, grid, settings.interpolator)
        arr = sitk.GetArrayFromImage(out)
        steps.append({"step": "interpolate_image", "grid": "align grid centres",
                      "interpolator": settings.interpolator, "extrapolation": "nearest",
                      "size": list(grid.GetSize()), "spacing_mm": list(grid.GetSpacing())})
        morph = interpolate_mask(roi, grid, settings.mask_interpolator,
                                 settings.mask_threshold)
        steps.append({"step": "interpolate_mask", "interpolator": settings.mask_interpolator,
                      "partial_volume_threshold": settings.mask_threshold,
                      "voxels": int(morph.sum())})
        spacing_xyz = grid.GetSpacing()
    else:
        arr = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat64))
        morph = sitk.GetArrayFromImage(roi) > 0
        spacing_xyz = image.GetSpacing()
    if settings.round_intensities:
        arr = np.rint(arr)
        steps.append({"step": "round_intensities", "to": "nearest integer"})
    if not morph.any():
        raise InputError(f"{where}: the ROI is empty after interpolation; use a finer spacing "
                         "or a lower mask_threshold")
    inten, rs = resegment(arr, morph, settings.resegment_range, settings.outlier_sigma)
    steps.extend(rs)
    if not inten.any():
        raise InputError(f"{where}: no ROI voxel is left after re-segmentation "
                         f"(range {settings.resegment_range}, sigma {settings.outlier_sigma}); "
                         "widen resegment_range")
    d = settings.texture_levels
    steps.append({"step": "discretise", "method": settings.discretisation,
                  "bin_count": d["bin_count"], "bin_size": d["bin_size"],
                  "min_value": d["min_value"], "ivh": settings.ivh_spec})
    spacing = tuple(float(s) for s in reversed(spacing_xyz))
    return Processed(arr, morph, inten, spacing, tuple(steps))


# --------------------------------------------------------------------------- settings files


def shipped_presets() -> list[str]:
    """Return the names of the presets that ship with drlake (``pipelines/presets``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _read_document(path: Path) -> dict:
    """Return a parsed TOML / YAML / JSON settings document; InputError naming the file."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(f"{path}: settings file not found; give a file or a preset name "
                         f"({', '.join(shipped_presets())})") from None
    try:
        if path.suffix.lower() == ".toml":
            doc = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            doc = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            raise InputError(f"{path}: a settings file is .toml, .yaml/.yml or .json")
    except InputError:
        raise
    except Exception as e:  # each parser raises its own type; all mean "unreadable"
        raise InputError(f"{path}: cannot read the settings ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: settings must be a table of keys (got {type(doc).__name__})")
    return doc


#: Sections a settings file may group its keys in (flattened on reading).
_SECTIONS = ("interpolation", "resegmentation", "discretisation", "texture", "features")


def settings_from_dict(doc: dict, where: str) -> ImageProcessing:
    """Return the settings of a parsed document: top-level keys or keys in :data:`_SECTIONS`."""
    flat: dict = {}
    for k, v in doc.items():
        if k in _SECTIONS and isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    if "pyradiomics" in flat or "setting" in flat or "imageType" in flat:
        return from_pyradiomics(doc, where)
    known = {f.name for f in fields(ImageProcessing)}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise InputError(f"{where}: unknown settings {unknown}; known: {sorted(known)}")
    flat.setdefault("name", Path(where).stem)
    for key in ("spacing", "resegment_range"):
        if isinstance(flat.get(key), list):  # TOML has no null: "none" / "inf" mean open
            flat[key] = tuple(None if (isinstance(v, str) and v.lower() in ("none", "null"))
                              or (isinstance(v, float) and math.isinf(v)) else v
                              for v in flat[key])
    try:
        return ImageProcessing(**flat)
    except TypeError as e:
        raise InputError(f"{where}: {e}") from None
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def load_settings(ref: str | Path | None) -> ImageProcessing:
    """Return the settings named by a shipped preset name or a settings file path.

    None gives the default preset "paper". A PyRadiomics parameter file (keys ``setting``,
    ``imageType``, ``featureClass``) is recognised and read with :func:`from_pyradiomics`.
    """
    ref = "paper" if ref is None else str(ref)
    shipped = PRESET_DIR / f"{ref}.toml"
    path = shipped if shipped.exists() else Path(ref)
    if not path.exists() and path.suffix == "":
        raise InputError(f"unknown settings preset {ref!r}; choose from "
                         f"{', '.join(shipped_presets())} or give a .toml/.yaml file")
    return settings_from_dict(_read_document(path), str(path))


# --------------------------------------------------------------------------- PyRadiomics

#: PyRadiomics ``featureClass`` names -> drlake families.
_PYRAD_CLASSES = {"firstorder": ("firstorder",), "shape": ("shape",), "glcm": ("glcm",),
                  "glrlm": ("glrlm",), "glszm": ("glszm",), "gldm": ("ngldm",),
                  "ngtdm": ("ngtdm",)}
_PYRAD_INTERP = {"sitkNearestNeighbor": "nearest", "sitkLinear": "linear",
                 "sitkBSpline": "bspline"}
#: PyRadiomics setting keys without an IBSI meaning drlake follows (ignored with a warning).
_PYRAD_IGNORED = ("label", "additionalInfo", "enableCExtensions", "minimumROIDimensions",
                  "minimumROISize", "geometryTolerance", "correctMask", "preCrop", "padDistance",
                  "voxelArrayShift", "symmetricalGLCM", "weightingNorm", "distances",
                  "gldm_a", "normalize", "normalizeScale", "removeOutliers", "label_channel",
                  "resegmentShape")


def from_pyradiomics(doc: dict, where: str = "pyradiomics parameters") -> ImageProcessing:
    """Return the settings of a PyRadiomics parameter file (its keys with an IBSI meaning).

    Read: ``setting``: resampledPixelSpacing (0 keeps an axis), interpolator, binWidth,
    binCount, resegmentRange (two values: range; one: lower bound), resegmentMode
    ("absolute"; "sigma" -> outlier_sigma), force2D (2D aggregation); ``featureClass``
    (firstorder, shape, glcm, glrlm, glszm, gldm -> ngldm, ngtdm). Image types other than
    Original, non-IBSI settings such as ``normalize``, a gldm_a above 0 or ``distances`` other
    than [1] raise InputError; keys without an IBSI meaning are ignored with a warning.
    """
    setting = dict(doc.get("setting") or {})
    kw: dict = {"name": Path(where).stem, "mask_interpolator": "nearest"}
    unsupported = []
    images = doc.get("imageType") or {"Original": {}}
    if set(images) - {"Original"}:
        unsupported.append(f"imageType {sorted(set(images) - {'Original'})} (use drlake run "
                           "--encoder filters:... for filtered images)")
    sp = setting.pop("resampledPixelSpacing", None)
    if sp:
        kw["spacing"] = tuple(None if float(s) == 0 else float(s) for s in sp)
    interp = setting.pop("interpolator", "sitkBSpline")
    if interp not in _PYRAD_INTERP:
        unsupported.append(f"interpolator {interp!r} (drlake: {sorted(_PYRAD_INTERP)})")
    else:
        kw["interpolator"] = _PYRAD_INTERP[interp]
    if "binCount" in setting:
        kw.update(discretisation="fbn", bin_count=setting.pop("binCount"))
        setting.pop("binWidth", None)
    else:
        kw.update(discretisation="fbs", bin_size=setting.pop("binWidth", 25))
    rr = setting.pop("resegmentRange", None)
    mode = setting.pop("resegmentMode", "absolute")
    if rr:
        rr = [float(v) for v in rr] + [None] * (2 - len(rr))
        if mode == "absolute":
            kw["resegment_range"] = tuple(rr)
        elif mode == "sigma" and rr[1] is not None and rr[0] == -rr[1] and rr[1] > 0:
            kw["outlier_sigma"] = rr[1]
        else:
            unsupported.append(f"resegmentRange {rr} with resegmentMode {mode!r} (drlake: "
                               "absolute, or sigma with one value / a symmetric pair)")
    if setting.pop("force2D", False):
        dim = int(setting.pop("force2Ddimension", 0))
        if dim != 0:
            unsupported.append(f"force2Ddimension {dim} (drlake: 0, axial slices)")
        kw["aggregations"] = ("2D, averaged",)
    else:
        setting.pop("force2Ddimension", None)
    if setting.get("normalize"):
        unsupported.append("normalize (intensity normalisation is not an IBSI 1 step)")
    if float(setting.get("gldm_a", 0)) != 0:
        unsupported.append(f"gldm_a {setting['gldm_a']} (drlake's NGLDM coarseness is 0)")
    if list(setting.get("distances", [1])) != [1]:
        unsupported.append(f"distances {setting['distances']} (drlake: distance 1)")
    if unsupported:
        raise InputError(f"{where}: unsupported PyRadiomics settings: " + "; ".join(unsupported))
    ignored = sorted(k for k in setting if k in _PYRAD_IGNORED)
    other = sorted(k for k in setting if k not in _PYRAD_IGNORED)
    if other:
        raise InputError(f"{where}: unknown PyRadiomics settings {other}")
    if ignored:
        warnings.warn(f"{where}: PyRadiomics settings without an IBSI meaning in drlake, "
                      f"ignored: {ignored}", stacklevel=2)
    classes = doc.get("featureClass")
    if classes:
        bad = sorted(set(classes) - set(_PYRAD_CLASSES))
        if bad:
            raise InputError(f"{where}: unsupported featureClass {bad} "
                             f"(drlake: {sorted(_PYRAD_CLASSES)})")
        kw["families"] = tuple(f for c in classes for f in _PYRAD_CLASSES[c])
    try:
        return ImageProcessing(**kw)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


# --------------------------------------------------------------------------- command-line options


def _parse_numbers(text: str | None, n: int, option: str) -> tuple | None:
    """Return n numbers (None for "none" or an empty entry) of a comma-separated option."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != n:
        raise InputError(f"{option} takes {n} comma-separated values, got {text!r}")
    out = []
    for p in parts:
        if p.lower() in ("", "none", "null", "inf", "-inf"):
            out.append(None)
            continue
        try:
            out.append(float(p))
        except ValueError:
            raise InputError(f"{option}: {p!r} is not a number (use 'none' to leave it open)"
                             ) from None
    return tuple(out)


def settings_from_options(ref: str | Path | None = None, *, resample: float | None = None,
                          spacing: str | None = None, resegment_range: str | None = None,
                          families: str | None = None, aggregations=None,
                          **options) -> ImageProcessing:
    """Return the preset / file ``ref`` (default "paper") with command-line options over it.

    ``resample``: isotropic spacing (mm); ``spacing``: "x,y,z" mm ("none" keeps an axis);
    ``resegment_range``: "lower,upper" (an empty side is open); ``families``: comma-separated
    or "all" (every family, intensity morphology included); ``aggregations``: a list of
    :data:`AGGREGATIONS` words ("averaged" / "merged": the 3D ones). Other keywords are
    :class:`ImageProcessing` fields; None means "not given" (the preset's value stays).
    """
    from pipelines.features.extract import ALL_FAMILIES

    base = load_settings(ref)
    if resample is not None and spacing is not None:
        raise InputError("give either --resample or --spacing, not both")
    if resample is not None:
        options["spacing"] = (float(resample),) * 3
    elif spacing is not None:
        options["spacing"] = _parse_numbers(spacing, 3, "--spacing")
    if resegment_range is not None:
        options["resegment_range"] = _parse_numbers(resegment_range, 2, "--resegment-range")
    if families is not None:
        fams = [f.strip() for f in families.split(",") if f.strip()]
        options["families"] = ((*ALL_FAMILIES, "morph_intensity") if fams == ["all"]
                               else tuple(fams))
    if aggregations:
        words = {"averaged": "3D, averaged", "merged": "3D, merged"}
        options["aggregations"] = tuple(words.get(a, a) for a in aggregations)
    if options.get("bin_count") is not None and options.get("bin_size") is not None:
        raise InputError("give either --bin-count or --bin-size, not both")
    return base.with_options(**options)
