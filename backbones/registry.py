"""Backbone registry: name -> factory (timm's ``register_model`` / ``create_model`` pattern)."""
from __future__ import annotations

import inspect
from typing import Callable, TypeVar

from torch import nn

from errors import ConfigError, ConfigTypeError

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(**overrides) -> backbone`` under ``name``."""

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"Backbone {name!r} is already registered.")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Names accepted by ``create_backbone``, sorted."""
    return sorted(_REGISTRY)


def backbone_overrides(name: str) -> list[str]:
    """The keyword overrides the backbone ``name`` accepts."""
    return [
        p.name
        for p in inspect.signature(_factory(name)).parameters.values()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


def create_backbone(name: str, **overrides) -> nn.Module:
    """Builds the registered backbone ``name``; ``overrides`` e.g. width_mult, output_stride."""
    factory = _factory(name)
    valid = backbone_overrides(name)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigTypeError(
            f"Backbone {name!r} does not accept override(s) {unknown}; valid overrides: {valid}."
        )
    return factory(**overrides)


def _factory(name: str) -> Callable[..., nn.Module]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"Unknown backbone {name!r}; registered backbones: {list_backbones()}.")
    return _REGISTRY[name]
