"""Learning-rate schedules of the thesis, as multiplicative factors of the base lr per interval.

Schedules are stepped once per optimizer step (Lightning ``interval="step"``, lengths in
iterations) unless the task config asks for ``interval: epoch`` (lengths in epochs; the
detector's thesis recipe). Factor functions are plain and picklable so that LambdaLR state
survives checkpoint/resume.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LambdaLR, LRScheduler, OneCycleLR

from errors import ConfigError

SCHEDULES = ("cosine", "cosine_restarts", "warmup_cosine", "constant", "exponential", "one_cycle_stages")


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


class OneCyclePerStage(LRScheduler):
    """Consecutive training stages, each one ``torch.optim.lr_scheduler.OneCycleLR`` of its own
    length and max lr (seed 001: 20 / 14 / 6 epochs at max lr 0.01 / 0.001 / 0.0001).

    Each stage's OneCycleLR is created when the stage starts, as calling a one-cycle ``fit`` once
    per stage does (it sets the stage's initial lr, its max lr and, for Adam / SGD with momentum,
    the momentum cycle). Only the optimizer state carries over: the seed built a new optimizer per
    stage, which here would lose the run's resumability for a detail the seed does not discuss.
    ``state_dict`` holds the stage and the step in it, so a resumed run continues inside its stage. ``one_cycle`` options go to every OneCycleLR (torch's defaults otherwise).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, stage_steps: list[int],
                 stage_max_lrs: list[float], **one_cycle) -> None:
        if not stage_steps or len(stage_steps) != len(stage_max_lrs) or min(stage_steps) < 1:
            raise ConfigError(f"one_cycle_stages needs one length >= 1 step per stage and one max lr "
                              f"per stage; got {stage_steps} steps and {stage_max_lrs} lrs")
        self.optimizer = optimizer
        self.stage_steps = [int(s) for s in stage_steps]
        self.stage_max_lrs = [float(lr) for lr in stage_max_lrs]
        self.one_cycle = dict(one_cycle)
        self.stage, self.stage_step, self.last_epoch = 0, 0, 0
        self._current = self._start(0)
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def _start(self, stage: int) -> OneCycleLR:
        return OneCycleLR(self.optimizer, max_lr=self.stage_max_lrs[stage],
                          total_steps=self.stage_steps[stage], **self.one_cycle)

    def step(self, epoch: int | None = None) -> None:
        self.last_epoch += 1
        self.stage_step += 1
        if self.stage_step < self.stage_steps[self.stage]:
            self._current.step()
        elif self.stage + 1 < len(self.stage_steps):
            self.stage, self.stage_step = self.stage + 1, 0
            self._current = self._start(self.stage)
        # else: past the last stage (Lightning may step once more): the lr stays at its floor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr

    def state_dict(self) -> dict:
        return {"stage": self.stage, "stage_step": self.stage_step, "last_epoch": self.last_epoch,
                "stage_steps": self.stage_steps, "stage_max_lrs": self.stage_max_lrs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.stage, self.stage_step = state_dict["stage"], state_dict["stage_step"]
        self.last_epoch = state_dict["last_epoch"]
        self.stage_steps = list(state_dict.get("stage_steps", self.stage_steps))
        self.stage_max_lrs = list(state_dict.get("stage_max_lrs", self.stage_max_lrs))
        # Replaying the stage's steps sets the optimizer's lr and momentum exactly as they were
        # (OneCycleLR's own state holds neither); a stage is at most a few thousand steps.
        self._current = self._start(self.stage)
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(min(self.stage_step, self.stage_steps[self.stage] - 1)):
                self._current.step()
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def one_cycle_stage_steps(stage_epochs: list[float], total_steps: int, steps_per_epoch: float) -> list[int]:
    """Steps of each stage; the last takes what remains, so the stages fill the run exactly."""
    steps = [max(1, round(e * steps_per_epoch)) for e in stage_epochs[:-1]]
    last = int(total_steps) - sum(steps)
    if last < 1:
        raise ConfigError(f"one_cycle_stages: stages of {list(stage_epochs)} epochs need "
                          f"{sum(stage_epochs)} epochs; the run has {total_steps / steps_per_epoch:g} "
                          "(set trainer.max_epochs to the sum of scheduler.stage_epochs)")
    return steps + [last]


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
    stage_epochs: list[float] | None = None,
    stage_lr_factors: list[float] | None = None,
    one_cycle: dict | None = None,
) -> LRScheduler:
    """Build a scheduler; lengths count the intervals it is stepped at (iterations or epochs).

    ``T_0`` is in iterations (the thesis' 34560 for Caltech-256). ``cosine`` only: ``T_max`` is
    its length (default: the whole run, ``total_steps``) and ``offset`` reads it that many
    intervals ahead (see ``CosineFactor``). ``exponential``: ``gamma`` is the factor per epoch.
    ``one_cycle_stages``: one OneCycleLR per stage of ``stage_epochs`` epochs, its max lr the
    optimizer's lr times the stage's ``stage_lr_factors`` entry (``OneCyclePerStage``); the stages
    must add up to the run (trainer.max_epochs).
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
    if name == "one_cycle_stages":
        if not stage_epochs or not stage_lr_factors or len(stage_epochs) != len(stage_lr_factors):
            raise ConfigError("scheduler.name=one_cycle_stages needs scheduler.stage_epochs and "
                              "scheduler.stage_lr_factors, one entry per stage (seed 001: [20, 14, 6] "
                              f"and [1, 0.1, 0.01]); got {stage_epochs!r} and {stage_lr_factors!r}")
        epochs_in_run = total_steps / steps_per_epoch
        if not math.isclose(sum(stage_epochs), epochs_in_run, rel_tol=1e-6):
            raise ConfigError(f"scheduler.stage_epochs {list(stage_epochs)} add up to {sum(stage_epochs)} "
                              f"epochs but the run has {epochs_in_run:g}; set trainer.max_epochs="
                              f"{sum(stage_epochs)}")
        base_lr = optimizer.param_groups[0]["lr"]
        steps = one_cycle_stage_steps(list(stage_epochs), total_steps, steps_per_epoch)
        return OneCyclePerStage(optimizer, steps, [base_lr * f for f in stage_lr_factors],
                                **dict(one_cycle or {}))
    raise ConfigError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULES)}")
