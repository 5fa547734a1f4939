"""Regression: the small synthetic lake built by the current code equals the stored digest.

Every volume and activation array, every table and derived view of a 12-patient lake run through
ingest, activations, quantify and analyze (see tests/lake_digest.py for what is hashed and how)
must hash as in tests/data/small_lake_digest.json, on the CPU kernels it was made with (torch's
CPU capability, e.g. AVX2, decides how float32 convolutions round; elsewhere the test skips).
A failure lists the entries that differ; if a change is meant to alter numbers, regenerate with
``.venv/bin/python -m tests.lake_digest --write`` and say in the commit which entries changed
and why.
"""

from __future__ import annotations

import json

import pytest
from lake_digest import (
    DIGEST_PATH,
    build_small_lake,
    diff_digests,
    failure_message,
    kernel_mismatch,
    lake_digest,
)


def test_small_lake_digest_unchanged(tmp_path):
    stored = json.loads(DIGEST_PATH.read_text(encoding="utf-8"))
    why = kernel_mismatch(stored["environment"])
    if why:  # float32 kernels of another CPU round differently: the digest is per kernel set
        pytest.skip(f"digest made with other CPU kernels ({why}); regenerate it on this "
                    "machine from the commit it names to compare")
    current = lake_digest(build_small_lake(tmp_path))
    problems = diff_digests(stored["digest"], current)
    assert not problems, failure_message(stored, problems)
