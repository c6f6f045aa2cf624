import math

import pytest
import torch

from tasks.schedules import build_scheduler


def _lrs(scheduler_kwargs, steps, lr=0.002):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = build_scheduler(opt, **scheduler_kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_floor_matches_thesis_formula():
    n, f_min, lr = 100, 0.01, 0.002
    lrs = _lrs({"name": "cosine", "total_steps": n, "steps_per_epoch": 10, "min_lr_factor": f_min}, n + 5, lr)
    for x in (0, 1, 37, 50, 99, 100, 104):
        expected = lr * (f_min + (1 - f_min) * (1 + math.cos(math.pi * min(x, n) / n)) / 2)
        assert lrs[x] == pytest.approx(expected, rel=1e-9)
    assert lrs[50] == pytest.approx(lr * (f_min + (1 - f_min) / 2))


def test_cosine_warm_restarts_restart_at_T0_then_double():
    lr, t0 = 0.002, 10
    lrs = _lrs({"name": "cosine_restarts", "total_steps": 100, "steps_per_epoch": 5, "T_0": t0,
                "T_mult": 2, "min_lr_factor": 0.01}, 40, lr)
    assert lrs[0] == pytest.approx(lr)
    assert lrs[t0] == pytest.approx(lr)          # first restart after T_0 iterations
    assert lrs[t0 + 2 * t0] == pytest.approx(lr)  # second cycle is twice as long
    assert lrs[t0 - 1] < lrs[t0 // 2] < lr
    assert min(lrs) >= lr * 0.01 - 1e-12


def test_warmup_cosine_matches_segmentation_schedule():
    # Thesis: linear warm-up 9e-6 -> 9e-4 over 40 epochs, cosine down to 9e-6 at epoch 200.
    lr, spe, epochs = 9e-4, 3, 200
    total = spe * epochs
    lrs = _lrs({"name": "warmup_cosine", "total_steps": total, "steps_per_epoch": spe,
                "warmup_epochs": 40, "warmup_start_factor": 0.01, "min_lr_factor": 0.01}, total + 1, lr)
    warm = 40 * spe
    assert lrs[0] == pytest.approx(9e-6)
    assert lrs[warm // 2] == pytest.approx(9e-6 + (9e-4 - 9e-6) / 2)
    assert lrs[warm] == pytest.approx(9e-4)
    assert lrs[total] == pytest.approx(9e-6)
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx(9e-6 + (9e-4 - 9e-6) / 2)


def test_bad_schedule_names_and_lengths_are_explained():
    with pytest.raises(ValueError, match="valid: cosine"):
        _lrs({"name": "linear", "total_steps": 10, "steps_per_epoch": 1}, 1)
    with pytest.raises(ValueError, match="T_0"):
        _lrs({"name": "cosine_restarts", "total_steps": 10, "steps_per_epoch": 1}, 1)
    with pytest.raises(ValueError, match="warm-up"):
        _lrs({"name": "warmup_cosine", "total_steps": 10, "steps_per_epoch": 1, "warmup_epochs": 20}, 1)


# The reference's order is exactly what this torch warning is about ("skipping the first value").
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_cosine_offset_and_T_max_reproduce_cosine_annealing_stepped_before_each_epoch():
    # qfgaohao's train_ssd.py: CosineAnnealingLR(opt, T_max=200), scheduler.step() at the start of
    # every epoch (PyTorch >= 1.1 semantics), so epoch e trains at torch's lr for step e + 1.
    param = torch.nn.Parameter(torch.zeros(1))
    reference_opt = torch.optim.SGD([param], lr=0.01)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, T_max=200)
    expected = []
    for _ in range(120):
        reference.step()  # before the epoch
        expected.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
    ours = _lrs({"name": "cosine", "total_steps": 120, "steps_per_epoch": 1, "T_max": 200, "offset": 1}, 120, 0.01)
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_weight_decay_exempts_norm_and_bias_unless_asked():
    from tasks.base import build_optimizer

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    default = build_optimizer(model, name="sgd", lr=0.1, weight_decay=5e-4)
    assert [len(g["params"]) for g in default.param_groups] == [2, 4]  # 2 weights; biases + BN
    assert [g["weight_decay"] for g in default.param_groups] == [5e-4, 0.0]
    everything = build_optimizer(model, name="sgd", lr=0.1, weight_decay=5e-4, decay_norm_and_bias=True)
    assert [len(g["params"]) for g in everything.param_groups if g["weight_decay"] == 5e-4] == [6]
