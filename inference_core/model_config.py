"""`ModelConfig`: the one typed reading of what a checkpoint says about its model.

A kernelpack checkpoint is `{arch, num_classes, config, state_dict}` in plain types (so it loads
with `torch.load(weights_only=True)`). `arch` and `num_classes` sit at the top level; `config`
holds the rest:

    name          str     the model's identity in the ensemble config (discovery matches on it)
    fold          int     its CV fold (>= 0), part of the identity when given
    input_size    int     side of the network input, in pixels
    resize        str     how images reach input_size (e.g. stretch, keep_aspect)
    mean, std     floats  per-channel normalisation
    preprocess    dict    the full preprocessing recipe (checked by inference_core.preprocess)
    activation    str     softmax | sigmoid | none (the model already outputs probabilities)
    classes       list    one label per output (str or int), in output order
    model_kwargs  dict    keyword arguments the architecture was built with, e.g. {"width": 16}

Every field of `config` is optional; an unknown key is refused with the closest known name, so
a typo never silently falls back to a default. Saving, loading, discovery, encryption and the
runner all read checkpoints through this class; the validation reuses the ensemble config's
field checks (`inference_core.config`), so both speak the same error language.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .errors import CheckpointError, ConfigError
from .fields import (
    Field,
    Section,
    choice,
    integer,
    label,
    list_of,
    number,
    optional,
    string,
    validate_section,
)

# The top-level keys of a kernelpack checkpoint (here, not in `checkpoint`, so that reading them
# needs no torch: `kernelpack encrypt` reads a checkpoint's fields without it).
CHECKPOINT_KEYS = ("arch", "num_classes", "config", "state_dict")

# How the runtime turns a model's outputs into probabilities (`predict.activate`).
ACTIVATIONS = ("softmax", "sigmoid", "none")

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Raise ConfigError unless `value` is made of str/int/float/bool/None/list/dict only."""
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: keys must be strings, got {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    raise ConfigError(
        f"{where}: {type(value).__name__} is not a plain type; use str/int/float/bool/None/"
        "list/dict so the checkpoint loads with weights_only=True"
    )


def _plain_mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping, got {value!r}")
    _check_plain(value, where)
    return copy.deepcopy(value)


def _channels(value: Any, where: str) -> tuple[float, ...]:
    """A list of numbers; how many, and their range, are the preprocessing's to check."""
    return tuple(list_of(number())(list(value) if isinstance(value, tuple) else value, where))


def _labels(value: Any, where: str) -> tuple:
    labels = list_of(label)(list(value) if isinstance(value, tuple) else value, where)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: labels must be unique, got {labels!r}")
    return tuple(labels)


CONFIG_FIELDS = Section({
    "name": Field(optional(string)),
    "fold": Field(optional(integer(0))),
    "input_size": Field(optional(integer(1))),
    "resize": Field(optional(string)),  # its values are the preprocessing's to check
    "mean": Field(optional(_channels)),
    "std": Field(optional(_channels)),
    "preprocess": Field(optional(_plain_mapping)),
    "activation": Field(optional(choice(*ACTIVATIONS))),
    "classes": Field(optional(_labels)),
    "model_kwargs": Field(optional(_plain_mapping)),
})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """What a checkpoint says about its model. Build it with `from_checkpoint` (which checks
    every field); `to_dict` gives back the plain `config` dict stored in the checkpoint."""

    name: str | None = None
    fold: int | None = None
    arch: str
    num_classes: int
    input_size: int | None = None
    resize: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    preprocess: dict | None = None
    activation: str | None = None
    classes: tuple[str | int, ...] | None = None
    model_kwargs: dict = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, where: str) -> ModelConfig:
        """Read and check `{arch, num_classes, config, ...}` (other keys, such as state_dict,
        are not looked at). Raises CheckpointError: one line naming `where` and the field."""
        try:
            if not isinstance(checkpoint, dict):
                raise ConfigError(f"checkpoint: must be a mapping, got {type(checkpoint).__name__}")
            for key in ("arch", "num_classes", "config"):
                if key not in checkpoint:
                    raise ConfigError(f"{key}: missing; save the checkpoint with "
                                      "inference_core.checkpoint.save_checkpoint")
            arch = string(checkpoint["arch"], "arch")
            num_classes = integer(1)(checkpoint["num_classes"], "num_classes")
            values = validate_section(checkpoint["config"], CONFIG_FIELDS, "config")
            classes = values["classes"]
            if classes is not None and len(classes) != num_classes:
                raise ConfigError(f"config.classes: holds {len(classes)} labels but the model has "
                                  f"{num_classes} outputs; give one label per output")
            values["model_kwargs"] = values["model_kwargs"] or {}
            config = cls(arch=arch, num_classes=num_classes, **values)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        _check_preprocess(config, where)
        return config

    def to_dict(self) -> dict:
        """The checkpoint's `config` entry: plain types, fields left unset are left out."""
        out: dict = {}
        for key in CONFIG_FIELDS.fields:
            value = getattr(self, key)
            if value is None or (key == "model_kwargs" and not value):
                continue
            out[key] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
        return out


# The fields that say how an image becomes the model's input.
PREPROCESS_FIELDS = ("input_size", "resize", "mean", "std", "preprocess")


def _check_preprocess(config: ModelConfig, where: str) -> None:
    """Check the preprocessing fields together (`inference_core.preprocess.validate_preprocess`)
    when any is set; a checkpoint that sets none is a bare weights container."""
    if all(getattr(config, key) is None for key in PREPROCESS_FIELDS):
        return
    from .preprocess import validate_preprocess  # here: it imports numpy and PIL

    validate_preprocess(config.to_dict(), where)
