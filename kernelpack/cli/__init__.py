"""The `kernelpack` command: the root parser in `main`, one module per command group."""

from .main import main

__all__ = ["main"]
