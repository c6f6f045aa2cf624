"""Backbone contract (every registered backbone), parameter counts, torchvision equivalence."""
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import _make_divisible

from backbones import (
    ChannelOverlapConv2d,
    FeatureInfo,
    MobileNetV2Backbone,
    convert_torchvision_mobilenet_v2,
    create_backbone,
    list_backbones,
)
from backbones.inverted_residual import InvertedResidual
from errors import ConfigError, ConfigTypeError
from tests.helpers import randomize_batchnorm

MOBILENET_V2_NAMES = ["mv2_e2", "mv2_e4", "mv2_e6", "cog_e2", "cog_e4", "cog_e6"]


SIZE = 64
OUTPUT_STRIDES = (32, 16, 8)
TAPS = ["stem", "stage1", "stage2", "stage3", "stage4", "stage5_expand", "stage5", "stage6", "last_conv"]
# MobileNetV2 stages (c, n, s) as in the MobileNetV2 paper, Table 2.
STAGES = [(16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]


def classifier_head(channels: int) -> nn.Module:
    return nn.Sequential(nn.Dropout(0.2), nn.Linear(channels, 1000))


def classify(backbone, head, x):
    return head(torch.flatten(nn.functional.adaptive_avg_pool2d(backbone(x), 1), 1))



def expected_taps(width_mult, expand_ratio, output_stride):
    """(channels, stride) per tap from the MobileNetV2 table and the DeepLab output-stride rule."""
    ch = [_make_divisible(c * width_mult, 8) for c, _, _ in STAGES]
    nominal = {"stem": 2, "stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5_expand": 16,
               "stage5": 32, "stage6": 32, "last_conv": 32}
    channels = {"stem": _make_divisible(32 * width_mult, 8), "stage1": ch[0], "stage2": ch[1],
                "stage3": ch[2], "stage4": ch[4], "stage5_expand": ch[4] * expand_ratio,
                "stage5": ch[5], "stage6": ch[6],
                "last_conv": _make_divisible(1280 * max(1.0, width_mult), 8)}
    return {t: (channels[t], min(nominal[t], output_stride)) for t in TAPS}


def expand_ratio_of(name):
    return int(name.split("_e")[1])


def test_registry_lists_the_six_families():
    assert {"mv2_e2", "mv2_e4", "mv2_e6", "cog_e2", "cog_e4", "cog_e6"} <= set(list_backbones())


@pytest.mark.parametrize("name", MOBILENET_V2_NAMES)
@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
def test_mobilenet_v2_taps(name, output_stride):
    torch.manual_seed(0)
    backbone = create_backbone(name, output_stride=output_stride)
    assert backbone.name == name and backbone.output_stride == output_stride
    assert isinstance(backbone.features, nn.Sequential) and len(backbone.features) == 19
    assert [f.name for f in backbone.feature_info] == TAPS
    assert all(isinstance(f, FeatureInfo) for f in backbone.feature_info)

    x = torch.randn(2, 3, SIZE, SIZE)
    feats = backbone.forward_features(x, TAPS)
    assert list(feats) == TAPS
    expected = expected_taps(1.0, expand_ratio_of(name), output_stride)
    for info in backbone.feature_info:
        out = feats[info.name]
        stride = SIZE // out.shape[-1]
        assert out.shape[-1] * stride == SIZE and out.shape[-2] == out.shape[-1]
        assert (out.shape[1], stride) == (info.channels, info.stride), info
        assert (info.channels, info.stride) == expected[info.name], info
    assert SIZE // feats["last_conv"].shape[-1] == output_stride
    assert backbone.out_channels == feats["last_conv"].shape[1]

    out = backbone(x)
    torch.testing.assert_close(out, feats["last_conv"])
    out.square().mean().backward()
    missing = [n for n, p in backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", MOBILENET_V2_NAMES)
def test_width_mult_half(name):
    backbone = create_backbone(name, width_mult=0.5)
    x = torch.randn(2, 3, SIZE, SIZE)
    feats = backbone.forward_features(x, TAPS)
    expected = expected_taps(0.5, expand_ratio_of(name), 32)
    for info in backbone.feature_info:
        assert (feats[info.name].shape[1], SIZE // feats[info.name].shape[-1]) == expected[info.name]
    backbone(x).mean().backward()


def test_forward_features_runs_only_needed_layers():
    backbone = create_backbone("cog_e2")
    calls = []
    backbone.features[18].register_forward_hook(lambda *_: calls.append("last_conv"))
    backbone.features[14].depthwise.register_forward_hook(lambda *_: calls.append("block14_depthwise"))
    backbone.features[15].register_forward_hook(lambda *_: calls.append("block15"))
    x = torch.randn(1, 3, SIZE, SIZE)
    backbone.forward_features(x, ["stage5_expand"])
    assert calls == []
    backbone.forward_features(x, ["stage6", "stage4"])
    assert calls == ["block14_depthwise", "block15"]


def test_forward_features_equal_running_features_by_hand():
    backbone = create_backbone("mv2_e4").eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    feats = backbone.forward_features(x, ["stage5_expand", "stage3", "stage4"])
    assert list(feats) == ["stage5_expand", "stage3", "stage4"]
    torch.testing.assert_close(feats["stage3"], backbone.features[:7](x))
    stage4 = backbone.features[:14](x)
    torch.testing.assert_close(feats["stage4"], stage4)
    torch.testing.assert_close(feats["stage5_expand"], backbone.features[14].expand(stage4))


def test_forward_features_rejects_unknown_taps():
    backbone = create_backbone("mv2_e2")
    with pytest.raises(ConfigError, match="Unknown feature tap.*'stage9'.*available taps"):
        backbone.forward_features(torch.randn(1, 3, SIZE, SIZE), ["stage9"])


def test_truncate_drops_later_layers():
    full = create_backbone("cog_e4", output_stride=16).eval()
    truncated = create_backbone("cog_e4", output_stride=16).eval()
    truncated.load_state_dict(full.state_dict())
    assert truncated.truncate("stage6") is truncated
    assert len(truncated.features) == 18
    assert truncated.out_channels == 320
    assert [f.name for f in truncated.feature_info] == TAPS[:-1]
    x = torch.randn(1, 3, SIZE, SIZE)
    torch.testing.assert_close(truncated(x), full.forward_features(x, ["stage6"])["stage6"])
    with pytest.raises(ConfigError, match="truncated"):
        truncated.forward_features(x, ["last_conv"])
    with pytest.raises(ConfigError, match="inside layer 14"):
        create_backbone("cog_e4").truncate("stage5_expand")
    stage4_only = create_backbone("mv2_e2").truncate("stage4")
    assert "stage5_expand" not in stage4_only.tap_names and stage4_only.out_channels == 96


def test_output_stride_dilates_later_depthwise_convs():
    # DeepLab rule: the block that would exceed the output stride runs at stride 1 with the
    # current dilation; every later depthwise conv gets twice the dilation.
    for output_stride, expected in {
        32: {i: (2 if i in (2, 4, 7, 14) else 1, 1) for i in range(1, 18)},
        16: {i: (2 if i in (2, 4, 7) else 1, 2 if i > 14 else 1) for i in range(1, 18)},
        8: {i: (2 if i in (2, 4) else 1, 4 if i > 14 else 2 if i > 7 else 1) for i in range(1, 18)},
    }.items():
        backbone = create_backbone("mv2_e6", output_stride=output_stride)
        for i in range(1, 18):
            conv = backbone.features[i].depthwise[0]
            assert (conv.stride[0], conv.dilation[0]) == expected[i], (output_stride, i)
            assert conv.padding[0] == conv.dilation[0]
        # Residual structure and weights do not depend on the output stride.
        assert [b.use_res_connect for b in backbone.features[1:18]] == [
            b.use_res_connect for b in create_backbone("mv2_e6").features[1:18]]


def test_output_stride_changes_nothing_before_the_dilated_stage():
    os32 = create_backbone("cog_e6").eval()
    os16 = create_backbone("cog_e6", output_stride=16).eval()
    os16.load_state_dict(os32.state_dict())
    x = torch.randn(1, 3, SIZE, SIZE)
    a = os32.forward_features(x, ["stage4", "stage5_expand"])
    b = os16.forward_features(x, ["stage4", "stage5_expand"])
    for tap in a:
        torch.testing.assert_close(a[tap], b[tap])


def test_stage_start_marks_resolution_changes():
    backbone = create_backbone("mv2_e6", output_stride=8)
    starts = [i for i in range(1, 18) if backbone.features[i].stage_start]
    assert starts == [2, 4, 7, 14]
    assert all(backbone.features[i]._is_cn == backbone.features[i].stage_start for i in range(1, 18))


def test_registry_errors_are_clear():
    with pytest.raises(ConfigError, match=r"Unknown backbone 'resnet50'.*cog_e2.*mv2_e6"):
        create_backbone("resnet50")
    with pytest.raises(ConfigTypeError, match=r"does not accept override\(s\) \['depth'\].*pointwise"):
        create_backbone("cog_e2", depth=3)
    with pytest.raises(ConfigError, match="output_stride must be one of"):
        create_backbone("cog_e2", output_stride=4)


def test_cog_family_structure_and_overrides():
    backbone = create_backbone("cog_e4")
    blocks = list(backbone.features[1:18])
    assert all(isinstance(b, InvertedResidual) for b in blocks)
    for b in blocks:
        cog = b.expand[0]
        assert isinstance(cog, ChannelOverlapConv2d) and (cog.groups, cog.overlap) == (4, 1)
        assert isinstance(b.expand[1], nn.BatchNorm2d) and isinstance(b.expand[2], nn.SiLU)
        assert isinstance(b.depthwise[2], nn.SiLU)
        assert type(b.project[0]) is nn.Conv2d and len(b.project) == 2  # dense and linear
    assert blocks[0].hidden_channels == blocks[0].in_channels == 32  # t=1 COG expansion
    assert isinstance(backbone.features[0][2], nn.ReLU6) and isinstance(backbone.features[18][2], nn.ReLU6)

    plain = create_backbone("cog_e4", expand_activation=None,
                            pointwise={"name": "cog", "groups": 4, "overlap": 1, "impl": "roll"})
    for b in plain.features[1:18]:
        assert len(b.expand) == 2 and b.expand[0].impl == "roll"


def test_mv2_family_structure():
    backbone = create_backbone("mv2_e2")
    assert backbone.features[1].expand is None
    for b in backbone.features[2:18]:
        assert b.hidden_channels == 2 * b.in_channels and type(b.expand[0]) is nn.Conv2d
    assert not any(isinstance(m, (ChannelOverlapConv2d, nn.SiLU)) for m in backbone.modules())


def test_cog_backbone_output_is_the_same_for_every_impl():
    backbone = create_backbone("cog_e2").eval()
    randomize_batchnorm(backbone)
    x = torch.randn(1, 3, SIZE, SIZE)
    backbone.set_pointwise_impl("concat")
    expected = backbone(x)
    for impl in ("roll", "dense", "auto"):
        backbone.set_pointwise_impl(impl)
        torch.testing.assert_close(backbone(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name,expected",
    [("mv2_e2", 2_300_264), ("mv2_e4", 2_902_568), ("mv2_e6", 3_504_872),
     ("cog_e2", 2_175_528), ("cog_e4", 2_652_520), ("cog_e6", 3_129_512)],
)
def test_parameter_count_with_imagenet_head(name, expected):
    backbone = create_backbone(name)
    head = classifier_head(backbone.out_channels)
    total = sum(p.numel() for m in (backbone, head) for p in m.parameters())
    assert total == expected


def test_mv2_e6_equals_torchvision_mobilenet_v2():
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2().eval()
    randomize_batchnorm(reference)
    backbone_state, classifier_state = convert_torchvision_mobilenet_v2(reference.state_dict())
    backbone = create_backbone("mv2_e6").eval()
    backbone.load_state_dict(backbone_state)  # strict: every key maps
    head = classifier_head(backbone.out_channels).eval()
    head.load_state_dict(classifier_state)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(classify(backbone, head, x), reference(x), rtol=0, atol=0)
    # Same layers in the same order.
    ours = [(type(m), getattr(m, "weight", torch.empty(0)).shape) for m in backbone.features.modules()
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU6))]
    theirs = [(type(m), getattr(m, "weight", torch.empty(0)).shape) for m in reference.features.modules()
              if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU6))]
    assert ours == theirs


