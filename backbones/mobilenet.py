"""MobileNetV2-layout backbone (MobileNetV2 eX and COG-MobileNet eX) with named feature taps."""
from __future__ import annotations

from typing import Callable, Iterable, Union

from torch import Tensor, nn
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from .channel_overlap_conv import ChannelOverlapConv2d
from .inverted_residual import EXPANSIONS, ActivationSpec, InvertedResidual, resolve_activation
from .registry import FeatureInfo

OUTPUT_STRIDES = (32, 16, 8)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280

# torchvision's mobilenet_v2 inverted_residual_setting without t: (channels c, repeats n, stride s).
# The first stage always has t=1; every later block uses the backbone's expand_ratio.
STAGES: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1),
    (24, 2, 2),
    (32, 3, 2),
    (64, 4, 2),
    (96, 3, 1),
    (160, 3, 2),
    (320, 1, 1),
)

# Tap name -> index in ``features``. "stage5_expand" is the expansion output inside block 14
# (first block of the 160-ch stage, before its stride-2 depthwise conv).
TAP_INDEX: dict[str, int] = {
    "stem": 0,
    "stage1": 1,
    "stage2": 3,
    "stage3": 6,
    "stage4": 13,
    "stage5_expand": 14,
    "stage5": 16,
    "stage6": 17,
    "last_conv": 18,
}
EXPANSION_TAP = "stage5_expand"


