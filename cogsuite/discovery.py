"""Importing every module of a package, so the modules' registration calls run (the task and
datamodule registries are filled by the modules that define them, as the backbone registry is)."""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package: str) -> None:
    """Import every module of ``package`` (not recursive). Cheap after the first call."""
    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__):
        importlib.import_module(f"{package}.{info.name}")
