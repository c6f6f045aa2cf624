"""Seed 001: the plain / depthwise-separable / deformable dog-breed CNNs, built through the
spatial-conv registry with the appendix's exact parameter counts, in the tasks their strides allow."""
from __future__ import annotations

import pytest
import torch

from backbones import create_backbone
from errors import ConfigError
from tests.helpers import compose_config

COUNTS = {"simple_cnn": 585_383, "simple_dsc": 74_663, "simple_deform": 621_725}


@pytest.mark.parametrize("experiment,backbone", [
    ("seed001/dogs_cnn", "simple_cnn"), ("seed001/dogs_dsc", "simple_dsc"),
    ("seed001/dogs_deform", "simple_deform"),
])
def test_seed001_experiments_build_the_appendix_networks(experiment, backbone, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    model = instantiate(cfg.model)
    assert model.backbone.name == backbone and cfg.data.num_classes == 7
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == COUNTS[backbone]
    assert cfg.trainer.max_epochs == sum(cfg.model.scheduler.stage_epochs)


def test_layers_follow_the_appendix():
    from backbones.spatial import DeformSpatial, DepthwiseSeparableSpatial, StandardSpatial

    x = torch.randn(2, 3, 224, 224)
    for name, kinds in (("simple_cnn", "SSSSSSS"), ("simple_dsc", "SDDDDDD"), ("simple_deform", "SFSFSFS")):
        net = create_backbone(name).eval()
        types = {"S": StandardSpatial, "D": DepthwiseSeparableSpatial, "F": DeformSpatial}
        assert [type(layer) for layer in net.features] == [types[k] for k in kinds], name
        sizes = [f.channels for f in net.feature_info], [f.stride for f in net.feature_info]
        assert sizes == ([32, 32, 64, 64, 128, 128, 256], [2, 2, 4, 4, 8, 8, 16])
        assert net(x).shape == (2, 256, 14, 14)
    deform = create_backbone("simple_deform").features[1][0]
    offset = next(m for m in deform.modules() if isinstance(m, torch.nn.Conv2d))
    # the separate offset conv: 32 -> 18 (2 x 3 x 3), 3x3, with bias, zero at the start
    assert offset.weight.shape == (18, 32, 3, 3) and offset.bias is not None
    assert offset.weight.abs().sum() == 0


def test_segmentation_works_and_detection_says_why_not():
    from tasks.detection import DetectionTask
    from tasks.segmentation import SegmentationTask

    for name in COUNTS:
        model = SegmentationTask(backbone=name, num_classes=3).eval()
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(ConfigError, match="stride 16.*stride-32"):
        DetectionTask(backbone="simple_dsc", num_classes=3)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", [
    "simple_cnn", "simple_dsc", "simple_deform",
    {"name": "mv2_e6", "width_mult": 0.9, "channel_rounding": "keras"},
    {"name": "mv2_e6", "cut_after_block": 12, "last_bias": True, "last_activation": "relu"},
    {"name": "mv2_e6", "width_mult": 0.9, "cut_after_block": 12, "last_channels": 1000,
     "last_bias": True, "last_activation": "relu"},
])
def test_new_networks_train_a_few_steps(backbone):
    """Seeds 001 and 003's six networks in classification: a few steps lower the loss on a batch."""
    from tasks.classification import ClassificationTask

    torch.manual_seed(0)
    model = ClassificationTask(backbone=backbone, num_classes=7, dropout=0.0)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 7
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
