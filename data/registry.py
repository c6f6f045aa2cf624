"""Datamodule registry: every datamodule (class or factory function) a config's ``data._target_``
may name registers itself with ``@register_datamodule``. The checkpoint allowlist is this
registry (plus ``cogsuite.legacy_names`` for targets of older versions), so a new dataset is
its own module plus one ``configs/data/<name>.yaml``; nothing else lists datasets."""
from __future__ import annotations

from typing import Callable, TypeVar

Target = TypeVar("Target", bound=Callable)
_REGISTRY: dict[str, Callable] = {}


def target_path(obj: Callable) -> str:
    """The ``_target_`` string Hydra uses for ``obj``: ``module.qualname``."""
    return f"{obj.__module__}.{obj.__qualname__}"


def register_datamodule(obj: Target) -> Target:
    """Decorator registering a datamodule class or a function returning a datamodule."""
    _REGISTRY[target_path(obj)] = obj
    return obj


def datamodule_targets() -> frozenset[str]:
    """``_target_`` of every registered datamodule (imports every module of ``data``)."""
    from cogsuite.discovery import import_submodules

    import_submodules("data")
    return frozenset(_REGISTRY)
