"""What train.py and eval.py share: building objects from the Hydra config, device defaults,
user-facing errors, and the metrics table."""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from cogsuite.instantiate import instantiate_node
from errors import exit_on_user_error, user_error
from cogsuite.checkpoint_io import AtomicCheckpointIO
from cogsuite.quiet import quiet_third_party_noise
from cogsuite.checkpoint_keys import CONFIG_KEY

__all__ = ["CONFIG_KEY", "StoreConfigInCheckpoint", "apply_channels_last", "build_trainer",
           "exit_on_user_error", "format_metrics_table", "instantiate_group", "instantiate_node",
           "metrics_to_dict", "resolve_device_defaults", "user_error", "write_json"]

log = logging.getLogger("cogsuite")


class StoreConfigInCheckpoint(L.Callback):
    """Writes the resolved run config into every checkpoint, so eval.py and backbone transfer
    can rebuild task, backbone and data settings from the checkpoint alone."""

    def __init__(self, cfg: DictConfig, facts: Any = None) -> None:
        self.config = OmegaConf.to_container(cfg, resolve=True)
        if facts is not None:
            # The record holds what ran: a ``num_classes: null`` ("what the dataset holds") is
            # stored as the count the datamodule found (``data.facts``); the run's own config is
            # left as given.
            for node in ("data", "model"):
                section = self.config.get(node)
                if isinstance(section, dict) and "num_classes" in section and section["num_classes"] is None:
                    section["num_classes"] = int(facts.num_classes)

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


def instantiate_group(group: DictConfig | None, where: str = "") -> list[Any]:
    """Instantiate every entry of a config group mapping (callbacks, loggers) that has a target."""
    if not group:
        return []
    return [instantiate_node(node, f"{where}.{name}" if where else str(name))
            for name, node in group.items() if isinstance(node, DictConfig) and "_target_" in node]


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Any],
                  cluster_environment: Any = None, **overrides: Any) -> L.Trainer:
    """The configured Trainer; checkpoints are saved atomically (``AtomicCheckpointIO``) unless
    the config brings its own plugins; ``cluster_environment`` (e.g. SLURM's) joins them."""
    if not cfg.trainer.get("plugins"):
        overrides.setdefault("plugins", [AtomicCheckpointIO()])
    if cluster_environment is not None:
        overrides["plugins"] = [*(overrides.get("plugins") or []), cluster_environment]
    quiet_third_party_noise()
    return instantiate_node(cfg.trainer, "trainer", callbacks=callbacks,
                            logger=loggers or False, **overrides)


def _number(value: Any) -> float | None:
    """A scalar as float (NaN and inf included); None for anything that is not one number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def metrics_to_dict(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics as floats, sorted by name. Non-finite values are kept: a NaN loss is news."""
    out = {}
    for key, value in sorted(metrics.items()):
        number = _number(value)
        if number is not None:
            out[key] = number
    return out


def nonfinite_losses(metrics: Mapping[str, float]) -> list[str]:
    """Names of loss metrics that are NaN or infinite."""
    return [k for k, v in metrics.items() if "loss" in k.rsplit("/", 1)[-1] and not math.isfinite(v)]


def format_metrics_table(metrics: Mapping[str, float | str], title: str = "metrics") -> str:
    """A markdown table of scalar metrics, grouped by prefix (train/, val/, test/). NaN and inf
    are shown as such; text values (e.g. a divergence note) are printed as given."""
    if not metrics:
        return f"{title}: (none)"
    width = max(len(k) for k in [*metrics, title])
    lines = [f"| {title:<{width}} | value      |", f"|{'-' * (width + 2)}|------------|"]
    for key, value in metrics.items():
        shown = f"{value:>10.4g}" if isinstance(value, float) else f"{value!s:>10}"
        lines.append(f"| {key:<{width}} | {shown} |")
    return "\n".join(lines)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def apply_channels_last(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    if enabled:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model
