"""IBSI 1 digital phantom through the command line: `drlake quantify --settings
ibsi1-digital-phantom --format json` gives all 482 reference values (2D, 2.5D and 3D
aggregations, every family, the intensity-based morphology included)."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import pytest
from conftest import REFERENCE, agrees_with_reference, ibsi_reference
from typer.testing import CliRunner

NIFTI = REFERENCE / "ibsi" / "digital_phantom" / "nifti"


@lru_cache(maxsize=1)
def records() -> tuple[dict, ...]:
    from pipelines.cli import app

    r = CliRunner().invoke(app, [
        "quantify", str(NIFTI / "image" / "phantom.nii.gz"), str(NIFTI / "mask" / "mask.nii.gz"),
        "--settings", "ibsi1-digital-phantom", "--format", "json"])
    assert r.exit_code == 0, r.output
    return tuple(json.loads(r.stdout))


@pytest.mark.parametrize("row", ibsi_reference(lambda r: True, full=True))
def test_digital_phantom_reference_value(shared_reference, row):
    tag = re.sub(r"_(2D|2_5D|3D)(_avg|_comb)?$", "", row["tag"])
    got = {(x["name"], x["aggregation"]): x["value"] for x in records()}
    value = got[(tag, row["aggregation"])]
    assert value is not None and agrees_with_reference(value, row), (tag, value, row["value"])


def test_records_carry_the_interface_keys(shared_reference):
    recs = records()
    assert all(set(x) == {"name", "family", "ibsi_code", "aggregation", "value"} for x in recs)
    assert len(ibsi_reference(lambda r: True, full=True)) == 482
    aggs = {x["aggregation"] for x in recs}
    assert aggs == {"", "3D", "2D", "2.5D", "3D, averaged", "3D, merged", "2D, averaged",
                    "2D, slice-merged", "2.5D, direction-merged", "2.5D, merged"}
    whole = {x["family"] for x in recs if x["aggregation"] == ""}
    assert whole == {"shape", "localintensity", "firstorder", "ivh"}
    names = {x["name"] for x in recs}
    assert {"morph_com", "morph_integ_int", "morph_moran_i", "morph_geary_c"} <= names
