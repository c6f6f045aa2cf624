"""``kgroup``: the kEffNet / gpcMobileNet grouped pointwise replacement (k-neural-api "kType 2").

Seed 004 (kEffNet), section 3, and the authors' k-neural-api ``kConv2DType2``:

- groups G = the largest common divisor of C_in and C_out with C_in / G >= ``min_channels_per_group``
  (G <= C_in // min_channels_per_group; G = 1 when C_in is smaller than the minimum);
- G == 1: a plain dense 1x1 conv -> norm -> activation (the pointwise conv is not replaced);
- otherwise ``y = act(norm(K x))`` with K a grouped 1x1 conv; if C_out / G > 1 the channels of
  y are interleaved (exactly ShuffleNet's channel shuffle with G groups: channel j of group g
  moves to position j*G + g); then, only if C_in >= C_out, a second grouped 1x1 conv L with the
  same G gives ``act(norm(L interleave(y)))``, which is added to y (taken before the interleave)
  so L acts as a residual. If C_in < C_out the output is the interleaved y.

Every conv has its own norm and activation (none when the caller passes None: projections, the
top conv), exactly as the authors' code; the paper's figure shows neither. With an activation
inside, the layer is not one linear map: its dense equivalent keeps the structure and makes each
grouped conv dense.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Optional

from torch import Tensor, nn

from errors import ConfigError

from .base import PointwiseConvNormAct, PointwiseLayer, conv_memory_access_cost, copy_memory_access_cost
from .registry import register_pointwise


def kgroup_groups(in_channels: int, out_channels: int, min_channels_per_group: int) -> int:
    """The number of groups: the largest common divisor of both channel counts that leaves at
    least ``min_channels_per_group`` input channels per group (1 if none does)."""
    limit = max(1, min(in_channels, out_channels, in_channels // min_channels_per_group))
    return next(d for d in range(limit, 0, -1) if in_channels % d == 0 and out_channels % d == 0)


def _convs(unit: nn.Module) -> list[nn.Conv2d]:
    return [m for m in unit.modules() if isinstance(m, nn.Conv2d)]


def _unit_cost(unit: nn.Module, h: int, w: int) -> int:
    if isinstance(unit, PointwiseLayer):
        return unit.memory_access_cost(h, w)
    return sum(conv_memory_access_cost(c.in_channels, c.out_channels, h, w, c.groups) for c in _convs(unit))


def _unit_out_channels(unit: nn.Module) -> int:
    return unit.out_channels if isinstance(unit, PointwiseLayer) else _convs(unit)[-1].out_channels


class KGroupGraph(nn.Module):
    """The kgroup data flow over given modules: ``first``, optional ``interleave``, optional
    ``second`` (see the module docstring). Also the form ``fuse()`` / ``dense_equivalent()`` give."""

    def __init__(self, first: nn.Module, interleave: Optional[nn.Module], second: Optional[nn.Module]) -> None:
        super().__init__()
        self.first = first
        self.interleave = interleave
        self.second = second

    def memory_access_cost(self, h: int, w: int) -> int:
        """Both convs (whatever form they are in: layers, or fused plain convs), the interleave
        copy, and the sum (read two maps, write one)."""
        cost = _unit_cost(self.first, h, w)
        out_channels = _unit_out_channels(self.first)
        if self.interleave is not None:
            cost += copy_memory_access_cost(out_channels, h, w)
        if self.second is not None:
            cost += _unit_cost(self.second, h, w) + 3 * out_channels * h * w
        return cost

    def forward(self, x: Tensor) -> Tensor:
        y = self.first(x)
        mixed = y if self.interleave is None else self.interleave(y)
        if self.second is None:
            return mixed
        return y + self.second(mixed)


@register_pointwise("kgroup")
class KGroupPointwise(KGroupGraph, PointwiseLayer):
    """Grouped pointwise conv(s) with interleaving, kEffNet's "kType 2" (see the module docstring).

    Args:
        min_channels_per_group: 16 in kEffNet; 16 / 32 / 64 / 128 in gpcMobileNet.
        norm_layer / activation_layer: after each grouped conv (None for none).
        bias: conv biases; default: only without a norm layer (kEffNet's squeeze-excitation convs).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        min_channels_per_group: int = 16,
        bias: Optional[bool] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        if isinstance(min_channels_per_group, bool) or not isinstance(min_channels_per_group, int) \
                or min_channels_per_group < 1:
            raise ConfigError(f"min_channels_per_group must be an integer >= 1, got {min_channels_per_group!r}")
        groups = kgroup_groups(in_channels, out_channels, min_channels_per_group)

        def unit(c_in: int) -> PointwiseConvNormAct:
            return PointwiseConvNormAct(c_in, out_channels, groups=groups, norm_layer=norm_layer,
                                        activation_layer=activation_layer, bias=bias)

        grouped = groups > 1
        interleave = nn.ChannelShuffle(groups) if grouped and out_channels // groups > 1 else None
        second = unit(out_channels) if grouped and in_channels >= out_channels else None
        super().__init__(unit(in_channels), interleave, second)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.min_channels_per_group = min_channels_per_group

    def fuse(self) -> nn.Module:
        return KGroupGraph(self.first.fuse(), copy.deepcopy(self.interleave),
                           None if self.second is None else self.second.fuse()).eval()

    def dense_equivalent(self) -> nn.Module:
        return KGroupGraph(self.first.dense_equivalent(), copy.deepcopy(self.interleave),
                           None if self.second is None else self.second.dense_equivalent())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, groups={self.groups}, "
                f"min_channels_per_group={self.min_channels_per_group}")
