"""The architecture registry's mechanism: `@register_model` adds a builder under a name.

Only the mechanism lives here (timm's `_registry`); the built-in families register themselves
from `inference_core.archs` and `inference_core.prototypes`, and `inference_core.model_factory`
turns any arch name into a model.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register `builder(num_classes, **kwargs) -> nn.Module` under `name`."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorate


def registered(name: str) -> ModelBuilder | None:
    """The builder registered under `name`, or None."""
    return _REGISTRY.get(name)


def registered_names() -> list[str]:
    """Every registered name, in registration order."""
    return list(_REGISTRY)
