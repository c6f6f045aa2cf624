"""Evaluate a checkpoint of this suite on its task's test split.

    python eval.py ckpt_path=logs/classification/runs/.../checkpoints/best_epoch007.ckpt
    python eval.py ckpt_path=PATH paths.data_dir=/data trainer=ddp trainer.devices=2

Task, backbone and data settings are rebuilt from the config stored in the checkpoint. The
metrics table is printed and written as JSON next to the checkpoint (PATH.eval.json).
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tasks.base import SUITE_KEY, backbone_spec
from tasks.runtime import (
    CONFIG_KEY,
    UserError,
    apply_channels_last,
    build_trainer,
    exit_on_user_error,
    format_metrics_table,
    metrics_to_dict,
    resolve_device_defaults,
    write_json,
)

log = logging.getLogger("eval")


def read_suite_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only) and check it is ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path.resolve()}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours / unsafe"
        raise UserError(
            f"{path} could not be read as a safe checkpoint (weights_only=True): {exc}"
        ) from exc
    if not isinstance(checkpoint, dict) or SUITE_KEY not in checkpoint or CONFIG_KEY not in checkpoint:
        keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UserError(
            f"{path} is not a checkpoint written by this suite's train.py (no '{SUITE_KEY}' / "
            f"'{CONFIG_KEY}' entries; found {keys}). Evaluate checkpoints from "
            "logs/<task>/runs/<run>/checkpoints/."
        )
    return checkpoint


def run_config(checkpoint: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The training run's config with this invocation's paths, trainer and data overrides."""
    stored = OmegaConf.create(checkpoint[CONFIG_KEY])
    OmegaConf.set_struct(stored, False)
    for key in ("paths", "trainer", "seed", "num_workers", "channels_last"):
        if key in cfg:
            stored[key] = cfg[key]
    if cfg.get("data"):
        stored.data = OmegaConf.merge(stored.data, cfg.data)
    stored.data.num_workers = cfg.num_workers
    stored.ckpt_path = cfg.ckpt_path
    return stored


def load_task(checkpoint: dict[str, Any], path: str | Path) -> L.LightningModule:
    module_name, _, class_name = checkpoint[SUITE_KEY]["class_path"].rpartition(".")
    task_class = getattr(importlib.import_module(module_name), class_name)
    # The checkpoint already holds the trained backbone: do not load `pretrained` again.
    spec = backbone_spec(checkpoint["hyper_parameters"]["backbone"])
    spec["pretrained"] = None
    return task_class.load_from_checkpoint(path, map_location="cpu", weights_only=True,
                                           backbone=spec)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    checkpoint = read_suite_checkpoint(cfg.ckpt_path)
    run_cfg = run_config(checkpoint, cfg)
    resolve_device_defaults(run_cfg)
    L.seed_everything(run_cfg.seed, workers=True)

    datamodule = instantiate(run_cfg.data)
    model = apply_channels_last(load_task(checkpoint, cfg.ckpt_path), bool(run_cfg.channels_last))
    trainer = build_trainer(run_cfg, callbacks=[], loggers=[])
    trainer.test(model, datamodule=datamodule)
    metrics = metrics_to_dict(trainer.callback_metrics)

    if trainer.is_global_zero:
        info = checkpoint[SUITE_KEY]
        print("\n" + format_metrics_table(metrics, title=f"{info['task']} · {info['backbone']}"))
        out = Path(str(cfg.ckpt_path) + ".eval.json")
        write_json(out, {"checkpoint": str(Path(cfg.ckpt_path).resolve()), "task": info["task"],
                         "backbone": info["backbone"], "metrics": metrics,
                         **(getattr(model, "test_results", {}) or {})})
        print(f"\nwritten: {out}")
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
