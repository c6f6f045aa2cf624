"""The spatial-conv registry (``backbones.spatial``): each layer against an explicit reference.

The deformable conv is checked three ways: with zero offsets it is the standard conv; its two
implementations (torchvision's kernel, grid_sample + matmul) agree in float64, outputs and
gradients; and both pass ``torch.autograd.gradcheck`` (float64 finite differences).
"""
import pytest
import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from backbones import create_backbone
from backbones.spatial import (
    DeformableConv2d,
    SpatialLayer,
    SpatialPlan,
    ZeroInitConv2d,
    build_spatial,
    list_spatial,
    spatial_options,
)
from errors import ConfigError, ConfigTypeError
from tests.helpers import randomize_batchnorm

LAYERS = ("standard", "depthwise", "depthwise_separable", "deform", "deform_depthwise")


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_every_layer_and_their_options():
    assert set(LAYERS) <= set(list_spatial())
    assert spatial_options("depthwise") == []
    assert spatial_options("deform") == ["offset_groups", "modulation", "offset_lr_mult", "impl"]


def test_bad_names_options_roles_and_positions_fail_listing_the_valid_ones():
    with pytest.raises(ConfigError, match="registered: .*deform_depthwise"):
        build_spatial("deformable", 8, 8)
    with pytest.raises(ConfigTypeError, match=r"does not take option\(s\) \['offset_groups'\]; its options: \[\]"):
        build_spatial({"name": "depthwise", "offset_groups": 2}, 8, 8)
    with pytest.raises(ConfigError, match=r"'depthwise' at features.3 depthwise \(8 -> 12 channels, 3x3\)"
                                          r".*multiple of in_channels"):
        SpatialPlan.create("depthwise", ["depthwise"], ["depthwise"]).build(
            "depthwise", 8, 12, where="features.3 depthwise")
    with pytest.raises(ConfigError, match=r"unknown conv role\(s\) \['stem'\]; .*\['depthwise'\]"):
        create_backbone("mv2_e2", spatial_at=["stem"])
    with pytest.raises(ConfigError, match=r"\[18\] are not layers with a spatial conv; this backbone's: 1..17"):
        create_backbone("mv2_e2", spatial="deform_depthwise", spatial_positions=[7, 18])
    with pytest.raises(ConfigError, match="offset_groups must be a positive divisor"):
        build_spatial({"name": "deform", "offset_groups": 3}, 8, 8)
    with pytest.raises(ConfigError, match="no implementation 'cuda'"):
        build_spatial({"name": "deform", "impl": "cuda"}, 8, 8)


def test_default_depthwise_is_the_conv_the_families_hard_coded():
    torch.manual_seed(0)
    ours = build_spatial("depthwise", 16, 16, stride=2, dilation=2, activation_layer=nn.ReLU6)
    torch.manual_seed(0)
    theirs = Conv2dNormActivation(16, 16, kernel_size=3, stride=2, dilation=2, groups=16,
                                  activation_layer=nn.ReLU6)
    assert str(list(ours)) == str(list(theirs))
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_positions_select_the_blocks_seed_001_style():
    backbone = create_backbone("mv2_e2", spatial="deform_depthwise", spatial_positions=[2, 4, 6])
    deformable = [i for i, block in enumerate(backbone.features)
                  if any(isinstance(m, DeformableConv2d) for m in block.modules())]
    assert deformable == [2, 4, 6]


def test_seed_001_layer_parameter_counts():
    """The appendix of seed 001: conv 3->32 (896 + BN 64); DepthSepConv 32->64 stride 2: depthwise
    320 + BN 64, pointwise 2,112 + BN 128; DeformConv 32->32: offset conv 5,202 + kernel 9,248 +
    BN 64 (every conv with bias)."""
    relu = nn.ReLU
    assert params(build_spatial("standard", 3, 32, stride=2, bias=True, activation_layer=relu)) == 896 + 64
    assert params(build_spatial("depthwise_separable", 32, 64, stride=2, bias=True,
                                activation_layer=relu)) == 320 + 64 + 2112 + 128
    deform = build_spatial("deform", 32, 32, bias=True, activation_layer=relu)
    assert params(deform) == 5202 + 9248 + 64 and params(deform[0].offset) == 5202


