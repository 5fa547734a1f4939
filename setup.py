"""Build step that puts the top-level schemas/ and sql/ folders inside the package of a wheel
(pipelines/_data/), so an installed drlake has its table schemas and SQL views. Everything else
is configured in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = ("schemas", "sql")


class BuildPyWithData(build_py):
    """build_py that also copies the data folders into the built package."""

    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for name in DATA:
            target = Path(self.build_lib) / "pipelines" / "_data" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(root / name, target)


setup(cmdclass={"build_py": BuildPyWithData})
