"""``standard``: a dense kxk conv + norm + activation (a plain CNN's conv; seed 001's
DogBreedClassificationCNN layers, with ``bias=True``)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from torch import nn

from .base import SpatialConvNormAct
from .registry import register_spatial


@register_spatial("standard")
class StandardSpatial(SpatialConvNormAct):
    """nn.Conv2d kxk (groups 1) -> norm -> activation; torchvision's Conv2dNormActivation."""

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
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                         dilation=dilation, bias=bias, norm_layer=norm_layer,
                         activation_layer=activation_layer)
