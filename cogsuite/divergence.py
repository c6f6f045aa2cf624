"""Divergence is never silent: a non-finite training loss stops the run or skips the step.

``on_nonfinite_loss=stop`` (default): the first NaN/inf training loss raises
``TrainingDiverged`` before the backward pass, so no checkpoint is written with the broken
weights; train.py reports the run as diverged (table and ``metrics.json``).
``on_nonfinite_loss=skip``: the step's gradients are dropped (the optimizer updates nothing) and
the BatchNorm statistics of that forward pass are rolled back; after ``max_consecutive_skips``
skipped steps in a row the run is stopped as diverged, since it will not recover.

An **exploding** loss counts as diverged too: a finite loss more than ``max_loss_growth``
(default 1e4) times its start (the first training step's loss, at least 1) is treated exactly like
a non-finite one. Without it a run at lr=1e6 trains on at losses of 1e8..1e13 and nothing says so.
``max_loss_growth=null`` turns that check off.

Checking the loss costs one host sync per step. Under DDP every process takes the same decision
(one all-reduce of a flag), so no process waits for another that stopped.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch

from errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("stop", "skip")
LIKELY_CAUSES = (
    "Likely causes: a learning rate too high (model.optimizer.lr), bad input data (NaN/inf "
    "pixels, degenerate boxes or masks), or overflow in reduced precision (try "
    "trainer.precision=32-true)"
)


class TrainingDiverged(Exception):
    """Training stopped on a non-finite loss. Not a bad-input error: train.py reports it."""

    def __init__(self, message: str, step: int, epoch: int, loss: float | None) -> None:
        super().__init__(message)
        self.step, self.epoch, self.loss = step, epoch, loss

    def summary(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "loss": self.loss, "reason": str(self)}


class NonFiniteLossGuard(L.Callback):
    def __init__(self, on_nonfinite_loss: str = "stop", max_consecutive_skips: int = 20,
                 max_loss_growth: float | None = 1e4) -> None:
        if on_nonfinite_loss not in MODES:
            raise ConfigError(f"on_nonfinite_loss must be one of {', '.join(MODES)}, "
                              f"got {on_nonfinite_loss!r}")
        if max_consecutive_skips < 1:
            raise ConfigError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        if max_loss_growth is not None and not max_loss_growth > 1:
            raise ConfigError(f"max_loss_growth must be > 1 (or null to turn the check off), got {max_loss_growth}")
        self.mode = on_nonfinite_loss
        self.max_consecutive_skips = max_consecutive_skips
        self.max_loss_growth = max_loss_growth
        self.start_loss: float | None = None  # the first training step's loss (floored at 1)
        self._exploded = False
        self.skipped_steps = 0
        self._consecutive = 0
        self._skip_pending = False
        self._last_bad_loss: float | None = None
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.mode == "skip":  # BatchNorm statistics to restore if this step is skipped
            self._buffers = [(b, b.detach().clone()) for b in pl_module.buffers()
                             if b.is_floating_point()]

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        value = loss.detach().float().sum().item()  # the one host sync of the check
        finite = math.isfinite(value)
        exploded = False
        if finite and self.max_loss_growth is not None:
            if self.start_loss is None:
                self.start_loss = max(abs(value), 1.0)
            exploded = abs(value) > self.start_loss * self.max_loss_growth
        bad = not finite or exploded
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        self._exploded = exploded
        # None: this process's loss was fine; another process's was not.
        value = value if bad else None
        self._last_bad_loss = value
        if self.mode == "stop":
            raise self._diverged(trainer, pl_module, value, "stopped")
        self._skip_pending = True

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self._skip_pending:
            self._consecutive = 0
            return
        self._skip_pending = False
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None  # the optimizer skips parameters without a gradient
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(saved)
        self.skipped_steps += 1
        self._consecutive += 1
        if self._consecutive >= self.max_consecutive_skips:
            raise self._diverged(trainer, pl_module, self._last_bad_loss,
                                 f"stopped after {self._consecutive} skipped steps in a row")
        if trainer.is_global_zero:
            log.warning("skipped training step %d: %s loss %s (%d skipped so far). %s",
                        trainer.global_step, "exploding" if self._exploded else "non-finite",
                        self._last_bad_loss, self.skipped_steps,
                        LIKELY_CAUSES)

    def _diverged(self, trainer, pl_module, value: float | None, what: str) -> TrainingDiverged:
        step, epoch = trainer.global_step, trainer.current_epoch
        lr = _learning_rate(trainer)
        where = "on another process" if value is None else f"{value}"
        alternative = " on_nonfinite_loss=skip skips such steps instead." if self.mode == "stop" else ""
        kind = "non-finite training loss"
        if self._exploded:
            kind = (f"exploding training loss, more than {self.max_loss_growth:g} times its start "
                    f"{self.start_loss:.4g} (max_loss_growth)")
        message = (f"training diverged: {kind} ({where}) at step {step} "
                   f"(epoch {epoch}){f', lr {lr:.3g}' if lr is not None else ''}; {what}. "
                   f"{LIKELY_CAUSES}.{alternative}")
        return TrainingDiverged(message, step, epoch, value)


def _learning_rate(trainer) -> float | None:
    optimizers = getattr(trainer, "optimizers", None)
    if optimizers:
        return float(optimizers[0].param_groups[0]["lr"])
    return None
