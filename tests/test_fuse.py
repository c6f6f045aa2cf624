"""fuse_for_inference: same outputs, no BatchNorm / COG conv left, original untouched."""
import pytest
import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from backbones import ChannelOverlapConv2d, create_backbone, fuse_for_inference, list_backbones

# Fused vs unfused outputs agree to float32 rounding; both tolerances are absolute/relative 1e-4.
ATOL = RTOL = 1e-4


def with_trained_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine parameters and running statistics (a few train-mode passes)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.momentum = 0.5
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 64, 64, generator=g))
    return model.eval()


def count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name", list_backbones())
def test_fused_backbone_matches_and_has_no_bn_or_cog(name):
    torch.manual_seed(0)
    backbone = with_trained_batchnorm(create_backbone(name, output_stride=16))
    fused = fuse_for_inference(backbone)
    x = torch.randn(2, 3, 64, 64)
    roles = ("stride16_expansion", "last") if backbone.native_output_stride == 32 else ("stride16", "last")
    taps = list(dict.fromkeys(backbone.feature_for(role).name for role in roles))
    with torch.no_grad():
        expected = backbone.forward_features(x, taps)
        got = fused.forward_features(x, taps)
    for tap in expected:
        torch.testing.assert_close(got[tap], expected[tap], atol=ATOL, rtol=RTOL)
    assert count(fused, nn.BatchNorm2d) == 0 and count(fused, ChannelOverlapConv2d) == 0
    assert not fused.training
    # The original is untouched.
    assert count(backbone, nn.BatchNorm2d) > 0
    assert count(backbone, ChannelOverlapConv2d) == (17 if name.startswith("cog") else 0)


@pytest.mark.parametrize("t", [2, 4, 6])
def test_fused_cog_has_mobilenet_v2_layers(t):
    fused_cog = fuse_for_inference(create_backbone(f"cog_e{t}"))
    fused_mv2 = fuse_for_inference(create_backbone(f"mv2_e{t}"))
    layers = lambda m: [(c.in_channels, c.out_channels, c.groups) for c in m.modules() if isinstance(c, nn.Conv2d)]
    cog_layers, mv2_layers = layers(fused_cog), layers(fused_mv2)
    # Same convs except the extra 32->32 expansion of COG's first block.
    assert cog_layers[:1] + cog_layers[2:] == mv2_layers
    assert cog_layers[1] == (32, 32, 1)


def test_fuses_a_whole_task_model():
    class Task(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = create_backbone("cog_e2", width_mult=0.5).truncate("stage6")
            self.head = nn.Sequential(
                Conv2dNormActivation(160, 32, kernel_size=1),
                ChannelOverlapConv2d(32, 16, bias=True),
                nn.Conv2d(16, 5, 1),
            )
            self.norm = nn.BatchNorm2d(5)  # not after a conv in a Sequential: must stay

        def forward(self, x):
            return self.norm(self.head(self.backbone(x)))

    model = with_trained_batchnorm(Task())
    fused = fuse_for_inference(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=ATOL, rtol=RTOL)
    assert count(fused.backbone, nn.BatchNorm2d) == 0 and count(fused, ChannelOverlapConv2d) == 0
    assert isinstance(fused.norm, nn.BatchNorm2d)
    assert type(fused.head[1]) is nn.Conv2d and fused.head[1].bias is not None


def test_single_cog_conv_becomes_dense_conv():
    cog = ChannelOverlapConv2d(16, 32, groups=4, overlap=2)
    dense = fuse_for_inference(cog)
    assert type(dense) is nn.Conv2d and dense.weight.shape == (32, 16, 1, 1)
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), cog(x), atol=1e-6, rtol=1e-6)