class MobileNetBackbone(nn.Module):
    """MobileNetV2 ``features`` (0 stem, 1..17 inverted residuals, 18 last 1x1 conv) with taps.

    Args:
        name: registry name, reported by ``.name`` and stored in checkpoints.
        expand_ratio: t of every block after the first (the first block has t=1).
        expansion: "dense" or "cog" expansion convs.
        expand_first_block: give the t=1 first block an expansion conv too (COG-MobileNet does).
        width_mult: channel multiplier, rounded like torchvision (multiples of 8).
        output_stride: 32, 16 or 8; later stride-2 blocks become stride-1, dilated ones.
        activation: after the stem and last conv BNs.
        expand_activation / depthwise_activation: inside the blocks.
        cog_groups / cog_overlap / cog_impl: ChannelOverlapConv2d settings.
    """

    def __init__(
        self,
        name: str = "mobilenet",
        *,
        expand_ratio: float = 6,
        expansion: str = "dense",
        expand_first_block: bool = False,
        width_mult: float = 1.0,
        output_stride: int = 32,
        activation: ActivationSpec = "relu6",
        expand_activation: ActivationSpec = "relu6",
        depthwise_activation: ActivationSpec = "relu6",
        cog_groups: int = 4,
        cog_overlap: int = 1,
        cog_impl: str = "auto",
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}.")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}.")
        if expansion not in EXPANSIONS:
            raise ValueError(f"expansion must be one of {EXPANSIONS}, got {expansion!r}.")
        self.name = name
        self.output_stride = output_stride
        self.width_mult = width_mult
        outer_act = resolve_activation(activation, "activation")

        in_ch = _make_divisible(STEM_CHANNELS * width_mult, 8)
        last_ch = _make_divisible(LAST_CHANNELS * max(1.0, width_mult), 8)
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, in_ch, stride=2, norm_layer=norm_layer, activation_layer=outer_act)
        ]
        strides = [2]  # effective stride after each layer
        expansion_channels = expansion_stride = None
        # Output-stride control as in DeepLab / TF-slim MobileNet: once the running stride has
        # reached output_stride, a stride-2 block runs at stride 1 with the current dilation and
        # every later depthwise conv gets the dilation multiplied by 2 (padding = dilation).
        stride, dilation = 2, 1
        for stage, (channels, repeats, first_stride) in enumerate(STAGES):
            out_ch = _make_divisible(channels * width_mult, 8)
            t = 1 if stage == 0 else expand_ratio
            for i in range(repeats):
                nominal = first_stride if i == 0 else 1
                block_dilation = dilation
                if nominal > 1 and stride * nominal > output_stride:
                    conv_stride, dilation = 1, dilation * nominal
                else:
                    conv_stride, stride = nominal, stride * nominal
                block = InvertedResidual(
                    in_ch, out_ch, conv_stride, t,
                    dilation=block_dilation,
                    stage_start=nominal > 1,
                    expansion=expansion,
                    force_expand=expand_first_block,
                    expand_activation=expand_activation,
                    depthwise_activation=depthwise_activation,
                    norm_layer=norm_layer,
                    cog_groups=cog_groups,
                    cog_overlap=cog_overlap,
                    cog_impl=cog_impl,
                )
                if len(layers) == TAP_INDEX[EXPANSION_TAP]:
                    expansion_channels, expansion_stride = block.hidden_channels, strides[-1]
                layers.append(block)
                strides.append(stride)
                in_ch = out_ch
        layers.append(
            Conv2dNormActivation(in_ch, last_ch, kernel_size=1, norm_layer=norm_layer, activation_layer=outer_act)
        )
        strides.append(stride)
        self.features = nn.Sequential(*layers)

        channels_at = [layer.out_channels for layer in layers]
        self.feature_info: list[FeatureInfo] = [
            FeatureInfo(tap, expansion_channels, expansion_stride, index)
            if tap == EXPANSION_TAP
            else FeatureInfo(tap, channels_at[index], strides[index], index)
            for tap, index in TAP_INDEX.items()
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's mobilenet_v2 scheme; the COG conv's compact weight is treated like a conv's.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, ChannelOverlapConv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> int:
        """Channels of ``forward``'s output (last_conv, or the last kept tap after truncate)."""
        return self.features[-1].out_channels

    @property
    def tap_names(self) -> list[str]:
        return [info.name for info in self.feature_info]

    def feature(self, name: str) -> FeatureInfo:
        """The FeatureInfo of tap ``name``."""
        for info in self.feature_info:
            if info.name == name:
                return info
        raise ValueError(self._unknown_tap_message([name]))

    def set_cog_impl(self, impl: str) -> None:
        """Switches every ChannelOverlapConv2d to implementation ``impl``."""
        for m in self.modules():
            if isinstance(m, ChannelOverlapConv2d):
                m.impl = impl

    def truncate(self, last_tap: str) -> "MobileNetBackbone":
        """Drops the layers after tap ``last_tap`` (e.g. "stage6" for segmentation); returns self."""
        if last_tap == EXPANSION_TAP:
            raise ValueError(
                f"Cannot truncate at {EXPANSION_TAP!r}: it lies inside block "
                f"{TAP_INDEX[EXPANSION_TAP]}; truncate at 'stage4' or 'stage5' instead."
            )
        index = self.feature(last_tap).index
        self.features = self.features[: index + 1]
        self.feature_info = [info for info in self.feature_info if info.index <= index]
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_features(self, x: Tensor, names: Union[str, Iterable[str]]) -> dict[str, Tensor]:
        """Outputs of the requested taps, running only the layers they need."""
        names = [names] if isinstance(names, str) else list(names)
        known = {info.name: info.index for info in self.feature_info}
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ValueError(self._unknown_tap_message(unknown))
        by_index = {known[n]: n for n in names if n != EXPANSION_TAP}
        wants_expansion = EXPANSION_TAP in names
        expansion_index = known.get(EXPANSION_TAP, -1)
        last_full = max(by_index, default=-1)

        found: dict[str, Tensor] = {}
        for index in range(max(last_full, expansion_index if wants_expansion else -1) + 1):
            layer = self.features[index]
            if wants_expansion and index == expansion_index:
                if index > last_full:  # nothing later is needed: stop after the expansion
                    found[EXPANSION_TAP] = layer.expansion_output(x)
                    break
                x, found[EXPANSION_TAP] = layer.forward_with_expansion(x)
            else:
                x = layer(x)
            if index in by_index:
                found[by_index[index]] = x
        return {n: found[n] for n in names}

    def _unknown_tap_message(self, unknown: list[str]) -> str:
        hint = ""
        if any(n in TAP_INDEX for n in unknown):
            hint = " (the backbone was truncated; those taps were dropped)"
        what = f"Unknown feature tap(s) {unknown}" if unknown else "No feature taps requested"
        return f"{what}{hint}; available taps of {self.name!r}: {self.tap_names}."

    def extra_repr(self) -> str:
        return f"name={self.name!r}, width_mult={self.width_mult}, output_stride={self.output_stride}"
