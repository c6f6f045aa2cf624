"""Running the study on a cluster or on the GPUs of one node: who this job is, which run folder
is its own, and the process set-up the launchers leave to the job.

The launchers are Hydra's submitit plugin (``configs/hydra/launcher/slurm.yaml`` and
``local.yaml``); nothing here submits or schedules anything. What the job itself must do:

- **Its run id.** In a SLURM job the run id is the job's own id (``slurm-<cluster>-<job>``,
  ``<array job>_<array task>`` for an array task), which SLURM keeps when it requeues the job, so
  the requeued job can find its folder. Elsewhere it is random (``cogsuite.run_dirs``).
- **Its folder after a requeue.** A multirun job's folder is ``<sweep>/<job number>_<backbone>``;
  the sweep folder is resolved once in the launching process (``cogsuite.run_dirs``), so
  the requeued job, which SLURM starts from the same pickled submission, gets the same folder. A
  single run (``python train.py`` in a batch script) that SLURM requeues looks for the unfinished
  folder of its own job id with the same overrides (``requeued_run_dir``); never another job's.
- **Which checkpoint continues the run** (``resume_checkpoint``): the newest of the folder's
  ``requeue.ckpt`` (written on the requeue signal), ``last.ckpt`` and ``mid_epoch_step*.ckpt``.
- **DDP processes.** Under SLURM, srun starts one task per device and Lightning's
  ``SLURMEnvironment`` reads the ranks. Under submitit's local executor the tasks are started the
  same way, and ``export_submitit_ranks`` hands their ranks to Lightning (torch's env:// variables).
  Under Hydra's basic launcher Lightning starts the other ranks itself by re-running the command;
  ``ddp_children_run_this_job`` makes that command this job's single run (Lightning would re-run
  the whole ``-m`` sweep in every child).
- **GPUs of one node** (``pin_local_job_gpus``): submitit's local executor gives every job the
  same first GPUs; job ``k`` of a sweep is moved to its own ``trainer.devices`` GPUs instead.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("cogsuite")

METRICS_FILE = "metrics.json"  # written by train.py when a run ends: the run is finished
CHECKPOINT_FOLDER = "checkpoints"
REQUEUE_CHECKPOINT = "requeue.ckpt"


# --------------------------------------------------------------------------- who this job is
def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes for this job (``<array job>_<task>`` for an array
    task, as Lightning's SLURM requeue uses), or None outside SLURM."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def slurm_run_id() -> str | None:
    """The run id of this SLURM job: stable across requeues, unique across clusters that share a
    log folder (the cluster name is part of it when SLURM sets it)."""
    job = slurm_job_id()
    if job is None:
        return None
    cluster = os.environ.get("SLURM_CLUSTER_NAME")
    return f"slurm-{cluster}-{job}" if cluster else f"slurm-{job}"


def restart_count() -> int:
    """How often SLURM restarted (requeued) this job: ``SLURM_RESTART_COUNT``, 0 on the first start."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def is_requeued_start() -> bool:
    return slurm_job_id() is not None and restart_count() > 0


# --------------------------------------------------------------------------- its run folder
def requeued_run_dir(new_dir: str, overrides: Sequence[str] | None) -> str | None:
    """For a single run that SLURM requeued: the folder its first start created.

    ``new_dir`` is the folder a new run would get, ``<parent>/<time>_<backbone>_<run id>``; the
    earlier start's folder differs only in the time. It must be one a resume may continue in
    (``cogsuite.resume.in_place_problem``: unfinished, the same command-line overrides), so that
    a requeued batch script with several runs gives each its own folder back. Returns None (a
    new folder) when there is none."""
    from cogsuite.resume import in_place_problem

    run_id = slurm_run_id()
    if run_id is None or restart_count() == 0:
        return None
    new = Path(new_dir)
    suffix = new.name.split("_", 2)[-1]  # <backbone>_<run id> (the time is <date>_<clock>)
    if not suffix.endswith(run_id) or not new.parent.is_dir():
        return None
    candidates = sorted((p for p in new.parent.iterdir()
                         if p.is_dir() and p.name.endswith(f"_{suffix}")), reverse=True)
    for candidate in candidates:
        if in_place_problem(candidate, overrides) is None:
            return str(candidate.resolve())
    return None


def resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint an unfinished run continues from: the most advanced (by global step) of
    ``last.ckpt``, ``requeue.ckpt`` and ``mid_epoch_step*.ckpt``; on a tie the epoch-end
    ``last.ckpt``. None when the folder has none, or the run has finished."""
    import torch

    run = Path(run_dir)
    folder = run / CHECKPOINT_FOLDER
    if (run / METRICS_FILE).exists() or not folder.is_dir():
        return None
    candidates = [folder / "last.ckpt", folder / REQUEUE_CHECKPOINT,
                  *sorted(folder.glob("mid_epoch_step*.ckpt"), reverse=True)]
    best: tuple[int, int, Path] | None = None
    for rank, path in enumerate(candidates):
        if not path.is_file():
            continue
        try:
            step = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
        except Exception as exc:  # noqa: BLE001 - a damaged file is skipped, the others may do
            log.warning("not resuming from %s: %s", path, exc)
            continue
        if best is None or (step, -rank) > (best[0], -best[1]):
            best = (step, rank, path)
    return best[2] if best else None


# --------------------------------------------------------------------------- processes and GPUs
def _submitit_environment() -> Any | None:
    """submitit's JobEnvironment when this process is a submitit job, else None."""
    if not (os.environ.get("SUBMITIT_EXECUTOR") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")):
        return None
    try:
        import submitit

        return submitit.JobEnvironment()
    except Exception:  # noqa: BLE001 - not a submitit job after all
        return None


def export_submitit_ranks() -> None:
    """In a multi-task job of submitit's local executor, export torch's env:// variables (rank,
    world size, master address and port) so Lightning joins the tasks instead of starting
    processes. Under SLURM, Lightning's SLURMEnvironment reads SLURM's variables itself."""
    env = _submitit_environment()
    if env is None or os.environ.get("SLURM_JOB_ID") or env.num_tasks <= 1:
        return
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    # Lightning read the rank from the environment when it was imported, before this export.
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    rank_zero_only.rank = int(os.environ["RANK"])


def local_job_gpus(job_num: int, devices: int, visible: Sequence[str]) -> list[str]:
    """The GPUs of job ``job_num`` of a local sweep: its own ``devices`` consecutive ones of the
    ``visible`` GPUs, wrapping around when there are more jobs than GPU sets."""
    sets = max(1, len(visible) // max(1, devices))
    first = (job_num % sets) * devices
    return list(visible[first:first + devices])


def pin_local_job_gpus(job_num: int | None, devices: Any) -> None:
    """Under submitit's local executor (several jobs of a sweep at once on one machine), narrow
    ``CUDA_VISIBLE_DEVICES`` to this job's own GPUs before CUDA starts. No-op elsewhere."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if (job_num is None or not os.environ.get("SUBMITIT_LOCAL_JOB_ID") or not visible
            or not isinstance(devices, int) or devices < 1):
        return
    gpus = local_job_gpus(int(job_num), devices, visible.split(","))
    if len(gpus) == devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        log.info("sweep job %s runs on GPU(s) %s", job_num, ",".join(gpus))


# What Lightning's subprocess launcher writes into the parent's environment for its children.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK")


@contextlib.contextmanager
def ddp_children_run_this_job(job_overrides: Sequence[str], job_dir: str) -> Iterator[None]:
    """Inside a ``-m`` job of Hydra's basic launcher: while the block runs, the command Lightning
    re-runs to start the other DDP ranks is this job's single run in this job's folder.

    Lightning builds that command from ``sys.argv`` and ``HydraConfig.run.dir``
    (``_hydra_subprocess_cmd``): in a sweep that is the whole ``-m`` sweep, so every child would
    start a sweep of its own. Afterwards the process group is closed and the variables Lightning
    set for the children (``LOCAL_RANK`` among them) are put back: left set, the next job's
    Lightning would take this process for a rank started from outside and wait for a partner
    that never comes."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    hydra_cfg = HydraConfig.get()
    saved_argv, saved_dir = list(sys.argv), hydra_cfg.run.dir
    saved_env = {key: os.environ.get(key) for key in _DDP_ENV}
    script = sys.argv[0]
    sys.argv = [script, *[o for o in job_overrides]]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = job_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.run.dir = saved_dir
        close_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- launcher resolvers
def launcher_gpus(accelerator: Any, devices: Any) -> int | None:
    """GPUs per node a launcher asks for: ``trainer.devices`` unless the run is on the CPU."""
    if str(accelerator) == "cpu":
        return None
    return int(devices) if isinstance(devices, int) or str(devices).isdigit() else None


def launcher_cpus_per_task(num_workers: Any) -> int:
    """CPUs per task: the data-loading workers plus the training process."""
    return int(num_workers) + 1


def local_gpu_count() -> int | None:
    """All GPUs of this machine, for submitit's local executor (None: no GPU)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return count or None
