"""Pointwise-layer registry: name -> layer class, and the plan that says which convs a block replaces.

    @register_pointwise("cog")
    class ChannelOverlapPointwise(PointwiseConvNormAct): ...

    build_pointwise({"name": "cog", "groups": 4, "overlap": 2}, 32, 64, activation_layer=nn.SiLU)

Every registered class is built as ``cls(in_channels, out_channels, *, norm_layer,
activation_layer, **kwargs)``; its keyword-only arguments are the options a config may set.
Options set to None take the layer's default, so one config mapping with the union of all
options (``configs/backbone/*.yaml``) serves every layer.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

from torch import nn

from backbones.layer_registry import LayerRegistry
from errors import ConfigError

PointwiseSpec = Union[str, Mapping[str, Any]]
_BUILD_ARGS = ("in_channels", "out_channels", "norm_layer", "activation_layer")
_LAYERS = LayerRegistry("pointwise", _BUILD_ARGS)
_REGISTRY = _LAYERS.classes  # name -> class (tests register and remove example layers)
register_pointwise = _LAYERS.register
_layer_class = _LAYERS.layer_class


def list_pointwise() -> list[str]:
    """Names accepted by ``build_pointwise``, sorted."""
    return _LAYERS.names()


def pointwise_options(name: str) -> list[str]:
    """The options (keyword arguments) the pointwise layer ``name`` accepts."""
    return _LAYERS.options(name)


def pointwise_spec(spec: PointwiseSpec) -> dict[str, Any]:
    """A spec (registry name or ``{name, **options}``) as a dict, options set to None dropped."""
    return _LAYERS.spec(spec)


def build_pointwise(
    spec: PointwiseSpec,
    in_channels: int,
    out_channels: int,
    *,
    norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
    activation_layer: Optional[Callable[..., nn.Module]] = None,
    where: str = "",
) -> nn.Module:
    """Builds the layer ``spec`` for ``in_channels -> out_channels``; ``where`` names the conv in
    error messages (e.g. "block 3 expand")."""
    options = pointwise_spec(spec)
    name = options.pop("name")
    try:
        return _layer_class(name)(in_channels, out_channels, norm_layer=norm_layer,
                                  activation_layer=activation_layer, **options)
    except ConfigError as error:
        place = f" at {where}" if where else ""
        raise ConfigError(f"pointwise layer {name!r}{place} ({in_channels} -> {out_channels} "
                          f"channels): {error}") from None


@dataclass(frozen=True)
class PointwisePlan:
    """Which pointwise layer a backbone uses, and at which of its 1x1 convs.

    ``at`` names the roles replaced (a family documents its roles, e.g. MobileNetV2: "expand",
    "project", "last"); every other 1x1 conv stays a dense conv.
    """

    spec: Mapping[str, Any]
    at: frozenset[str]

    @classmethod
    def create(cls, spec: PointwiseSpec, at: Iterable[str], roles: Iterable[str]) -> "PointwisePlan":
        roles = tuple(roles)
        at = [at] if isinstance(at, str) else list(at)
        unknown = sorted(set(at) - set(roles))
        if unknown:
            raise ConfigError(f"pointwise_at names unknown conv role(s) {unknown}; this backbone's "
                              f"pointwise convs: {list(roles)}.")
        return cls(pointwise_spec(spec), frozenset(at))

    def build(self, role: str, in_channels: int, out_channels: int, *,
              norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
              activation_layer: Optional[Callable[..., nn.Module]] = None,
              where: str = "") -> nn.Module:
        spec = self.spec if role in self.at else "dense"
        return build_pointwise(spec, in_channels, out_channels, norm_layer=norm_layer,
                               activation_layer=activation_layer, where=where or role)
