"""The `drlake` command: thin wrappers that parse arguments and call stage functions.

User mistakes (DrlakeError) print one line `drlake: error: ...` and exit with status 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipelines.exceptions import DrlakeError, InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="drlake: a deep-radiomics data lake. Ingest MRI cohorts, compute IBSI and deep radiomic "
    "features, query them with SQL and run the seed papers' statistics.",
    pretty_exceptions_enable=False,
)

LakeOpt = Annotated[
    str, typer.Option("--lake", help="lake root: a folder or an fsspec URL (s3://bucket/lake)")
]


class Size(StrEnum):
    small = "small"
    paper = "paper"


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings only")] = False,
):
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="drlake: %(message)s", stream=sys.stderr)
    for noisy in ("numba", "distributed", "fsspec", "s3fs", "botocore", "aiobotocore", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="folder to write the cohort files into")],
    patients: Annotated[int, typer.Option(help="number of patients (main cohort)")] = 151,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    size: Annotated[Size, typer.Option(help="small (fast demo) or paper (1 mm, ~256^2)")] = (
        Size.small
    ),
    biopsy_patients: Annotated[int, typer.Option(help="patients of the biopsy cohort")] = 45,
    effect_scale: Annotated[
        float, typer.Option(help="strength of planted effects; 0 gives a null cohort")
    ] = 1.0,
):
    """Write a synthetic cohort (NIfTI images + masks, CSV tables, ground truth) as files."""
    from pipelines.synth import make_cohort

    if patients < 1:
        raise InputError("--patients must be >= 1")
    paths = make_cohort(
        out_dir,
        n_patients=patients,
        seed=seed,
        size=size.value,
        biopsy_patients=biopsy_patients,
        effect_scale=effect_scale,
    )
    typer.echo(f"synthetic cohort written to {out_dir}")
    for k, v in paths.items():
        if isinstance(v, str | Path):
            typer.echo(f"  {k}: {v}")


RegionsOpt = Annotated[
    str | None,
    typer.Option(help="named sub-regions of label masks, e.g. 'core=1,4 whole=1,2,4 "
                 "enhancing=4' (the first is the primary region; every label must be in one)"),
]
RegionsFileOpt = Annotated[
    Path | None, typer.Option(help="TOML file with a [regions] table, e.g. core = [1, 4]"),
]


def _regions(spec: str | None, path: Path | None):
    """Return the region set of --regions or --regions-file (None if neither is given)."""
    from pipelines.regions import parse_regions, read_regions_file

    if spec and path:
        raise InputError("give --regions or --regions-file, not both")
    if path:
        return read_regions_file(path)
    return parse_regions(spec) if spec else None


@app.command()
def ingest(
    manifest: Annotated[Path, typer.Argument(help="CSV: patient_id,modality,image,mask[,roi]")],
    lake: LakeOpt = "lake",
    clinical: Annotated[Path | None, typer.Option(help="clinical.csv")] = None,
    immune: Annotated[Path | None, typer.Option(help="immune markers CSV (wide)")] = None,
    expression: Annotated[Path | None, typer.Option(help="genes x samples TPM (TSV)")] = None,
    biopsies: Annotated[Path | None, typer.Option(help="biopsies.csv")] = None,
    spacing: Annotated[str, typer.Option(
        help="isotropic voxel size after resampling, mm; 'native' keeps the first sequence's "
             "grid (conventional radiomics with `drlake run --encoder identity --settings`, "
             "whose IBSI chain resamples)")] = "1.0",
    label: Annotated[
        int | None, typer.Option(help="mask label of the ROI (default: masks must be 0/1)")
    ] = None,
    roi: Annotated[
        str | None,
        typer.Option(help="RTSTRUCT ROI / SEG segment of DICOM masks: a name, NAME1|NAME2 "
                     "(case-insensitive, first found wins), a regex, or a segment number; a roi "
                     "column in the manifest wins"),
    ] = None,
    regions: RegionsOpt = None,
    regions_file: RegionsFileOpt = None,
    clip: Annotated[
        str | None,
        typer.Option(help="robust normalisation: percentiles LO,HI of brain voxels, e.g. 0.5,99.5"),
    ] = None,
    cohort: Annotated[str, typer.Option(help="cohort name recorded with the patients")] = "main",
    max_voxels: Annotated[
        int, typer.Option(help="refuse an image or resampled grid with more voxels than this")
    ] = 2**30,
    memory_limit: Annotated[
        float | None,
        typer.Option(help="memory (GiB) ingest may use per patient (default: detected)"),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="local workers (default: cores)")] = None,
    scheduler: Annotated[
        str, typer.Option(help="threads | processes | sync | a cluster address tcp://host:8786")
    ] = "threads",
):
    """Ingest image files and tables into the lake (resample, normalise, validate)."""
    from pipelines.ingest import IngestSettings
    from pipelines.ingest import ingest as run_ingest
    from pipelines.lake import Lake
    from pipelines.limits import GIB, IngestLimits
    from pipelines.scheduler import SchedulerSpec

    clip_p = None
    if clip:
        try:
            lo, hi = (float(v) for v in clip.split(","))
        except ValueError:
            raise InputError(f"--clip expects LO,HI percentiles, got {clip!r}") from None
        clip_p = (lo, hi)
    settings = IngestSettings(spacing_mm=_spacing(spacing), label=label, clip_percentiles=clip_p,
                              cohort=cohort, roi=roi, regions=_regions(regions, regions_file))
    limits = IngestLimits(max_voxels=max_voxels,
                          memory_bytes=None if memory_limit is None else int(memory_limit * GIB))
    summary = run_ingest(
        manifest, Lake(lake), clinical=clinical, immune=immune, expression=expression,
        biopsies=biopsies, settings=settings, limits=limits,
        sched=SchedulerSpec(scheduler=scheduler, workers=workers),
    )
    typer.echo(str(summary))


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="folder for the synthetic cohort files")
    ] = Path("demo-cohort"),
    lake: LakeOpt = "lake",
    patients: Annotated[int, typer.Option(help="patients in the demo cohort")] = 24,
    biopsy_patients: Annotated[int, typer.Option(help="patients of the biopsy cohort")] = 45,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
):
    """Run everything end to end on a small synthetic cohort and say where the results are."""
    from pipelines.demo import run_demo

    run_demo(workdir=workdir, lake_url=lake, patients=patients, biopsy_patients=biopsy_patients,
             seed=seed, echo=typer.echo)




class Aggregation(StrEnum):
    averaged = "averaged"
    merged = "merged"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command()
def quantify(
    image: Annotated[Path, typer.Argument(help="image file (NIfTI, NRRD, MHA) or DICOM folder")],
    mask: Annotated[Path, typer.Argument(
        help="mask: a label image on the image's grid, or a DICOM RTSTRUCT / SEG")],
    label: Annotated[int, typer.Option(help="label of the ROI in the mask")] = 1,
    roi: Annotated[str | None, typer.Option(
        help="RTSTRUCT ROI / SEG segment: a name, NAME1|NAME2, a regex or a segment number")
    ] = None,
    image_filter: Annotated[str | None, typer.Option(
        "--filter", help="an IBSI 2 filter applied to the processed image before the features "
        "(e.g. with --settings ibsi2-phase2-3d): JSON such as "
        "'{\"filter\": \"log\", \"sigma_mm\": 1.5}', or filters:BANK with one filter")
    ] = None,
    settings: Annotated[str | None, typer.Option(
        help="IBSI settings: a preset (paper, the default; ibsi1-ct-A .. ibsi1-ct-E, "
             "ibsi1-digital-phantom) or a .toml/.yaml file (PyRadiomics parameter files too); "
             "the options below override it")] = None,
    bin_count: Annotated[int | None, typer.Option(help="fixed bin number (FBN)")] = None,
    bin_size: Annotated[float | None, typer.Option(
        help="fixed bin size (FBS, from the re-segmentation lower bound)")] = None,
    families: Annotated[str | None, typer.Option(
        help="comma-separated families or 'all': shape, morph_intensity, localintensity, "
             "firstorder, ivh, glcm, glrlm, glszm, gldzm, ngtdm, ngldm")] = None,
    aggregation: Annotated[list[str] | None, typer.Option(
        help="texture aggregation, repeatable: averaged, merged (3D) or the IBSI words "
             "'2D, averaged', '2D, slice-merged', '2.5D, direction-merged', '2.5D, merged'"
             )] = None,
    resample: Annotated[float | None, typer.Option(
        help="resample to this isotropic spacing (mm) first (IBSI grid)")] = None,
    spacing: Annotated[str | None, typer.Option(
        help="resample to x,y,z mm ('none' keeps an axis: 2,2,none = in-plane)")] = None,
    interpolator: Annotated[str | None, typer.Option(
        help="image interpolator: nearest, linear, bspline")] = None,
    round_intensities: Annotated[bool | None, typer.Option(
        "--round-intensities/--no-round-intensities",
        help="round intensities to integers after interpolation (CT)")] = None,
    mask_interpolator: Annotated[str | None, typer.Option(help="nearest or linear")] = None,
    mask_threshold: Annotated[float | None, typer.Option(
        help="partial-volume threshold of a linearly interpolated mask")] = None,
    resegment_range: Annotated[str | None, typer.Option(
        help="re-segmentation range lower,upper (an empty side is open: -1000,)")] = None,
    outlier_sigma: Annotated[float | None, typer.Option(
        help="outlier filtering: keep mean +- this many SD")] = None,
    ivh: Annotated[str | None, typer.Option(
        help="IVH discretisation: texture, none (discrete), fbn, fbs")] = None,
    ivh_bin_count: Annotated[int | None, typer.Option(help="IVH fixed bin number")] = None,
    ivh_bin_size: Annotated[float | None, typer.Option(help="IVH fixed bin size")] = None,
    print_settings: Annotated[bool, typer.Option(
        help="print the resolved settings and their sha256 as JSON, compute nothing")] = False,
    format: Annotated[OutputFormat, typer.Option(help="output format")] = OutputFormat.table,
):
    """Compute IBSI features of one image + mask and print them (IBSI chain of --settings)."""
    import csv
    import json

    from pipelines.features.case import quantify_processed
    from pipelines.processing import settings_from_options

    s = settings_from_options(
        settings, resample=resample, spacing=spacing, resegment_range=resegment_range,
        families=families, aggregations=aggregation, bin_count=bin_count, bin_size=bin_size,
        interpolator=interpolator, round_intensities=round_intensities,
        mask_interpolator=mask_interpolator, mask_threshold=mask_threshold,
        outlier_sigma=outlier_sigma, ivh=ivh, ivh_bin_count=ivh_bin_count,
        ivh_bin_size=ivh_bin_size)
    if print_settings:
        typer.echo(json.dumps({"settings": s.as_dict(), "sha256": s.sha256}, indent=1))
        return
    rows, steps = quantify_processed(image, mask, s, label=label, roi=roi,
                                     image_filter=_one_filter(image_filter))
    logging.getLogger("drlake.quantify").debug("processing steps: %s", json.dumps(steps))
    if format == OutputFormat.json:
        clean = [{**r, "value": r["value"] if r["value"] == r["value"] else None} for r in rows]
        typer.echo(json.dumps(clean, indent=1))  # NaN (undefined feature) -> null
    elif format == OutputFormat.csv:
        w = csv.DictWriter(sys.stdout, fieldnames=["name", "family", "ibsi_code", "aggregation",
                                                   "value"])
        w.writeheader()
        w.writerows(rows)
    else:
        width = max(len(r["name"]) for r in rows)
        aw = max(len(r["aggregation"]) for r in rows)
        typer.echo(f"{'feature':<{width}}  {'family':<14}  {'IBSI':<4}  "
                   f"{'aggregation':<{aw}}  value")
        for r in rows:
            typer.echo(f"{r['name']:<{width}}  {r['family']:<14}  {r['ibsi_code'] or '-':<4}  "
                       f"{r['aggregation']:<{aw}}  {r['value']:.6g}")


@app.command("filter")
def filter_image(
    image: Annotated[Path, typer.Argument(help="image file (NIfTI, NRRD, MHA) or DICOM folder")],
    encoder: Annotated[
        str, typer.Option(help="filters:NAME_OR_FILE: a shipped bank (filters:pyradiomics, "
                          "filters:ibsi2-phase2) or a .toml/.yaml/.json bank file")
    ],
    out: Annotated[Path, typer.Option(help="folder for the response maps (NIfTI)")],
):
    """Write every filter response of a bank for one image as NIfTI on the image's grid."""
    from pipelines.filters.encoder import load_bank
    from pipelines.filters.export import write_filter_responses

    if not encoder.startswith("filters:"):
        raise InputError(f"--encoder must be filters:NAME_OR_FILE, got {encoder!r}")
    bank = load_bank(encoder)
    paths = write_filter_responses(image, bank, out)
    typer.echo(f"{len(paths)} response map(s) of bank {bank.name} written to {out}")
    for p in paths:
        typer.echo(f"  {p.name}")


