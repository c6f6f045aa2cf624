"""SLURM time limits and preemption: checkpoint at the next batch boundary, requeue, exit.

Why Lightning's SLURM requeue and not submitit's checkpointing: submitit's ``checkpoint`` (which
Hydra's submitit launcher implements) only resubmits the same call; it knows nothing about the
training, so the training state would have to be saved from inside submitit's signal handler.
Lightning owns the training state (weights, optimizer, schedule, loops, callbacks, the mid-epoch
sampler position of ``cogsuite.reproducibility``) and its ``SLURMEnvironment`` is how it runs under
SLURM (ranks from srun, the requeue signal, ``scontrol requeue`` of the job or array task).

One change to Lightning's auto-requeue: Lightning saves the checkpoint *inside* the signal
handler, i.e. wherever Python happens to be in the training step (mid-forward, after dropout
drew from the generator, or between two parameters' optimizer updates), which a resume cannot
continue exactly (reasoned, not measured: it depends on where the signal lands). Here the handler only notes the signal; the checkpoint is written at the end
of the current training batch (or after the epoch's validation when it is the epoch's last
batch), the same points as the suite's mid-epoch and epoch-end checkpoints, from which a resume
is bit-identical (docs/reliability.md). Lightning's own SLURM handler is switched off
(``SLURMEnvironment(auto_requeue=False)``, see ``slurm_environment``) so only one acts.

- The requeue signal (``signal``, default ``USR2``: what submitit's sbatch asks SLURM to send
  ``signal_delay_s`` before the time limit): write ``checkpoints/requeue.ckpt``, run
  ``scontrol requeue <job>`` (rank 0) and stop with ``RunRequeued``.
- ``SIGTERM`` (preemption with a grace time, ``scancel``, a node going down): write the
  checkpoint and stop, without requeueing (SLURM requeues preempted jobs itself when the
  partition is set up for it; ``scancel`` means stop).

Under DDP the ranks agree (any rank's signal counts) before anyone saves. Active only in a
SLURM job (``enabled: auto``) unless ``enabled: true``.
"""
from __future__ import annotations

import logging
import os
import signal as signals
import subprocess
from pathlib import Path
from typing import Any

import lightning as L

from errors import ConfigError
from cogsuite.cluster import CHECKPOINT_FOLDER, REQUEUE_CHECKPOINT, slurm_job_id

log = logging.getLogger("cogsuite")


class RunRequeued(Exception):
    """The run saved its checkpoint on a SLURM signal and stopped; ``requeued`` says whether
    ``scontrol requeue`` accepted the job."""

    def __init__(self, message: str, checkpoint: Path, requeued: bool, job_id: str | None) -> None:
        super().__init__(message)
        self.checkpoint, self.requeued, self.job_id = checkpoint, requeued, job_id


def _signal(name: str | int) -> signals.Signals:
    if isinstance(name, int):
        return signals.Signals(name)
    key = str(name).upper()
    key = key if key.startswith("SIG") else f"SIG{key}"
    try:
        return signals.Signals[key]
    except KeyError:
        raise ConfigError(f"callbacks.requeue_on_signal.signal: unknown signal {name!r}; use the "
                          "one the job's sbatch --signal names, e.g. USR2 or USR1") from None


def slurm_active(enabled: Any) -> bool:
    if str(enabled).lower() in ("true", "1"):
        return True
    if str(enabled).lower() in ("false", "0", "none"):
        return False
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


class RequeueOnSignal(L.Callback):
    """See the module docstring."""

    def __init__(self, signal: str | int = "USR2", enabled: Any = "auto",
                 requeue_command: str = "scontrol") -> None:
        self.signal = _signal(signal)
        self.enabled = enabled
        self.requeue_command = requeue_command
        self._received: signals.Signals | None = None
        self._previous: dict[signals.Signals, Any] = {}

    @property
    def active(self) -> bool:
        return slurm_active(self.enabled)

    def slurm_environment(self) -> Any | None:
        """The cluster-environment plugin for the Trainer: SLURM's ranks, Lightning's own
        requeue handler off (this callback requeues)."""
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if not self.active or not SLURMEnvironment.detect():
            return None
        return SLURMEnvironment(auto_requeue=False, requeue_signal=self.signal)

    # ------------------------------------------------------------------ signal handling
    def _note(self, signum: int, frame: Any) -> None:
        received = signals.Signals(signum)
        if self._received != self.signal:  # the requeue signal wins over SIGTERM
            self._received = received
        log.warning("received %s: saving a checkpoint at the end of this training batch%s",
                    received.name, ", then requeueing" if received == self.signal else "")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Runs before Lightning registers its handlers: Lightning keeps ours for SIGTERM
        # (it calls existing handlers after its own) and leaves a handled signal alone.
        if stage != "fit" or not self.active:
            return
        for sig in dict.fromkeys((self.signal, signals.SIGTERM)):
            self._previous[sig] = signals.getsignal(sig)
            signals.signal(sig, self._note)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:
                signals.signal(sig, handler)
        self._previous = {}

    # ------------------------------------------------------------------ acting at a safe point
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch's last batch: act after its validation, at the epoch end
        self._act(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._act(trainer)

    def _act(self, trainer: L.Trainer) -> None:
        if not self._previous:
            return
        requested = trainer.strategy.reduce_boolean_decision(self._received is not None, all=False)
        if not requested:
            return
        requeue = trainer.strategy.reduce_boolean_decision(self._received == self.signal, all=False)
        path = Path(trainer.default_root_dir) / CHECKPOINT_FOLDER / REQUEUE_CHECKPOINT
        trainer.save_checkpoint(path)
        job = slurm_job_id()
        accepted = False
        if requeue and trainer.is_global_zero:
            accepted = self._requeue(job)
        if trainer.world_size > 1:
            accepted = bool(trainer.strategy.broadcast(accepted, src=0))
        if requeue:
            message = (f"saved {path} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                       + (f"SLURM job {job} requeued: it continues in this folder"
                          if accepted else
                          f"requeueing SLURM job {job} failed: resubmit it, or resume with "
                          f"python train.py ... ckpt_path={path}"))
        else:
            message = (f"saved {path} at epoch {trainer.current_epoch}, step {trainer.global_step} "
                       f"on SIGTERM; resume with python train.py ... ckpt_path={path} (a SLURM job "
                       "requeued by SLURM continues by itself)")
        raise RunRequeued(message, path, accepted, job)

    def _requeue(self, job: str | None) -> bool:
        if job is None:
            log.error("no SLURM job id in the environment: cannot requeue")
            return False
        try:
            result = subprocess.run([self.requeue_command, "requeue", job], check=False,
                                    capture_output=True, text=True, timeout=60,
                                    env=os.environ.copy())
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("%s requeue %s failed: %s", self.requeue_command, job, exc)
            return False
        if result.returncode != 0:
            log.error("%s requeue %s failed (exit %d): %s", self.requeue_command, job,
                      result.returncode, (result.stderr or result.stdout).strip())
            return False
        return True
