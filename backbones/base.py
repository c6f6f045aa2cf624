"""The backbone contract every family implements, and the parts every family shares.

A backbone is ``features`` (an ``nn.Sequential`` run in order) plus ``feature_info``, one
``FeatureInfo`` per tap: channels, stride (reduction w.r.t. the input, at the output stride the
backbone was built with), the index of the layer it comes from, its kind, and the roles heads
ask for. Heads and tasks never use a family's tap names: they ask ``feature_for(role)``.

Roles (a family assigns each to one tap and documents its choice):

- ``"last"``: the last layer's output (implicit: always the last remaining tap).
- ``"body"``: the last block's output before the final 1x1 conv (MobileNetV2: the 320-channel
  block); DeepLabv3 runs on it at output stride 16. Families without a final 1x1 conv: the last.
- ``"stride16"``: the last block output at stride 16 when the backbone is built at output
  stride 32 (MobileNetV2: the 96-channel stage; the thesis' "first 5 stages" segmentation cut).
- ``"stride16_expansion"``: the expansion output that feeds the first stride-32 block (the widest
  stride-16 map; MobileNetV2's block 14 expansion, SSD-Lite's first prediction map). Families
  without expansion convs give it to their last stride-16 block output.

Output stride: ``plan_strides`` turns the nominal strides of a layer sequence into conv strides
and dilations (DeepLab rule), so a family needs no stride logic of its own.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Union

from torch import Tensor, nn

from errors import ConfigError

from .pointwise import PointwiseLayer
from .spatial import SpatialLayer, ZeroInitConv2d, is_kernel_module

OUTPUT_STRIDES = (32, 16, 8)
ROLES = ("last", "body", "stride16", "stride16_expansion")
OUTPUT, EXPANSION = "output", "expansion"


@dataclass(frozen=True)
class FeatureInfo:
    """One tap: ``features[index]``'s output (kind "output") or the expansion output inside it
    (kind "expansion"), with ``channels`` at ``stride``; ``roles`` are what heads ask for."""

    name: str
    channels: int
    stride: int
    index: int
    kind: str = OUTPUT
    roles: tuple[str, ...] = ()

    @property
    def reduction(self) -> int:  # timm's name for the same number
        return self.stride


@dataclass(frozen=True)
class LayerStride:
    """Where one layer runs: conv ``stride``, ``dilation`` of its spatial conv, and the
    cumulative ``output_stride`` after it (``nominal`` is its stride at output stride 32)."""

    nominal: int
    stride: int
    dilation: int
    output_stride: int


def check_output_stride(output_stride: int) -> int:
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}.")
    return output_stride


def plan_strides(nominal_strides: Sequence[int], output_stride: int = 32) -> list[LayerStride]:
    """Conv strides and dilations for layers with these nominal strides (DeepLab / TF-slim rule).

    Once the running stride has reached ``output_stride``, a stride-2 layer runs at stride 1 with
    the current dilation, and every later spatial conv gets the dilation multiplied by 2
    (padding = dilation keeps the map size). Layers before that point are unchanged.
    """
    check_output_stride(output_stride)
    plan, stride, dilation = [], 1, 1
    for nominal in nominal_strides:
        layer_dilation = dilation
        if nominal > 1 and stride * nominal > output_stride:
            conv_stride, dilation = 1, dilation * nominal
        else:
            conv_stride, stride = nominal, stride * nominal
        plan.append(LayerStride(nominal, conv_stride, layer_dilation, stride))
    return plan


class Backbone(nn.Module):
    """Base of every family: taps, ``forward_features``, ``truncate``, roles, pointwise impls.

    Subclasses build ``self.features`` and ``self.feature_info`` (every layer whose output is
    a tap appears once; the last layer must be a tap), then call ``self.init_weights()``.
    Layers with an expansion tap implement ``forward_with_expansion(x) -> (out, expanded)``
    and ``expansion_output(x)`` (``backbones.expansion_block.ExpansionBlock`` does).
    """

    features: nn.Sequential
    feature_info: list[FeatureInfo]
    # The stride the family's last layer reaches by design. Seed 001's seven-conv nets stop at
    # 16: an output_stride above it changes nothing, and roles it cannot have (SSD-Lite's
    # stride-32 pairing) raise a ConfigError saying why.
    native_output_stride: int = 32

    def __init__(self, name: str, output_stride: int = 32) -> None:
        super().__init__()
        self.name = name
        self.output_stride = check_output_stride(output_stride)

    # ------------------------------------------------------------------ taps and roles
    @property
    def out_channels(self) -> int:
        """Channels of ``forward``'s output (the last kept tap)."""
        return self.feature_for("last").channels

    @property
    def tap_names(self) -> list[str]:
        return [info.name for info in self.feature_info]

    def feature(self, name: str) -> FeatureInfo:
        """The FeatureInfo of tap ``name``."""
        for info in self.feature_info:
            if info.name == name:
                return info
        raise ConfigError(self._unknown_tap_message([name]))

    def feature_for(self, role: str) -> FeatureInfo:
        """The tap playing ``role`` (see the module docstring)."""
        if role not in ROLES:
            raise ValueError(f"unknown feature role {role!r}; roles: {ROLES}")
        if role == "last":
            last = len(self.features) - 1
            return next(i for i in reversed(self.feature_info) if i.index == last and i.kind == OUTPUT)
        for info in self.feature_info:
            if role in info.roles:
                return info
        raise ConfigError(
            f"backbone {self.name!r} has no {role!r} feature"
            + (" (the backbone was truncated before it)" if self._truncated else "")
            + f"; its taps: {self.tap_names}."
        )

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_features(self, x: Tensor, names: Union[str, Iterable[str]]) -> dict[str, Tensor]:
        """Outputs of the requested taps, running only the layers they need."""
        names = [names] if isinstance(names, str) else list(names)
        known = {info.name: info for info in self.feature_info}
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ConfigError(self._unknown_tap_message(unknown))
        outputs = {known[n].index: n for n in names if known[n].kind == OUTPUT}
        expansions = {known[n].index: n for n in names if known[n].kind == EXPANSION}
        last_output = max(outputs, default=-1)
        found: dict[str, Tensor] = {}
        for index in range(max(last_output, max(expansions, default=-1)) + 1):
            layer = self.features[index]
            if index in expansions:
                if index > last_output:  # nothing later is needed: stop after the expansion
                    found[expansions[index]] = layer.expansion_output(x)
                    break
                x, found[expansions[index]] = layer.forward_with_expansion(x)
            else:
                x = layer(x)
            if index in outputs:
                found[outputs[index]] = x
        return {n: found[n] for n in names}

    # ------------------------------------------------------------------ surgery
    _truncated = False

    def truncate(self, last_tap: str) -> "Backbone":
        """Drops the layers after tap ``last_tap`` (an output tap); returns self."""
        info = self.feature(last_tap)
        if info.kind != OUTPUT:
            later = [i.name for i in self.feature_info if i.index == info.index and i.kind == OUTPUT]
            raise ConfigError(
                f"Cannot truncate at {last_tap!r}: it lies inside layer {info.index}; truncate at "
                f"an output tap instead (e.g. {later or self.tap_names})."
            )
        self.features = self.features[: info.index + 1]
        self.feature_info = [i for i in self.feature_info if i.index <= info.index]
        self._truncated = True
        return self

    def truncate_at_role(self, role: str) -> "Backbone":
        """``truncate`` at the tap playing ``role``."""
        return self.truncate(self.feature_for(role).name)

    # ------------------------------------------------------------------ pointwise layers
    def pointwise_layers(self) -> Iterator[PointwiseLayer]:
        return (m for m in self.modules() if isinstance(m, PointwiseLayer))

    def set_pointwise_impl(self, impl: str) -> None:
        """Switches every pointwise layer that has implementations (COG) to ``impl``."""
        for layer in self.pointwise_layers():
            if impl == "auto" or impl in layer.impls:
                layer.set_impl(impl)

    # ------------------------------------------------------------------ spatial layers
    def spatial_layers(self) -> Iterator[SpatialLayer]:
        return (m for m in self.modules() if isinstance(m, SpatialLayer))

    def set_spatial_impl(self, impl: str) -> None:
        """Switches every spatial layer that has implementations (deformable convs) to ``impl``."""
        for layer in self.spatial_layers():
            if impl == "auto" or impl in layer.impls:
                layer.set_impl(impl)

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """torchvision's MobileNet scheme: conv kernels (pointwise ops and deformable convs too)
        kaiming-normal fan_out, zero biases; norms one/zero; linear layers normal(0, 0.01);
        deformable convs' offset predictors zero (Dai et al. 2017)."""
        for m in self.modules():
            if isinstance(m, ZeroInitConv2d):
                m.reset_parameters()
            elif is_kernel_module(m):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _unknown_tap_message(self, unknown: list[str]) -> str:
        hint = " (the backbone was truncated; later taps were dropped)" if self._truncated else ""
        what = f"Unknown feature tap(s) {unknown}" if unknown else "No feature taps requested"
        return f"{what}{hint}; available taps of {self.name!r}: {self.tap_names}."

    def extra_repr(self) -> str:
        return f"name={self.name!r}, output_stride={self.output_stride}"
