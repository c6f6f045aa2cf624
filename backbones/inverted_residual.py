"""MobileNetV2 inverted-residual block whose 1x1 convs come from a pointwise plan and whose 3x3
conv comes from a spatial plan.

expand (1x1, optional) -> depthwise 3x3 -> project (1x1, linear) [+ residual]. Which pointwise
layer builds "expand" and "project" is the ``pointwise`` plan's business (dense by default;
COG-MobileNet: COG at "expand", as the thesis, section 4.2); which spatial layer builds
"depthwise" is the ``spatial`` plan's (``depthwise`` by default; e.g. ``deform_depthwise``).
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn

from .activations import ActivationSpec, resolve_activation
from .expansion_block import ExpansionBlock
from .pointwise import PointwisePlan
from .spatial import SpatialPlan

DENSE_PLAN = PointwisePlan.create("dense", (), ("expand", "project"))
DEPTHWISE_PLAN = SpatialPlan.create("depthwise", (), ("depthwise",))


class InvertedResidual(ExpansionBlock):
    """expand (1x1, optional) -> depthwise 3x3 -> project (1x1 + BN, linear) [+ residual].

    Args:
        stride: stride of the depthwise conv as built (1 or 2).
        expand_ratio: hidden channels = round(in_channels * expand_ratio).
        dilation: dilation (= padding) of the depthwise conv, for output-stride control.
        stage_start: the block starts a new resolution stage (torchvision's ``_is_cn``). Defaults
            to ``stride > 1``; pass True for a stride-2 block turned into a dilated stride-1 one
            so it keeps its structure (no residual), as torchvision's dilated MobileNetV3 does.
        pointwise: builds the "expand" and "project" 1x1 convs (``PointwisePlan``).
        spatial: builds the "depthwise" 3x3 conv (``SpatialPlan``; default a depthwise conv).
        position: the block's index in its backbone's ``features`` (``spatial_positions``).
        force_expand: build the expansion conv even when expand_ratio == 1.
        expand_activation / depthwise_activation: "relu6" | "silu" | None | module class.
        where: the block's name in error messages.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        *,
        dilation: int = 1,
        stage_start: Optional[bool] = None,
        pointwise: PointwisePlan = DENSE_PLAN,
        spatial: SpatialPlan = DEPTHWISE_PLAN,
        position: Optional[int] = None,
        force_expand: bool = False,
        expand_activation: ActivationSpec = "relu6",
        depthwise_activation: ActivationSpec = "relu6",
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        where: str = "block",
    ) -> None:
        super().__init__(in_channels, out_channels, int(round(in_channels * expand_ratio)), stride,
                         dilation, stage_start)
        expand_act = resolve_activation(expand_activation, "expand_activation")
        depthwise_act = resolve_activation(depthwise_activation, "depthwise_activation")
        hidden = self.hidden_channels
        if expand_ratio != 1 or force_expand:
            self.expand = pointwise.build("expand", in_channels, hidden, norm_layer=norm_layer,
                                          activation_layer=expand_act, where=f"{where} expand")
        self.depthwise = spatial.build("depthwise", hidden, hidden, position=position,
                                       default="depthwise", kernel_size=3, stride=stride,
                                       dilation=dilation, norm_layer=norm_layer,
                                       activation_layer=depthwise_act, where=f"{where} depthwise")
        self.project = pointwise.build("project", hidden, out_channels, norm_layer=norm_layer,
                                       activation_layer=None, where=f"{where} project")

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (block output, expansion output); SSD-Lite taps the latter."""
        expanded = self.expansion_output(x)
        out = self.project(self.depthwise(expanded))
        if self.use_res_connect:
            out = x + out
        return out, expanded
