"""IBSI 2 convolutional filters as pure functions on (z, y, x) numpy volumes, and filter banks.

One module per family: mean, log (Laplacian of Gaussian), laws, gabor, wavelets (separable,
undecimated), simoncelli (non-separable wavelets), riesz; padding holds the IBSI boundary
conditions and input checks, rotation the pseudo-rotation-invariance pooling, bank the
registry (filter name + parameters -> frozen hashed spec) and filter banks. Validated against
the IBSI 2 phase-1 consensus response maps (tests/test_filters_*.py). Docstrings cite the IBSI 2
reference manual (arXiv:2006.05470) by section title: the manual is not in shared/reference, so
its section numbers are not quoted.
"""

from pipelines.filters.gabor import gabor_filter
from pipelines.filters.laws import laws_filter
from pipelines.filters.log import log_filter
from pipelines.filters.mean import mean_filter
from pipelines.filters.padding import BOUNDARIES
from pipelines.filters.riesz import riesz_log, riesz_simoncelli, riesz_transform
from pipelines.filters.simoncelli import simoncelli_filter
from pipelines.filters.wavelets import wavelet_filter

__all__ = [
    "BOUNDARIES",
    "gabor_filter",
    "laws_filter",
    "log_filter",
    "mean_filter",
    "riesz_log",
    "riesz_simoncelli",
    "riesz_transform",
    "simoncelli_filter",
    "wavelet_filter",
]
