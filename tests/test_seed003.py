"""Seed 003: MobileNetV2 for 32 px CIFAR-10 as Keras builds it, its two cut-down variants, and the
recipe's pieces (Keras channel rounding and preprocessing, the per-class report, CPU ms/image)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backbones import create_backbone
from backbones.channel_rounding import block_channels
from benchmarks.complexity import keras_total_parameters
from errors import ConfigError
from tasks.classification_report import classification_report, format_classification_report
from tests.helpers import compose_config


@pytest.mark.parametrize("experiment,trainable,keras_total", [
    ("seed003/cifar10_mv2_a090", 1_873_610, 1_904_954),
    ("seed003/cifar10_mv2_cut12", 682_058, 700_746),
    ("seed003/cifar10_mv2_cut12_a090_h1000", 555_202, 572_066),
])
def test_seed003_experiments_build_the_seed_networks(experiment, trainable, keras_total, tmp_path):
    """The seed's Keras summaries: trainable params and Keras' total (+ BN moving mean/var)."""
    from hydra.utils import instantiate

    model = instantiate(compose_config("train", [f"experiment={experiment}"], tmp_path).model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    assert keras_total_parameters(model) == keras_total


def test_cut_network_shapes_match_the_seed_summary():
    """block_12_add is 2x2x96 at 32 px (88 at alpha 0.9); the head conv has a bias."""
    full = create_backbone("mv2_e6", channel_rounding="keras").eval()
    cut = create_backbone("mv2_e6", width_mult=0.9, channel_rounding="keras", cut_after_block=12,
                          last_channels=1000, last_bias=True, last_activation="relu").eval()
    x = torch.randn(1, 3, 32, 32)
    assert full.forward_features(x, "stage4")["stage4"].shape == (1, 96, 2, 2)
    assert cut.forward_features(x, "stage4")["stage4"].shape == (1, 88, 2, 2)
    assert cut(x).shape == (1, 1000, 2, 2)
    head_conv = cut.features[-1][0]
    assert head_conv.bias is not None and head_conv.weight.shape == (1000, 88, 1, 1)
    assert isinstance(cut.features[-1][-1], torch.nn.ReLU)
    assert cut.feature_for("body").name == "stage4"


def test_cut_backbone_refuses_heads_that_need_dropped_layers():
    from tasks.detection import DetectionTask

    with pytest.raises(ConfigError, match="stride16_expansion.*truncated"):
        DetectionTask(backbone={"name": "mv2_e6", "cut_after_block": 12}, num_classes=3)
    with pytest.raises(ConfigError, match="cut_after_block"):
        create_backbone("mv2_e6", cut_after_block=17)


def test_keras_channel_rounding_truncates_before_rounding():
    # keras.applications.MobileNetV2: _make_divisible(int(filters * alpha), 8)
    assert block_channels(64, 0.56, "keras") == 32 and block_channels(64, 0.56) == 40
    assert block_channels(16, 1.12, "keras") == 16 and block_channels(16, 1.12) == 24
    # ... and at the seed's 0.9 (and Keras' published alphas) both rules agree.
    for alpha in (0.35, 0.5, 0.75, 0.9, 1.0, 1.3, 1.4):
        for c in (16, 24, 32, 64, 96, 160, 320):
            assert block_channels(c, alpha, "keras") == block_channels(c, alpha), (alpha, c)
    a = create_backbone("mv2_e6", width_mult=0.56, channel_rounding="keras")
    b = create_backbone("mv2_e6", width_mult=0.56)
    # 16 * 0.56 = 8.96 and 32 * 0.56 = 17.92: Keras 8 and 16, torchvision 16 and 24
    assert (a.feature("stage1").channels, a.feature("stage3").channels) == (8, 16)
    assert (b.feature("stage1").channels, b.feature("stage3").channels) == (16, 24)


def test_keras_preprocessing_maps_pixels_to_minus_one_one():
    from data.cifar_transforms import cifar_eval_transform, cifar_normalization
    from data.device_transforms import prepare_batch_images

    image = np.array([[[0, 255, 127]]], dtype=np.uint8).repeat(32, 0).repeat(32, 1)
    out = cifar_eval_transform(32, normalize="keras_tf")(image=image)["image"]
    assert out.dtype == torch.uint8  # normalised on the device, by the task
    out = prepare_batch_images(out[None], cifar_normalization("keras_tf"))[0]
    expected = torch.tensor([0, 255, 127], dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-6)


def test_classification_report_matches_hand_counts():
    # true rows, predicted columns: class a 3 right 1 as b; class b 2 right; class c never predicted
    confusion = [[3, 1, 0], [0, 2, 0], [1, 0, 0]]
    report = classification_report(confusion, ["a", "b", "c"])
    assert report["a"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4, "support": 4})
    assert report["b"]["precision"] == pytest.approx(2 / 3) and report["b"]["recall"] == 1.0
    assert report["b"]["f1"] == pytest.approx(0.8)
    assert report["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["accuracy"] == pytest.approx(5 / 7)
    assert report["macro avg"]["f1"] == pytest.approx((0.75 + 0.8 + 0) / 3)
    assert report["weighted avg"]["recall"] == pytest.approx(5 / 7)
    text = format_classification_report(report)
    assert "precision" in text and "weighted avg" in text and "0.71" in text


def test_cpu_ms_per_image_times_each_image():
    from tasks.inference_timing import cpu_ms_per_image

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1))
    dataset = [(torch.randn(3, 16, 16), 0)] * 4
    timing = cpu_ms_per_image(model, dataset, images=3, warmup=1)
    assert timing["images"] == 3 and timing["cpu_ms_per_image"] >= 0 and timing["wall_ms_per_image"] > 0
