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

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional, TypeVar, Union

from torch import nn

from errors import ConfigError, ConfigTypeError

PointwiseSpec = Union[str, Mapping[str, Any]]
Layer = TypeVar("Layer", bound=type)
_REGISTRY: dict[str, type] = {}
_BUILD_ARGS = ("in_channels", "out_channels", "norm_layer", "activation_layer")


def register_pointwise(name: str) -> Callable[[Layer], Layer]:
    """Class decorator registering a pointwise layer under ``name``."""

    def decorator(cls: Layer) -> Layer:
        if name in _REGISTRY:
            raise ValueError(f"Pointwise layer {name!r} is already registered.")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def list_pointwise() -> list[str]:
    """Names accepted by ``build_pointwise``, sorted."""
    return sorted(_REGISTRY)


def pointwise_options(name: str) -> list[str]:
    """The options (keyword arguments) the pointwise layer ``name`` accepts."""
    return [p.name for p in inspect.signature(_layer_class(name)).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _BUILD_ARGS]


def pointwise_spec(spec: PointwiseSpec) -> dict[str, Any]:
    """A spec (registry name or ``{name, **options}``) as a dict, options set to None dropped."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ConfigError(
            f"a pointwise layer is a registry name or a mapping with a 'name' key, got {spec!r}; "
            f"registered: {list_pointwise()}"
        )
    name = spec["name"]
    options = {k: v for k, v in spec.items() if k != "name" and v is not None}
    valid = pointwise_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigTypeError(
            f"pointwise layer {name!r} does not take option(s) {unknown}; its options: {valid}. "
            f"(In a config, set the others to null, e.g. backbone.pointwise.{unknown[0]}=null.)"
        )
    return {"name": name, **options}


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


def _layer_class(name: str) -> type:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"Unknown pointwise layer {name!r}; registered: {list_pointwise()}.")
    return _REGISTRY[name]


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
