"""The seeds' other networks: MobileNetV1 / gpcMobileNet (seed 002) and EfficientNet-B0 / kEffNet-B0
(seed 004). Parameter counts as published, torchvision equivalence, where kgroup layers sit and
what each computes, roles for the heads, transfer between tasks, and one run of each task."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import SqueezeExcitation as TorchvisionSqueezeExcitation
from torchvision.ops import StochasticDepth

from backbones import (
    create_backbone,
    convert_torchvision_efficientnet_b0,
    load_backbone_weights,
)
from backbones.pointwise import PointwiseLayer
from backbones.pointwise.kgroup import KGroupPointwise
from backbones.squeeze_excitation import SqueezeExcitation
from errors import ConfigError
from tasks.classification import ClassificationTask
from tests.helpers import compose_config

NEW_FAMILIES = ["mobilenet_v1", "gpc_mobilenet_16", "gpc_mobilenet_32", "gpc_mobilenet_64",
                "gpc_mobilenet_128", "efficientnet_b0", "keffnet_b0"]

# Trainable parameters with a 10-class head: seed 002 Table 6.1 (BN statistics excluded: 3.239M,
# 0.274M, 0.432M, 0.748M, 1.353M there include them) and seed 004 Tables 1-2.
PUBLISHED_PARAMS = {
    "mobilenet_v1": 3_217_226,
    "gpc_mobilenet_16": 244_298,
    "gpc_mobilenet_32": 403_018,
    "gpc_mobilenet_64": 718_410,
    "gpc_mobilenet_128": 1_324_362,
    "efficientnet_b0": 4_020_358,
    "keffnet_b0": 639_702,
}
# Parameters + BN running statistics (the Keras totals of Table 6.1 / the kEffNet notebook).
PUBLISHED_TOTALS = {
    "mobilenet_v1": 3_239_114,
    "gpc_mobilenet_16": 274_122,
    "gpc_mobilenet_32": 432_842,
    "gpc_mobilenet_64": 748_234,
    "gpc_mobilenet_128": 1_353_930,
    "efficientnet_b0": 4_062_374,
    "keffnet_b0": 685_334,
}


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return module


# --------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_parameter_counts_equal_the_seeds(name):
    task = ClassificationTask(backbone=name, num_classes=10)
    assert params(task) == PUBLISHED_PARAMS[name]
    running_stats = sum(m.running_mean.numel() + m.running_var.numel()
                        for m in task.modules() if isinstance(m, nn.BatchNorm2d))
    assert params(task) + running_stats == PUBLISHED_TOTALS[name]


def test_classifier_dropout_and_init_follow_the_family():
    assert ClassificationTask(backbone="mobilenet_v1", num_classes=10).head.dropout.p == 1e-3
    assert ClassificationTask(backbone="gpc_mobilenet_16", num_classes=10).head.dropout.p == 1e-3
    assert ClassificationTask(backbone="efficientnet_b0", num_classes=10).head.dropout.p == 0.2
    assert ClassificationTask(backbone="mv2_e2", num_classes=10).head.dropout.p == 0.2  # unchanged
    assert ClassificationTask(backbone="mobilenet_v1", num_classes=10, dropout=0.5).head.dropout.p == 0.5
    # torchvision's EfficientNet classifier init: U(-1/sqrt(classes), +1/sqrt(classes)).
    torch.manual_seed(0)
    fc = ClassificationTask(backbone="keffnet_b0", num_classes=10).head.fc
    bound = 10 ** -0.5
    assert fc.weight.abs().max() <= bound and fc.weight.abs().max() > 0.9 * bound
    assert fc.weight.std() > 0.1  # not the N(0, 0.01) of the MobileNets


# --------------------------------------------------------------------------- EfficientNet-B0
def efficientnet_reference() -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.efficientnet_b0(num_classes=10)).eval()


def test_efficientnet_b0_equals_torchvision_efficientnet_b0():
    reference = efficientnet_reference()
    backbone_state, classifier_state = convert_torchvision_efficientnet_b0(reference.state_dict())
    task = ClassificationTask(backbone="efficientnet_b0", num_classes=10).eval()
    task.backbone.load_state_dict(backbone_state)  # strict: every key maps
    task.head.fc.load_state_dict({k.split(".", 1)[1]: v for k, v in classifier_state.items()})
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(task(x), reference(x), rtol=0, atol=0)
    # Same layers in the same order (convs, norms with their settings, activations), squeeze-
    # excitation modules compared by their two convs (torchvision registers its activations last).
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.SiLU, nn.Sigmoid, StochasticDepth)
    se_kinds = (SqueezeExcitation, TorchvisionSqueezeExcitation)

    def layers(model):
        inside_se = {id(c) for m in model.modules() if isinstance(m, se_kinds) for c in m.modules()}
        found = []
        for m in model.modules():
            if isinstance(m, se_kinds):
                found.append(("se", *[tuple(c.weight.shape) for c in m.modules() if isinstance(c, nn.Conv2d)]))
            elif isinstance(m, kinds) and id(m) not in inside_se:
                found.append((type(m), tuple(getattr(m, "weight", torch.empty(0)).shape),
                              getattr(m, "eps", None), getattr(m, "momentum", None), getattr(m, "p", None)))
        return found

    ours, theirs = layers(task.backbone.features), layers(reference.features)
    # stem 3 + 15 blocks x (expand 3, depthwise 3, SE 1, project 2, stochastic depth 1) + block 1a 7 + top 3
    assert len(ours) == 3 + 15 * 10 + 7 + 3 and ours == theirs


def test_torchvision_efficientnet_b0_state_dict_loads_as_pretrained(tmp_path):
    reference = efficientnet_reference()
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(reference.state_dict(), path)
    backbone = create_backbone("efficientnet_b0").eval()
    report = load_backbone_weights(backbone, path)
    assert report.source == "torchvision" and report.checkpoint_backbone == "efficientnet_b0"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), reference.features(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not fit backbone 'keffnet_b0'"):
        load_backbone_weights(create_backbone("keffnet_b0"), path)


def test_converter_rejects_other_state_dicts():
    with pytest.raises(ValueError, match="Not a torchvision efficientnet state dict"):
        convert_torchvision_efficientnet_b0(torchvision.models.mobilenet_v2().state_dict())


def test_efficientnet_b0_stochastic_depth_as_torchvision():
    backbone = create_backbone("efficientnet_b0")
    probabilities = [block.stochastic_depth.p for block in backbone.features[1:17]]
    assert probabilities == pytest.approx([0.2 * b / 16 for b in range(16)])
    residual = [block.use_res_connect for block in backbone.features[1:17]]
    assert residual == [False, False, True, False, True, False, True, True, False, True, True,
                        False, True, True, True, False]


# --------------------------------------------------------------------------- kEffNet-B0
# Facts (b), B.3: trainable parameters per block of kEffNet-B0 and EfficientNet-B0.
KEFFNET_BLOCK_PARAMS = [928, 1_264, 3_948, 7_098, 9_882, 15_950, 13_710, 27_100, 27_100, 36_812,
                        54_068, 54_068, 56_436, 77_520, 77_520, 77_520, 62_928, 23_040]
EFFICIENTNET_BLOCK_PARAMS = [928, 1_448, 6_004, 10_710, 15_350, 31_290, 37_130, 102_900, 102_900,
                             126_004, 208_572, 208_572, 262_492, 587_952, 587_952, 587_952,
                             717_232, 412_160]


@pytest.mark.parametrize("name,expected", [("keffnet_b0", KEFFNET_BLOCK_PARAMS),
                                           ("efficientnet_b0", EFFICIENTNET_BLOCK_PARAMS)])
def test_parameters_per_block(name, expected):
    assert [params(layer) for layer in create_backbone(name).features] == expected


def outermost_pointwise_layers(model: nn.Module) -> list[PointwiseLayer]:
    """Pointwise layers not inside another one (a kgroup holds its convs as pointwise units)."""
    layers = [m for m in model.modules() if isinstance(m, PointwiseLayer)]
    inner = {id(c) for m in layers for c in m.modules() if c is not m}
    return [m for m in layers if id(m) not in inner]


def test_keffnet_every_pointwise_conv_is_kgroup_16():
    backbone = create_backbone("keffnet_b0")
    layers = outermost_pointwise_layers(backbone)
    assert all(isinstance(m, KGroupPointwise) and m.min_channels_per_group == 16 for m in layers)
    # 15 expansions, 16 x (SE reduce, SE expand, projection), the 320 -> 1280 conv.
    assert len(layers) == 64
    assert sum(m.groups > 1 for m in layers) == 49
    assert sum(m.interleave is not None for m in layers) == 34
    assert sum(m.second is not None for m in layers) == 32
    # Only the 3x3 stem and the depthwise convs are not pointwise layers.
    other_convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)
                   and not any(m is c for layer in layers for c in layer.modules())]
    assert len(other_convs) == 17 and all(c.kernel_size != (1, 1) for c in other_convs)


def conv_biases_norms_activations(layer: KGroupPointwise) -> list[tuple]:
    units = [layer.first] + ([layer.second] if layer.second is not None else [])
    return [(u[0].bias is not None, any(isinstance(m, nn.BatchNorm2d) for m in u),
             next((type(m).__name__ for m in u if isinstance(m, (nn.SiLU, nn.Sigmoid, nn.ReLU6))), None))
            for u in units]


def test_keffnet_activations_norms_and_biases_as_the_authors_code():
    backbone = create_backbone("keffnet_b0")
    block = backbone.features[13]  # 6b: 192 -> 1152 -> 192
    assert conv_biases_norms_activations(block.expand) == [(False, True, "SiLU")]
    assert conv_biases_norms_activations(block.se.reduce) == [(True, False, "SiLU")] * 2
    assert conv_biases_norms_activations(block.se.expand) == [(True, False, "Sigmoid")]
    assert conv_biases_norms_activations(block.project) == [(False, True, None)] * 2
    top = backbone.features[17]
    assert conv_biases_norms_activations(top) == [(False, True, None)]  # no SiLU after the top conv
    assert isinstance(top, KGroupPointwise) and (top.groups, top.second) == (20, None)
    assert isinstance(top.interleave, nn.ChannelShuffle) and top.interleave.groups == 20
    assert isinstance(create_backbone("efficientnet_b0").features[17][2], nn.SiLU)


def grouped(x, conv):
    return F.conv2d(x, conv.weight, conv.bias, groups=conv.groups)


def bn(x, norm):
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)


def shuffle(x, groups):
    """Keras' InterleaveChannels(C // groups) by indices: position p = s*G + m holds channel m*step + s."""
    step = x.shape[1] // groups
    return x[:, [m * step + s for s in range(step) for m in range(groups)]]


