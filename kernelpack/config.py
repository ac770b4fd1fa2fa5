"""Load the ensemble YAML and validate it with the runtime's own schema.

The schema's `kernel` section holds what only the host needs (the kernel's id, title and data
sources for `kernel-metadata.json`); `kernelpack build` leaves it out of the config embedded in
kernel.py.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from inference_core.config import validate_config
from inference_core.errors import ConfigError


def load_config(path: str | Path) -> dict:
    """Read and validate an ensemble YAML; ConfigError messages start with the file name."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass the path of your ensemble YAML")\
            from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', exc)}); "
                          "fix the syntax") from None
    try:
        config = validate_config(raw if raw is not None else {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config

