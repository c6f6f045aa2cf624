"""ChannelOverlapConv2d equals its definition, in every implementation."""
import pytest
import torch
import torch.nn.functional as F

from backbones import ChannelOverlapConv2d
from backbones.pointwise.cog import _FASTEST_IMPL, IMPLS


# (in_channels, out_channels, groups, overlap)
CONFIGS = [(16, 32, 4, 1), (16, 24, 4, 2), (16, 8, 4, 3), (12, 6, 2, 1), (24, 48, 8, 3), (8, 8, 1, 0)]


def concat_reference(x, weight, groups, overlap, bias=None):
    """The definition: group i convolves the concatenation (x_i, x_{i+1}, ..., x_{i+overlap})."""
    chunks = x.chunk(groups, dim=1)
    per_group = [torch.cat([chunks[(i + j) % groups] for j in range(overlap + 1)], dim=1)
                 for i in range(groups)]
    return F.conv2d(torch.cat(per_group, dim=1), weight, bias, groups=groups)


def dense_reference_weight(weight, in_channels, groups, overlap):
    """Block-sparse dense weight, built block by block with plain loops."""
    out_channels = weight.shape[0]
    og, cg = out_channels // groups, in_channels // groups
    dense = torch.zeros(out_channels, in_channels, 1, 1, dtype=weight.dtype)
    for i in range(groups):
        for j in range(overlap + 1):
            c = (i + j) % groups
            dense[i * og:(i + 1) * og, c * cg:(c + 1) * cg] = weight[i * og:(i + 1) * og, j * cg:(j + 1) * cg]
    return dense


def make(cin, cout, groups, overlap, bias=False, impl="concat"):
    torch.manual_seed(0)
    conv = ChannelOverlapConv2d(cin, cout, groups=groups, overlap=overlap, bias=bias, impl=impl).double()
    x = torch.randn(2, cin, 5, 6, dtype=torch.float64, requires_grad=True)
    return conv, x


@pytest.mark.parametrize("cin,cout,groups,overlap", CONFIGS)
def test_weight_shape_and_parameter_count(cin, cout, groups, overlap):
    conv = ChannelOverlapConv2d(cin, cout, groups=groups, overlap=overlap)
    assert conv.weight.shape == (cout, cin * (1 + overlap) // groups, 1, 1)
    assert sum(p.numel() for p in conv.parameters()) == cin * cout * (1 + overlap) // groups
    assert list(conv.state_dict()) == ["weight"]  # the index buffer is not persisted


@pytest.mark.parametrize("impl", IMPLS + ("auto",))
@pytest.mark.parametrize("cin,cout,groups,overlap", CONFIGS)
def test_every_impl_matches_concat_reference(cin, cout, groups, overlap, impl):
    conv, x = make(cin, cout, groups, overlap, bias=True, impl=impl)
    expected = concat_reference(x, conv.weight, groups, overlap, conv.bias)
    torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cin,cout,groups,overlap", CONFIGS)
def test_dense_weight_matches_independent_construction(cin, cout, groups, overlap):
    conv, x = make(cin, cout, groups, overlap)
    expected_weight = dense_reference_weight(conv.weight.detach(), cin, groups, overlap)
    assert torch.equal(conv.dense_weight().detach(), expected_weight)
    torch.testing.assert_close(conv(x), F.conv2d(x, expected_weight), rtol=1e-12, atol=1e-12)


def test_group_sees_own_and_next_chunk_cyclically():
    # groups=4, overlap=1: output group 3 must depend on input chunks 3 and 0 only.
    for impl in IMPLS:
        conv, x = make(16, 8, 4, 1, impl=impl)
        conv(x)[:, 6:8].sum().backward()
        touched = [bool(chunk.abs().sum() > 0) for chunk in x.grad.chunk(4, dim=1)]
        assert touched == [True, False, False, True], impl


@pytest.mark.parametrize("cin,cout,groups,overlap", CONFIGS)
def test_impls_agree_on_outputs_and_gradients(cin, cout, groups, overlap):
    results = {}
    for impl in IMPLS:
        conv, x = make(cin, cout, groups, overlap, bias=True, impl=impl)
        grad_out = torch.randn(2, cout, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        y = conv(x)
        y.backward(grad_out)
        results[impl] = (y.detach(), x.grad, conv.weight.grad, conv.bias.grad)
    reference = results["concat"]
    for impl in ("roll", "dense"):
        for got, want, what in zip(results[impl], reference, ("output", "input grad", "weight grad", "bias grad")):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"{impl} {what}")


def test_float32_impls_agree():
    torch.manual_seed(0)
    conv = ChannelOverlapConv2d(32, 96, impl="concat")
    x = torch.randn(2, 32, 7, 7)
    expected = conv(x)
    for impl in ("roll", "dense"):
        conv.impl = impl
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_auto_uses_the_table_for_the_device():
    conv = ChannelOverlapConv2d(8, 8)
    assert conv.impl == "auto"
    assert conv.resolved_impl(torch.device("cpu")) == _FASTEST_IMPL["cpu"]
    assert _FASTEST_IMPL["cpu"] in IMPLS and _FASTEST_IMPL["cuda"] in IMPLS


def test_extra_repr_shows_settings():
    text = repr(ChannelOverlapConv2d(16, 32, groups=4, overlap=2, impl="roll"))
    assert "groups=4" in text and "overlap=2" in text and "impl=roll" in text


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(in_channels=18, out_channels=32), "in_channels=18 is not divisible by groups=4"),
        (dict(in_channels=16, out_channels=30), "out_channels=30 is not divisible by groups=4"),
        (dict(in_channels=16, out_channels=32, overlap=4), "overlap must satisfy 0 <= overlap < groups"),
        (dict(in_channels=16, out_channels=32, overlap=-1), "overlap must satisfy"),
        (dict(in_channels=16, out_channels=32, impl="fast"), "unknown impl 'fast'"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChannelOverlapConv2d(**kwargs)


def test_wrong_input_channels_raise():
    with pytest.raises(ValueError, match=r"expects input \[B, 16, H, W\]"):
        ChannelOverlapConv2d(16, 16)(torch.randn(1, 8, 4, 4))
