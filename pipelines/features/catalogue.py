"""The feature catalogue (``schemas/features.csv``) and the feature presets it defines.

Columns: name (IBSI tag), family, ibsi_code ("" where none), unit, paper_name (the seed paper's
name for the features it uses), paper41, paper45 (booleans). See ``schemas/features.md``.
"""

from __future__ import annotations

import csv
from functools import lru_cache

from pipelines.exceptions import InputError
from pipelines.resources import data_dir

__all__ = ["CATALOGUE_PATH", "feature_catalogue", "preset", "PRESETS"]

CATALOGUE_PATH = data_dir("schemas") / "features.csv"
PRESETS = ("paper41", "paper45", "all")
_COLUMNS = ("name", "family", "ibsi_code", "unit", "paper_name", "paper41", "paper45")
_BOOL = {"true": True, "false": False}


@lru_cache(maxsize=1)
def _load() -> tuple[dict, ...]:
    with CATALOGUE_PATH.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise ValueError(f"{CATALOGUE_PATH}: columns {reader.fieldnames}, expected {_COLUMNS}")
        rows = []
        for r in reader:
            row = dict(r)
            for key in ("paper41", "paper45"):
                if row[key] not in _BOOL:
                    raise ValueError(f"{CATALOGUE_PATH}: {row['name']}: {key}={row[key]!r}")
                row[key] = _BOOL[row[key]]
            rows.append(row)
    return tuple(rows)


def feature_catalogue() -> list[dict]:
    """Return the catalogue rows as dicts (a fresh list of copies; the file is read once).

    Keys: name, family, ibsi_code, unit, paper_name (str) and paper41, paper45 (bool).
    """
    return [dict(r) for r in _load()]


def preset(name: str) -> list[str]:
    """Return the feature names of a preset in catalogue order: "paper41", "paper45" or "all".

    paper41: the paper's 41 texture quantifiers; paper45: those plus its 4 shape features.
    """
    if name not in PRESETS:
        raise InputError(f"unknown feature preset {name!r}; choose from {PRESETS}")
    rows = _load()
    if name == "all":
        return [r["name"] for r in rows]
    return [r["name"] for r in rows if r[name]]
