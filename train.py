"""Train, validate, then test (the best checkpoint, or the final weights with test_ckpt=last), and
print a metrics table.

    python train.py task=classification backbone=cog_e2 data=synthetic
    python train.py task=detection backbone=mv2_e2 paths.data_dir=/data      # VOCdevkit/ inside
    python train.py task=segmentation backbone=cog_e2 backbone.pretrained=PATH.ckpt
    python train.py ckpt_path=logs/.../checkpoints/last.ckpt                 # resume (same folder)
    python train.py -m backbone=mv2_e2,cog_e2 data=synthetic                  # sweep

What a run guarantees (resume, reproducibility, atomic checkpoints, divergence) is described in
docs/reliability.md.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, open_dict

from data.facts import dataset_facts
from errors import ConfigError
import cogsuite.run_dirs  # noqa: F401 - registers the run-folder resolvers used by configs/hydra
from cogsuite import cluster
from cogsuite.requeue import RequeueOnSignal, RunRequeued
from cogsuite.run_status import error_line, read_status, start_status, write_status
from cogsuite.divergence import NonFiniteLossGuard, TrainingDiverged
from cogsuite.reproducibility import EpochSeedCallback
from cogsuite.resume import check_training_settings, in_place_problem, record_origin, same_model
from cogsuite.run_dirs import resumed_run_dir
from cogsuite.run_lock import RunFolderInUseError, RunFolderLock, remove_stale_temporaries
from cogsuite.runtime import (
    StoreConfigInCheckpoint,
    apply_channels_last,
    build_trainer,
    exit_on_user_error,
    format_metrics_table,
    instantiate_group,
    instantiate_node,
    metrics_to_dict,
    nonfinite_losses,
    resolve_device_defaults,
    write_json,
)
from cogsuite.suite_checkpoint import check_resumable, check_weights_fit, read_suite_checkpoint

log = logging.getLogger("train")


def _best_checkpoint_callback(trainer: L.Trainer, monitor: str):
    return next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None) == monitor),
                None)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg``; returns the final metrics (a diverged run
    also returns ``diverged`` = True). The run folder is locked for the job (one writer,
    ``cogsuite.run_lock``); a resume is checked first (``cogsuite.resume``)."""
    out = Path(cfg.paths.output_dir)
    fresh_folder = not out.exists() or not any(p.name not in _HYDRA_ONLY for p in out.iterdir())
    _continue_requeued_run(cfg)
    try:
        origin = _check_resume(cfg, out)
    except ConfigError:  # a refused resume leaves no trace of a run that never started
        if fresh_folder:
            _remove_unstarted_run_folder(out)
        else:
            _remove_this_invocations_config(out)
        raise
    if rank_zero_only.rank != 0:  # DDP processes of the same run: rank 0 holds the lock
        return _train(cfg, origin)
    try:
        lock = RunFolderLock(out).acquire()
    except RunFolderInUseError:
        _remove_this_invocations_config(out)
        raise
    try:
        remove_stale_temporaries(out)
        return _train(cfg, origin)
    finally:
        lock.release()


_HYDRA_ONLY = {".hydra", "train.log", ".run.lock"}


