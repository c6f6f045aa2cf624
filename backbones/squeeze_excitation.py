"""Squeeze-and-excitation (Hu et al. 2018) whose two 1x1 convs are pointwise layers.

``x * gate(expand(act(reduce(avgpool(x)))))``: torchvision's ``SqueezeExcitation`` when both
convs are ``dense`` (1x1 convs with bias, no norm). kEffNet builds them with ``kgroup`` (the
authors' ``kblock``: no BN, with bias, swish after the reduce conv, sigmoid after the expand
conv); a kgroup expand conv that interleaves permutes the gates before the multiply, as in the
authors' code.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn

from .pointwise import build_pointwise
from .pointwise.registry import PointwiseSpec


class SqueezeExcitation(nn.Module):
    """Channel gates from the globally pooled input.

    Args:
        channels: input (= output) channels.
        squeeze_channels: width of the bottleneck.
        pointwise: the pointwise layer both convs are (a registry name or ``{name, **options}``).
        activation_layer: after the reduce conv; ``gate_layer``: after the expand conv.
        where: the block's name in error messages.
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        pointwise: PointwiseSpec = "dense",
        *,
        activation_layer: Optional[Callable[..., nn.Module]] = nn.SiLU,
        gate_layer: Callable[..., nn.Module] = nn.Sigmoid,
        where: str = "se",
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)  # the op torchvision uses: bit-identical pooling
        self.reduce = build_pointwise(pointwise, channels, squeeze_channels, norm_layer=None,
                                      activation_layer=activation_layer, where=f"{where} reduce")
        self.expand = build_pointwise(pointwise, squeeze_channels, channels, norm_layer=None,
                                      activation_layer=gate_layer, where=f"{where} expand")

    def forward(self, x: Tensor) -> Tensor:
        return self.expand(self.reduce(self.pool(x))) * x
