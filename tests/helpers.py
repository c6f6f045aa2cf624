"""Helpers for tests that run the real entry points on composed Hydra configs."""
from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from torch import nn

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
# Genuine VOC / Caltech files, copied into the repository (provenance in fixtures/SOURCES.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``configs/<name>.yaml`` as the entry point would, with CPU-test settings."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.trainer.accelerator = "cpu"
        if "callbacks" in cfg:
            cfg.callbacks.pop("progress_bar", None)
            cfg.callbacks.pop("model_summary", None)
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_model_summary = False
        cfg.num_workers = 0
    return cfg


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (in the module's dtype), so tests
    of fusion and equivalence do not pass on identity BNs."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n, dtype = m.num_features, m.weight.dtype
            m.running_mean.copy_(torch.rand(n, generator=g, dtype=dtype) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=dtype) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g, dtype=dtype) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g, dtype=dtype) * 0.4 - 0.2)
    return module