def _copy_kernel(deform_layer: nn.Module, conv_layer: nn.Module) -> None:
    with torch.no_grad():
        deform_layer[0].weight.copy_(conv_layer[0].weight)
        if conv_layer[0].bias is not None:
            deform_layer[0].bias.copy_(conv_layer[0].bias)
    deform_layer[1].load_state_dict(conv_layer[1].state_dict())


@pytest.mark.parametrize("impl", ["torchvision", "grid_sample"])
@pytest.mark.parametrize("deform,plain,stride,dilation", [
    ("deform", "standard", 1, 1), ("deform", "standard", 2, 2),
    ("deform_depthwise", "depthwise", 2, 1), ("deform_depthwise", "depthwise", 1, 2),
])
def test_deform_with_zero_offsets_is_the_plain_conv(deform, plain, stride, dilation, impl):
    torch.manual_seed(0)
    reference = build_spatial(plain, 6, 6, stride=stride, dilation=dilation, bias=True,
                              activation_layer=nn.ReLU).double()
    layer = build_spatial({"name": deform, "impl": impl}, 6, 6, stride=stride, dilation=dilation,
                          bias=True, activation_layer=nn.ReLU).double()
    assert not layer[0].offset.weight.any() and not layer[0].offset.bias.any()  # zero-initialised
    _copy_kernel(layer, reference)
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(x), atol=1e-12, rtol=0)


def _random_offsets(conv: DeformableConv2d, scale: float = 1.5) -> None:
    with torch.no_grad():
        conv.offset.weight.normal_(0, 0.3)
        conv.offset.bias.uniform_(-scale, scale)  # some taps land outside the image


@pytest.mark.parametrize("groups,offset_groups,modulation,stride,dilation", [
    (1, 1, False, 1, 1), (6, 2, True, 2, 1), (2, 3, False, 1, 2), (6, 1, True, 2, 2),
])
def test_deform_implementations_agree_in_float64(groups, offset_groups, modulation, stride, dilation):
    torch.manual_seed(0)
    conv = DeformableConv2d(6, 6, 3, stride, dilation, dilation, groups, True,
                            offset_groups=offset_groups, modulation=modulation).double()
    _random_offsets(conv)
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64, requires_grad=True)
    results = []
    for impl in ("torchvision", "grid_sample"):
        conv.set_impl(impl)
        out = conv(x)
        grads = torch.autograd.grad(out.square().sum(), [x, conv.weight, conv.bias, conv.offset.weight])
        results.append((out, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("impl", ["torchvision", "grid_sample"])
def test_deform_gradients_match_finite_differences(impl):
    torch.manual_seed(0)
    conv = DeformableConv2d(2, 2, 3, 1, 1, 1, 1, True, modulation=True).double()
    _random_offsets(conv, scale=0.7)
    conv.set_impl(impl)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)

    # The offsets' gradient reaches the offset conv through its output: its bias is enough.
    def function(x, weight, offset_bias):
        return torch.func.functional_call(conv, {"weight": weight, "offset.bias": offset_bias}, (x,))

    inputs = (x, conv.weight.detach().clone().requires_grad_(),
              conv.offset.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", LAYERS)
def test_fuse_dense_equivalent_and_memory_access_cost(name):
    torch.manual_seed(0)
    layer = build_spatial(name, 8, 8, stride=2, activation_layer=nn.ReLU6)
    assert isinstance(layer, SpatialLayer) and layer.registry_name == name
    for module in layer.modules():
        if isinstance(module, DeformableConv2d):
            _random_offsets(module)
    randomize_batchnorm(layer).eval()
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        expected = layer(x)
        fused, dense = layer.fuse(), layer.dense_equivalent().eval()
        torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dense(x), expected, atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, (nn.BatchNorm2d, SpatialLayer)) for m in fused.modules())
    assert all(getattr(m, "groups", 1) == 1 for m in dense.modules() if m.__class__.__name__ != "DensePointwise")
    cost = layer.memory_access_cost(9, 9)
    if name == "depthwise":  # read 9x9x8, write 5x5x8, read the 3x3x8 kernel
        assert cost == 9 * 9 * 8 + 5 * 5 * 8 + 9 * 8
    if name == "standard":
        assert cost == 9 * 9 * 8 + 5 * 5 * 8 + 9 * 8 * 8
    if name.startswith("deform"):  # the offset conv and the sampled columns cost on top
        plain = build_spatial(name.replace("deform_", "").replace("deform", "standard"), 8, 8, stride=2)
        assert cost > plain.memory_access_cost(9, 9) + 2 * 8 * 9 * 5 * 5


