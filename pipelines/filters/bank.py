"""The filter registry and filter banks: a filter name + parameter dict -> a frozen, hashed spec
that applies one IBSI 2 filter; a bank is an ordered tuple of specs whose responses are maps.

Every registered filter lists its parameters with their kinds and defaults; a spec fills in the
defaults, coerces values to their kind (so ``sigma_mm: 1`` and ``1.0`` hash the same), refuses
unknown names with the allowed ones listed, and dry-runs the filter on a tiny volume so that bad
values fail when the bank is read, not on the fiftieth patient. The hash is sha256 of the
canonical JSON of ``{"filter": name, "params": {...}}`` (pipelines.lake.canonical_json).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipelines.exceptions import InputError
from pipelines.filters.gabor import gabor_filter
from pipelines.filters.laws import laws_filter
from pipelines.filters.log import log_filter
from pipelines.filters.mean import mean_filter
from pipelines.filters.riesz import riesz_log, riesz_simoncelli
from pipelines.filters.simoncelli import simoncelli_filter
from pipelines.filters.wavelets import wavelet_filter
from pipelines.lake import canonical_json, sha256_text


@dataclass(frozen=True)
class FilterEntry:
    """A registered filter: its function, parameters (name -> (kind, default)), spacing use."""

    function: Callable[..., np.ndarray]
    params: Mapping[str, tuple[str, object]]
    uses_spacing: bool
    section: str


_REQUIRED = object()

#: filter name -> entry; kinds: int, float, str, bool, angle (float radians), order (3 ints),
#: planes (tuple of plane names), and "?"-suffixed kinds that also accept None
REGISTRY: dict[str, FilterEntry] = {
    "mean": FilterEntry(mean_filter, {
        "support": ("int", 15), "boundary": ("str", "zero"), "plane": ("str?", None),
    }, False, "IBSI 2 manual: mean"),
    "log": FilterEntry(log_filter, {
        "sigma_mm": ("float", _REQUIRED), "truncate": ("float", 4.0),
        "boundary": ("str", "mirror"), "plane": ("str?", None),
    }, True, "IBSI 2 manual: Laplacian of Gaussian"),
    "laws": FilterEntry(laws_filter, {
        "kernel": ("str", _REQUIRED), "boundary": ("str", "mirror"),
        "rotation_invariant": ("bool", False), "pooling": ("str", "max"),
        "energy_delta": ("int?", None), "plane": ("str?", None),
    }, False, "IBSI 2 manual: Laws kernels"),
    "gabor": FilterEntry(gabor_filter, {
        "sigma_mm": ("float", _REQUIRED), "lambda_mm": ("float", _REQUIRED),
        "gamma": ("float", _REQUIRED), "theta": ("float", 0.0),
        "delta_theta": ("float?", None), "pooling": ("str", "mean"),
        "planes": ("planes", ("axial",)), "response": ("str", "modulus"),
        "boundary": ("str", "mirror"), "truncate": ("float", 4.0),
    }, True, "IBSI 2 manual: Gabor kernels"),
    "wavelet": FilterEntry(wavelet_filter, {
        "wavelet": ("str", _REQUIRED), "subband": ("str", _REQUIRED), "level": ("int", 1),
        "boundary": ("str", "mirror"), "rotation_invariant": ("bool", False),
        "pooling": ("str", "mean"), "plane": ("str?", None),
    }, False, "IBSI 2 manual: separable wavelets"),
    "simoncelli": FilterEntry(simoncelli_filter, {
        "level": ("int", 1), "boundary": ("str", "periodic"), "plane": ("str?", None),
    }, False, "IBSI 2 manual: non-separable wavelets"),
    "riesz_log": FilterEntry(riesz_log, {
        "sigma_mm": ("float", _REQUIRED), "order": ("order", _REQUIRED),
        "truncate": ("float", 4.0), "boundary": ("str", "zero"),
    }, True, "IBSI 2 manual: Riesz transform (of a LoG)"),
    "riesz_simoncelli": FilterEntry(riesz_simoncelli, {
        "level": ("int", 1), "order": ("order", _REQUIRED), "boundary": ("str", "periodic"),
    }, False, "IBSI 2 manual: Riesz transform (of a Simoncelli band)"),
}


def _coerce(filter_name: str, key: str, kind: str, value):
    """Return a parameter value coerced to its kind (JSON-able), or raise an InputError."""
    where = f"filter {filter_name!r} parameter {key!r}"
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    try:
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind == "float":
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError
            return float(value)
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if kind == "order":
            out = [int(v) for v in value]
            if len(out) != 3 or any(float(v) != int(v) for v in value):
                raise ValueError
            return out
        if kind == "planes":
            out = [value] if isinstance(value, str) else [str(v) for v in value]
            if not out or not all(isinstance(v, str) for v in out):
                raise ValueError
            return out
    except (TypeError, ValueError):
        raise InputError(f"{where} must be of kind {kind}, got {value!r}") from None
    raise AssertionError(f"unknown parameter kind {kind}")


@dataclass(frozen=True)
class FilterSpec:
    """One filter and its full parameters (defaults filled in), frozen and hashed."""

    filter: str
    params_json: str

    @property
    def params(self) -> dict:
        """Return the parameters as a fresh dict (JSON values)."""
        return json.loads(self.params_json)

    def as_dict(self) -> dict:
        """Return the JSON-able spec: {"filter": name, "params": {...}}."""
        return {"filter": self.filter, "params": self.params}

    @cached_property
    def sha256(self) -> str:
        """Return the sha256 of the spec's canonical JSON."""
        return sha256_text(canonical_json(self.as_dict()))

    @property
    def label(self) -> str:
        """Return a readable, unique map name, e.g. ``log(sigma_mm=1,...)-1a2b3c4d``."""
        entry = REGISTRY[self.filter]
        shown = [f"{k}={_short(v)}" for k, v in self.params.items()
                 if entry.params[k][1] is _REQUIRED or v != _json_default(entry.params[k][1])]
        return f"{self.filter}({','.join(shown)})-{self.sha256[:8]}"

    def apply(self, volume: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
        """Return the filter response of a (z, y, x) volume, float64 (z, y, x).

        spacing (z, y, x) mm is used by the filters whose parameters are in mm (LoG, Gabor,
        Riesz-LoG); the others work in voxels.
        """
        entry = REGISTRY[self.filter]
        kwargs = dict(self.params)
        if "order" in kwargs:
            kwargs["order"] = tuple(kwargs["order"])
        if "planes" in kwargs:
            kwargs["planes"] = tuple(kwargs["planes"])
        if entry.uses_spacing:
            kwargs["spacing"] = spacing
        return entry.function(volume, **kwargs)


def _json_default(v):
    return list(v) if isinstance(v, tuple) else v


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return "+".join(_short(x) for x in v)
    return str(v)


def filter_spec(name: str, params: Mapping | None = None, check: bool = True) -> FilterSpec:
    """Return the frozen spec of a registered filter with its parameters checked.

    check: also dry-run the filter on a 5^3 zero volume so bad values fail now.
    """
    if name not in REGISTRY:
        raise InputError(f"unknown filter {name!r}: use one of {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    params = dict(params or {})
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        raise InputError(f"filter {name!r}: unknown parameter(s) {unknown}; "
                         f"allowed {sorted(entry.params)}")
    full = {}
    for key, (kind, default) in entry.params.items():
        if key not in params:
            if default is _REQUIRED:
                raise InputError(f"filter {name!r} needs parameter {key!r} ({kind})")
            full[key] = _json_default(default)
        else:
            full[key] = _coerce(name, key, kind, params[key])
    spec = FilterSpec(name, canonical_json(full))
    if check:
        spec.apply(np.zeros((5, 5, 5)))
    return spec


@dataclass(frozen=True)
class FilterBank:
    """An ordered bank of filter specs: a fixed encoder whose maps are the filter responses."""

    name: str
    specs: tuple[FilterSpec, ...]

    def __post_init__(self):
        if not self.specs:
            raise InputError(f"filter bank {self.name!r} has no filters")
        labels = [s.sha256 for s in self.specs]
        if len(set(labels)) != len(labels):
            dup = sorted({s.label for s in self.specs if labels.count(s.sha256) > 1})
            raise InputError(f"filter bank {self.name!r} lists the same filter twice: {dup}")

    def as_dict(self) -> dict:
        """Return the JSON-able bank: {"name": ..., "filters": [spec, ...]}."""
        return {"name": self.name, "filters": [s.as_dict() for s in self.specs]}

    @cached_property
    def sha256(self) -> str:
        """Return the sha256 of the bank's filters (order matters; the name does not)."""
        return sha256_text(canonical_json([s.as_dict() for s in self.specs]))

    @property
    def map_names(self) -> list[str]:
        """Return one readable name per map, in order."""
        return [s.label for s in self.specs]

    def apply(self, volume: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
        """Return every filter's response of a (z, y, x) volume: float32 (maps, z, y, x)."""
        out = np.empty((len(self.specs), *np.shape(volume)), dtype=np.float32)
        for i, spec in enumerate(self.specs):
            out[i] = spec.apply(volume, spacing)
        return out


def filter_bank(name: str, filters: Sequence[Mapping]) -> FilterBank:
    """Return a bank from a list of {"filter": name, **params} (or {"filter", "params"}) dicts."""
    specs = []
    for i, item in enumerate(filters):
        if not isinstance(item, Mapping) or "filter" not in item:
            raise InputError(f"filter bank {name!r} entry {i}: expected a mapping with a "
                             f"'filter' key, got {item!r}")
        rest = {k: v for k, v in item.items() if k != "filter"}
        if set(rest) == {"params"} and isinstance(rest["params"], Mapping):
            rest = dict(rest["params"])
        specs.append(filter_spec(item["filter"], rest))
    return FilterBank(name, tuple(specs))
