"""Train, validate, then test (the best checkpoint, or the final weights with test_ckpt=last), and
print a metrics table.

    python train.py task=classification backbone=cog_e2 data=synthetic
    python train.py task=detection backbone=mv2_e2 paths.data_dir=/data      # VOCdevkit/ inside
    python train.py task=segmentation backbone=cog_e2 backbone.pretrained=PATH.ckpt
    python train.py ckpt_path=logs/.../checkpoints/last.ckpt                 # resume
    python train.py -m backbone=mv2_e2,cog_e2 data=synthetic                  # sweep
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from errors import ConfigError
from tasks.runtime import (
    StoreConfigInCheckpoint,
    apply_channels_last,
    build_trainer,
    exit_on_user_error,
    format_metrics_table,
    instantiate_group,
    metrics_to_dict,
    resolve_device_defaults,
    write_json,
)

log = logging.getLogger("train")


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns the final scalar metrics."""
    resolve_device_defaults(cfg)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    # The datamodule first: a missing dataset stops here, before any model is built.
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    getattr(datamodule, "class_names", None)  # indexes the dataset now (lazy datamodules)
    model: L.LightningModule = instantiate(cfg.model)
    model = apply_channels_last(model, bool(cfg.channels_last))
    if cfg.get("compile"):
        model = torch.compile(model)

    callbacks = instantiate_group(cfg.get("callbacks")) + [StoreConfigInCheckpoint(cfg)]
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks, loggers)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = metrics_to_dict(trainer.callback_metrics)

    results: dict[str, Any] = {}
    if cfg.get("test", True):
        # test_ckpt: "best" tests the best checkpoint by `monitor`; "last" the final weights (the
        # detection protocol: its validation may read the test set, see data.val_fraction).
        which = cfg.get("test_ckpt", "best")
        if which not in ("best", "last"):
            raise ConfigError(f"test_ckpt must be 'best' or 'last', got {which!r}")
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt = best or None if which == "best" else None
        if cfg.get("train", True) and which == "best" and not ckpt:
            log.warning("no best checkpoint was saved; testing the current weights")
        if not cfg.get("train", True):
            ckpt = cfg.get("ckpt_path")
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        metrics.update(metrics_to_dict(trainer.callback_metrics))
        results = dict(getattr(model, "test_results", {}) or {})
        results["tested_checkpoint"] = ckpt or "final weights"
        if best:
            # Selected on validation; when validation reads the test set that is a test-selected
            # number, and its key says so.
            on_test = bool(getattr(datamodule, "validates_on_test", False))
            key = "best_checkpoint_score_test_selected" if on_test else "best_checkpoint_score"
            metrics[key] = float(trainer.checkpoint_callback.best_model_score)
            results["best_checkpoint"] = best
            results["best_checkpoint_selected_on_test_set"] = on_test

    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        table = {k: v for k, v in metrics.items() if "/acc_class/" not in k and "/iou_" not in k
                 and "/ap_" not in k}
        print("\n" + format_metrics_table(table, title=f"{cfg.task_name} · {cfg.backbone.name}"))
        write_json(out / "metrics.json", {"metrics": metrics, **results})
        print(f"\nmetrics, checkpoints and logs: {out}")
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.monitor)  # for Hydra sweepers


if __name__ == "__main__":
    main()
