"""``group`` and ``group_shuffle``: grouped 1x1 convs, without and with a channel shuffle.

``group`` mixes no channels between groups (ShuffleNet's "pointwise group convolution" alone);
``group_shuffle`` follows it with ShuffleNet's channel shuffle, placed as in the ShuffleNet unit
(GConv -> BN -> activation -> shuffle), so the next layer's groups each see every group.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from torch import nn

from errors import ConfigError

from .base import PointwiseConvNormAct
from .registry import register_pointwise


def check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """Both channel counts divisible by ``groups`` (>= 1), else a message with the fix."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ConfigError(f"groups must be an integer >= 1, got {groups!r}")
    for what, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels % groups:
            raise ConfigError(
                f"{what}={channels} is not divisible by groups={groups}; choose groups that divide "
                f"both {in_channels} and {out_channels}, or a width_mult giving multiples of {groups}"
            )


@register_pointwise("group")
class GroupPointwise(PointwiseConvNormAct):
    """Grouped 1x1 conv (``groups``) -> norm -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        groups: int = 4,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        check_groups(in_channels, out_channels, groups)
        super().__init__(in_channels, out_channels, groups=groups, norm_layer=norm_layer,
                         activation_layer=activation_layer)


@register_pointwise("group_shuffle")
class GroupShufflePointwise(GroupPointwise):
    """Grouped 1x1 conv (``groups``) -> norm -> activation -> ``nn.ChannelShuffle(groups)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        groups: int = 4,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        super().__init__(in_channels, out_channels, groups=groups, norm_layer=norm_layer,
                         activation_layer=activation_layer)
        self.append(nn.ChannelShuffle(groups))
