"""argparse types for numeric flags: a number that must be finite (and above a bound) is checked
as it is parsed, so `--budget nan` or `--fold -1` is one usage error, never a silent wrong run."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def finite_float(minimum: float | None = None, *, exclusive: bool = False
                 ) -> Callable[[str], float]:
    """A float flag that refuses nan and inf, and numbers below `minimum` (or equal to it,
    with `exclusive`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise argparse.ArgumentTypeError(
                f"must be {'above' if exclusive else 'at least'} {minimum:g}, got {text}")
        return value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An integer flag of at least `minimum` (and at most `maximum`, when given)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse
