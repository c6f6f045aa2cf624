"""Divergence that is not NaN is never silent either: a finite loss many orders of magnitude
above its start stops (or skips) like a non-finite one; backbone weights holding NaN/inf are
refused naming the file, before they can make a run diverge."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from backbones import create_backbone, load_backbone_weights
from cogsuite.divergence import NonFiniteLossGuard, TrainingDiverged
from errors import CheckpointError, ConfigError


def _trainer():
    optimizer = SimpleNamespace(param_groups=[{"lr": 1e6, "params": []}])
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    return SimpleNamespace(strategy=strategy, global_step=7, current_epoch=0, optimizers=[optimizer],
                           is_global_zero=True)


def test_exploding_finite_loss_stops_like_a_nonfinite_one():
    guard = NonFiniteLossGuard("stop")
    trainer = _trainer()
    for value in (15.0, 40.0, 9e4, 1.4e5):  # up to 1e4 x the start (15): a bad but live run
        guard.on_before_backward(trainer, None, torch.tensor(value))
    with pytest.raises(TrainingDiverged, match=r"exploding training loss, more than 10000 times its start 15 "
                                               r"\(max_loss_growth\) \(320000000\.0\) at step 7 .*lr 1e\+06"):
        guard.on_before_backward(trainer, None, torch.tensor(3.2e8))


def test_exploding_loss_check_can_be_turned_off_or_tuned():
    off = NonFiniteLossGuard("stop", max_loss_growth=None)
    for value in (2.0, 1e13):
        off.on_before_backward(_trainer(), None, torch.tensor(value))
    with pytest.raises(TrainingDiverged, match="non-finite"):
        off.on_before_backward(_trainer(), None, torch.tensor(float("nan")))
    tight = NonFiniteLossGuard("skip", max_loss_growth=10)
    tight.on_before_backward(_trainer(), None, torch.tensor(0.01))  # start floored at 1
    tight.on_before_backward(_trainer(), None, torch.tensor(9.0))
    assert not tight._skip_pending
    tight.on_before_backward(_trainer(), None, torch.tensor(11.0))
    assert tight._skip_pending
    with pytest.raises(ConfigError, match="max_loss_growth must be > 1"):
        NonFiniteLossGuard(max_loss_growth=0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_pretrained_weights_are_refused_naming_the_file(tmp_path, bad):
    source = create_backbone("mv2_e2", width_mult=0.35)
    state = {f"backbone.{k}": v.clone() for k, v in source.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[key].view(-1)[3] = bad
    path = tmp_path / "diverged.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": "mv2_e2"}}, path)
    with pytest.raises(CheckpointError, match=rf"refusing backbone weights from {path}: 1 tensor\(s\) hold NaN "
                                              rf"or infinite values \(e.g. \['{key[len('backbone.'):]}'\]\)") as error:
        load_backbone_weights(create_backbone("mv2_e2", width_mult=0.35), path)
    assert "\n" not in str(error.value)
