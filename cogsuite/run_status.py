"""``<run>/status.json``: where a run stands, for ``python -m analysis.report --status``.

Written by the global-rank-0 process only, atomically (temporary file + rename), merged with
what an earlier start of the same run wrote (so a requeued run keeps its count):

- ``state``: ``running`` | ``requeued`` | ``finished`` | ``diverged`` | ``failed``
- ``heartbeat``: the last time a running training said it was alive (UTC, ISO 8601), every
  ``every_s`` seconds at a training-batch end and at every epoch end
- ``requeues``: how often this run asked SLURM to requeue it; ``restarts``: SLURM's own count
  (``SLURM_RESTART_COUNT``, which also counts preemptions SLURM requeued by itself)
- ``error``: the last line of the error a failed run stopped with
- ``epoch``, ``step``, ``host``, ``pid``, ``slurm_job_id``, ``started``
"""
from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.rank_zero import rank_zero_only

STATUS_FILE = "status.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / STATUS_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def write_status(run_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the run's status file (global rank 0 only); returns the new status."""
    if rank_zero_only.rank != 0:
        return {}
    folder = Path(run_dir)
    if not folder.is_dir():
        return {}
    status = {**read_status(folder), **fields}
    temporary = folder / f".{STATUS_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(status, indent=2, default=str))
    os.replace(temporary, folder / STATUS_FILE)
    return status


def start_status(run_dir: str | os.PathLike) -> None:
    """A (re)start of the run: running, with this process's host and SLURM job."""
    from cogsuite.cluster import restart_count, slurm_job_id

    previous = read_status(run_dir)
    write_status(run_dir, state="running", heartbeat=now_iso(), started=now_iso(),
                 host=socket.gethostname(), pid=os.getpid(), slurm_job_id=slurm_job_id(),
                 restarts=max(restart_count(), int(previous.get("restarts", 0) or 0)),
                 requeues=int(previous.get("requeues", 0) or 0), error=None)


def error_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


class Heartbeat(L.Callback):
    """Writes ``heartbeat``, ``epoch`` and ``step`` to status.json at most every ``every_s``
    seconds (at a training-batch end) and at every training-epoch end."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = float(every_s)
        self._last = 0.0

    def _beat(self, trainer: L.Trainer, force: bool = False) -> None:
        if not trainer.is_global_zero or (not force and time.monotonic() - self._last < self.every_s):
            return
        self._last = time.monotonic()
        write_status(trainer.default_root_dir, state="running", heartbeat=now_iso(),
                     epoch=trainer.current_epoch, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._beat(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._beat(trainer, force=True)
