"""One name -> layer-class registry for a kind of conv (``backbones.pointwise``: the 1x1 convs,
``backbones.spatial``: the kxk convs): registration, the options a config may set (a layer's
keyword-only arguments other than the build arguments), and spec checking with errors that list
the valid names and options. Each kind's module keeps its own public functions and build rule."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Union

from errors import ConfigError, ConfigTypeError

LayerSpec = Union[str, Mapping[str, Any]]
Layer = TypeVar("Layer", bound=type)


class LayerRegistry:
    """Registered layer classes of one ``kind`` ("pointwise", "spatial"), which is also the
    backbone config key its options live under (``backbone.<kind>.<option>``)."""

    def __init__(self, kind: str, build_args: tuple[str, ...]) -> None:
        self.kind = kind
        self.build_args = build_args  # passed by the build function, so not config options
        self.classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[Layer], Layer]:
        """Class decorator registering a layer under ``name``."""

        def decorator(cls: Layer) -> Layer:
            if name in self.classes:
                raise ValueError(f"{self.kind.capitalize()} layer {name!r} is already registered.")
            self.classes[name] = cls
            cls.registry_name = name
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted(self.classes)

    def layer_class(self, name: str) -> type:
        if not isinstance(name, str) or name not in self.classes:
            raise ConfigError(f"Unknown {self.kind} layer {name!r}; registered: {self.names()}.")
        return self.classes[name]

    def options(self, name: str) -> list[str]:
        """The options (keyword arguments) the layer ``name`` accepts."""
        return [p.name for p in inspect.signature(self.layer_class(name)).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in self.build_args]

    def spec(self, spec: LayerSpec) -> dict[str, Any]:
        """A spec (registry name or ``{name, **options}``) as a dict, options set to None dropped."""
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise ConfigError(
                f"a {self.kind} layer is a registry name or a mapping with a 'name' key, got {spec!r}; "
                f"registered: {self.names()}"
            )
        name = spec["name"]
        options = {k: v for k, v in spec.items() if k != "name" and v is not None}
        valid = self.options(name)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigTypeError(
                f"{self.kind} layer {name!r} does not take option(s) {unknown}; its options: {valid}. "
                f"(In a config, set the others to null, e.g. backbone.{self.kind}.{unknown[0]}=null.)"
            )
        return {"name": name, **options}
