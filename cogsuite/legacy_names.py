"""Targets and class paths that older versions of the suite stored in checkpoints, mapped to
where those objects are now. The checkpoint reader (``cogsuite.suite_checkpoint``) rewrites a
checkpoint through this one table before checking it, so every checkpoint a user already has
keeps loading, evaluating and resuming after a module moves. When a class or factory that a
config names (``_target_``) moves, add its old path here (tests/test_legacy_checkpoints.py
holds checkpoints of the older layouts)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# old "module.name" -> new "module.name"
LEGACY_TARGETS: dict[str, str] = {
    # issue 19: the run machinery left tasks/ for cogsuite/
    "tasks.csv_logger.ResumableCSVLogger": "cogsuite.csv_logger.ResumableCSVLogger",
    "cogsuite.run_dirs.CheckRunFolder": "cogsuite.run_dirs.CheckRunFolder",
}


def current_name(name: Any) -> Any:
    """``name`` as this version spells it (unchanged if it never moved or is not a string)."""
    return LEGACY_TARGETS.get(name, name) if isinstance(name, str) else name


def upgrade_targets(node: Any) -> Any:
    """A copy of ``node`` (nested mappings and lists) with every ``_target_`` renamed."""
    if isinstance(node, Mapping):
        return {key: current_name(value) if key == "_target_" else upgrade_targets(value)
                for key, value in node.items()}
    if isinstance(node, list):
        return [upgrade_targets(value) for value in node]
    return node
