"""Learning-rate schedules of the thesis, as multiplicative factors of the base lr per interval.

Schedules are stepped once per optimizer step (Lightning ``interval="step"``, lengths in
iterations) unless the task config asks for ``interval: epoch`` (lengths in epochs; the
detector's thesis recipe). Factor functions are plain and picklable so that LambdaLR state
survives checkpoint/resume.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LambdaLR, LRScheduler

from errors import ConfigError

SCHEDULES = ("cosine", "cosine_restarts", "warmup_cosine", "constant", "exponential")


def cosine_with_floor(step: int, total_steps: int, min_lr_factor: float) -> float:
    """lr factor f_min + (1 - f_min) * (1 + cos(pi * x / N)) / 2, held at f_min after N."""
    x = min(step, total_steps) / max(1, total_steps)
    return min_lr_factor + (1.0 - min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * x))


@dataclass(frozen=True)
class CosineFactor:
    """Cosine to ``min_lr_factor`` over ``total_steps``, read ``offset`` intervals ahead.

    ``offset=1`` is qfgaohao's train_ssd.py with PyTorch >= 1.1: it calls
    ``CosineAnnealingLR.step()`` at the start of every epoch, before training, so epoch e trains
    at the lr of e + 1 (and the last of ``T_max`` epochs at the floor).
    """

    total_steps: int
    min_lr_factor: float
    offset: int = 0

    def __call__(self, step: int) -> float:
        return cosine_with_floor(step + self.offset, self.total_steps, self.min_lr_factor)


@dataclass(frozen=True)
class WarmupCosineFactor:
    """Linear warm-up from ``start_factor`` to 1 over ``warmup_steps``, then cosine to the floor."""

    warmup_steps: int
    total_steps: int
    start_factor: float
    min_lr_factor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        return cosine_with_floor(
            step - self.warmup_steps, self.total_steps - self.warmup_steps, self.min_lr_factor
        )


@dataclass(frozen=True)
class EpochExponentialFactor:
    """``gamma ** epoch``, the epoch being ``floor(step / steps_per_epoch)``: constant within an
    epoch, as Keras' ``LearningRateScheduler(lambda epoch: lr * gamma ** epoch)`` (seed 004's
    CIFAR-10 notebook: 0.003 * 0.99 ** epoch)."""

    steps_per_epoch: float
    gamma: float

    def __call__(self, step: int) -> float:
        return self.gamma ** math.floor(step / self.steps_per_epoch + 1e-9)


def _constant(step: int) -> float:
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    steps_per_epoch: float,
    min_lr_factor: float = 0.0,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
    T_0: int | None = None,
    T_mult: int = 1,
    gamma: float = 0.99,
    T_max: int | None = None,
    offset: int = 0,
) -> LRScheduler:
    """Build a scheduler; lengths count the intervals it is stepped at (iterations or epochs).

    ``T_0`` is in iterations (the thesis' 34560 for Caltech-256). ``cosine`` only: ``T_max`` is
    its length (default: the whole run, ``total_steps``) and ``offset`` reads it that many
    intervals ahead (see ``CosineFactor``). ``exponential``: ``gamma`` is the factor per epoch.
    """
    if name == "cosine":
        length = int(T_max) if T_max is not None else int(total_steps)
        if length <= 0 or offset < 0:
            raise ConfigError(f"scheduler.T_max must be > 0 and scheduler.offset >= 0, got {T_max!r}, {offset!r}")
        return LambdaLR(optimizer, CosineFactor(length, float(min_lr_factor), int(offset)))
    if name == "warmup_cosine":
        warmup_steps = max(1, round(warmup_epochs * steps_per_epoch))
        if warmup_steps >= total_steps:
            raise ConfigError(
                f"warm-up of {warmup_epochs} epochs ({warmup_steps} iterations) is not shorter than "
                f"the whole run ({total_steps} iterations); lower scheduler.warmup_epochs or raise "
                "trainer.max_epochs"
            )
        factor = WarmupCosineFactor(
            warmup_steps, int(total_steps), float(warmup_start_factor), float(min_lr_factor)
        )
        return LambdaLR(optimizer, factor)
    if name == "cosine_restarts":
        if not T_0:
            raise ConfigError("scheduler.name=cosine_restarts needs scheduler.T_0 (iterations of the first cycle)")
        base_lr = optimizer.param_groups[0]["lr"]
        return CosineAnnealingWarmRestarts(
            optimizer, T_0=int(T_0), T_mult=int(T_mult), eta_min=base_lr * float(min_lr_factor)
        )
    if name == "constant":
        return LambdaLR(optimizer, _constant)
    if name == "exponential":
        if not 0.0 < gamma <= 1.0 or not steps_per_epoch > 0:
            raise ConfigError(f"scheduler.name=exponential needs 0 < scheduler.gamma <= 1 (the factor per "
                             f"epoch) and a known epoch length; got gamma={gamma}, steps_per_epoch={steps_per_epoch}")
        return LambdaLR(optimizer, EpochExponentialFactor(float(steps_per_epoch), float(gamma)))
    raise ConfigError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULES)}")
