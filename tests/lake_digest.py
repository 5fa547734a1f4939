"""A digest of a small synthetic lake: the regression check that speed work keeps results identical.

`build_small_lake(root)` synthesises a 12-patient cohort (`pipelines.synth.make_cohort`, size
"small", no biopsy cohort, seed 0), ingests two of its four sequences (T1CE, FLAIR) and four of
its 22 immune markers with the cohort's regions.toml (as `drlake demo` does), runs activations
and quantify with a small seeded CNN (2 blocks x 2 maps) and analyze with small forests (every
evaluation: LOOCV, split, repeated CV, leave-pair-out, OOB), everything on the synchronous
scheduler, in about 40 s. `lake_digest(lake)` returns one sha256
per item of that lake (the entries are listed in `lake_digest`'s docstring), and
``tests/data/small_lake_digest.json`` holds the digest of the code at the commit named in its
``generated_from`` field; ``tests/test_lake_digest.py`` rebuilds the lake with the current code
and fails on every entry that differs.

What is hashed, and how:

- Zarr arrays are hashed exactly (dtype, shape, array attributes and the stored bytes): the
  volumes' uint16 images and uint8 masks, and the activations' float32 maps and uint8 region
  masks (float32 is already 7 significant digits, so rounding it would buy no tolerance).
- Tables are read through the SQL views (`pipelines.sql.connect`, rows of ``ok`` runs only);
  run ids and other per-run columns are dropped, columns and rows are sorted, integers, strings
  and booleans are hashed exactly, floats rounded to 7 significant digits (within 1e-12 of 0:
  as 0), NULL, NaN and +-inf each hash as their own token.
- Provenance that is not a number is kept apart from the numbers, so that a failure says which
  changed: the ``fingerprint/*`` entries (content hashes of the inputs and settings that the
  stages key their caching on) and ``runs`` (each run's stage, parameters and message). A new
  setting or a bumped ``VOLUME_FORMAT`` changes these and not the numbers.

Regenerate the stored digest only when a change alters numbers ON PURPOSE, and say in the
commit which entries changed and why (a new default, a bug fix in a feature, ...)::

    .venv/bin/python -m tests.lake_digest --write          # from the project root

Without ``--write`` the same command rebuilds the lake and prints the entries that differ from
the stored digest (``--keep DIR`` keeps the lake for a look).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipelines.analyze import AnalyzeSettings, run_analyze
from pipelines.encoder import EncoderSpec
from pipelines.ingest import IngestSettings, ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.quantify import QuantifySettings
from pipelines.regions import read_regions_file
from pipelines.scheduler import SchedulerSpec
from pipelines.sql import connect
from pipelines.synth import make_cohort

DIGEST_PATH = Path(__file__).resolve().parent / "data" / "small_lake_digest.json"

# ---- the small lake ---------------------------------------------------------------------------
N_PATIENTS = 12  # analyze needs >= 10 patients with DRFs, markers and clinical data
SEED = 0
# Four of the cohort's 22 immune markers (two planted, one null, and one that is zero in 11 of
# the 12 patients: ties and a lopsided median split): one marker forest per marker and sequence,
# 4 x 2 of them instead of 22 x 4, keep the whole build around 40 s of CPU.
MARKERS = ("t_cells_cd8", "neutrophils", "macrophages_m2", "eosinophils")
# Two of the four sequences (the reference grid is then T1CE's): a sequence costs the same in
# every stage, and the 45 DRFs per sequence set the cost of the forests' permutation importances.
SEQUENCES = ("T1CE", "FLAIR")
ENCODER_BLOCKS = (2, 2)  # 2 maps per layer: map order matters, quantify stays cheap
ANALYZE = dict(trees=10, marker_trees=10, marker_cv="oob", permutation_repeats=1,
               cv_repeats=1, cv_folds=3, lpo_pairs=2)

# ---- what is left out of the digest -----------------------------------------------------------
# Columns that change from run to run (ids, clocks, process, host, durations).
VOLATILE_COLUMNS = frozenset({"run_id", "started_at", "ended_at", "pid", "host", "seconds",
                              "package_version", "table_versions"})
# Columns holding content hashes of inputs and settings: hashed as fingerprint/* entries.
FINGERPRINT_COLUMNS = {"patients": ("fingerprint",), "features": ("fragment_hash",)}
# Zarr group attributes that change from run to run or are fingerprints (hashed separately).
VOLATILE_ATTRS = frozenset({"run_id", "drlake_version", "fingerprint", "volume_fingerprint"})
# Floats closer to 0 than this hash as 0 (see _float_token).
ZERO_BELOW = 1e-12
# SQL views hashed besides the lake's tables: the derived ones. Left out: runs (hashed apart),
# feature_catalogue (schemas/features.csv, not lake data), expression and drf_immune_spearman
# (aliases of genomic_expression and drf_immune_spearman_all).
DERIVED_VIEWS = ("drf_long", "drf", "immune_markers_wide", "drf_immune_spearman_all")


def build_small_lake(root: Path, timings: dict[str, float] | None = None,
                     log: Callable[[str], None] | None = None) -> Lake:
    """Synthesise the small cohort under root/cohort, run every stage into root/lake and return
    the lake. `timings`, if given, receives each step's wall-clock seconds."""
    timings = {} if timings is None else timings
    log = log or (lambda _msg: None)
    sync = SchedulerSpec("sync")
    root = Path(root)
    cohort = root / "cohort"

    def step(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        log(f"{name}: {timings[name]:.1f} s")
        return out

    step("synth", lambda: make_cohort(cohort, n_patients=N_PATIENTS, seed=SEED, size="small",
                                      biopsy_patients=0, progress=False))
    immune = cohort / "immune_small.csv"
    step("trim markers", lambda: _trim_markers(cohort / "immune.csv", immune, MARKERS))
    lake = Lake(root / "lake")
    step("ingest", lambda: ingest(
        cohort / "manifest.csv", lake, clinical=cohort / "clinical.csv", immune=immune,
        expression=cohort / "expression.tsv",
        settings=IngestSettings(cohort="main", modalities=SEQUENCES,
                                regions=read_regions_file(cohort / "regions.toml")),
        progress=False, sched=sync))
    act = step("activations", lambda: run_activations(
        lake, EncoderSpec(blocks=ENCODER_BLOCKS, seed=SEED), sync, cohort="main", progress=False))
    step("quantify", lambda: run_quantify(lake, act["encoder"], QuantifySettings(), sync,
                                          cohort="main", progress=False))
    step("analyze", lambda: run_analyze(
        lake, AnalyzeSettings(encoder=act["encoder"], seed=SEED, **ANALYZE), sync,
        progress=False))
    return lake


def _trim_markers(src: Path, dst: Path, keep: tuple[str, ...]) -> None:
    """Write the immune table `src` with only the `keep` marker columns to `dst` (text as is)."""
    import csv

    with src.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    missing = set(keep) - set(rows[0])
    if missing:
        raise ValueError(f"{src}: no marker column {sorted(missing)}")
    cols = [0] + [rows[0].index(m) for m in keep]
    with dst.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([r[i] for i in cols] for r in rows)


# ---- hashing ----------------------------------------------------------------------------------
def _float_token(f: float) -> str:
    # Floats are rounded to 7 significant digits (Python's correctly rounded '%.6e', the same on
    # every platform) because torch/BLAS kernels may differ in the last float32 bits on another
    # CPU (vector width, thread split, summation order), and such noise reaches the float64
    # features and statistics; 7 digits is float32 precision. It is a same-machine guard first:
    # a last-bit difference still flips the 7th digit of some values (and the activations are
    # hashed exactly), so on another machine expect differences before suspecting the code.
    # Integers, strings and the uint16 volume bytes are hashed exactly.
    # Relative rounding cannot absorb the noise of a result that is zero in exact arithmetic: a
    # correlation of 0 or a porosity of 0 comes out as +-1e-17 whose sign and size depend on the
    # summation order (DuckDB's corr in drf_immune_spearman_all differs from query to query), so
    # anything within ZERO_BELOW of 0 hashes as 0 (-0.0 too). No value of the small lake is
    # legitimately that small.
    if math.isnan(f):
        return "nan"  # every NaN (any payload or sign) is one token
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if abs(f) < ZERO_BELOW:
        return "0"
    return f"{f:.6e}"


def _token(v) -> str:
    """Return the canonical text of one table cell (see _float_token for floats)."""
    if v is None:
        return "null"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return _float_token(float(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=True)  # quoted and escaped: no tab or newline inside
    if isinstance(v, bytes):
        return "b:" + v.hex()
    return json.dumps(str(v), ensure_ascii=True)


def _canonical(obj):
    """Return a JSON-able copy of attributes with floats as 7-digit tokens, volatile keys off."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items() if k not in VOLATILE_ATTRS}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return {"float": _float_token(float(obj))}
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def array_sha(arr) -> str:
    """Return the sha256 of a Zarr array: dtype, shape, attributes and the exact stored bytes."""
    data = np.ascontiguousarray(arr[...])
    attrs = json.dumps(_canonical(dict(arr.attrs)), sort_keys=True)
    return _sha(data.dtype.str, str(data.shape), attrs, data.tobytes())


def attrs_sha(attrs: dict) -> str:
    """Return the sha256 of a group's attributes without run ids, versions and fingerprints."""
    return _sha(json.dumps(_canonical(dict(attrs)), sort_keys=True, separators=(",", ":")))


def rows_sha(table, drop=()) -> str:
    """Return the sha256 of a pyarrow table's content, independent of row and column order.

    Columns in `drop` are left out; cells are canonical tokens (`_token`), rows sorted.
    """
    names = sorted(n for n in table.column_names if n not in set(drop))
    cols = [[_token(v) for v in table.column(n).to_pylist()] for n in names]
    lines = sorted("\t".join(r) for r in zip(*cols, strict=True)) if cols else []
    return _sha(json.dumps(names), str(table.num_rows), "\n".join(lines))


def _query(con, sql: str):
    """Return a query's result as a pyarrow table (NULL and NaN stay distinct)."""
    return con.sql(sql).to_arrow_table()


def lake_digest(lake: Lake) -> dict[str, str]:
    """Return {entry: sha256} of everything the lake holds; the entries are

    - ``volume/<patient>/images/<SEQ>``, ``volume/<patient>/masks/<SEQ>``: each stored array;
      ``volume/<patient>/attrs``: the group's spatial metadata, preprocessing record, regions;
    - ``activations/<patient>/<SEQ>/layer<k>`` and ``.../mask<k>``: each array of the encoder's
      activation group; ``activations/<patient>/attrs``: crop boxes, strides, encoder identity;
    - ``table/<name>``: every Delta table of the lake but runs (patients, clinical,
      immune_markers, genomic_expression, encoder_maps, features, every results_* table),
      without run ids and fingerprint columns;
    - ``view/<name>``: the derived SQL views (`DERIVED_VIEWS`: drf_long, drf, ...);
    - ``runs``: each ok run's stage, status, parameters, params hash, encoder hash and message;
    - ``fingerprint/volumes``, ``fingerprint/activations``, ``fingerprint/features``,
      ``fingerprint/runs``: the content hashes the stages record (patients.fingerprint and the
      volume attribute, the activations' fingerprints, features.fragment_hash, the runs'
      input fingerprints).
    """
    out: dict[str, str] = {}
    con = connect(lake)
    try:
        # one thread: the views' aggregates (corr, avg) then add rows in one order every time
        con.execute("SET threads = 1")
        patients = _query(con, "SELECT patient_id FROM patients ORDER BY patient_id")
        pids = patients.column("patient_id").to_pylist()
        encoders = _query(con, "SELECT DISTINCT encoder FROM encoder_maps ORDER BY 1")
        encoders = encoders.column("encoder").to_pylist()
        fp_volumes, fp_acts = [], []
        for pid in pids:
            group = lake.volume(pid).open()
            for kind in ("images", "masks"):
                for mod in sorted(group[kind].array_keys()):
                    out[f"volume/{pid}/{kind}/{mod}"] = array_sha(group[kind][mod])
            out[f"volume/{pid}/attrs"] = attrs_sha(group.attrs)
            fp_volumes.append([pid, group.attrs.get("fingerprint")])
            for enc in encoders:
                loc = lake.activations(enc, pid)
                if not loc.exists():
                    continue
                # one encoder in the small lake: keys without its name (its identity is in attrs)
                key = f"activations/{pid}" if len(encoders) == 1 else f"activations/{enc}/{pid}"
                ag = loc.open()
                for mod in sorted(ag.group_keys()):
                    for name in sorted(ag[mod].array_keys()):
                        out[f"{key}/{mod}/{name}"] = array_sha(ag[mod][name])
                out[f"{key}/attrs"] = attrs_sha(ag.attrs)
                fp_acts.append([enc, pid, ag.attrs.get("fingerprint"),
                                ag.attrs.get("volume_fingerprint")])

        tables = [t for t in lake.table_names() if t != "runs"]
        for t in tables:
            drop = VOLATILE_COLUMNS | set(FINGERPRINT_COLUMNS.get(t, ()))
            out[f"table/{t}"] = rows_sha(_query(con, f'SELECT * FROM "{t}"'), drop)
        for v in DERIVED_VIEWS:
            out[f"view/{v}"] = rows_sha(_query(con, f'SELECT * FROM "{v}"'), VOLATILE_COLUMNS)

        runs = _query(con, "SELECT stage, status, parameters, params_hash, encoder_hash, message "
                           "FROM runs WHERE status = 'ok'")
        out["runs"] = rows_sha(runs)
        vol_fp = _query(con, "SELECT patient_id, fingerprint FROM patients")
        out["fingerprint/volumes"] = _sha(rows_sha(vol_fp), json.dumps(fp_volumes))
        out["fingerprint/activations"] = _sha(json.dumps(fp_acts))
        if "features" in tables:
            out["fingerprint/features"] = rows_sha(_query(
                con, "SELECT DISTINCT patient_id, modality, encoder, fragment_hash FROM features"))
        out["fingerprint/runs"] = rows_sha(_query(
            con, "SELECT stage, input_fingerprints FROM runs WHERE status = 'ok'"))
    finally:
        con.close()
    return dict(sorted(out.items()))


# ---- comparing --------------------------------------------------------------------------------
def diff_digests(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """Return one line per entry that differs: 'changed: X', 'missing: X' or 'new: X'."""
    lines = [f"changed: {k}" for k in sorted(stored.keys() & current.keys())
             if stored[k] != current[k]]
    lines += [f"missing: {k}" for k in sorted(stored.keys() - current.keys())]
    lines += [f"new: {k}" for k in sorted(current.keys() - stored.keys())]
    return lines


def failure_message(stored_doc: dict, problems: list[str], limit: int = 80) -> str:
    """Return the text that says which entries differ, grouped by kind, and what to do."""
    groups: dict[str, int] = {}
    for line in problems:
        entry = line.split(": ", 1)[1]
        kind = entry.split("/", 1)[0]
        if kind in ("volume", "activations"):  # volume/<pid>/images/T1 -> volume/*/images/T1
            parts = entry.split("/")
            kind = "/".join([parts[0], "*", *parts[2:]])
        elif kind in ("table", "view", "fingerprint"):
            kind = entry
        groups[kind] = groups.get(kind, 0) + 1
    summary = "\n".join(f"  {n:4d} x {k}" for k, n in sorted(groups.items()))
    shown = "\n".join("  " + p for p in problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return (
        f"{len(problems)} of {len(stored_doc['digest'])} digest entries differ from "
        f"{DIGEST_PATH.name} (generated from {stored_doc.get('generated_from')}):\n"
        f"{summary}\n{shown}{more}\n"
        "The pipeline's results are no longer bit-identical (fingerprint/* and runs entries are "
        "provenance, the others numbers). If the change is meant to alter them, regenerate with "
        "`.venv/bin/python -m tests.lake_digest --write` and say in the commit which entries "
        "changed and why."
    )


# ---- the command ------------------------------------------------------------------------------
def _source_commit() -> str:
    """Return the git commit of the `pipelines` package in use, '+dirty' if it has changes."""
    import pipelines

    src = Path(pipelines.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pipelines", "sql",
                                "schemas"], cwd=src, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + ("+dirty (uncommitted changes under pipelines/, sql/ or schemas/)"
                  if dirty else "")


def _environment() -> dict[str, str]:
    import platform

    import sklearn
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "sklearn": sklearn.__version__,
            "machine": platform.machine(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


#: Environment keys that decide float32 kernels (a different torch CPU path rounds differently).
KERNEL_KEYS = ("machine", "torch", "torch_cpu_capability")


def kernel_mismatch(stored_env: dict) -> str | None:
    """Return why the stored digest cannot be compared here (other CPU kernels), or None."""
    here = _environment()
    diff = [f"{k} {stored_env.get(k)!r} vs {here[k]!r} here" for k in KERNEL_KEYS
            if stored_env.get(k) != here[k]]
    return "; ".join(diff) or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.lake_digest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true",
                    help="store the digest (only when a change alters numbers on purpose)")
    ap.add_argument("--out", type=Path, default=DIGEST_PATH,
                    help=f"digest file to write or compare with (default {DIGEST_PATH})")
    ap.add_argument("--keep", type=Path, default=None,
                    help="build the lake in this (new) folder and keep it")
    args = ap.parse_args(argv)
    import pipelines

    print(f"pipelines from {Path(pipelines.__file__).resolve().parent}", file=sys.stderr)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drlake-digest-") as tmp:
        root = args.keep or Path(tmp)
        lake = build_small_lake(root, timings, log=lambda m: print(m, file=sys.stderr))
        t1 = time.perf_counter()
        digest = lake_digest(lake)
    print(f"digest: {len(digest)} entries, {time.perf_counter() - t1:.1f} s; "
          f"total {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.write:
        doc = {"generated_from": _source_commit(),
               "regenerate": "python -m tests.lake_digest --write (only when a change alters "
                             "numbers on purpose; say which entries and why)",
               "environment": _environment(), "digest": digest}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out} (generated_from {doc['generated_from']})", file=sys.stderr)
        return 0
    stored = json.loads(args.out.read_text(encoding="utf-8"))
    problems = diff_digests(stored["digest"], digest)
    print(failure_message(stored, problems) if problems
          else f"all {len(digest)} entries equal the stored digest")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
