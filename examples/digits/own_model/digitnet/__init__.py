"""A competitor's own model package, as it would sit in their training repository."""

from .net import DigitNet, build

__all__ = ["DigitNet", "build"]
