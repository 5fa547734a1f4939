"""Synthetic cohort with planted effects and a ground-truth file (`make_cohort`), and its tables
alone (`make_tables`). See `pipelines.synth.cohort` for the layout written."""

from .cohort import make_cohort
from .latent import make_tables

__all__ = ["make_cohort", "make_tables"]