def test_keffnet_block_6b_squeeze_excitation_equals_the_authors_graph():
    """SE reduce 1152 -> 48 (48 groups, no interleave since 48/48 = 1, a second conv) and SE expand
    48 -> 1152 (3 groups): the sigmoid gates are interleaved before they multiply the map."""
    torch.manual_seed(0)
    se = create_backbone("keffnet_b0").features[13].se.double().eval()
    reduce, expand = se.reduce, se.expand
    assert (reduce.groups, reduce.interleave, reduce.second is not None) == (48, None, True)
    assert expand.groups == 3 and isinstance(expand.interleave, nn.ChannelShuffle) and expand.second is None
    with torch.no_grad():
        for p in se.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 1152, 3, 3, dtype=torch.float64)
    pooled = x.mean((2, 3), keepdim=True)
    y = F.silu(grouped(pooled, reduce.first[0]))
    squeezed = y + F.silu(grouped(y, reduce.second[0]))
    gates = shuffle(torch.sigmoid(grouped(squeezed, expand.first[0])), 3)
    torch.testing.assert_close(se(x), x * gates, rtol=1e-12, atol=1e-12)


def test_keffnet_top_conv_is_linear_grouped_and_interleaved():
    torch.manual_seed(0)
    top = randomize_batchnorm(create_backbone("keffnet_b0").features[17]).double().eval()
    x = torch.randn(2, 320, 2, 2, dtype=torch.float64)
    expected = shuffle(bn(grouped(x, top.first[0]), top.first[1]), 20)
    torch.testing.assert_close(top(x), expected, rtol=1e-12, atol=1e-12)


