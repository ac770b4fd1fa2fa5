"""Load the ensemble YAML: the runtime's schema for what the kernel reads, and the host-only
`kernel` section defined here.

The `kernel` section holds what only the host needs: the kernel-metadata.json settings (id,
title, data sources, ...) and `code`, the user's own packages to bundle. `kernelpack build`
leaves it out of the config embedded in kernel.py, so the runtime never sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The runtime's field checkers, so that host fields read and fail exactly like runtime ones.
from inference_core.config import EnsembleConfig
from inference_core.errors import ConfigError
from inference_core.fields import (
    boolean,
    checked,
    fail,
    list_of,
    optional,
    read_schema,
    shown,
    string,
)

KERNEL_ID = re.compile(r"^[A-Za-z0-9_-]+/[a-z0-9-]+$")


def _kernel_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not KERNEL_ID.match(value):
        raise fail(where, f"must look like 'username/kernel-slug' (lower-case slug), "
                           f"got {shown(value)}")
    return value


_SOURCES = list_of(string, non_empty=False)


@dataclass(frozen=True)
class Accelerator:
    machine_shape: str  # what kernel-metadata.json and `kaggle kernels push --accelerator` send
    shown_as: str  # its name in Kaggle's notebook editor
    kind: str  # "gpu" or "tpu"
    aliases: tuple[str, ...]  # other names accepted in the config, compared without case/spaces


# The machine shapes the pinned client documents (kagglesdk 0.1.37, ApiSaveKernelRequest and
# ApiCreateKernelSessionRequest: "Currently supported options"); the client sends the string as
# given, so a name outside them would only fail on Kaggle, after the push.
ACCELERATORS = (
    Accelerator("NvidiaTeslaT4", "GPU T4 x2", "gpu", ("T4 x2", "T4")),
    Accelerator("NvidiaTeslaP100", "GPU P100", "gpu", ("P100",)),
    Accelerator("Tpu1VmV38", "TPU VM v3-8", "tpu", ("TPU v3-8", "TPU")),
)
_NO_ACCELERATOR = ("none", "cpu")


def _squeezed(name: str) -> str:
    return "".join(name.split()).lower()


def accelerator_named(name: str) -> Accelerator | None:
    """The accelerator a config or metadata names (any of its names, case and spaces aside)."""
    for accelerator in ACCELERATORS:
        names = (accelerator.machine_shape, accelerator.shown_as, *accelerator.aliases)
        if _squeezed(name) in map(_squeezed, names):
            return accelerator
    return None


def _accelerator(value: Any, where: str) -> str | None:
    """An accelerator's machine shape, or None for `none` / `cpu` (no accelerator)."""
    if isinstance(value, str) and _squeezed(value) in _NO_ACCELERATOR:
        return None
    accelerator = accelerator_named(value) if isinstance(value, str) else None
    if accelerator is None:
        listed = ", ".join(f"{a.machine_shape} ({a.shown_as})" for a in ACCELERATORS)
        raise fail(where, f"must be one of {listed} or none, got {shown(value)}")
    return accelerator.machine_shape


@dataclass(frozen=True, kw_only=True)
class KernelSection:
    """kernel-metadata.json keys and their defaults: a private, offline kernel, the only kind a
    code competition accepts. `code`: package folders or module files, relative to the config
    file. `accelerator`: the machine shape (see ACCELERATORS); `enable_gpu` and `enable_tpu`
    follow from it, so `enable_gpu` is only for a GPU of Kaggle's choosing (no accelerator
    named) and must agree with an accelerator that is."""

    id: str | None = checked(optional(_kernel_id), default=None)
    title: str | None = checked(optional(string), default=None)
    is_private: bool = checked(boolean, default=True)
    accelerator: str | None = checked(optional(_accelerator), default=None)
    enable_gpu: bool | None = checked(optional(boolean), default=None)  # None: as accelerator
    enable_internet: bool = checked(boolean, default=False)
    dataset_sources: tuple[str, ...] = checked(_SOURCES, default=())
    competition_sources: tuple[str, ...] = checked(_SOURCES, default=())
    kernel_sources: tuple[str, ...] = checked(_SOURCES, default=())
    model_sources: tuple[str, ...] = checked(_SOURCES, default=())
    code: tuple[str, ...] = checked(_SOURCES, default=())

    def __post_init__(self) -> None:
        if self.accelerator and self.enable_gpu is not None and self.enable_gpu != self.gpu:
            raise ConfigError(
                f"kernel.enable_gpu: {str(self.enable_gpu).lower()} contradicts kernel."
                f"accelerator {self.accelerator}, which is {'a' if self.gpu else 'no'} GPU; "
                "remove enable_gpu (it follows from the accelerator)")

    @property
    def gpu(self) -> bool:
        """kernel-metadata.json's enable_gpu."""
        if self.accelerator:
            return accelerator_named(self.accelerator).kind == "gpu"
        return bool(self.enable_gpu)

    @property
    def tpu(self) -> bool:
        """kernel-metadata.json's enable_tpu."""
        return bool(self.accelerator) and accelerator_named(self.accelerator).kind == "tpu"


@dataclass(frozen=True)
class HostConfig:
    """A validated ensemble YAML: what the kernel runs, and the host-only `kernel` section."""

    ensemble: EnsembleConfig
    kernel: KernelSection


def validate_host_config(raw: Any) -> HostConfig:
    """The runtime's `EnsembleConfig` for all but `kernel`, which is validated here."""
    # Not a mapping: the runtime's check says so ("config: must be a mapping").
    runtime = {name: value for name, value in raw.items() if name != "kernel"} \
        if isinstance(raw, dict) else raw
    ensemble = EnsembleConfig.from_dict(runtime)
    return HostConfig(ensemble, read_schema(KernelSection, raw.get("kernel", {}), "kernel"))


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (plain YAML
    keeps the last one silently). Merged keys (`<<: *base`) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, line, seen[key])
            except TypeError:  # unhashable: the constructor reports it
                continue
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """The YAML file at `path` as plain data; every problem (missing, a folder, not UTF-8, bad
    syntax, a duplicate key, nesting too deep) is one ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass the path of your ensemble YAML")\
            from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; pass the path of your ensemble YAML file")\
            from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as "
                          "UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); check the path and its "
                          "permissions") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: plain data only
    except _DuplicateKey as dup:
        raise ConfigError(f"{path}: line {dup.line}: key {shown(dup.key)} is given twice (first "
                          f"at line {dup.first}); YAML would keep only the last, remove one")\
            from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0][:200]
        raise ConfigError(f"{path}: not valid YAML{at} ({problem}); fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; a config is a few levels of "
                          "mappings and lists") from None
    except Exception as exc:
        # PyYAML's constructors raise plain errors on well-formed nonsense: ValueError for a 13th
        # month or `!!int "0x"`, IndexError for an empty `!!int`.
        problem = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: a value cannot be read ({problem}); fix it or quote it as "
                          "a string") from None


def load_config(path: str | Path) -> HostConfig:
    """Read and validate an ensemble YAML; ConfigError messages start with the file name."""
    return validate_loaded(read_yaml(path), path)


def validate_loaded(raw: Any, path: str | Path) -> HostConfig:
    """Validate what `read_yaml(path)` returned (it is left as it is); errors name the file."""
    try:
        return validate_host_config(raw if raw is not None else {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
