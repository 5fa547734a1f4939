"""drlake: a deep-radiomics data lake (volumes and activation maps in Zarr, features in Parquet,
SQL and statistics over them)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drlake")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
