"""Load the ensemble YAML, validate it with the runtime's own schema, and check the kernel section.

The `kernel` section holds what only the host needs (the kernel's id, title and data sources for
`kernel-metadata.json`); it is validated here and left out of the config embedded in kernel.py.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from inference_core.config import validate_config
from inference_core.errors import ConfigError

KERNEL_ID = re.compile(r"^[A-Za-z0-9_-]+/[a-z0-9-]+$")

# kernel-metadata.json keys (see ../shared/research/kaggle-api.md) and their defaults: a private,
# offline kernel, the only kind a code competition accepts.
KERNEL_DEFAULTS: dict[str, Any] = {
    "id": None,
    "title": None,
    "is_private": True,
    "enable_gpu": False,
    "enable_internet": False,
    "machine_shape": None,
    "dataset_sources": [],
    "competition_sources": [],
    "kernel_sources": [],
    "model_sources": [],
}


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
        config["kernel"] = validate_kernel_section(config["kernel"] or {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def validate_kernel_section(kernel: dict) -> dict:
    """The kernel section with defaults filled in; ConfigError names the bad field."""
    for key in kernel:
        if key not in KERNEL_DEFAULTS:
            close = difflib.get_close_matches(str(key), KERNEL_DEFAULTS, n=1)
            fix = f"did you mean {close[0]!r}?" if close else \
                f"allowed fields: {', '.join(KERNEL_DEFAULTS)}"
            raise ConfigError(f"kernel.{key}: unknown field; {fix}")
    section = {**KERNEL_DEFAULTS, **kernel}
    if section["id"] is not None and not KERNEL_ID.match(str(section["id"])):
        raise ConfigError(f"kernel.id: must look like 'username/kernel-slug' (lower-case slug), "
                          f"got {section['id']!r}")
    for key in ("is_private", "enable_gpu", "enable_internet"):
        if not isinstance(section[key], bool):
            raise ConfigError(f"kernel.{key}: must be true or false, got {section[key]!r}")
    for key in ("dataset_sources", "competition_sources", "kernel_sources", "model_sources"):
        value = section[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"kernel.{key}: must be a list of slugs, got {value!r}")
    return section
