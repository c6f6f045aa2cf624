"""SSD-Lite as qfgaohao/pytorch-ssd's mb2-ssd-lite: parameter counts, layer layout, prior centres,
initialisation and post-processing defaults.

The reference numbers are those of ``create_mobilenetv2_ssd_lite(21)`` (MobileNetV2 base,
width 1.0, use_batch_norm=True, onnx_compatible=False), read off its definition: base 2,223,872
(torchvision's mobilenet_v2 features), extras InvertedResidual(1280, 512, 2, 0.2),
(512, 256, 2, 0.25), (256, 256, 2, 0.5), (256, 64, 2, 0.25); headers SeperableConv2d (depthwise
conv with its default bias, BN, ReLU6, 1x1 conv) on the 576/1280/512/256/256-channel maps and a
1x1 Conv2d on the 64-channel one, 6 anchors per location.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from errors import ConfigError
from heads.priors import SSDPriors, priors_center_form
from heads.ssd_lite import HEAD_INIT_STD, SSDLiteHead
from tasks.detection import DetectionTask

MAPS_300 = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _inverted_residual(c_in: int, hidden: int, c_out: int) -> int:
    # 1x1 (no bias) + BN, depthwise 3x3 (no bias) + BN, 1x1 (no bias) + BN
    return c_in * hidden + 2 * hidden + 9 * hidden + 2 * hidden + hidden * c_out + 2 * c_out


def _separable(c_in: int, c_out: int) -> int:
    # depthwise 3x3 with bias + BN, 1x1 with bias
    return 9 * c_in + c_in + 2 * c_in + c_in * c_out + c_out


@pytest.fixture(scope="module")
def mv2_e6_detector():
    return DetectionTask("mv2_e6", num_classes=20)


def test_mv2_e6_detector_has_the_reference_parameter_count(mv2_e6_detector):
    assert _count(mv2_e6_detector) == 3_388_228
    assert _count(mv2_e6_detector.backbone) == 2_223_872


def test_per_module_counts_equal_the_reference(mv2_e6_detector):
    head = mv2_e6_detector.head
    extras = [_count(m) for m in head.extras]
    assert extras == [_inverted_residual(1280, 256, 512), _inverted_residual(512, 128, 256),
                      _inverted_residual(256, 128, 256), _inverted_residual(256, 64, 64)]
    assert extras == [463_104, 100_480, 67_712, 21_440] and sum(extras) == 652_736
    maps = (576, 1280, 512, 256, 256)
    classification = [_count(m) for m in head.classification.module_list]
    assert classification == [_separable(c, 6 * 21) for c in maps] + [64 * 126 + 126]
    assert classification == [79_614, 176_766, 70_782, 35_454, 35_454, 8_190]
    regression = [_count(m) for m in head.regression.module_list]
    assert regression == [_separable(c, 24) for c in maps] + [64 * 24 + 24]
    assert regression == [20_760, 46_104, 18_456, 9_240, 9_240, 1_560]
    assert sum(classification) == 406_260 and sum(regression) == 105_360


def test_layer_layout_matches_mb2_ssd_lite(mv2_e6_detector):
    head = mv2_e6_detector.head
    for block, hidden in zip(head.extras, (256, 128, 128, 64)):
        layers = list(block.conv)
        expand, depthwise, project, norm = layers
        assert expand[0].kernel_size == (1, 1) and expand[0].out_channels == hidden and expand[0].bias is None
        assert isinstance(expand[2], nn.ReLU6)
        assert depthwise[0].stride == (2, 2) and depthwise[0].groups == hidden and isinstance(depthwise[2], nn.ReLU6)
        # The projection is linear: 1x1 conv + BN, no activation, no residual (stride 2).
        assert isinstance(project, nn.Conv2d) and project.bias is None and isinstance(norm, nn.BatchNorm2d)
        assert not block.use_res_connect
    for predictors in (head.classification.module_list, head.regression.module_list):
        for separable in list(predictors)[:-1]:
            dw, pw = separable
            assert dw[0].groups == dw[0].in_channels and dw[0].bias is not None  # SeperableConv2d's default bias
            assert isinstance(dw[1], nn.BatchNorm2d) and isinstance(dw[2], nn.ReLU6)
            assert pw.kernel_size == (1, 1) and pw.bias is not None
        assert isinstance(predictors[-1], nn.Conv2d) and predictors[-1].kernel_size == (1, 1)


def test_forward_taps_the_expansion_after_its_activation(mv2_e6_detector):
    # mb2-ssd-lite's GraphPath(14, "conv", 3): block 14's expansion after conv, BN and ReLU6.
    backbone = mv2_e6_detector.backbone.eval()
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        block_input = backbone.features[:14](x)
        pre_activation = backbone.features[14].expand[1](backbone.features[14].expand[0](block_input))
        tapped = backbone.forward_features(x, ["stage5_expand"])["stage5_expand"]
    assert tapped.shape == (1, 576, 19, 19)
    torch.testing.assert_close(tapped, pre_activation.clamp(0, 6))


# ---------------------------------------------------------------- prior centres


def _reference_priors(size: int = 300) -> torch.Tensor:
    """mb2-ssd-lite's priors from its formula: (cx, cy, w, h) / 300, every value clamped to [0, 1]."""
    specs = [(19, 16, 60, 105), (10, 32, 105, 150), (5, 64, 150, 195), (3, 100, 195, 240),
             (2, 150, 240, 285), (1, 300, 285, 330)]
    rows = []
    for cells, shrinkage, small, big in specs:
        for j in range(cells):
            for i in range(cells):
                cx, cy = (i + 0.5) * shrinkage / size, (j + 0.5) * shrinkage / size
                s, b = small / size, math.sqrt(small * big) / size
                rows += [[cx, cy, s, s], [cx, cy, b, b]]
                for ratio in (2, 3):
                    r = math.sqrt(ratio)
                    rows += [[cx, cy, s * r, s / r], [cx, cy, s / r, s * r]]
    return torch.tensor(rows, dtype=torch.float64).clamp(0, 1)


