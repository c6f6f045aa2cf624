"""``depthwise_separable``: depthwise kxk conv + norm + activation, then a dense 1x1 conv + norm +
activation, as one spatial layer: MobileNet's factorisation of a standard conv, the way seed 001
(DogBreedClassificationDSC: ``DepthWiseConv`` then ``PointWiseConv``, both with bias, BN and
ReLU) builds it. Stride and dilation belong to the depthwise conv; the 1x1 conv changes the width.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from torch import nn

from ..pointwise.base import PointwiseConvNormAct
from .base import SpatialLayer, conv_output_size
from .depthwise import DepthwiseSpatial
from .registry import register_spatial


@register_spatial("depthwise_separable")
class DepthwiseSeparableSpatial(nn.Sequential, SpatialLayer):
    """``depthwise`` (in -> in, kxk, stride) then ``pointwise`` (in -> out, 1x1); both get the
    layer's ``bias``, norm and activation."""

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
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depthwise = DepthwiseSpatial(in_channels, in_channels, kernel_size=kernel_size,
                                          stride=stride, dilation=dilation, bias=bias,
                                          norm_layer=norm_layer, activation_layer=activation_layer)
        # The plain dense 1x1 conv (pointwise layers from the pointwise registry take no bias).
        self.pointwise = PointwiseConvNormAct(in_channels, out_channels, norm_layer=norm_layer,
                                              activation_layer=activation_layer, bias=bias)

    def fuse(self) -> nn.Module:
        return nn.Sequential(self.depthwise.fuse(), self.pointwise.fuse()).eval()

    def dense_equivalent(self) -> nn.Module:
        return nn.Sequential(self.depthwise.dense_equivalent(), self.pointwise.dense_equivalent())

    def memory_access_cost(self, h: int, w: int) -> int:
        dw = self.depthwise
        h_out = conv_output_size(h, dw.kernel_size, dw.stride, dw.dilation)
        w_out = conv_output_size(w, dw.kernel_size, dw.stride, dw.dilation)
        return dw.memory_access_cost(h, w) + self.pointwise.memory_access_cost(h_out, w_out)
