"""The first screen of a run: no litlogger advertisement, no LeafSpec deprecation from inside
Lightning, no "already configured with model summary callbacks" line, no all-zero FLOPs column;
other warnings still show."""
from __future__ import annotations

import logging
import warnings

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from cogsuite.model_summary import SuiteModelSummary
from cogsuite.quiet import quiet_third_party_noise
from cogsuite.runtime import build_trainer, instantiate_group
from tests.helpers import CONFIG_DIR


def test_trainer_from_the_default_config_prints_no_noise(tmp_path, caplog):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=["task=classification", "data=synthetic"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.precision = "32-true"
    callbacks = instantiate_group(cfg.callbacks, "callbacks")
    assert any(isinstance(cb, SuiteModelSummary) for cb in callbacks)
    with caplog.at_level(logging.INFO):
        build_trainer(cfg, callbacks, loggers=[])
    assert "litlogger" not in caplog.text
    assert "already configured with model summary" not in caplog.text
    assert "TPU available" in caplog.text  # Lightning's own info lines still show


def test_filters_drop_exactly_the_noise(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party_noise()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`",
                      FutureWarning)
        warnings.warn("The number of training batches (1) is smaller than the logging interval")
    assert [str(w.message) for w in caught] == [
        "The number of training batches (1) is smaller than the logging interval"]
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero.info("💡 Tip: For seamless cloud logging ... try installing [litlogger](https://pypi.org/)")
        rank_zero.info("GPU available: False, used: False")
    assert "litlogger" not in caplog.text and "GPU available" in caplog.text


def test_model_summary_has_no_flops_column(caplog):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    from lightning.pytorch.utilities.model_summary import summarize

    summary = summarize(_Wrapped(model), max_depth=1)
    data = summary._get_summary_data()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.callbacks.model_summary"):
        SuiteModelSummary.summarize(data, summary.total_parameters, summary.trainable_parameters,
                                    summary.model_size, summary.total_training_modes,
                                    total_flops=getattr(summary, "total_flops", 0))
    assert "Total params" in caplog.text and "112" in caplog.text  # 3*4*9 + 4
    assert "FLOPs" not in caplog.text and "Total Flops" not in caplog.text


class _Wrapped(__import__("lightning").LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

