"""Evaluating a checkpoint of this suite on its task's test split (what ``python eval.py`` runs;
the per-class analysis calls it too).

Task, backbone and data settings are rebuilt from the config stored in the checkpoint; only
this suite's own task and datamodule classes are ever built from it (``cogsuite.suite_checkpoint``).
The metrics table is printed and written as JSON next to the checkpoint (PATH.eval.json); when
that folder is read-only, to this evaluation's own log folder instead (said), or to ``out=FILE``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from cogsuite.checkpoint_keys import CONFIG_KEY, SUITE_KEY
from cogsuite.output_paths import OutputPathError, check_output_folder, folder_problem, output_folder
from cogsuite.runtime import (
    apply_channels_last,
    build_trainer,
    format_metrics_table,
    metrics_to_dict,
    resolve_device_defaults,
    write_json,
)
from cogsuite.suite_checkpoint import build_task, instantiate_data, read_suite_checkpoint, rebase_data_paths
from data.facts import dataset_facts
from errors import ConfigError
from tasks.classification_report import format_classification_report

log = logging.getLogger("eval")

__all__ = ["evaluate", "load_task", "read_suite_checkpoint", "run_config"]


def run_config(checkpoint: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The training run's config with this invocation's paths, trainer and data overrides.

    The stored data roots are absolute paths of the training machine; a ``paths.data_dir`` /
    ``paths.synthetic_dir`` given here moves every data path under the stored folder to the
    new one.
    """
    stored_container = checkpoint[CONFIG_KEY]
    stored_paths = dict(stored_container.get("paths") or {})
    moves = [(stored_paths[key], cfg.paths[key]) for key in ("data_dir", "synthetic_dir")
             if cfg.paths.get(key) is not None and stored_paths.get(key)]
    stored = OmegaConf.create({k: v for k, v in stored_container.items() if k != "data"})
    stored.data = rebase_data_paths(stored_container.get("data") or {}, moves)
    OmegaConf.set_struct(stored, False)
    stored.paths = {**stored_paths, **{k: v for k, v in OmegaConf.to_container(cfg.paths, resolve=True).items()
                                       if v is not None}}
    for key in ("trainer", "seed", "num_workers", "channels_last"):
        if key in cfg:
            stored[key] = cfg[key]
    if cfg.get("data"):
        stored.data = OmegaConf.merge(stored.data, cfg.data)
    stored.data.num_workers = cfg.num_workers
    stored.ckpt_path = cfg.ckpt_path
    return stored


def load_task(checkpoint: dict[str, Any], path: str | Path) -> L.LightningModule:
    """The trained task model of a checkpoint read by ``read_suite_checkpoint``."""
    return build_task(checkpoint, path)


def _checkpoint_path(cfg: DictConfig) -> str:
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError("no checkpoint given: python eval.py "
                          "ckpt_path=logs/<task>/runs/<run>/checkpoints/last.ckpt")
    return str(cfg.ckpt_path)


def _eval_json_path(cfg: DictConfig, ckpt_path: str) -> Path:
    """Where the results go, decided before the evaluation runs: ``out`` if given (a file, or a
    folder to put ``<checkpoint>.eval.json`` in), else next to the checkpoint, else (read-only
    checkpoint folder) this evaluation's log folder."""
    name = Path(ckpt_path).name + ".eval.json"
    given = cfg.get("out")
    if given:
        given = Path(str(given))
        if given.is_dir():
            return check_output_folder(given, "evaluation results", "out=") / name
        problem = folder_problem(given.parent)
        if problem is not None:
            raise OutputPathError(f"cannot write the evaluation results to {given}: {problem}; name a "
                                  "writable file or folder with out=")
        return given
    try:
        own_log_folder = [Path(str(cfg.paths.output_dir))]
    except Exception:  # noqa: BLE001 - no Hydra run (called as a library): no log folder
        own_log_folder = []
    return output_folder(Path(ckpt_path).parent, own_log_folder, "evaluation results", "out=PATH") / name


def evaluate(cfg: DictConfig) -> dict[str, float]:
    ckpt_path = _checkpoint_path(cfg)
    out = _eval_json_path(cfg, ckpt_path)
    checkpoint = read_suite_checkpoint(ckpt_path)
    run_cfg = run_config(checkpoint, cfg)
    resolve_device_defaults(run_cfg)
    L.seed_everything(run_cfg.seed, workers=True)

    datamodule = instantiate_data(run_cfg.data, ckpt_path)
    model = load_task(checkpoint, ckpt_path).use_dataset_facts(dataset_facts(datamodule))
    model = apply_channels_last(model, bool(run_cfg.channels_last))
    trainer = build_trainer(run_cfg, callbacks=[], loggers=[])
    trainer.test(model, datamodule=datamodule)
    metrics = metrics_to_dict(trainer.callback_metrics)
    timing = {}
    if cfg.get("cpu_ms_per_image") and trainer.is_global_zero:
        from tasks.inference_timing import cpu_ms_per_image

        timing = {"inference_timing": cpu_ms_per_image(model, datamodule.test_dataset,
                                                       int(cfg.cpu_ms_per_image))}
        metrics["test/cpu_ms_per_image"] = timing["inference_timing"]["cpu_ms_per_image"]

    if trainer.is_global_zero:
        info = checkpoint[SUITE_KEY]
        print("\n" + format_metrics_table(metrics, title=f"{info['task']} · {info['backbone']}"))
        report = (getattr(model, "test_results", {}) or {}).get("classification_report")
        if report:
            print("\n" + format_classification_report(report))
        write_json(out, {"checkpoint": str(Path(ckpt_path).resolve()), "task": info["task"],
                         "backbone": info["backbone"], "metrics": metrics,
                         **(getattr(model, "test_results", {}) or {}), **timing})
        print(f"\nwritten: {out}")
    return metrics