def _one_filter(text: str | None):
    """Return the FilterSpec of a --filter value (JSON or filters:BANK with one filter)."""
    if text is None:
        return None
    import json

    from pipelines.filters.bank import filter_bank
    from pipelines.filters.encoder import load_bank

    if text.startswith("filters:"):
        bank = load_bank(text)
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"--filter: not JSON ({e}); e.g. '{{\"filter\": \"log\", "
                             f"\"sigma_mm\": 1.5}}'") from None
        bank = filter_bank("--filter", [doc] if isinstance(doc, dict) else doc)
    if len(bank.specs) != 1:
        raise InputError(f"--filter: give one filter, {text!r} has {len(bank.specs)}")
    return bank.specs[0]


def _families(text: str, with_shape: bool) -> tuple[str, ...]:
    """Return the families of a comma-separated --families value ('all': every one)."""
    from pipelines.features.extract import ALL_FAMILIES

    if text.strip() == "all":
        return tuple(f for f in ALL_FAMILIES if with_shape or f != "shape")
    return tuple(f.strip() for f in text.split(",") if f.strip())


def _spacing(text: str) -> float | None:
    """Return the --spacing of ingest in mm (None: 'native')."""
    if text.strip().lower() == "native":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--spacing must be a number of mm or 'native', got {text!r}") from None


