"""The report stage: one self-contained HTML page per analysis run.

``build_report(lake, run_id=None, out_dir=None) -> Path`` reads an analyze run's results tables
through SQL (filtered by the run id), draws the figures of seed 000 (Figures 2-5) and its tables
(Tables 1 and 2) with matplotlib, and writes ``<lake>/reports/<run_id>/index.html`` (or
``<out_dir>/index.html``) with every figure embedded as a base64 PNG.

Modules: :mod:`~pipelines.report.figures` (DataFrames in, Figures out),
:mod:`~pipelines.report.page` (HTML), :mod:`~pipelines.report.build` (reading and writing).
"""

from pipelines.report.build import build_report

__all__ = ["build_report"]
