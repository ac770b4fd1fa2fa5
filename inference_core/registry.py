"""Architecture registry: `@register_model` adds a builder, `create_model` builds offline.

Every builder takes `num_classes` and returns an `nn.Module` with random weights and its
classification head sized for `num_classes`; nothing is downloaded (Kaggle kernels run offline).
This module is the mechanism only; the families live in `inference_core.archs`.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Sequence

from torch import nn

from .errors import UnknownArchError, UserCodeError

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


def _describe(exc: BaseException) -> str:
    """`TypeName: first line of the message`, for errors that must fit on one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def import_modules(names: Sequence[str]) -> None:
    """Import the user's own modules (`--code`), so that their `@register_model` calls run.

    A module that fails to import raises UserCodeError naming it, the cause and the fix."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                raise UserCodeError(
                    f"user code {name!r}: not found on the import path; pass its package folder "
                    "or module file with --code (or list it in kernel.code)") from None
            raise UserCodeError(
                f"user code {name!r}: it imports {exc.name!r}, which is not installed; install "
                f"it, or add its package with --code too") from None
        except Exception as exc:  # the user's code can raise anything while it is imported
            raise UserCodeError(f"user code {name!r}: failed to import ({_describe(exc)}); "
                                "fix that module and rebuild") from None


def _register_families() -> None:
    """Import the built-in families (they register themselves); lazy, as they import torch."""
    from . import archs, prototypes  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style wildcard, sorted."""
    _register_families()
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build architecture `name` with a head of `num_classes` outputs and random weights."""
    _register_families()
    try:
        builder = _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}" if close else "see list_models() for all names"
        raise UnknownArchError(
            f"unknown architecture {name!r}; {hint}; register a custom one with @register_model"
        ) from None
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return builder(num_classes=num_classes, **kwargs)