def test_init_scheme_matches_torchvision():
    torch.manual_seed(0)
    for backbone in (create_backbone("mv2_e6"), create_backbone("cog_e6")):
        for m in backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert torch.equal(m.weight, torch.ones_like(m.weight))
                assert torch.equal(m.bias, torch.zeros_like(m.bias))
        # kaiming_normal_(mode="fan_out"): std = sqrt(2 / (out_channels * kernel area)).
        for conv in (backbone.features[18][0], backbone.features[17].expand[0]):
            std = (2.0 / conv.weight.shape[0]) ** 0.5
            assert abs(conv.weight.std().item() / std - 1) < 0.05
            assert abs(conv.weight.mean().item()) < 0.1 * std


def test_mobilenet_backbone_validates_arguments():
    with pytest.raises(ConfigError, match="width_mult must be > 0"):
        MobileNetV2Backbone(width_mult=0)
    with pytest.raises(ConfigError, match=r"Unknown pointwise layer 'sparse'.*registered"):
        MobileNetV2Backbone(pointwise="sparse")
    with pytest.raises(ConfigError, match="Unknown expand_activation 'gelu'"):
        MobileNetV2Backbone(expand_activation="gelu")
    with pytest.raises(ConfigError, match=r"pointwise_at names unknown conv role\(s\) \['se'\]"):
        MobileNetV2Backbone(pointwise="group", pointwise_at=["expand", "se"])
