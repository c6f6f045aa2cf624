"""EfficientNet's MBConv block whose 1x1 convs come from a pointwise plan (timm's block style:
norm, activation and squeeze-excitation layers are injected).

expand (1x1, if the expansion ratio widens) -> depthwise kxk -> squeeze-excitation -> project
(1x1, linear) [-> stochastic depth + residual]: torchvision's ``MBConv`` layer for layer. Roles for
the plan: "expand" and "project"; the squeeze-excitation convs are built from their own spec.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn
from torchvision.models._utils import _make_divisible
from torchvision.ops import StochasticDepth

from .expansion_block import ExpansionBlock
from .pointwise import PointwisePlan
from .pointwise.registry import PointwiseSpec
from .spatial import SpatialPlan
from .squeeze_excitation import SqueezeExcitation

SE_DIVISOR = 4  # squeeze width = block input channels // 4 (EfficientNet; torchvision and Keras)


class MBConv(ExpansionBlock):
    """Mobile inverted bottleneck with squeeze-excitation (EfficientNet).

    Args:
        stride: stride of the depthwise conv as built (1 or 2).
        expand_ratio: hidden channels = in_channels * expand_ratio, rounded to multiples of 8
            (torchvision's ``adjust_channels``); no expansion conv when that equals in_channels.
        dilation: of the depthwise conv, for output-stride control.
        stage_start: the block starts a resolution stage (defaults to ``stride > 1``); a stride-2
            block turned into a dilated stride-1 one keeps its structure (no residual).
        stochastic_depth_prob: per-sample drop probability of the residual branch ("row" mode).
        pointwise: builds "expand" and "project"; ``se_pointwise``: the squeeze-excitation convs.
        spatial: builds the "depthwise" kxk conv (``SpatialPlan``; None: a depthwise conv).
        position: the block's index in its backbone's ``features`` (``spatial_positions``).
        activation_layer: after the expansion and depthwise norms and the SE reduce conv.
        where: the block's name in error messages.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: float,
        *,
        dilation: int = 1,
        stage_start: Optional[bool] = None,
        stochastic_depth_prob: float = 0.0,
        pointwise: PointwisePlan,
        se_pointwise: PointwiseSpec = "dense",
        spatial: Optional[SpatialPlan] = None,
        position: Optional[int] = None,
        activation_layer: Optional[Callable[..., nn.Module]] = nn.SiLU,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        where: str = "block",
    ) -> None:
        hidden = _make_divisible(in_channels * expand_ratio, 8)
        super().__init__(in_channels, out_channels, hidden, stride, dilation, stage_start)
        if hidden != in_channels:
            self.expand = pointwise.build("expand", in_channels, hidden, norm_layer=norm_layer,
                                          activation_layer=activation_layer, where=f"{where} expand")
        spatial = spatial or SpatialPlan.create("depthwise", (), ("depthwise",))
        self.depthwise = spatial.build("depthwise", hidden, hidden, position=position,
                                       default="depthwise", kernel_size=kernel_size, stride=stride,
                                       dilation=dilation, norm_layer=norm_layer,
                                       activation_layer=activation_layer, where=f"{where} depthwise")
        self.se = SqueezeExcitation(hidden, max(1, in_channels // SE_DIVISOR), se_pointwise,
                                    activation_layer=activation_layer, where=f"{where} se")
        self.project = pointwise.build("project", hidden, out_channels, norm_layer=norm_layer,
                                       activation_layer=None, where=f"{where} project")
        # Built for every block (as torchvision) but used only where there is a residual.
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (block output, expansion output); SSD-Lite taps the latter."""
        expanded = self.expansion_output(x)
        out = self.project(self.se(self.depthwise(expanded)))
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out, expanded
