"""``deform`` and ``deform_depthwise``: a deformable kxk conv (``DeformableConv2d``: torchvision's
``DeformConv2d`` + its zero-initialised offset conv) + norm + activation.

``deform`` is the deformable-conv paper's layer (dense kernel; seed 001's DeformConv layers, with
``bias=True``); ``deform_depthwise`` has groups = channels, so a MobileNet's depthwise convs can
become deformable (e.g. ``backbone.spatial.name=deform_depthwise`` at the stride-16 blocks of an
SSD-Lite or DeepLabv3 backbone). Options: ``offset_groups`` (1: one offset field for all
channels, as the paper), ``modulation`` (false; true: DCNv2's sigmoid mask), ``offset_lr_mult``
(the paper's beta, 1: the offset conv's share of the learning rate), ``impl`` (auto | torchvision |
grid_sample).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Optional

from torch import nn

from .base import SpatialConvNormAct
from .deform_conv import DeformableConv2d
from .depthwise import check_depthwise_channels
from .registry import register_spatial


class _DeformSpatial(SpatialConvNormAct):
    def __init__(self, in_channels: int, out_channels: int, *, groups: int, kernel_size: int,
                 stride: int, dilation: int, bias: Optional[bool],
                 norm_layer: Optional[Callable[..., nn.Module]],
                 activation_layer: Optional[Callable[..., nn.Module]],
                 offset_groups: int, modulation: bool, offset_lr_mult: float, impl: str) -> None:
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                         dilation=dilation, groups=groups, bias=bias, norm_layer=norm_layer,
                         activation_layer=activation_layer,
                         conv_layer=partial(DeformableConv2d, offset_groups=offset_groups,
                                            modulation=modulation, offset_lr_mult=offset_lr_mult))
        self.set_impl(impl)


@register_spatial("deform")
class DeformSpatial(_DeformSpatial):
    """Deformable kxk conv (dense kernel) -> norm -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: Optional[bool] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
        offset_groups: int = 1,
        modulation: bool = False,
        offset_lr_mult: float = 1.0,
        impl: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, groups=1, kernel_size=kernel_size, stride=stride,
                         dilation=dilation, bias=bias, norm_layer=norm_layer,
                         activation_layer=activation_layer, offset_groups=offset_groups,
                         modulation=modulation, offset_lr_mult=offset_lr_mult, impl=impl)


@register_spatial("deform_depthwise")
class DeformDepthwiseSpatial(_DeformSpatial):
    """Deformable kxk conv with groups = in_channels -> norm -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: Optional[bool] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
        offset_groups: int = 1,
        modulation: bool = False,
        offset_lr_mult: float = 1.0,
        impl: str = "auto",
    ) -> None:
        check_depthwise_channels(in_channels, out_channels)
        super().__init__(in_channels, out_channels, groups=in_channels, kernel_size=kernel_size,
                         stride=stride, dilation=dilation, bias=bias, norm_layer=norm_layer,
                         activation_layer=activation_layer, offset_groups=offset_groups,
                         modulation=modulation, offset_lr_mult=offset_lr_mult, impl=impl)
