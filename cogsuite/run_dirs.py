"""Run folders: unique per run, reused only by a resumed run, checked before Hydra creates them.

``configs/hydra/default.yaml`` names a run folder ``<time>_<backbone>_<run id>``. The run id
is random (32 bits from the OS), drawn once per process, so runs started in the same second,
on one machine or on many nodes of a cluster, never share a folder. A multirun sweep folder
carries the id too; its jobs are numbered subfolders.

``python train.py ckpt_path=<run>/checkpoints/X.ckpt`` resumes in ``<run>`` when that run has
not finished and is resumed with its own settings (``cogsuite.resume.in_place_problem``): logs
continue in the same folder, and Lightning's best-checkpoint tracking (which it restores only
when the checkpoint folder is unchanged) carries on. Hydra then writes that invocation's config
under ``<run>/.hydra/resume_<time>_<id>/`` so the original run's ``.hydra/`` stays as it was.
A finished run, or other settings, train in a new run folder that records its origin.

In a SLURM job the run id is the job's id, and a job SLURM requeued finds the folder its first
start created (``cogsuite.cluster.requeued_run_dir``, by the rules above); a multirun's sweep
folder is resolved once, in the launching process, so submitit's jobs and their requeues share it.

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
    after a requeue, see cogsuite.cluster), else 8 random hex digits; the same on every call."""
    from cogsuite.cluster import slurm_run_id

    return slurm_run_id() or _RUN_ID


def resumed_run_dir(ckpt_path: Any, train: Any = True) -> str | None:
    """The run folder a training checkpoint belongs to (``<run>/checkpoints/X.ckpt``), or None."""
    if not ckpt_path or train in (False, "false", "False"):
        return None
    ckpt = Path(str(ckpt_path))
    if ckpt.parent.name != CHECKPOINT_FOLDER or not ckpt.is_file():
        return None
    return os.path.abspath(ckpt.parent.parent)


def _overrides(root: Any) -> list[str] | None:
    try:
        return [str(o) for o in root.hydra.overrides.task]
    except Exception:  # noqa: BLE001 - outside a Hydra run (compose in tests): unknown
        return None


def continued_run_dir(ckpt_path: Any, train: Any = True, overrides: list[str] | None = None) -> str | None:
    """The run folder a resume continues in, or None when it trains in a new folder."""
    from cogsuite.resume import in_place_problem

    run = resumed_run_dir(ckpt_path, train)
    return run if run is not None and in_place_problem(run, overrides) is None else None


def _run_dir(new_dir: str, ckpt_path: Any = None, train: Any = True, *, _root_: Any = None) -> str:
    from cogsuite.cluster import requeued_run_dir

    overrides = _overrides(_root_)
    return (continued_run_dir(ckpt_path, train, overrides) or requeued_run_dir(new_dir, overrides)
            or new_dir)


_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _sweep_subdir(job_num: Any, backbone: str, run_folder: str, task_name: str, log_dir: str,
                  stamp: str, sweep_id: str, sweeper: str = _BASIC_SWEEPER) -> str:
    """A sweep job's folder below the sweep folder: ``<job number>_<backbone>``. A job whose
    ``run_folder`` names a table row (``thesis/table5_1/caltech256_cog_e2``) goes to that row's
    folder, as a single run of the row does, named ``<time>_<backbone>_<sweep's run id>-<job
    number>`` (absolute, which Hydra's join keeps): the row's runs stay together whichever way
    they were launched, and Table 5.5 finds the Table 5.1 classifiers there. Every part comes from
    the launching process (time and run id are cached resolvers), so a requeued job gets the
    same folder. The trials of a search (another sweeper, e.g. Optuna's) stay together in the
    search folder, next to its results."""
    if str(run_folder) == f"{task_name}/runs" or str(sweeper) != _BASIC_SWEEPER:
        return f"{job_num}_{backbone}"
    return os.path.abspath(os.path.join(str(log_dir), str(run_folder),
                                        f"{stamp}_{backbone}_{sweep_id}-{job_num}"))


def _hydra_subdir(ckpt_path: Any = None, train: Any = True, stamp: str = "", *, _root_: Any = None) -> str:
    if continued_run_dir(ckpt_path, train, _overrides(_root_)) is None:
        return ".hydra"
    return f".hydra/resume_{stamp}_{run_id()}"


def _register_resolvers() -> None:
    from cogsuite import cluster

    # run_id is cached like Hydra's ${now:}: a sweep job's config is composed anew (in a
    # submitit job, or its SLURM requeue, in another process) and takes the launching process's
    # resolver cache (ConfigLoader.load_sweep_config), so every job resolves the same sweep folder.
    OmegaConf.register_new_resolver("run_id", run_id, replace=True, use_cache=True)
    for name, resolver in (("run_dir", _run_dir), ("hydra_subdir", _hydra_subdir),
                           ("sweep_subdir", _sweep_subdir),
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
