"""Spatial-conv registry: name -> layer class, and the plan that says which kxk convs a backbone
replaces (by role and by position): the twin of ``backbones.pointwise.registry``.

    @register_spatial("deform")
    class DeformSpatial(SpatialConvNormAct): ...

    build_spatial({"name": "deform", "offset_groups": 1}, 32, 32, kernel_size=3, stride=2,
                  activation_layer=nn.ReLU)

Every registered class is built as ``cls(in_channels, out_channels, *, kernel_size, stride,
dilation, bias, norm_layer, activation_layer, **options)``; its other keyword-only arguments are
the options a config may set. Options set to None take the layer's default, so one config mapping
with the union of all options (``configs/backbone/*.yaml``) serves every layer. Padding is always
``dilation * (kernel_size - 1) // 2`` (the map size only changes with the stride).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

from torch import nn

from backbones.layer_registry import LayerRegistry
from errors import ConfigError

SpatialSpec = Union[str, Mapping[str, Any]]
_BUILD_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "bias",
               "norm_layer", "activation_layer")
_LAYERS = LayerRegistry("spatial", _BUILD_ARGS)
_REGISTRY = _LAYERS.classes  # name -> class (tests register and remove example layers)
register_spatial = _LAYERS.register
_layer_class = _LAYERS.layer_class


def list_spatial() -> list[str]:
    """Names accepted by ``build_spatial``, sorted."""
    return _LAYERS.names()


def spatial_options(name: str) -> list[str]:
    """The options (keyword arguments) the spatial layer ``name`` accepts."""
    return _LAYERS.options(name)


def spatial_spec(spec: SpatialSpec) -> dict[str, Any]:
    """A spec (registry name or ``{name, **options}``) as a dict, options set to None dropped."""
    return _LAYERS.spec(spec)


def build_spatial(
    spec: SpatialSpec,
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    bias: Optional[bool] = None,
    norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
    activation_layer: Optional[Callable[..., nn.Module]] = None,
    where: str = "",
) -> nn.Module:
    """Builds the layer ``spec`` for ``in_channels -> out_channels``; ``bias`` None means a bias
    only without a norm layer (torchvision's rule); ``where`` names the conv in error messages."""
    options = spatial_spec(spec)
    name = options.pop("name")
    try:
        return _layer_class(name)(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                  dilation=dilation, bias=bias, norm_layer=norm_layer,
                                  activation_layer=activation_layer, **options)
    except ConfigError as error:
        place = f" at {where}" if where else ""
        raise ConfigError(f"spatial layer {name!r}{place} ({in_channels} -> {out_channels} "
                          f"channels, {kernel_size}x{kernel_size}): {error}") from None


@dataclass(frozen=True)
class SpatialPlan:
    """Which spatial layer a backbone uses, at which of its kxk convs.

    ``at`` names the roles replaced (a family documents its roles, e.g. MobileNetV2: "depthwise");
    ``positions`` (None: all) restricts that to the layers at these indices of ``features`` (seed
    001 puts deformable convs at layers 2, 4 and 6 only). Every other kxk conv is built as the
    family builds it by default (``build(..., default=...)``: "depthwise" in a MobileNet block).
    """

    spec: Mapping[str, Any]
    at: frozenset[str]
    positions: Optional[frozenset[int]] = None

    @classmethod
    def create(cls, spec: SpatialSpec, at: Iterable[str], roles: Iterable[str],
               positions: Optional[Iterable[int]] = None,
               valid_positions: Optional[Iterable[int]] = None) -> "SpatialPlan":
        roles = tuple(roles)
        at = [at] if isinstance(at, str) else list(at)
        unknown = sorted(set(at) - set(roles))
        if unknown:
            raise ConfigError(f"spatial_at names unknown conv role(s) {unknown}; this backbone's "
                              f"spatial convs: {list(roles)}.")
        chosen = None
        if positions is not None:
            if isinstance(positions, (int, str)):
                positions = [positions]
            chosen = list(positions)
            if not all(isinstance(p, int) and not isinstance(p, bool) for p in chosen):
                raise ConfigError(f"spatial_positions must be a list of layer indices (integers), "
                                  f"got {chosen!r}.")
            if valid_positions is not None:
                valid = sorted(valid_positions)
                outside = sorted(set(chosen) - set(valid))
                if outside:
                    raise ConfigError(
                        f"spatial_positions {outside} are not layers with a spatial conv; this "
                        f"backbone's: {_ranges(valid)} (indices of its features).")
            chosen = frozenset(chosen)
        return cls(spatial_spec(spec), frozenset(at), chosen)

    def selects(self, role: str, position: Optional[int] = None) -> bool:
        """True where the plan's layer replaces the family's default."""
        if role not in self.at:
            return False
        return self.positions is None or position is None or position in self.positions

    def build(self, role: str, in_channels: int, out_channels: int, *,
              position: Optional[int] = None, default: SpatialSpec = "depthwise",
              kernel_size: int = 3, stride: int = 1, dilation: int = 1,
              bias: Optional[bool] = None,
              norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
              activation_layer: Optional[Callable[..., nn.Module]] = None,
              where: str = "") -> nn.Module:
        spec = self.spec if self.selects(role, position) else default
        return build_spatial(spec, in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                             dilation=dilation, bias=bias, norm_layer=norm_layer,
                             activation_layer=activation_layer, where=where or role)


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 5] -> "1..3, 5" (short error messages)."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(parts)