def _encoder_spec(encoder: str, seed: int, blocks: str, encoder_config: Path | None,
                  lake=None):
    from pipelines.encoder import spec_from_options

    weights = (encoder if encoder in ("seeded", "identity")
               or encoder.startswith(("filters:", "trained:")) else str(Path(encoder)))
    return spec_from_options(weights=weights, seed=seed, blocks=blocks,
                             config=str(encoder_config) if encoder_config else None, lake=lake)


@app.command()
def run(
    manifest: Annotated[
        Path | None, typer.Argument(help="ingest this manifest first (optional)")
    ] = None,
    lake: LakeOpt = "lake",
    clinical: Annotated[Path | None, typer.Option(help="clinical.csv (with MANIFEST)")] = None,
    immune: Annotated[Path | None, typer.Option(help="immune CSV (with MANIFEST)")] = None,
    expression: Annotated[Path | None, typer.Option(help="TPM TSV (with MANIFEST)")] = None,
    label: Annotated[
        int | None, typer.Option(help="mask label of the ROI (with MANIFEST)")
    ] = None,
    roi: Annotated[
        str | None, typer.Option(help="RTSTRUCT ROI / SEG segment of DICOM masks (with MANIFEST)")
    ] = None,
    regions: RegionsOpt = None,
    regions_file: RegionsFileOpt = None,
    spacing: Annotated[str | None, typer.Option(
        help="ingest grid (with MANIFEST): isotropic mm (default 1) or 'native' (the "
             "sequence's own grid, for --encoder identity --settings)")] = None,
    encoder: Annotated[
        str, typer.Option(help="seeded | identity | path to a .pt state_dict | trained:NAME "
                          "(trained on the lake by `drlake encoder train`) | "
                          "filters:NAME_OR_FILE (a filter bank: filters:pyradiomics, "
                          "filters:ibsi2-phase2 or a .toml/.yaml file)")
    ] = "seeded",
    seed: Annotated[int, typer.Option(help="seed of the seeded encoder weights")] = 0,
    blocks: Annotated[str, typer.Option(help="maps per Conv3d block, e.g. 10,10")] = "10,10",
    encoder_config: Annotated[
        Path | None, typer.Option(help="JSON encoder configuration (overrides --blocks)")
    ] = None,
    cohort: Annotated[str, typer.Option(help="cohort of the lake to process")] = "main",
    bin_count: Annotated[int | None, typer.Option(help="fixed bin number (default 32)")] = None,
    bin_size: Annotated[float | None, typer.Option(help="fixed bin size instead")] = None,
    aggregation: Annotated[Aggregation, typer.Option(help="GLCM over 13 directions")] = (
        Aggregation.averaged
    ),
    shape: Annotated[str, typer.Option(help="shape features: paper | all | none")] = "paper",
    families: Annotated[
        str | None, typer.Option(help="families per map, comma-separated or 'all' (default: the "
                                 "encoder's: firstorder,glcm,glszm,ngtdm for the CNN; "
                                 "firstorder for a filter bank)")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="local workers (default: cores)")] = None,
    scheduler: Annotated[
        str, typer.Option(help="threads | processes | sync | a cluster address tcp://host:8786")
    ] = "threads",
    settings_ref: Annotated[str | None, typer.Option(
        "--settings",
        help="IBSI settings: a preset (paper; ibsi1-ct-A .. ibsi1-ct-E, ibsi1-digital-phantom) "
             "or a TOML/YAML file, or a PyRadiomics parameter file: the whole IBSI chain of "
             "`drlake quantify` on every map (with --encoder identity: on the lake's volumes in "
             "source units); --bin-count, --bin-size and --families override it")] = None,
    force: Annotated[bool, typer.Option(help="recompute even when outputs are current")] = False,
):
    """Run the pipeline: [ingest ->] activations -> quantify, then print the DRF table's shape."""
    from pipelines.lake import Lake
    from pipelines.pipeline import run_activations, run_quantify
    from pipelines.quantify import QuantifySettings
    from pipelines.scheduler import SchedulerSpec

    lk = Lake(lake)
    sched = SchedulerSpec(scheduler=scheduler, workers=workers)
    if manifest is not None:
        from pipelines.ingest import IngestSettings
        from pipelines.ingest import ingest as run_ingest

        typer.echo(str(run_ingest(manifest, lk, clinical=clinical, immune=immune,
                                  expression=expression, sched=sched,
                                  settings=IngestSettings(
                                      cohort=cohort, label=label, roi=roi,
                                      regions=_regions(regions, regions_file),
                                      spacing_mm=1.0 if spacing is None else _spacing(spacing),
                                  ))))
    elif any(v is not None for v in (label, roi, regions, regions_file, spacing)):
        raise InputError("--label, --roi, --regions and --spacing apply to ingest: give a "
                         "MANIFEST too")
    spec = _encoder_spec(encoder, seed, blocks, encoder_config, lk)
    if settings_ref is not None:
        from pipelines.processing import settings_from_options

        processing = settings_from_options(settings_ref, families=families, bin_count=bin_count,
                                           bin_size=bin_size)
        settings = QuantifySettings(processing=processing)
        typer.echo(f"settings {processing.name} (sha256 {processing.sha256[:12]}): "
                   f"{', '.join(processing.families)}; {'; '.join(processing.aggregations)}")
    else:
        settings = QuantifySettings(
            bin_count=None if bin_size is not None else (bin_count or 32), bin_size=bin_size,
            aggregation=aggregation.value, shape=shape,
            families=_families(families, with_shape=False) if families else None,
        )
    act = run_activations(lk, spec, sched, cohort=cohort, force=force)
    typer.echo(f"activations: encoder {act['encoder']}: {act['computed']} computed, "
               f"{act['skipped']} unchanged")
    q = run_quantify(lk, act["encoder"], settings, sched, cohort=cohort, force=force)
    typer.echo(f"quantify: {q['written']} fragment(s) written, {q['skipped']} unchanged "
               f"({q['seconds']:.1f} s)")
    _print_drf(lk, act["encoder"])