def test_offsets_stay_zero_through_every_init():
    from heads.ssd_lite import SSDLiteHead

    backbone = create_backbone("mobilenet_v1", width_mult=0.25, spatial="deform_depthwise")
    head = SSDLiteHead([64, 128], 3, spatial="deform_depthwise", spatial_at=["extras", "predictors"],
                       head_init="xavier")
    offsets = [m for model in (backbone, head) for m in model.modules() if isinstance(m, ZeroInitConv2d)]
    assert len(offsets) == 13 + 4 + 2 * 5
    assert not any(m.weight.any() or m.bias.any() for m in offsets)
    kernels = [m for m in backbone.modules() if isinstance(m, DeformableConv2d)]
    assert all(m.weight.std() > 0 for m in kernels)  # the kernels are initialised like convs


@pytest.mark.slow  # the exporter and onnxruntime: ~5 s
def test_onnx_export_runs_the_grid_sample_form_and_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from deploy.export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(
        build_spatial("deform", 3, 8, stride=2, activation_layer=nn.ReLU),
        build_spatial({"name": "deform_depthwise", "modulation": True}, 8, 8, dilation=2,
                      activation_layer=nn.ReLU6),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for module in model.modules():
        if isinstance(module, DeformableConv2d):
            _random_offsets(module, scale=0.5)
            module.set_impl("torchvision")  # has no ONNX symbolic: export switches to grid_sample
    randomize_batchnorm(model)
    for fuse in (True, False):
        report = export_onnx(model, torch.zeros(1, 3, 24, 24), tmp_path / f"m{fuse}.onnx", fuse=fuse)
        assert report.max_abs_diff["logits"] <= report.tolerance["logits"]
    assert all(m.impl == "torchvision" for m in model.modules() if isinstance(m, DeformableConv2d))


def test_offset_lr_mult_gives_the_offset_conv_its_share_of_the_lr():
    """The deformable-conv paper's beta: the offset layers learn at beta x the lr."""
    from tasks.base import build_optimizer

    plain = create_backbone("mobilenet_v1", width_mult=0.25)
    assert [len(g["params"]) for g in build_optimizer(plain, lr=0.01).param_groups] == [27, 54]
    backbone = create_backbone("mobilenet_v1", width_mult=0.25, spatial_positions=[2, 4],
                               spatial={"name": "deform_depthwise", "offset_lr_mult": 0.1})
    groups = build_optimizer(backbone, lr=0.01, weight_decay=0.5).param_groups
    offsets = {id(p) for m in backbone.modules() if isinstance(m, ZeroInitConv2d) for p in m.parameters()}
    for group in groups:
        is_offset = {id(p) in offsets for p in group["params"]}
        assert len(is_offset) == 1
        assert group["lr"] == pytest.approx(0.001 if is_offset.pop() else 0.01)
    assert sum(len(g["params"]) for g in groups) == 81 + 2 * 2 and len(groups) == 4
    with pytest.raises(ConfigError, match="offset_lr_mult must be a number >= 0"):
        build_spatial({"name": "deform", "offset_lr_mult": -1}, 8, 8)


def test_ssd_lite_head_takes_deformable_depthwise_convs():
    from tasks.detection import DetectionTask

    torch.manual_seed(0)
    task = DetectionTask(backbone={"name": "mv2_e2", "width_mult": 0.25}, num_classes=2,
                         head_spatial={"name": "deform_depthwise", "offset_lr_mult": 0.1},
                         head_spatial_at=["extras", "predictors"])
    head_layers = [m for m in task.head.modules() if isinstance(m, SpatialLayer)]
    assert [m.registry_name for m in head_layers] == ["deform_depthwise"] * (4 + 2 * 5)
    output = task(torch.randn(2, 3, 64, 64))
    (output.cls_logits.square().mean() + output.box_regression.square().mean()).backward()
    assert all(m[0].offset.weight.grad is not None for m in head_layers)
    with pytest.raises(ConfigError, match=r"unknown conv role\(s\) \['depthwise'\]; .*\['extras', 'predictors'\]"):
        DetectionTask(backbone="mv2_e2", num_classes=2, head_spatial_at=["depthwise"])
