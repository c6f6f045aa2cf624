"""Every pointwise layer equals an explicit reference of its definition (outputs and gradients),
its dense equivalent and its fused form reproduce it, and bad options fail clearly."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones.pointwise import (
    ChannelOverlapConv2d,
    PointwiseLayer,
    build_pointwise,
    list_pointwise,
    pointwise_options,
)
from backbones.pointwise.kgroup import kgroup_groups
from errors import ConfigError, ConfigTypeError
from tests.helpers import randomize_batchnorm

# (name, options, in_channels, out_channels)
CASES = [
    ("dense", {}, 16, 24),
    ("group", {"groups": 4}, 16, 24),
    ("group", {"groups": 2}, 8, 8),
    ("group_shuffle", {"groups": 4}, 16, 24),
    ("group_shuffle", {"groups": 2}, 12, 6),
    ("cog", {"groups": 4, "overlap": 1}, 16, 32),
    ("cog", {"groups": 4, "overlap": 2}, 16, 24),
    ("cog", {"groups": 8, "overlap": 3}, 24, 48),
    ("kgroup", {"min_channels_per_group": 4}, 16, 8),    # G=4, interleave, second conv
    ("kgroup", {"min_channels_per_group": 4}, 8, 32),    # G=2, interleave, no second conv
    ("kgroup", {"min_channels_per_group": 4}, 16, 4),    # G=4, C_out/G = 1: no interleave, second conv
    ("kgroup", {"min_channels_per_group": 16}, 8, 16),   # G=1: a dense conv
]



def bn(x, norm):
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)


def grouped_conv(x, weight, groups, bias=None):
    """A grouped 1x1 conv written out group by group."""
    xs, ws = x.chunk(groups, 1), weight.chunk(groups, 0)
    bs = bias.chunk(groups) if bias is not None else [None] * groups
    return torch.cat([F.conv2d(xi, wi, bi) for xi, wi, bi in zip(xs, ws, bs)], 1)


def shuffle(x, groups):
    """ShuffleNet's channel shuffle by indices: channel j of group g goes to position j*G + g."""
    c = x.shape[1]
    per = c // groups
    order = [g * per + j for j in range(per) for g in range(groups)]  # position p <- this channel
    return x[:, order]


def cog_reference(x, weight, groups, overlap):
    chunks = x.chunk(groups, dim=1)
    per_group = [torch.cat([chunks[(i + j) % groups] for j in range(overlap + 1)], dim=1)
                 for i in range(groups)]
    return F.conv2d(torch.cat(per_group, dim=1), weight, groups=groups)


def unit_reference(x, unit, conv_fn):
    """conv -> BN -> activation (-> post) as the layer's children say."""
    y = bn(conv_fn(x), unit[1])
    for m in list(unit)[2:]:
        y = shuffle(y, m.groups) if isinstance(m, nn.ChannelShuffle) else F.relu6(y)
    return y


