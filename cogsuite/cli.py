"""Console entry points of an installed suite (``pip install .`` / ``pip install -e .``):
``cogsuite-train``, ``cogsuite-eval``, ``cogsuite-export``, ``cogsuite-report``. Each runs the
same program as ``python train.py`` / ``python eval.py`` / ``python -m deploy.export`` /
``python -m analysis.report`` from the project root; importing ``cogsuite`` has put the project's
folders on sys.path (see ``cogsuite/__init__.py``)."""
from __future__ import annotations

import runpy

from cogsuite import project_root


def _script(name: str) -> None:
    # Run as a script, as `python train.py` does: Hydra finds configs/ beside the file only then.
    runpy.run_path(str(project_root() / name), run_name="__main__")


def train() -> None:
    _script("train.py")


def evaluate() -> None:
    _script("eval.py")


def export() -> None:
    runpy.run_module("deploy.export", run_name="__main__", alter_sys=True)


def report() -> None:
    runpy.run_module("analysis.report", run_name="__main__", alter_sys=True)
