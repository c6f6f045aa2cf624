"""``dense``: the ordinary 1x1 conv + norm + activation (MobileNetV2's pointwise convs)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from torch import nn

from .base import PointwiseConvNormAct
from .registry import register_pointwise


@register_pointwise("dense")
class DensePointwise(PointwiseConvNormAct):
    """nn.Conv2d 1x1 -> norm -> activation; exactly torchvision's Conv2dNormActivation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
        bias: bool = False,
    ) -> None:
        # bias=True before a norm is Keras' Conv2D default (seed 003's head conv); redundant
        # with BN's shift, but it is a parameter the seed counts.
        super().__init__(in_channels, out_channels, norm_layer=norm_layer,
                         activation_layer=activation_layer, bias=bias or None)