def test_mb2_ssd_lite_centres_follow_the_reference_formula():
    priors = SSDPriors(centers="mb2_ssd_lite")((300, 300), MAPS_300)
    ours = priors_center_form(priors.double()) / 300
    reference = _reference_priors()
    assert ours.shape == reference.shape == (3000, 4)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    # The 10x10 map overshoots 300 px (centres up to 9.5 * 32 = 304 px): clamped to the border.
    ten = ours[19 * 19 * 6: 19 * 19 * 6 + 100 * 6]
    assert ten[:, 0].max() == pytest.approx(1.0) and ten[:, 0].min() == pytest.approx(16 / 300)


def test_mb2_centres_scale_with_a_stretched_input_and_differ_from_ssd_paper():
    mb2 = SSDPriors(centers="mb2_ssd_lite")
    paper = SSDPriors(centers="ssd_paper")((300, 300), MAPS_300)
    first = priors_center_form(mb2((300, 300), MAPS_300))
    # Up to 18 px apart at 300 px: last centre of the 19x19 map is 296 (mb2) vs 292.1 (paper);
    # of the 10x10 map 300 (clamped) vs 285.
    assert (first[:, :2] - priors_center_form(paper)[:, :2]).abs().max().item() == pytest.approx(18.0, abs=1e-3)
    # A 304 px input has the same grids; the centres keep their fractions of the image.
    wide = priors_center_form(mb2((300, 304), MAPS_300))
    torch.testing.assert_close(wide[:, 0] / 304, first[:, 0] / 300)
    torch.testing.assert_close(wide[:, 1], first[:, 1])


def test_mb2_centres_refuse_other_grids_with_the_fix():
    with pytest.raises(ConfigError, match="prior_centers=ssd_paper"):
        SSDPriors(centers="mb2_ssd_lite")((128, 128), [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1), (1, 1)])
    with pytest.raises(ConfigError, match="prior_centers"):
        SSDPriors(centers="centre")


# ---------------------------------------------------------------- initialisation


def test_head_init_pytorch_default_vs_normal():
    torch.manual_seed(0)
    default = SSDLiteHead([32, 64], num_classes=3)  # head_init="pytorch"
    normal = SSDLiteHead([32, 64], num_classes=3, head_init="normal")
    conv = default.classification.module_list[1][1]  # 1x1, 64 -> 18
    # PyTorch's Conv2d default: kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)); bias likewise.
    bound = 1 / math.sqrt(64)
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.8 * bound
    assert conv.bias.abs().max() <= bound and conv.bias.abs().max() > 0
    weights = torch.cat([m.weight.flatten() for m in normal.modules() if isinstance(m, nn.Conv2d)])
    assert weights.std().item() == pytest.approx(HEAD_INIT_STD, rel=0.05)
    assert all(m.bias is None or not m.bias.any() for m in normal.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ConfigError, match="head_init"):
        SSDLiteHead([32, 64], num_classes=3, head_init="zeros")


# ---------------------------------------------------------------- post-processing


def test_post_processing_defaults_are_the_reference_predictor():
    task = DetectionTask({"name": "mv2_e2", "width_mult": 0.35}, num_classes=3)
    hp = task.hparams
    assert (hp.score_thresh, hp.nms_iou, hp.candidates_per_class) == (0.01, 0.45, 200)
    assert hp.max_detections is None and hp.clip_boxes is False
    # Untrained: near-uniform scores over 4 columns pass the 0.01 filter everywhere, so with no
    # per-image cap more than 200 boxes survive per image.
    task.eval()
    with torch.no_grad():
        (det,) = task.detect(torch.randn(1, 3, 128, 128))
    assert len(det["scores"]) > 200
    with pytest.raises(ConfigError, match="max_detections"):
        DetectionTask({"name": "mv2_e2", "width_mult": 0.35}, num_classes=3, max_detections=0)
