"""What train.py and eval.py share: building objects from the Hydra config, device defaults,
user-facing errors, and the metrics table."""
from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("cogsuite")

CONFIG_KEY = "cogsuite_config"  # the resolved run config, stored in every checkpoint


class UserError(Exception):
    """A problem with the user's input that we can explain; printed without a traceback."""


def _user_facing(exc: BaseException) -> BaseException | None:
    """The exception to show the user, unwrapping Hydra's InstantiationException."""
    seen = exc
    while isinstance(seen, InstantiationException) and seen.__cause__ is not None:
        seen = seen.__cause__
    user_types = (UserError, FileNotFoundError, ValueError, KeyError, TypeError)
    return seen if isinstance(seen, user_types) else None


def exit_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; an input error (missing dataset, unknown backbone, wrong checkpoint) is
    printed as one clear message and exits with status 2 instead of a library traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
            shown = _user_facing(exc)
            if shown is None:
                raise
            message = shown.args[0] if isinstance(shown, KeyError) and shown.args else str(shown)
            print(f"\nerror: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper


class StoreConfigInCheckpoint(L.Callback):
    """Writes the resolved run config into every checkpoint, so eval.py and backbone transfer
    can rebuild task, backbone and data settings from the checkpoint alone."""

    def __init__(self, cfg: DictConfig) -> None:
        self.config = OmegaConf.to_container(cfg, resolve=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config


def resolve_device_defaults(cfg: DictConfig) -> None:
    """precision=auto -> bf16-mixed on CUDA, 32-true on CPU; channels_last=auto -> on for CUDA."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    with open_dict(cfg):
        if cfg.trainer.get("precision", "auto") in ("auto", None):
            cfg.trainer.precision = "bf16-mixed" if on_cuda else "32-true"
        if cfg.get("channels_last", "auto") in ("auto", None):
            cfg.channels_last = bool(on_cuda)
        if cfg.trainer.get("sync_batchnorm") and not on_cuda:
            # torch's SyncBatchNorm runs on CUDA tensors only; CPU (gloo) processes keep
            # per-process BatchNorm statistics.
            log.warning("trainer.sync_batchnorm needs CUDA; running without it on CPU")
            cfg.trainer.sync_batchnorm = False


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group mapping (callbacks, loggers) that has a target."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig)
            and "_target_" in node]


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Any],
                  **overrides: Any) -> L.Trainer:
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def metrics_to_dict(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in sorted(metrics.items()):
        number = _number(value)
        if number is not None:
            out[key] = number
    return out


def format_metrics_table(metrics: Mapping[str, float], title: str = "metrics") -> str:
    """A markdown table of scalar metrics, grouped by prefix (train/, val/, test/)."""
    if not metrics:
        return f"{title}: (none)"
    width = max(len(k) for k in metrics)
    lines = [f"| {title:<{width}} | value      |", f"|{'-' * (width + 2)}|------------|"]
    for key, value in metrics.items():
        lines.append(f"| {key:<{width}} | {value:>10.4g} |")
    return "\n".join(lines)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def apply_channels_last(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    if enabled:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model
