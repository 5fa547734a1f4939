"""Filter banks as fixed encoders: every filter response of a bank is one map (IBSI 2).

A bank is read from a TOML/YAML/JSON file (``name`` and a ``[[filters]]`` list of
``{filter = ..., params...}``) or is one of the banks shipped in ``pipelines/filters/banks``
(``filters:pyradiomics``, ``filters:ibsi2-phase2``). :class:`FilterEncoder` has the interface of
:class:`pipelines.encoder.Encoder` (name, identity hash, strides, margin, activations), so its
maps go through the same activations -> quantify path as the CNN's. Its margin is measured: the
support of every filter's response to an impulse, so that a ROI crop grown by it gives, inside
the ROI, exactly the whole-volume response; Fourier-domain filters run on the whole volume.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np

from pipelines.exceptions import InputError
from pipelines.filters.bank import FilterBank, FilterSpec, filter_bank

__all__ = ["BANK_DIR", "FilterEncoder", "WHOLE_VOLUME", "bank_from_dict", "load_bank",
           "response_radius", "shipped_banks"]

BANK_DIR = Path(__file__).resolve().parent / "banks"
#: Margin meaning "the whole volume" (a crop box grown by it is clipped to the volume).
WHOLE_VOLUME = 1 << 20
#: Filters computed in the Fourier domain over the whole (padded) volume: no finite support.
_FOURIER = ("simoncelli", "riesz_simoncelli")
#: Texture is not asked of filter responses by IBSI 2: intensity features by default.
DEFAULT_FAMILIES = ("firstorder",)


def shipped_banks() -> list[str]:
    """Return the names of the banks that ship with drlake."""
    return sorted(p.stem for p in BANK_DIR.glob("*.toml"))


def _read_bank_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: filter bank file not found (shipped banks: "
                         f"{', '.join(shipped_banks())})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
    except Exception as e:  # each parser has its own error type; all mean "not this format"
        raise InputError(f"{path}: cannot read the filter bank ({e})") from None
    raise InputError(f"{path}: a filter bank is a .toml, .yaml or .json file")


def bank_from_dict(doc, where: str) -> FilterBank:
    """Return the bank of a parsed bank document {name, filters: [{filter, ...}, ...]}."""
    if not isinstance(doc, dict) or not isinstance(doc.get("filters"), list):
        raise InputError(f"{where}: a filter bank needs a 'filters' list ([[filters]] in TOML)")
    name = str(doc.get("name") or Path(where).stem)
    try:
        return filter_bank(name, doc["filters"])
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def load_bank(ref: str) -> FilterBank:
    """Return the bank named by ``NAME`` (a shipped bank) or a path to a bank file."""
    ref = ref.removeprefix("filters:")
    shipped = BANK_DIR / f"{ref}.toml"
    path = shipped if shipped.exists() else Path(ref)
    return bank_from_dict(_read_bank_file(path), str(path))


def response_radius(spec: FilterSpec, spacing_mm: float = 1.0, start: int = 8,
                    limit: int = 128) -> int:
    """Return the support radius (voxels, max over axes) of a filter's response to an impulse.

    The impulse sits in the centre of a zero cube of side 2R + 1; R doubles while the response
    reaches the cube's faces. Returns WHOLE_VOLUME for Fourier-domain filters or a support over
    `limit` voxels.
    """
    if spec.filter in _FOURIER:
        return WHOLE_VOLUME
    r = start
    while r <= limit:
        vol = np.zeros((2 * r + 1,) * 3)
        vol[r, r, r] = 1.0
        resp = np.abs(spec.apply(vol, (spacing_mm,) * 3))
        nz = np.argwhere(resp > 1e-12 * max(float(resp.max()), 1e-300))
        reach = int(np.abs(nz - r).max()) if len(nz) else 0
        if reach < r:
            return reach
        r *= 2
    return WHOLE_VOLUME


class FilterEncoder:
    """A fixed encoder whose maps are a filter bank's responses (one layer, stride 1)."""

    def __init__(self, bank: FilterBank):
        self.bank = bank
        self._margins: dict[float, int] = {}

    @property
    def identity_hash(self) -> str:
        """Return the bank's sha256: the encoder's identity (changing the bank recomputes)."""
        return self.bank.sha256

    @property
    def name(self) -> str:
        """Return the folder name of the bank's maps in the lake: filters-<bank>-<sha8>."""
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.bank.name)
        return f"filters-{safe}-{self.identity_hash[:8]}"

    n_layers = 1
    default_families = DEFAULT_FAMILIES

    def strides(self) -> list[int]:
        return [1]

    def margin(self, spacing_mm: float = 1.0) -> int:
        """Return the largest support radius (voxels) of the bank's filters on an isotropic grid
        of `spacing_mm`; WHOLE_VOLUME if a filter has no finite support."""
        key = float(spacing_mm)
        if key not in self._margins:
            self._margins[key] = max(response_radius(s, key) for s in self.bank.specs)
        return self._margins[key]

    def map_names(self) -> list[list[str]]:
        """Return the map names of the one layer: each filter's label."""
        return [self.bank.map_names]

    def map_params(self) -> list[list[dict]]:
        """Return each map's filter spec {filter, params}."""
        return [[s.as_dict() for s in self.bank.specs]]

    def describe(self) -> dict:
        """Return the JSON-able identity recorded with activations and runs."""
        return {
            "name": self.name,
            "architecture": {"type": "filter-bank", "bank": self.bank.as_dict()},
            "weights": "none",
            "seed": None,
            "weights_sha256": None,
            "identity_sha256": self.identity_hash,
            "map_names": self.bank.map_names,
            "default_families": list(self.default_families),
        }

    def activations(self, volume: np.ndarray, threads: int | None = None,
                    spacing=(1.0, 1.0, 1.0)) -> list[np.ndarray]:
        """Return [(maps, z, y, x) float32]: every filter's response of a (z, y, x) volume."""
        return [self.bank.apply(np.asarray(volume, dtype=np.float64), spacing)]
