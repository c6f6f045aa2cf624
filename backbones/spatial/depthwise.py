"""``depthwise``: a depthwise kxk conv + norm + activation, the MobileNets' spatial conv and the
default of every family's "depthwise" role (identical keys, parameters and init to the
``Conv2dNormActivation(..., groups=channels)`` the blocks used to hard-code)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from torch import nn

from errors import ConfigError

from .base import SpatialConvNormAct
from .registry import register_spatial


def check_depthwise_channels(in_channels: int, out_channels: int) -> None:
    """A depthwise conv maps each input channel to ``out / in`` outputs (channel multiplier)."""
    if out_channels % in_channels:
        raise ConfigError(
            f"a depthwise conv needs out_channels to be a multiple of in_channels (channel "
            f"multiplier), got {in_channels} -> {out_channels}; use 'standard' or "
            f"'depthwise_separable' to change the width")


@register_spatial("depthwise")
class DepthwiseSpatial(SpatialConvNormAct):
    """nn.Conv2d kxk with groups = in_channels -> norm -> activation."""

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
    ) -> None:
        check_depthwise_channels(in_channels, out_channels)
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                         dilation=dilation, groups=in_channels, bias=bias, norm_layer=norm_layer,
                         activation_layer=activation_layer)