def _print_drf(lk, encoder_name: str, rows: int = 3, df=None) -> None:
    from pipelines.sql import connect

    if df is None:
        con = connect(lk)
        try:
            df = con.execute("SELECT * FROM drf WHERE encoder = ? ORDER BY region, patient_id",
                             [encoder_name]).df()
        finally:
            con.close()
    n_feat = df.shape[1] - 3
    regions = df["region"].value_counts(sort=False).to_dict() if "region" in df else {}
    per = ", ".join(f"{r} ({n})" for r, n in regions.items())
    typer.echo(f"DRF table ({encoder_name}): {df['patient_id'].nunique() if len(df) else 0} "
               f"patients x {n_feat} features; region (rows): {per or 'none'}")
    if len(df):
        show = df.iloc[:rows, : min(6, df.shape[1])]
        typer.echo(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


@app.command()
def features(
    lake: LakeOpt = "lake",
    encoder: Annotated[
        str | None, typer.Option(help="encoder name (default: the only or latest one)")
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="mask region (default: all, one row per patient and region)")
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="write the DRF table to FILE.parquet or FILE.csv")
    ] = None,
):
    """Show or export the DRF table (45 features per sequence, averaged over maps)."""
    from pipelines.lake import Lake
    from pipelines.sql import connect

    lk = Lake(lake)
    con = connect(lk)
    try:
        encs = [r[0] for r in con.execute(
            "SELECT encoder, max(run_id) FROM features GROUP BY encoder ORDER BY 2").fetchall()]
        if not encs:
            raise InputError(f"{lk.url}: the features table is empty (run `drlake run`)")
        name = encoder or encs[-1]
        if name not in encs:
            raise InputError(f"no features for encoder {name!r}; the lake has {', '.join(encs)}")
        df = con.execute("SELECT * FROM drf WHERE encoder = ? ORDER BY region, patient_id",
                         [name]).df()
    finally:
        con.close()
    if region is not None:
        have = sorted(df["region"].unique())
        if region not in have:
            raise InputError(f"no DRFs of region {region!r}; encoder {name} has "
                             f"{', '.join(have)}")
        df = df[df["region"] == region]
    df = df.dropna(axis=1, how="all")
    if export is None:
        _print_drf(lk, name, df=df)
        return
    suffix = export.suffix.lower()
    if suffix == ".parquet":
        df.to_parquet(export, index=False)
    elif suffix == ".csv":
        df.to_csv(export, index=False)
    else:
        raise InputError(f"{export}: export format must be .parquet or .csv")
    typer.echo(f"DRF table ({name}): {len(df)} patients x {df.shape[1] - 2} features -> {export}")


