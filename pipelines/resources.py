"""Where drlake's own data files live: the table schemas (``schemas/``) and the SQL views
(``sql/``).

In a source checkout they are the top-level folders next to the package; in an installed wheel
they are copies inside the package (``pipelines/_data/<name>``, put there by setup.py's build
step), so that ``pip install drlake`` works without the source tree.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir"]

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder of drlake's data files `name` ("schemas" or "sql")."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(  # a broken installation, not a user mistake
        f"drlake's {name}/ folder is missing (looked in {_PACKAGE / '_data' / name} and "
        f"{_PACKAGE.parent / name}); reinstall drlake"
    )
