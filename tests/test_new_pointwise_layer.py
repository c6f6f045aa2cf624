"""A new pointwise layer is one class with ``@register_pointwise``: defined here, outside the
package, it works in every backbone, in fusion, in the complexity benchmark and from the
command line with no edit anywhere else."""
import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from backbones import create_backbone, fuse_for_inference
from backbones.pointwise import PointwiseConvNormAct, PointwiseConvOp, register_pointwise
from backbones.pointwise.registry import _REGISTRY
from benchmarks import complexity
from tests.helpers import compose_config


class LowRankConv2d(PointwiseConvOp):
    """A rank-``rank`` 1x1 conv: ``W = up @ weight`` (an example layer, not part of the suite)."""

    def __init__(self, in_channels: int, out_channels: int, rank: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.randn(rank, in_channels, 1, 1) * 0.1)
        self.up = nn.Parameter(torch.randn(out_channels, rank, 1, 1) * 0.1)
        self.bias = None

    def dense_weight(self) -> Tensor:
        return (self.up.flatten(1) @ self.weight.flatten(1))[..., None, None]

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.conv2d(nn.functional.conv2d(x, self.weight), self.up)


@pytest.fixture
def lowrank_registered():
    @register_pointwise("lowrank_example")
    class LowRankPointwise(PointwiseConvNormAct):
        def __init__(self, in_channels, out_channels, *, rank: int = 4, norm_layer=nn.BatchNorm2d,
                     activation_layer=None):
            super().__init__(in_channels, out_channels, norm_layer=norm_layer,
                             activation_layer=activation_layer,
                             conv_layer=lambda i, o, *args, **kwargs: LowRankConv2d(i, o, rank))

    yield LowRankPointwise
    del _REGISTRY["lowrank_example"]


def test_a_layer_defined_outside_the_package_works_everywhere(lowrank_registered, tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone("mv2_e2", width_mult=0.5,
                               pointwise={"name": "lowrank_example", "rank": 3}).eval()
    assert sum(isinstance(m, lowrank_registered) for m in backbone.modules()) == 16
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fuse_for_inference(backbone)(x), backbone(x), atol=1e-5, rtol=1e-4)
    assert complexity.pointwise_memory_access(backbone, x) > 0

    # From a config, as `python train.py backbone=mv2_e2 backbone.pointwise.name=lowrank_example
    # +backbone.pointwise.rank=3` would.
    cfg = compose_config("train", ["backbone=mv2_e2", "backbone.pointwise.name=lowrank_example",
                                   "+backbone.pointwise.rank=3", "data=synthetic"], tmp_path)
    model = instantiate(cfg.model)
    convs = [m for m in model.backbone.modules() if isinstance(m, LowRankConv2d)]
    assert len(convs) == 16 and all(c.weight.shape[0] == 3 for c in convs)