def test_keffnet_is_efficientnet_b0_with_kgroup_everywhere_and_a_linear_top_conv():
    kgroup = {"name": "kgroup", "min_channels_per_group": 16}
    built = create_backbone("efficientnet_b0", pointwise=kgroup, pointwise_at=["expand", "project", "last"],
                            se_pointwise=kgroup, last_activation="none").eval()
    keffnet = randomize_batchnorm(create_backbone("keffnet_b0")).eval()
    built.load_state_dict(keffnet.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(built(x), keffnet(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- MobileNetV1 / gpcMobileNet
# Facts (c), C.1: groups of the 13 pointwise layers per min_channels_per_group.
GPC_GROUPS = {
    16: [2, 4, 8, 8, 16, 16, 32, 32, 32, 32, 32, 32, 64],
    32: [1, 2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32],
    64: [1, 1, 2, 2, 4, 4, 8, 8, 8, 8, 8, 8, 16],
    128: [1, 1, 1, 1, 2, 2, 4, 4, 4, 4, 4, 4, 8],
}
GPC_POINTWISE_PARAMS = {
    16: [1_152, 2_304, 4_608, 4_608, 9_216, 9_216] + [18_432] * 6 + [36_864],
    32: [2_176, 4_352, 8_704, 8_704, 17_408, 17_408] + [34_816] * 6 + [69_632],
    64: [2_176, 8_448, 16_896, 16_896, 33_792, 33_792] + [67_584] * 6 + [135_168],
    128: [2_176, 8_448, 16_640, 33_280, 66_560, 66_560] + [133_120] * 6 + [266_240],
}
CHANNELS = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]


@pytest.mark.parametrize("min_cpg", sorted(GPC_GROUPS))
def test_gpc_mobilenet_kgroup_placement(min_cpg):
    backbone = create_backbone(f"gpc_mobilenet_{min_cpg}")
    blocks = list(backbone.features)[1:]
    pointwise = [block.pointwise for block in blocks]
    assert all(isinstance(p, KGroupPointwise) and p.min_channels_per_group == min_cpg for p in pointwise)
    assert [p.groups for p in pointwise] == GPC_GROUPS[min_cpg]
    assert [params(p) for p in pointwise] == GPC_POINTWISE_PARAMS[min_cpg]
    for p, c_in, c_out in zip(pointwise, CHANNELS, CHANNELS[1:]):
        assert (p.in_channels, p.out_channels) == (c_in, c_out)
        assert (p.interleave is not None) == (p.groups > 1)  # every grouped one has C_out / G > 1
        assert (p.second is not None) == (p.groups > 1 and c_in == c_out)
        assert conv_biases_norms_activations(p)[0] == (False, True, "SiLU")
    # The stem and the depthwise convs keep ReLU6.
    assert isinstance(backbone.features[0][2], nn.ReLU6)
    assert all(isinstance(block.depthwise[2], nn.ReLU6) for block in blocks)


def test_gpc_pointwise_layer_equals_the_authors_graph():
    """gpcMobileNet-32 block 3 (128 -> 128, 4 groups): swish(BN(Kx)) + swish(BN(L interleave(.)))."""
    torch.manual_seed(0)
    layer = randomize_batchnorm(create_backbone("gpc_mobilenet_32").features[3].pointwise).double().eval()
    x = torch.randn(2, 128, 4, 4, dtype=torch.float64)
    y = F.silu(bn(grouped(x, layer.first[0]), layer.first[1]))
    expected = y + F.silu(bn(grouped(shuffle(y, 4), layer.second[0]), layer.second[1]))
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_mobilenet_v1_layers_as_keras_mobilenet():
    backbone = create_backbone("mobilenet_v1")
    stem = backbone.features[0]
    assert (stem[0].in_channels, stem[0].out_channels, stem[0].stride, stem[0].bias) == (3, 32, (2, 2), None)
    for block, c_in, c_out in zip(list(backbone.features)[1:], CHANNELS, CHANNELS[1:]):
        depthwise, pointwise = block.depthwise, block.pointwise
        assert depthwise[0].groups == c_in and depthwise[0].kernel_size == (3, 3) and depthwise[0].bias is None
        assert isinstance(depthwise[2], nn.ReLU6) and isinstance(pointwise[2], nn.ReLU6)
        assert (pointwise[0].in_channels, pointwise[0].out_channels, pointwise[0].bias) == (c_in, c_out, None)
    strides = [block.depthwise[0].stride[0] for block in list(backbone.features)[1:]]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]


# --------------------------------------------------------------------------- roles and output stride
ROLE_CHANNELS = {  # (stride16, stride16_expansion, body, last) channels
    "mobilenet_v1": (512, 512, 1024, 1024),
    "gpc_mobilenet_64": (512, 512, 1024, 1024),
    "efficientnet_b0": (112, 672, 320, 1280),
    "keffnet_b0": (112, 672, 320, 1280),
}


@pytest.mark.parametrize("name", sorted(ROLE_CHANNELS))
def test_roles_heads_read(name):
    backbone = create_backbone(name)
    roles = ("stride16", "stride16_expansion", "body", "last")
    assert tuple(backbone.feature_for(r).channels for r in roles) == ROLE_CHANNELS[name]
    if name.endswith("_b0"):
        # torchvision SSDLite's rule: the expansion of the first stride-32 (C5) block.
        info = backbone.feature_for("stride16_expansion")
        assert info.kind == "expansion" and backbone.features[info.index].stage_start
        assert backbone.features[info.index].stride == 2
    else:
        # mb1-ssd-lite's first map: the 11th block's output, the last at stride 16.
        assert backbone.feature_for("stride16_expansion").name == "block11"


def test_output_stride_16_dilates_the_later_blocks():
    mv1 = create_backbone("mobilenet_v1", output_stride=16)
    convs = [(b.depthwise[0].stride[0], b.depthwise[0].dilation[0]) for b in list(mv1.features)[12:]]
    assert convs == [(1, 1), (1, 2)]
    effnet = create_backbone("efficientnet_b0", output_stride=16)
    blocks = list(effnet.features)[12:17]
    assert [(b.depthwise[0].stride[0], b.depthwise[0].dilation[0]) for b in blocks] == \
        [(1, 1), (1, 2), (1, 2), (1, 2), (1, 2)]
    assert not blocks[0].use_res_connect  # the dilated stage start keeps its structure
    x = torch.randn(1, 3, 64, 64)
    assert mv1(x).shape[-1] == 4 and effnet(x).shape[-1] == 4


def test_cog_variants_of_the_new_families_build():
    for name, overrides in [
        ("mobilenet_v1", {"pointwise": {"name": "cog", "groups": 4, "overlap": 1}}),
        ("efficientnet_b0", {"pointwise": "cog"}),
        ("keffnet_b0", {"pointwise": "cog"}),  # expand, project and last; SE stays kgroup
    ]:
        backbone = create_backbone(name, **overrides).eval()
        assert any(getattr(m, "registry_name", None) == "cog" for m in backbone.modules()), name
        assert backbone(torch.randn(1, 3, 32, 32)).shape[1] == backbone.out_channels


def test_bad_overrides_are_clear_errors():
    with pytest.raises(ConfigError, match=r"pointwise_at names unknown conv role\(s\) \['expand'\]"):
        create_backbone("mobilenet_v1", pointwise_at=["expand"])
    with pytest.raises(ConfigError, match=r"this backbone's pointwise convs: \['expand', 'project', 'last'\]"):
        create_backbone("efficientnet_b0", pointwise_at=["se"])
    with pytest.raises(ConfigError, match="norm_momentum in"):
        create_backbone("keffnet_b0", norm_momentum=1.5)
    # Block 2a's SE (96 -> 4) takes 4 groups, block 2b's (144 -> 6) cannot.
    with pytest.raises(ConfigError, match=r"features\.3 se reduce \(144 -> 6 channels\)"):
        create_backbone("efficientnet_b0", se_pointwise={"name": "group", "groups": 4})
    with pytest.raises(ConfigError, match="stochastic_depth_prob"):
        create_backbone("efficientnet_b0", stochastic_depth_prob=1.0)


# --------------------------------------------------------------------------- transfer between tasks
@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_classifier_checkpoint_initialises_detection_and_segmentation(tmp_path, name):
    from tasks.detection import DetectionTask
    from tasks.segmentation import SegmentationTask

    spec = {"name": name, "width_mult": 0.5}
    classifier = ClassificationTask(backbone=spec, num_classes=10)
    with torch.no_grad():
        for p in classifier.backbone.parameters():
            p.normal_()  # weights no fresh model has
    path = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": classifier.state_dict(), "hyper_parameters": {"backbone": spec}}, path)
    source = classifier.backbone.state_dict()
    for task in (DetectionTask(backbone={**spec, "pretrained": str(path)}, num_classes=2),
                 SegmentationTask(backbone={**spec, "pretrained": str(path)}, num_classes=3)):
        target = task.backbone.state_dict()
        assert target and all(torch.equal(value, source[key]) for key, value in target.items())
    assert SegmentationTask(backbone=spec, num_classes=3).backbone.output_stride == 16


# --------------------------------------------------------------------------- one run of each task
def run_overrides(task: str, synthetic_dir: str) -> list[str]:
    sizes = {
        "classification": ["synthetic.image_size=64", "synthetic.generator.images_per_class=6",
                           "synthetic.generator.image_size=72"],
        "detection": ["synthetic.image_size=96", "synthetic.generator.num_train=6",
                      "synthetic.generator.num_test=4", "synthetic.generator.image_size=96"],
        "segmentation": ["synthetic.image_size=96", "synthetic.generator.num_train=6",
                         "synthetic.generator.num_val=4", "synthetic.generator.image_size=128"],
    }[task]
    return [f"task={task}", "data=synthetic", f"paths.synthetic_dir={synthetic_dir}/{task}_families",
            "batch_size=2", "+trainer.fast_dev_run=true", *sizes]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
@pytest.mark.parametrize("name", ["gpc_mobilenet_16", "keffnet_b0"])
def test_fast_dev_run_of_each_task(tmp_path, synthetic_dir, task, name):
    from train import train

    cfg = compose_config("train", [f"backbone={name}", *run_overrides(task, synthetic_dir)], tmp_path)
    metrics = train(cfg)
    assert any(k.startswith("test/") for k in metrics), metrics


# --------------------------------------------------------------------------- ONNX export
def test_reshape_channel_shuffle_is_channel_shuffle():
    from deploy.export import ReshapeChannelShuffle

    x = torch.randn(2, 24, 3, 5)
    for groups in (2, 3, 6):
        assert torch.equal(ReshapeChannelShuffle(groups)(x), nn.ChannelShuffle(groups)(x))


@pytest.mark.parametrize("fuse", [True, False])
def test_kgroup_families_export_to_onnx(tmp_path, fuse):
    """kgroup's interleave (a channel shuffle) exports; onnxruntime reproduces PyTorch."""
    from deploy.export import export_onnx

    torch.manual_seed(0)
    model = randomize_batchnorm(ClassificationTask(backbone={"name": "keffnet_b0", "width_mult": 0.5},
                                                   num_classes=10))
    report = export_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "keffnet.onnx", fuse=fuse)
    assert report.max_abs_diff["logits"] <= report.tolerance["logits"]
    assert any(isinstance(m, nn.ChannelShuffle) for m in model.modules())  # the model is left as it was
