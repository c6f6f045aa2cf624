"""MobileNetV2 inverted-residual block with a dense or channel-overlapping expansion conv."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Union

from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation, ConvNormActivation

from .channel_overlap_conv import channel_overlap_conv_layer

ActivationSpec = Union[str, Callable[..., nn.Module], None]

ACTIVATIONS: dict[str, Optional[Callable[..., nn.Module]]] = {
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "none": None,
}
EXPANSIONS = ("dense", "cog")


def resolve_activation(spec: ActivationSpec, what: str = "activation") -> Optional[Callable[..., nn.Module]]:
    """Maps "relu6" | "silu" | "none" | None | a module class to a module class (or None)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        key = spec.lower()
        if key not in ACTIVATIONS:
            raise ValueError(f"Unknown {what} {spec!r}; choose one of {sorted(ACTIVATIONS)} or None.")
        return ACTIVATIONS[key]
    if callable(spec):
        return spec
    raise TypeError(f"{what} must be a name {sorted(ACTIVATIONS)}, None or a module class, got {spec!r}.")


class ChannelOverlapConvNormActivation(ConvNormActivation):
    """ChannelOverlapConv2d + norm + activation, laid out like torchvision's Conv2dNormActivation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 4,
        overlap: int = 1,
        impl: str = "auto",
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = nn.SiLU,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=1,
            stride=1,
            padding=0,
            groups=groups,
            norm_layer=norm_layer,
            activation_layer=activation_layer,
            conv_layer=partial(channel_overlap_conv_layer, overlap=overlap, impl=impl),
        )


class InvertedResidual(nn.Module):
    """expand (1x1, optional) -> depthwise 3x3 -> project (1x1 + BN, linear) [+ residual].

    Args:
        stride: stride of the depthwise conv as built (1 or 2).
        expand_ratio: hidden channels = round(in_channels * expand_ratio).
        dilation: dilation (= padding) of the depthwise conv, for output-stride control.
        stage_start: the block starts a new resolution stage (torchvision's ``_is_cn``). Defaults
            to ``stride > 1``; pass True for a stride-2 block turned into a dilated stride-1 one
            so it keeps its structure (no residual), as torchvision's dilated MobileNetV3 does.
        expansion: "dense" (nn.Conv2d) or "cog" (ChannelOverlapConv2d) expansion conv.
        force_expand: build the expansion conv even when expand_ratio == 1.
        expand_activation / depthwise_activation: "relu6" | "silu" | None | module class.
        cog_groups / cog_overlap / cog_impl: ChannelOverlapConv2d settings (expansion="cog").
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
        expansion: str = "dense",
        force_expand: bool = False,
        expand_activation: ActivationSpec = "relu6",
        depthwise_activation: ActivationSpec = "relu6",
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        cog_groups: int = 4,
        cog_overlap: int = 1,
        cog_impl: str = "auto",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {stride}.")
        if dilation < 1:
            raise ValueError(f"InvertedResidual: dilation must be >= 1, got {dilation}.")
        if expansion not in EXPANSIONS:
            raise ValueError(f"InvertedResidual: expansion must be one of {EXPANSIONS}, got {expansion!r}.")
        expand_act = resolve_activation(expand_activation, "expand_activation")
        depthwise_act = resolve_activation(depthwise_activation, "depthwise_activation")

        hidden = int(round(in_channels * expand_ratio))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden
        self.stride = stride
        self.dilation = dilation
        self.stage_start = stride > 1 if stage_start is None else bool(stage_start)
        self._is_cn = self.stage_start  # name torchvision's detection/segmentation helpers use
        self.use_res_connect = stride == 1 and in_channels == out_channels and not self.stage_start

        self.expand: Optional[nn.Module] = None
        if expand_ratio != 1 or force_expand:
            if expansion == "cog":
                self.expand = ChannelOverlapConvNormActivation(
                    in_channels, hidden, groups=cog_groups, overlap=cog_overlap, impl=cog_impl,
                    norm_layer=norm_layer, activation_layer=expand_act,
                )
            else:
                self.expand = Conv2dNormActivation(
                    in_channels, hidden, kernel_size=1, norm_layer=norm_layer, activation_layer=expand_act
                )
        self.depthwise = Conv2dNormActivation(
            hidden, hidden, kernel_size=3, stride=stride, dilation=dilation, groups=hidden,
            norm_layer=norm_layer, activation_layer=depthwise_act,
        )
        self.project = Conv2dNormActivation(
            hidden, out_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=None
        )

    def expansion_output(self, x: Tensor) -> Tensor:
        """The depthwise conv's input: the expansion output, or ``x`` when there is none."""
        return x if self.expand is None else self.expand(x)

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (block output, expansion output); SSD-Lite taps the latter."""
        expanded = self.expansion_output(x)
        out = self.project(self.depthwise(expanded))
        if self.use_res_connect:
            out = x + out
        return out, expanded

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_expansion(x)[0]

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, hidden={self.hidden_channels}, out={self.out_channels}, "
            f"stride={self.stride}, dilation={self.dilation}, residual={self.use_res_connect}"
        )
