"""What ``ckpt_path=`` continues, and where: a run folder's records must match what happened.

- A run continues **in its own folder** only when it did not finish (no ``metrics.json``) and
  is resumed with the overrides it was started with (``ckpt_path`` and the settings that
  change no result aside: ``IN_PLACE_NEUTRAL``). Anything else (a finished run, other settings)
  trains in a **new run folder** whose ``origin.json`` records the checkpoint it started from
  and why it is a new run; the finished run's checkpoints, metrics and config stay as they are.
  (``cogsuite.run_dirs`` asks :func:`in_place_problem` when Hydra names the run folder.)
- Resuming restores the optimizer state and learning-rate schedule stored in the checkpoint
  (Lightning). Optimizer or schedule settings that differ from the checkpoint's would be
  recorded but not applied, so :func:`check_training_settings` refuses them in one line with
  the commands that do what was meant.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from errors import ConfigError

ORIGIN_FILE = "origin.json"
METRICS_FILE = "metrics.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
# Overrides that change where or how fast a run works, never what it computes.
IN_PLACE_NEUTRAL = ("ckpt_path", "num_workers", "data.num_workers", "paths.", "hydra.")
# Settings whose values live in a checkpoint's training state and are restored from it.
RESTORED_SETTINGS = ("model.optimizer", "model.scheduler")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].strip()


def _meaningful(overrides: Sequence[str]) -> list[str]:
    return sorted(o.lstrip("+") for o in overrides
                  if not any(_key(o) == n or (n.endswith(".") and _key(o).startswith(n)) for n in IN_PLACE_NEUTRAL))


def in_place_problem(run_dir: str | os.PathLike, overrides: Sequence[str] | None) -> str | None:
    """Why resuming cannot continue in ``run_dir`` (the reason a new run folder is used), or None.

    ``overrides``: this invocation's command-line overrides (Hydra's ``hydra.overrides.task``);
    None when unknown (then the run's own are assumed)."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS_FILE).is_file():
        return f"the run in {run_dir} has finished (it has a {METRICS_FILE})"
    if overrides is None:
        return None
    stored_path = run_dir / OVERRIDES_FILE
    try:
        stored = [str(o) for o in OmegaConf.load(stored_path)]
    except Exception:  # noqa: BLE001 - missing or unreadable: the run's settings are unknown
        return f"the settings of the run in {run_dir} are unknown (no readable {OVERRIDES_FILE})"
    before, now = _meaningful(stored), _meaningful(overrides)
    if before != now:
        changed = sorted(set(before) ^ set(now))
        return f"the settings differ from that run's ({', '.join(changed)})"
    return None


def record_origin(run_dir: str | os.PathLike, ckpt_path: str, reason: str | None,
                  write: bool = True) -> dict[str, Any]:
    """The origin of a run started from another run's checkpoint, written to ``origin.json``
    (by one process of a DDP run: ``write``)."""
    origin = {"started_from_checkpoint": os.path.abspath(ckpt_path),
              "reason_for_a_new_run_folder": reason or "the checkpoint is not in a run's checkpoints/ folder"}
    if write:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / ORIGIN_FILE).write_text(json.dumps(origin, indent=2))
    return origin


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: node}


def same_model(checkpoint: Mapping[str, Any], cfg: DictConfig) -> bool:
    """Whether ``cfg`` trains the checkpoint's task class and backbone (by name)."""
    from cogsuite.checkpoint_keys import SUITE_KEY

    info = checkpoint.get(SUITE_KEY) or {}
    return (info.get("class_path") == OmegaConf.select(cfg, "model._target_")
            and info.get("backbone") == OmegaConf.select(cfg, "backbone.name"))


def check_training_settings(checkpoint: Mapping[str, Any], cfg: DictConfig, ckpt_path: str) -> None:
    """Refuse a resume whose optimizer / schedule settings differ from the checkpoint's: the
    restored state would train with the old ones while the new run recorded the new ones."""
    from cogsuite.checkpoint_keys import CONFIG_KEY

    stored = checkpoint.get(CONFIG_KEY) or {}
    changed = []
    for dotted in RESTORED_SETTINGS:
        before = stored
        for part in dotted.split("."):
            before = before.get(part) if isinstance(before, Mapping) else None
        node = OmegaConf.select(cfg, dotted)
        now = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        old_flat, new_flat = _flatten(before or {}, dotted), _flatten(now or {}, dotted)
        changed += [f"{key}={new_flat.get(key)!r} (checkpoint: {old_flat.get(key)!r})"
                    for key in sorted(set(old_flat) | set(new_flat)) if old_flat.get(key) != new_flat.get(key)]
    if changed:
        raise ConfigError(
            f"cannot resume from {ckpt_path} with other optimizer/schedule settings: {'; '.join(changed)}. "
            "Resuming restores the optimizer state and learning-rate schedule stored in the checkpoint, so "
            "these would be recorded but not applied. Resume with the checkpoint's settings (drop those "
            f"overrides), or start a new run from its backbone with them: backbone.pretrained={ckpt_path} "
            "(without ckpt_path)")