def reference(name, options, layer, x):
    if name == "dense":
        return unit_reference(x, layer, lambda t: F.conv2d(t, layer[0].weight))
    if name in ("group", "group_shuffle"):
        return unit_reference(x, layer, lambda t: grouped_conv(t, layer[0].weight, options["groups"]))
    if name == "cog":
        return unit_reference(x, layer, lambda t: cog_reference(t, layer[0].weight, options["groups"],
                                                                options["overlap"]))
    if name == "kgroup":
        cin, cout = x.shape[1], layer.out_channels
        groups = max(d for d in range(1, cin + 1)
                     if cin % d == 0 and cout % d == 0 and cin // d >= options["min_channels_per_group"]) \
            if cin >= options["min_channels_per_group"] else 1
        assert groups == layer.groups
        first = lambda t: F.relu6(bn(grouped_conv(t, layer.first[0].weight, groups), layer.first[1]))
        y = first(x)
        if groups == 1:
            return y
        mixed = shuffle(y, groups) if cout // groups > 1 else y
        if cin < cout:
            return mixed
        second = F.relu6(bn(grouped_conv(mixed, layer.second[0].weight, groups), layer.second[1]))
        return y + second
    raise AssertionError(name)


def build(name, options, cin, cout):
    torch.manual_seed(0)
    layer = build_pointwise({"name": name, **options}, cin, cout, activation_layer=nn.ReLU6)
    return randomize_batchnorm(layer.double()).eval()


def test_registry_lists_the_five_layers():
    assert set(list_pointwise()) >= {"dense", "group", "group_shuffle", "cog", "kgroup"}
    assert pointwise_options("cog") == ["groups", "overlap", "impl"]
    assert pointwise_options("kgroup") == ["min_channels_per_group", "bias"]


@pytest.mark.parametrize("name,options,cin,cout", CASES)
def test_layer_equals_its_reference_outputs_and_gradients(name, options, cin, cout):
    layer = build(name, options, cin, cout)
    assert isinstance(layer, PointwiseLayer)
    x = torch.randn(2, cin, 5, 6, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    expected = reference(name, options, layer, x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, *layer.parameters()], grad)
    theirs = torch.autograd.grad(expected, [x, *layer.parameters()], grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,options,cin,cout", CASES)
def test_dense_equivalent_and_fused_form_reproduce_the_layer(name, options, cin, cout):
    layer = build(name, options, cin, cout)
    x = torch.randn(2, cin, 5, 6, dtype=torch.float64)
    expected = layer(x)
    dense = layer.dense_equivalent()
    convs = [m for m in dense.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.groups == 1 for c in convs)
    torch.testing.assert_close(dense(x), expected, rtol=1e-10, atol=1e-10)
    fused = layer.fuse()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not any(isinstance(m, PointwiseLayer) for m in fused.modules())
    torch.testing.assert_close(fused(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,options,cin,cout", CASES)
def test_memory_access_cost_counts_every_conv_and_copy(name, options, cin, cout):
    layer = build(name, options, cin, cout)
    h = w = 5
    hw = h * w
    cost = layer.memory_access_cost(h, w)
    if name in ("dense", "group"):
        g = options.get("groups", 1)
        assert cost == hw * (cin + cout) + cin * cout // g
    elif name == "group_shuffle":
        g = options["groups"]
        assert cost == hw * (cin + cout) + cin * cout // g + 2 * cout * hw
    elif name == "cog":
        k = 1 + options["overlap"]
        assert cost == 2 * k * cin * hw + hw * (k * cin + cout) + k * cin * cout // options["groups"]
    else:
        g = layer.groups
        expected = hw * (cin + cout) + cin * cout // g
        if layer.interleave is not None:
            expected += 2 * cout * hw
        if layer.second is not None:
            expected += hw * 2 * cout + cout * cout // g + 3 * cout * hw
        assert cost == expected


@pytest.mark.parametrize("cin,cout,minimum,groups", [
    (1024, 512, 16, 64),   # the kEffNet paper's example: 64 groups, 8,192 + 4,096 weights
    (32, 8, 16, 2), (96, 4, 16, 4), (40, 240, 16, 2), (48, 1152, 16, 3), (320, 1280, 16, 20),
    (16, 96, 16, 1), (8, 32, 16, 1), (128, 128, 128, 1), (256, 256, 128, 2),
])
def test_kgroup_group_rule(cin, cout, minimum, groups):
    assert kgroup_groups(cin, cout, minimum) == groups


def test_kgroup_weights_of_the_papers_example():
    layer = build_pointwise({"name": "kgroup", "bias": False}, 1024, 512, norm_layer=None)
    weights = [m.weight.numel() for m in layer.modules() if isinstance(m, nn.Conv2d)]
    assert weights == [8_192, 4_096]  # seed 004, section 3: 12,288 in all


def test_cog_interface():
    layer = build_pointwise({"name": "cog", "groups": 4, "overlap": 1}, 16, 32)
    assert layer.impls == ("concat", "roll", "dense") and layer.reference_impl == "concat"
    layer.set_impl("roll")
    assert isinstance(layer[0], ChannelOverlapConv2d) and layer[0].impl == "roll"
    with pytest.raises(ConfigError, match=r"unknown impl 'fast'; choose one of \['concat', 'roll', 'dense', 'auto'\]"):
        layer.set_impl("fast")
    dense = build_pointwise("dense", 16, 32)
    dense.set_impl("auto")
    with pytest.raises(ConfigError, match="no implementation 'roll'"):
        dense.set_impl("roll")


def test_bad_specs_fail_with_the_valid_choices():
    with pytest.raises(ConfigError, match=r"Unknown pointwise layer 'sparse'; registered: \['cog', 'dense'"):
        build_pointwise("sparse", 16, 32)
    with pytest.raises(ConfigTypeError, match=r"'group' does not take option\(s\) \['overlap'\]; its options: \['groups'\]"):
        build_pointwise({"name": "group", "groups": 4, "overlap": 1}, 16, 32)
    with pytest.raises(ConfigError, match=r"at features.3 expand \(24 -> 48 channels\).*in_channels=24 is not divisible by groups=5"):
        build_pointwise({"name": "group", "groups": 5}, 24, 48, where="features.3 expand")
    with pytest.raises(ConfigError, match=r"overlap must satisfy 0 <= overlap < groups"):
        build_pointwise({"name": "cog", "groups": 4, "overlap": 4}, 16, 32)
    with pytest.raises(ConfigError, match="cog needs groups >= 2"):
        build_pointwise({"name": "cog", "groups": 1, "overlap": 0}, 16, 32)
    with pytest.raises(ConfigError, match="min_channels_per_group must be an integer >= 1"):
        build_pointwise({"name": "kgroup", "min_channels_per_group": 0}, 16, 32)
    # Options set to None take the layer's default (one config mapping serves every layer).
    layer = build_pointwise({"name": "group", "groups": None, "overlap": None}, 16, 32)
    assert layer[0].groups == 4


def test_non_inplace_activations_are_supported():
    layer = build_pointwise("kgroup", 48, 1152, norm_layer=None, activation_layer=nn.Sigmoid)
    out = layer(torch.randn(1, 48, 1, 1))
    assert out.shape == (1, 1152, 1, 1) and bool(((out > 0) & (out < 1)).all())
    assert math.isclose(sum(p.numel() for p in layer.parameters()), 48 * 1152 / 3 + 1152)


@pytest.mark.parametrize("name,options,cin,cout", CASES)
def test_fused_form_keeps_the_memory_traffic_of_its_copies(name, options, cin, cout):
    """What fusion folds (BN) costs nothing; copies that stay (kgroup's interleave and sum, a
    shuffle) are still counted in the fused form; COG's concat copy is gone (one dense conv)."""
    from benchmarks.complexity import pointwise_memory_access

    layer = build(name, options, cin, cout).float()
    x = torch.randn(1, cin, 5, 5)
    fused = pointwise_memory_access(layer.fuse(), x)
    if name == "cog":
        assert fused == 25 * (cin + cout) + cin * cout  # one dense conv
    else:
        assert fused == pointwise_memory_access(layer, x) == layer.memory_access_cost(5, 5)