def _remove_unstarted_run_folder(out: Path) -> None:
    import shutil

    if out.is_dir() and all(p.name in _HYDRA_ONLY for p in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


def _remove_this_invocations_config(out: Path) -> None:
    """A refused resume leaves no ``.hydra/resume_*`` record of a run that did not happen."""
    import shutil

    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else None
    if subdir and str(subdir).startswith(".hydra/resume_"):
        shutil.rmtree(out / str(subdir), ignore_errors=True)


def _continue_requeued_run(cfg: DictConfig) -> None:
    """A SLURM job started again after a requeue, in its own unfinished run folder (the run
    folder rules in cogsuite.cluster), continues from the folder's most advanced checkpoint."""
    if cfg.get("ckpt_path") or not cfg.get("train", True) or not cluster.is_requeued_start():
        return
    checkpoint = cluster.resume_checkpoint(cfg.paths.output_dir)
    if checkpoint is None:
        return
    log.warning("continuing the unfinished run in %s from %s", cfg.paths.output_dir, checkpoint)
    with open_dict(cfg):
        cfg.ckpt_path = str(checkpoint)


def _check_resume(cfg: DictConfig, out: Path) -> dict[str, Any] | None:
    """Refuse a resume that would record settings it does not apply; the origin of a run
    started from another run's checkpoint (None otherwise)."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path or not cfg.get("train", True):
        return None
    checkpoint = read_suite_checkpoint(ckpt_path)
    if same_model(checkpoint, cfg):  # another task or backbone: check_resumable explains that later
        check_training_settings(checkpoint, cfg, str(ckpt_path))
    del checkpoint
    source_run = resumed_run_dir(ckpt_path)
    if source_run is not None and Path(source_run).resolve() == out.resolve():
        return None  # continues in its own folder
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
    reason = in_place_problem(source_run, overrides) if source_run is not None else None
    origin = record_origin(out, str(ckpt_path), reason, write=rank_zero_only.rank == 0)
    log.info("starting a new run in %s from %s (%s)", out, ckpt_path, origin["reason_for_a_new_run_folder"])
    return origin


def _train(cfg: DictConfig, origin: dict[str, Any] | None) -> dict[str, Any]:
    resolve_device_defaults(cfg)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    # The datamodule first: a missing dataset stops here, before any model is built. Its facts
    # flow one way into the model (data.facts): num_classes=null becomes the count found.
    datamodule: L.LightningDataModule = instantiate_node(cfg.data, "data")
    facts = dataset_facts(datamodule)
    model: L.LightningModule = instantiate_node(cfg.model, "model", **facts.model_arguments(cfg.model))
    model.use_dataset_facts(facts)
    if cfg.get("ckpt_path"):  # refuse another task/architecture or a broken file before Lightning reads it
        checkpoint = read_suite_checkpoint(cfg.ckpt_path)
        if cfg.get("train", True):
            check_resumable(checkpoint, model, cfg.ckpt_path)
        else:
            check_weights_fit(model, checkpoint, cfg.ckpt_path)
        del checkpoint
    model = apply_channels_last(model, bool(cfg.channels_last))
    if cfg.get("compile"):
        model = torch.compile(model)

    guard = NonFiniteLossGuard(cfg.get("on_nonfinite_loss", "stop"),
                               cfg.get("max_consecutive_skips", 20), cfg.get("max_loss_growth", 1e4))
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks") + [
        StoreConfigInCheckpoint(cfg, facts), EpochSeedCallback(cfg.seed), guard]
    loggers = instantiate_group(cfg.get("logger"), "logger")
    requeue = next((cb for cb in callbacks if isinstance(cb, RequeueOnSignal)), None)
    trainer = build_trainer(cfg, callbacks, loggers,
                            cluster_environment=requeue.slurm_environment() if requeue else None)
    if cfg.get("train", True):
        start_status(cfg.paths.output_dir)
    best_callback = _best_checkpoint_callback(trainer, cfg.monitor)

    diverged: dict[str, Any] | None = None
    if cfg.get("train", True):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"),
                        weights_only=True)
        except TrainingDiverged as exc:
            log.error("%s", exc)
            diverged = exc.summary()
    metrics: dict[str, Any] = metrics_to_dict(trainer.callback_metrics)

    results: dict[str, Any] = {}
    best = best_callback.best_model_path if best_callback else ""
    if diverged is not None:
        if best:
            log.error("not testing a diverged run; the best checkpoint before it diverged is %s "
                      "(evaluate it with: python eval.py ckpt_path=%s)", best, best)
    elif cfg.get("test", True):
        # test_ckpt: "best" tests the best checkpoint by `monitor`; "last" the final weights (the
        # detection protocol: its validation may read the test set, see data.val_fraction).
        which = cfg.get("test_ckpt", "best")
        if which not in ("best", "last"):
            raise ConfigError(f"test_ckpt must be 'best' or 'last', got {which!r}")
        ckpt = (best or None) if which == "best" else None
        if cfg.get("train", True) and which == "best" and not ckpt:
            log.warning("no best checkpoint was saved; testing the current weights")
        if not cfg.get("train", True):
            ckpt = cfg.get("ckpt_path")
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        metrics.update(metrics_to_dict(trainer.callback_metrics))
        results = dict(getattr(model, "test_results", {}) or {})
        results["tested_checkpoint"] = ckpt or "final weights"
        if cfg.get("cpu_ms_per_image") and trainer.is_global_zero:
            from tasks.inference_timing import cpu_ms_per_image

            timing = cpu_ms_per_image(model, datamodule.test_dataset, int(cfg.cpu_ms_per_image))
            metrics["test/cpu_ms_per_image"] = timing["cpu_ms_per_image"]
            results["inference_timing"] = timing
    if best:
        # Selected on validation; when validation reads the test set that is a test-selected
        # number, and its key says so.
        on_test = bool(getattr(datamodule, "validates_on_test", False))
        key = "best_checkpoint_score_test_selected" if on_test else "best_checkpoint_score"
        metrics[key] = float(best_callback.best_model_score)
        results["best_checkpoint"] = best
        results["best_checkpoint_selected_on_test_set"] = on_test
    if diverged is None and (bad := nonfinite_losses(metrics)):
        diverged = {"reason": f"non-finite {', '.join(bad)} at the end of the run"}
    if guard.skipped_steps:
        results["skipped_nonfinite_steps"] = guard.skipped_steps
    if origin is not None:
        results["origin"] = origin

    if trainer.is_global_zero:
        _report(cfg, metrics, results, diverged, guard.skipped_steps)
        if cfg.get("train", True):
            write_status(cfg.paths.output_dir, state="finished" if diverged is None else "diverged")
    if diverged is not None:
        metrics["diverged"] = True
    return metrics


def _report(cfg: DictConfig, metrics: dict[str, float], results: dict[str, Any],
            diverged: dict[str, Any] | None, skipped: int) -> None:
    out = Path(cfg.paths.output_dir)
    table: dict[str, float | str] = {
        k: v for k, v in metrics.items()
        if "/acc_class/" not in k and "/iou_" not in k and "/ap_" not in k}
    title = f"{cfg.task_name} · {cfg.backbone.name}"
    if skipped:
        table["skipped non-finite steps"] = float(skipped)
    if diverged is not None:
        table["DIVERGED"] = "yes"
        title += " · DIVERGED"
    print("\n" + format_metrics_table(table, title=title))
    if diverged is not None:
        print(f"\nDIVERGED: {diverged['reason']}")
    write_json(out / "metrics.json", {"metrics": metrics, "diverged": diverged is not None,
                                      **({"divergence": diverged} if diverged else {}), **results})
    print(f"\nmetrics, checkpoints and logs: {out}")


DIVERGED_EXIT_STATUS = 3
# The run saved its checkpoint on a SLURM signal and stopped (requeued, or stopped by SIGTERM).
REQUEUED_EXIT_STATUS = 0


def _finished_metrics(cfg: DictConfig) -> float | None:
    """A requeued SLURM job whose run already finished (requeued after its last checkpoint)
    does not train again: it returns the stored result."""
    if not cluster.is_requeued_start() or not cfg.get("train", True):
        return None
    path = Path(cfg.paths.output_dir) / cluster.METRICS_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text()).get("metrics", {})
    log.warning("the run in %s has finished already (metrics.json); not training it again",
                cfg.paths.output_dir)
    return stored.get(cfg.monitor, math.nan)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    cluster.pin_local_job_gpus(hydra_cfg.job.get("num") if multirun else None,
                               cfg.trainer.get("devices"))
    cluster.export_submitit_ranks()
    finished = _finished_metrics(cfg)
    if finished is not None:
        return finished
    try:
        if multirun:
            with cluster.ddp_children_run_this_job(hydra_cfg.overrides.task, cfg.paths.output_dir):
                metrics = train(cfg)
        else:
            metrics = train(cfg)
    except RunRequeued as stop:
        requeues = int(read_status(cfg.paths.output_dir).get("requeues", 0) or 0)
        write_status(cfg.paths.output_dir, state="requeued" if stop.requeued else "stopped",
                     requeues=requeues + int(stop.requeued))
        log.warning("%s", stop)
        sys.exit(REQUEUED_EXIT_STATUS)
    except BaseException as error:
        if not isinstance(error, SystemExit) or error.code not in (0, None):
            write_status(cfg.paths.output_dir, state="failed", error=error_line(error))
        raise
    if not metrics.get("diverged"):
        return metrics.get(cfg.monitor)  # for Hydra sweepers
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return math.nan  # the sweep goes on; a diverged job is the worst result
    sys.exit(DIVERGED_EXIT_STATUS)


if __name__ == "__main__":
    main()
