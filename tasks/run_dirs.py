"""Run folders: unique per run, reused only by a resumed run, checked before Hydra creates them.

``configs/hydra/default.yaml`` names a run folder ``<time>_<backbone>_<run id>``. The run id
is random (32 bits from the OS), drawn once per process, so runs started in the same second,
on one machine or on many nodes of a cluster, never share a folder. A multirun sweep folder
carries the id too; its jobs are numbered subfolders.

In a SLURM job the run id is the job's id, and a job SLURM requeued finds the folder its first
start created (``tasks.cluster.requeued_run_dir``); a multirun's sweep folder is resolved once, in
the launching process, so submitit's jobs and their requeues share it.

``python train.py ckpt_path=<run>/checkpoints/X.ckpt`` resumes in ``<run>``: logs continue in
the same folder, and Lightning's best-checkpoint tracking (which it restores only when the
checkpoint folder is unchanged) carries on. Hydra then writes that invocation's config under
``<run>/.hydra/resume_<time>_<id>/`` so the original run's ``.hydra/`` stays as it was.

The resolvers are registered on import (train.py and eval.py import this module).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from errors import ConfigError, exit_with_error

CHECKPOINT_FOLDER = "checkpoints"  # configs/callbacks/default.yaml: ${paths.output_dir}/checkpoints
_RUN_ID = secrets.token_hex(4)


def run_id() -> str:
    """This process's run id: in a SLURM job the job's id (``slurm-<cluster>-<job>``, the same
    after a requeue, see tasks.cluster), else 8 random hex digits; the same on every call."""
    from tasks.cluster import slurm_run_id

    return slurm_run_id() or _RUN_ID


def resumed_run_dir(ckpt_path: Any, train: Any = True) -> str | None:
    """The run folder a training checkpoint belongs to (``<run>/checkpoints/X.ckpt``), or None."""
    if not ckpt_path or train in (False, "false", "False"):
        return None
    ckpt = Path(str(ckpt_path))
    if ckpt.parent.name != CHECKPOINT_FOLDER or not ckpt.is_file():
        return None
    return os.path.abspath(ckpt.parent.parent)


def _run_dir(new_dir: str, ckpt_path: Any = None, train: Any = True, overrides: Any = None) -> str:
    from tasks.cluster import requeued_run_dir

    if overrides is not None and not isinstance(overrides, (list, tuple)):
        overrides = OmegaConf.to_container(overrides) if OmegaConf.is_config(overrides) else None
    return resumed_run_dir(ckpt_path, train) or requeued_run_dir(new_dir, overrides) or new_dir


def _hydra_subdir(ckpt_path: Any = None, train: Any = True, stamp: str = "") -> str:
    if resumed_run_dir(ckpt_path, train) is None:
        return ".hydra"
    return f".hydra/resume_{stamp}_{run_id()}"


def _register_resolvers() -> None:
    from tasks import cluster

    # run_id is cached like Hydra's ${now:}: a sweep job's config is composed anew (in a
    # submitit job, or its SLURM requeue, in another process) and takes the launching process's
    # resolver cache (ConfigLoader.load_sweep_config), so every job resolves the same sweep folder.
    OmegaConf.register_new_resolver("run_id", run_id, replace=True, use_cache=True)
    for name, resolver in (("run_dir", _run_dir), ("hydra_subdir", _hydra_subdir),
                           ("launcher_gpus", cluster.launcher_gpus),
                           ("launcher_cpus_per_task", cluster.launcher_cpus_per_task),
                           ("local_gpu_count", cluster.local_gpu_count)):
        OmegaConf.register_new_resolver(name, resolver, replace=True)


_register_resolvers()


def check_writable_folder(folder: str | os.PathLike, what: str = "log folder") -> None:
    """Raise ConfigError unless ``folder`` exists as a writable folder or can be created."""
    folder = Path(os.path.abspath(folder))
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(
            f"cannot create the {what} {folder}: {existing} is a file, not a folder. Choose "
            "another paths.log_dir (or COG_LOG_DIR), or move that file away.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write the {what} {folder}: no write permission in {existing}. Choose a "
            "writable paths.log_dir (or COG_LOG_DIR).")


class CheckRunFolder(Callback):
    """Hydra callback: the run (or sweep) folder must be creatable before Hydra makes it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "run folder")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "sweep folder")

    @staticmethod
    def _check(folder: str, what: str) -> None:
        try:
            check_writable_folder(folder, what)
        except ConfigError as error:
            # Hydra prints exceptions from its callbacks with a traceback; this runs before any job.
            exit_with_error(str(error))
