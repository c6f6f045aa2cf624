"""``cog``: channel-overlapping group convolution, a 1x1 group conv whose groups share input chunks.

The input channels are split into ``groups`` chunks x_0..x_{g-1}. Output group i sees its own
chunk plus the next ``overlap`` chunks cyclically; for groups=4, overlap=1 the groups see
(x_0,x_1), (x_1,x_2), (x_2,x_3), (x_3,x_0). The weight is that of one grouped 1x1 conv over the
concatenation of those chunk tuples: shape (out, in * (1 + overlap) / groups, 1, 1).

torchvision has no such layer, hence this module. Several numerically equal implementations
share the one weight tensor; ``impl`` chooses which runs.

The thesis (section 4.1, Fig. 4.1) uses groups=4, overlap=1 for the expansion conv of every
MobileNetV2 block: ``F_gp(Concat(x1, x2, x2, x3, x3, x4, x4, x1))``; its Table 4.1 compares
overlap=2.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from errors import ConfigError

from .base import PointwiseConvNormAct, PointwiseConvOp, conv_memory_access_cost, copy_memory_access_cost
from .registry import register_pointwise

IMPLS = ("concat", "roll", "dense")

# Fastest implementation per device type, used by impl="auto".
# cpu: "dense", measured with benchmarks/cog_impl.py (fwd+bwd, batch 16, COG expansion shapes
#      24..96 in-ch at 56..14 px, expansion 2/4/6; torch 2.14, 2 cores). Over the 12 shapes
#      dense took 211 ms in total vs concat 253 ms and roll 336 ms (1 thread, CPU-time clock),
#      winning 9 of 12 (concat won the three 96-ch shapes by 10-25 %); roll never won.
# cuda: no GPU measurement was made; "dense" is kept because it is a single cuDNN 1x1 conv
#       (one kernel, no extra activation copies), which is what 1x1 convs are tuned for.
_FASTEST_IMPL = {"cpu": "dense", "cuda": "dense"}
# Device types missing from the table (mps, xpu, ...) are accelerators too: one dense conv.
_FALLBACK_IMPL = "dense"


class ChannelOverlapConv2d(PointwiseConvOp):
    """1x1 channel-overlapping group convolution (see module docstring).

    Args:
        in_channels / out_channels: both must be divisible by ``groups``.
        groups: number of channel chunks / conv groups.
        overlap: how many following chunks (cyclically) each group also sees; < groups.
        bias: add a learnable bias per output channel.
        impl: "concat" (reference: explicit concatenation + grouped conv), "roll" (sum of
            ``1 + overlap`` grouped convs on channel-rolled inputs), "dense" (one dense 1x1 conv
            with the equivalent block-sparse weight) or "auto" (per device type, _FASTEST_IMPL).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 4,
        overlap: int = 1,
        bias: bool = False,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ConfigError(f"ChannelOverlapConv2d: groups must be an integer >= 1, got {groups!r}.")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < groups:
            raise ConfigError(
                f"ChannelOverlapConv2d: overlap must satisfy 0 <= overlap < groups "
                f"(a group cannot see more than all {groups} chunks), got overlap={overlap}, "
                f"groups={groups}."
            )
        for what, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups != 0:
                raise ConfigError(
                    f"ChannelOverlapConv2d: {what}={channels} is not divisible by groups={groups}; "
                    f"use a channel count that is a multiple of {groups} or change groups."
                )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.overlap = overlap
        self.impl = impl  # validated by the setter
        chunk = in_channels // groups
        self.weight = nn.Parameter(torch.empty(out_channels, chunk * (1 + overlap), 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # Chunks in the order the grouped conv of "concat" reads them: group i, slot j -> (i+j) % g.
        self._concat_order = [(i + j) % groups for i in range(groups) for j in range(1 + overlap)]
        self.reset_parameters()

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in IMPLS + ("auto",):
            raise ConfigError(
                f"ChannelOverlapConv2d: unknown impl {value!r}; choose one of "
                f"{list(IMPLS + ('auto',))}."
            )
        self._impl = value

    def reset_parameters(self) -> None:
        # Same default as nn.Conv2d (fan_in of the compact weight = what one output sees).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    impls = IMPLS
    reference_impl = "concat"  # the grouped conv the thesis defines: its MACs are the honest count

    def set_impl(self, impl: str) -> None:
        self.impl = impl

    def memory_access_cost(self, h: int, w: int) -> int:
        """ShuffleNetV2 MAC of the "concat" form, batch 1, in elements: gathering the
        ``k = 1 + overlap`` chunk copies is one copy of ``k * in`` channels (read + write), then
        a grouped 1x1 conv over those ``k * in`` channels (``conv_memory_access_cost``)."""
        duplicated = (1 + self.overlap) * self.in_channels
        return (copy_memory_access_cost(duplicated, h, w)
                + conv_memory_access_cost(duplicated, self.out_channels, h, w, self.groups))

    def resolved_impl(self, device: torch.device) -> str:
        """The implementation that runs for inputs on ``device``."""
        if self._impl != "auto":
            return self._impl
        return _FASTEST_IMPL.get(device.type, _FALLBACK_IMPL)

    def dense_weight(self) -> Tensor:
        """The equivalent dense (out, in, 1, 1) weight; block-sparse, differentiable."""
        g, chunk = self.groups, self.in_channels // self.groups
        compact = self.weight.reshape(g, self.out_channels // g, 1 + self.overlap, chunk)
        # Slot j as a block-diagonal matrix (group i's block on chunk i), columns rolled by j
        # chunks so the block lands on chunk (i + j) % g; the slots never overlap, so the sum
        # only adds zeros.
        dense = None
        for j in range(1 + self.overlap):
            block = torch.block_diag(*compact[:, :, j].unbind(0))
            block = block if j == 0 else torch.roll(block, shifts=j * chunk, dims=1)
            dense = block if dense is None else dense + block
        return dense.reshape(self.out_channels, self.in_channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ChannelOverlapConv2d expects input [B, {self.in_channels}, H, W], "
                f"got {list(x.shape)}."
            )
        impl = self.resolved_impl(x.device)
        if impl == "dense":
            return F.conv2d(x, self.dense_weight(), self.bias)
        if impl == "roll":
            return self._forward_roll(x)
        return self._forward_concat(x)

    def _forward_concat(self, x: Tensor) -> Tensor:
        chunks = x.chunk(self.groups, dim=1)
        ordered = [chunks[c] for c in self._concat_order]
        return F.conv2d(torch.cat(ordered, dim=1), self.weight, self.bias, groups=self.groups)

    def _forward_roll(self, x: Tensor) -> Tensor:
        # Slot j of every group reads chunk (i + j) % g: roll the channels left by j chunks so
        # that chunk sits at position i, and apply the j-th column block of the weight.
        chunk = self.in_channels // self.groups
        out = None
        for j in range(1 + self.overlap):
            shifted = x if j == 0 else torch.roll(x, shifts=-j * chunk, dims=1)
            w = self.weight[:, j * chunk : (j + 1) * chunk]
            y = F.conv2d(shifted, w, self.bias if j == 0 else None, groups=self.groups)
            out = y if out is None else out + y
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, groups={self.groups}, "
            f"overlap={self.overlap}, impl={self._impl}, bias={self.bias is not None}"
        )


def channel_overlap_conv_layer(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 1,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 4,
    bias: bool = False,
    *,
    overlap: int = 1,
    impl: str = "auto",
) -> ChannelOverlapConv2d:
    """``conv_layer`` factory for torchvision's ConvNormActivation (1x1, stride 1 only)."""
    for what, value, allowed in (
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if value not in (allowed, (allowed, allowed)):
            raise ValueError(
                f"ChannelOverlapConv2d is a pointwise conv: {what} must be {allowed}, got {value}."
            )
    return ChannelOverlapConv2d(in_channels, out_channels, groups, overlap, bias=bias, impl=impl)


@register_pointwise("cog")
class ChannelOverlapPointwise(PointwiseConvNormAct):
    """ChannelOverlapConv2d(groups, overlap) -> norm -> activation (the thesis' COG expansion)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        groups: int = 4,
        overlap: int = 1,
        impl: str = "auto",
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        if isinstance(groups, int) and groups < 2:
            raise ConfigError(f"cog needs groups >= 2 (groups=1 is a dense conv: use 'dense'), got {groups}")
        super().__init__(
            in_channels, out_channels, groups=groups, norm_layer=norm_layer,
            activation_layer=activation_layer,
            conv_layer=partial(channel_overlap_conv_layer, overlap=overlap, impl=impl),
        )