class SqlFormat(StrEnum):
    table = "table"
    csv = "csv"
    parquet = "parquet"
    json = "json"


@app.command()
def sql(
    query: Annotated[str | None, typer.Argument(help="SQL query (read-only)")] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="read the query from a file")]
    = None,
    lake: LakeOpt = "lake",
    format: Annotated[SqlFormat, typer.Option(help="output format")] = SqlFormat.table,
    out: Annotated[Path | None, typer.Option(help="write the result to this file")] = None,
    max_rows: Annotated[int, typer.Option(help="rows shown in table format")] = 50,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="query the lake as it was: a run id, a lake version (0 = after the "
        "first ok run) or an ISO timestamp")] = None,
):
    """Query the lake with DuckDB SQL (views: features, drf, clinical, immune_markers, ...)."""
    from pipelines.sql import run_query

    if (query is None) == (file is None):
        raise InputError("give a query or -f FILE (exactly one)")
    if file is not None:
        if not file.exists():
            raise InputError(f"{file}: file not found")
        query = file.read_text(encoding="utf-8")
    df = run_query(lake, query, as_of=as_of)
    if df is None:
        return
    if format == SqlFormat.parquet and out is None:
        raise InputError("--format parquet needs --out FILE")
    if format == SqlFormat.table:
        text = _table_text(df, max_rows)
    elif format == SqlFormat.csv:
        text = df.to_csv(index=False)
    elif format == SqlFormat.json:
        text = df.to_json(orient="records", date_format="iso")
    else:
        df.to_parquet(out, index=False)
        typer.echo(f"{len(df)} rows -> {out}")
        return
    if out is not None:
        out.write_text(text if text.endswith("\n") else text + "\n")
        typer.echo(f"{len(df)} rows -> {out}")
    else:
        typer.echo(text.rstrip("\n"))


