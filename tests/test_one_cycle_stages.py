"""Seed 001's schedule: one OneCycleLR per training stage (20 / 14 / 6 epochs at max lr 0.01 /
0.001 / 0.0001), built with torch's OneCycleLR, resumable inside a stage."""
from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from errors import ConfigError
from tasks.schedules import build_scheduler


def _optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _trace(scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_each_stage_is_torchs_one_cycle_with_its_max_lr():
    optimizer = _optimizer()
    scheduler = build_scheduler(optimizer, "one_cycle_stages", total_steps=40, steps_per_epoch=5,
                                stage_epochs=[4, 2, 2], stage_lr_factors=[1.0, 0.1, 0.01])
    lrs = _trace(scheduler, optimizer, 40)
    expected = []
    for steps, max_lr in ((20, 0.01), (10, 0.001), (10, 0.0001)):
        reference_opt = _optimizer()
        expected += _trace(OneCycleLR(reference_opt, max_lr=max_lr, total_steps=steps), reference_opt, steps)
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert max(lrs[:20]) == pytest.approx(0.01) and max(lrs[20:30]) == pytest.approx(0.001)
    assert lrs[20] == pytest.approx(0.001 / 25)  # a new cycle starts at max_lr / div_factor


def test_resuming_inside_a_stage_continues_the_same_schedule():
    opt_a = _optimizer()
    kwargs = dict(total_steps=12, steps_per_epoch=2, stage_epochs=[3, 3], stage_lr_factors=[1.0, 0.1])
    a = build_scheduler(opt_a, "one_cycle_stages", **kwargs)
    full = _trace(a, opt_a, 12)
    opt_b = _optimizer()
    b = build_scheduler(opt_b, "one_cycle_stages", **kwargs)
    first = _trace(b, opt_b, 8)  # into the second stage
    state = b.state_dict()
    opt_c = _optimizer()  # Lightning's order: build both, load the optimizer, then the schedule
    c = build_scheduler(opt_c, "one_cycle_stages", **kwargs)
    opt_c.load_state_dict(opt_b.state_dict())
    c.load_state_dict(state)
    assert first + _trace(c, opt_c, 4) == pytest.approx(full, rel=1e-12)


def test_stage_epochs_must_fill_the_run():
    with pytest.raises(ConfigError, match="max_epochs=40"):
        build_scheduler(_optimizer(), "one_cycle_stages", total_steps=30, steps_per_epoch=1,
                        stage_epochs=[20, 14, 6], stage_lr_factors=[1, 0.1, 0.01])
    with pytest.raises(ConfigError, match="stage_lr_factors"):
        build_scheduler(_optimizer(), "one_cycle_stages", total_steps=40, steps_per_epoch=1,
                        stage_epochs=[20, 14, 6])
