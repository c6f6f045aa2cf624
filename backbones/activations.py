"""Activation layers by name, as backbone configs give them ("relu6", "silu", ..., None)."""
from __future__ import annotations

from typing import Callable, Optional, Union

from torch import nn

from errors import ConfigError, ConfigTypeError

ActivationSpec = Union[str, Callable[..., nn.Module], None]

ACTIVATIONS: dict[str, Optional[Callable[..., nn.Module]]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,  # = swish
    "hardswish": nn.Hardswish,
    "none": None,
}


def resolve_activation(spec: ActivationSpec, what: str = "activation") -> Optional[Callable[..., nn.Module]]:
    """Maps a name in ACTIVATIONS, None or a module class to a module class (or None)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        key = spec.lower()
        if key not in ACTIVATIONS:
            raise ConfigError(f"Unknown {what} {spec!r}; choose one of {sorted(ACTIVATIONS)} or None.")
        return ACTIVATIONS[key]
    if callable(spec):
        return spec
    raise ConfigTypeError(
        f"{what} must be a name {sorted(ACTIVATIONS)}, None or a module class, got {spec!r}.")