def _table_text(df, max_rows: int) -> str:
    """Return a DataFrame as aligned text with a row of DuckDB column types under the header."""
    import pandas as pd

    types = df.attrs.get("types") or [str(t) for t in df.dtypes]
    shown = df.head(max_rows)
    cells = [[str(c) for c in df.columns], list(types)]
    for row in shown.itertuples(index=False):
        cells.append([
            "NULL" if v is None or (isinstance(v, float) and pd.isna(v))
            else f"{v:.6g}" if isinstance(v, float) else str(v)
            for v in row
        ])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))] if cells[0] else []
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(2, "  ".join("-" * w for w in widths))
    more = len(df) - len(shown)
    lines.append(f"({len(df)} rows" + (f", {more} not shown; use --max-rows)" if more else ")"))
    return "\n".join(lines)


@app.command()
def analyze(
    lake: LakeOpt = "lake",
    encoder: Annotated[str | None, typer.Option(help="encoder (default: latest)")] = None,
    region: Annotated[
        str | None,
        typer.Option(help="mask region to analyse (default: the only one, else the primary one)"),
    ] = None,
    protocol: Annotated[
        str, typer.Option(help="paper (the seed's choices) | strict (leakage-free)")
    ] = "paper",
    seed: Annotated[int, typer.Option(help="seed of the split and the forests")] = 0,
    n_train: Annotated[int, typer.Option(help="training patients of the split (paper: 100)")]
    = 100,
    trees: Annotated[int, typer.Option(help="trees of the survival forests")] = 300,
    marker_trees: Annotated[int, typer.Option(help="trees of the marker forests")] = 100,
    marker_cv: Annotated[str, typer.Option(
        help="Fig. 5 estimate: oob (out-of-bag, default) | loocv (the paper's pooled "
             "leave-one-out, n forests per cell) | none")] = "oob",
    permutation_repeats: Annotated[int, typer.Option(help="permutation importance repeats")]
    = 5,
    cv_folds: Annotated[int, typer.Option(help="folds of the repeated stratified CV")] = 5,
    cv_repeats: Annotated[
        int, typer.Option(help="repeats of the stratified k-fold CV of the survival forests, the "
                          "small-n estimate (0 = skip)")
    ] = 10,
    lpo_pairs: Annotated[
        int, typer.Option(help="leave-pair-out AUC of the survival forests over at most this "
                          "many (short, long) survivor pairs, one forest each (0 = skip)")
    ] = 0,
    km_median: Annotated[
        str, typer.Option(help="Kaplan-Meier median: r (R's survfit, default) | first (lifelines)")
    ] = "r",
    workers: Annotated[int | None, typer.Option(help="local workers (default: cores)")] = None,
    scheduler: Annotated[str, typer.Option(help="processes | threads | sync | tcp://host:port")]
    = "processes",
    force: Annotated[bool, typer.Option(help="rerun even if an identical run exists")] = False,
):
    """Run the statistics of seed 000 and write the results tables."""
    from pipelines.analyze import AnalyzeSettings, run_analyze
    from pipelines.lake import Lake
    from pipelines.scheduler import SchedulerSpec

    settings = AnalyzeSettings(encoder=encoder, region=region, protocol=protocol, seed=seed,
                               n_train=n_train, trees=trees, marker_trees=marker_trees,
                               marker_cv=marker_cv,
                               permutation_repeats=permutation_repeats, cv_folds=cv_folds,
                               cv_repeats=cv_repeats, lpo_pairs=lpo_pairs,
                               km_median=km_median)
    r = run_analyze(Lake(lake), settings, SchedulerSpec(scheduler, workers), force=force)
    if r["skipped"]:
        typer.echo(f"analyze: identical run {r['run_id']} already in the lake (use --force)")
    else:
        typer.echo(f"analyze {r['run_id']}: {r['message']} ({r['seconds']:.0f} s)")


@app.command()
def report(
    lake: LakeOpt = "lake",
    run: Annotated[str | None, typer.Option(
        "--run", help="analyze run id, rebuilt from that run's own snapshot of the lake "
        "(default: the latest analyze run, from the lake as it is)")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for index.html")] = None,
):
    """Write the HTML report of an analyze run (self-contained; opens without a server)."""
    from pipelines.lake import Lake
    from pipelines.report import build_report

    path = build_report(Lake(lake), run_id=run, out_dir=out)
    typer.echo(f"report: {path}")


@app.command()
def runs(lake: LakeOpt = "lake"):
    """List the run log of a lake."""
    from pipelines.lake import Lake

    df = Lake(lake).runs()
    if df.empty:
        typer.echo("no runs")
        return
    cols = ["run_id", "stage", "status", "started_at", "ended_at", "message"]
    typer.echo(df[cols].to_string(index=False))


@app.command()
def compact(
    lake: LakeOpt = "lake",
    vacuum: Annotated[bool, typer.Option(help="delete files no retained version needs")] = True,
):
    """Compact the lake's tables (Delta OPTIMIZE) and vacuum old files, keeping every table
    version a recorded run needs (so `--as-of RUN_ID` still works)."""
    from pipelines.lake import Lake
    from pipelines.maintenance import compact_lake

    res = compact_lake(Lake(lake), vacuum=vacuum)
    for name, m in res.items():
        typer.echo(f"{name}: {m['files_removed']} file(s) -> {m['files_added']}, "
                   f"{m['vacuumed']} vacuumed")


@app.command()
def migrate(lake: LakeOpt = "lake"):
    """Convert a drlake 0.1 lake (plain Parquet tables) to Delta tables, in place."""
    from pipelines.lake import Lake
    from pipelines.maintenance import migrate_lake

    res = migrate_lake(Lake(lake))
    if not res:
        typer.echo("nothing to migrate: every table is a Delta table")
    for name, n in res.items():
        typer.echo(f"{name}: {n} rows")


def _mount_subcommands() -> None:
    from pipelines.spatial.cli import app as spatial_app

    app.add_typer(spatial_app, name="spatial",
                  help="Spatially resolved radiomics of biopsies (seed 004): patches, train, "
                  "evaluate, map.")
    from pipelines.encoder_cli import app as encoder_app
    from pipelines.encoder_cli import compare_encoders

    app.add_typer(encoder_app, name="encoder",
                  help="Encoders trained on the lake's own volumes (self-supervised) and the "
                  "encoder study.")
    app.command("compare-encoders")(compare_encoders)


_mount_subcommands()


def _sql_args(argv: list[str]) -> list[str]:
    """Return argv with a `drlake sql` query that starts with a `--` comment moved behind `--`.

    An argument of `sql` that starts with "-" and holds whitespace is a query, not an option.
    """
    if "sql" not in argv or "--" in argv:
        return argv
    i = argv.index("sql")
    queries = [a for a in argv[i + 1:] if a.startswith("-") and any(c.isspace() for c in a)]
    if len(queries) != 1:
        return argv
    rest = [a for a in argv[i + 1:] if a is not queries[0]]
    return [*argv[:i + 1], *rest, "--", queries[0]]


def main() -> None:
    """Entry point of the `drlake` console script."""
    try:
        app(args=_sql_args(sys.argv[1:]))
    except DrlakeError as exc:
        typer.echo(f"drlake: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("drlake: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
