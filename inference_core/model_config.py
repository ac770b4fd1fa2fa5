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
    model_kwargs  dict    keyword arguments the architecture was built with, e.g. {"width": 16},
                          passed as given whatever their names (`arch` included)
    classes_argument str  a `package.module:callable` factory's parameter for the class count,
                          when it is not num_classes (e.g. n_classes)
    versions      dict    {package: version} of torch, numpy, PIL, cv2, albumentations, timm
                          that built the model and ran its preprocessing (recorded by
                          import-checkpoint; `inference_core.versions` warns where they differ)

Every field of `config` is optional; an unknown key is refused with the closest known name, so
a typo never silently falls back to a default. Saving, loading, discovery, encryption and the
runner all read checkpoints through this class, once per checkpoint: `SavedConfig` keeps the
fields as saved (the schema of `inference_core.fields`, whose checks the ensemble config shares,
so both speak the same error language) and `ModelConfig.preprocess` is the `Preprocess` they
describe, checked together with them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from .errors import CheckpointError, ConfigError
from .fields import (
    checked,
    choice,
    identifier,
    integer,
    list_of,
    number,
    optional,
    read_schema,
    string,
    to_plain,
    unique_labels,
)
from .preprocess import Preprocess, missing_input_size, validate_preprocess

# The top-level keys of a kernelpack checkpoint (here, not in `checkpoint`, so that reading them
# needs no torch: `kernelpack encrypt` reads a checkpoint's fields without it).
CHECKPOINT_KEYS = ("arch", "num_classes", "config", "state_dict")
# Sanity bounds: beyond them a value is a typo, and building or checking the model would only
# exhaust memory (Herbarium 2021 had 64,500 classes; networks take inputs of hundreds of pixels).
MAX_NUM_CLASSES = 1_000_000
MAX_INPUT_SIZE = 4096

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


def _model_kwargs(value: Any, where: str) -> dict:
    return {} if value is None else _plain_mapping(value, where)


def _versions(value: Any, where: str) -> dict[str, str]:
    """{package import name: version string}."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping of package to version (e.g. "
                          f"{{torch: 2.3.1}}), got {value!r}")
    for package, version in value.items():
        identifier(package, f"{where} key")
        string(version, f"{where}.{package}")
    return dict(value)


def _channels(value: Any, where: str) -> tuple[float, ...]:
    """A list of numbers; how many, and their range, are the preprocessing's to check."""
    return tuple(list_of(number())(list(value) if isinstance(value, tuple) else value, where))


# The fields that say how an image becomes the model's input.
_PREPROCESS_FIELDS = ("input_size", "resize", "mean", "std", "preprocess")


@dataclass(frozen=True, kw_only=True)
class SavedConfig:
    """A checkpoint's `config` entry field by field, as saved; every field is optional."""

    name: str | None = checked(optional(string), default=None)
    fold: int | None = checked(optional(integer(0)), default=None)
    input_size: int | None = checked(optional(integer(1, MAX_INPUT_SIZE)), default=None)
    # resize's values, and how many mean/std channels, are the preprocessing's to check
    resize: str | None = checked(optional(string), default=None)
    mean: tuple[float, ...] | None = checked(optional(_channels), default=None)
    std: tuple[float, ...] | None = checked(optional(_channels), default=None)
    preprocess: dict | None = checked(optional(_plain_mapping), default=None)
    activation: str | None = checked(optional(choice(*ACTIVATIONS)), default=None)
    classes: tuple[str | int, ...] | None = checked(optional(unique_labels), default=None)
    model_kwargs: dict = checked(_model_kwargs, default=dict)
    # The parameter of a `package.module:callable` factory that takes the class count, when it
    # is not `num_classes` (a 2019 factory's `n_classes`, `classes`, ...).
    classes_argument: str | None = checked(optional(identifier), default=None)
    # The versions of the packages that built the model and ran its preprocessing.
    versions: dict | None = checked(optional(_versions), default=None)

    def to_dict(self) -> dict:
        """The plain `config` dict: fields left unset (and empty model_kwargs) are left out."""
        return {key: value for key, value in to_plain(self).items()
                if value is not None and not (key == "model_kwargs" and not value)}

    @property
    def describes_input(self) -> bool:
        """Whether any preprocessing field is set; one that sets none is a bare weights
        container, which says nothing about its input."""
        return any(getattr(self, key) is not None for key in _PREPROCESS_FIELDS)


@dataclass(frozen=True)
class ModelConfig:
    """What a checkpoint says about its model. Build it with `from_checkpoint`, which checks
    every field and the preprocessing they describe, once; `to_dict` gives back the plain
    `config` dict stored in the checkpoint."""

    arch: str
    num_classes: int
    saved: SavedConfig
    preprocess: Preprocess | None  # None for a bare weights container

    # The saved fields, read through: `config.name` is `config.saved.name`.
    name = property(attrgetter("saved.name"))
    fold = property(attrgetter("saved.fold"))
    input_size = property(attrgetter("saved.input_size"))
    resize = property(attrgetter("saved.resize"))
    mean = property(attrgetter("saved.mean"))
    std = property(attrgetter("saved.std"))
    activation = property(attrgetter("saved.activation"))
    classes = property(attrgetter("saved.classes"))
    model_kwargs = property(attrgetter("saved.model_kwargs"))
    classes_argument = property(attrgetter("saved.classes_argument"))
    versions = property(attrgetter("saved.versions"))

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
            num_classes = integer(1, MAX_NUM_CLASSES)(checkpoint["num_classes"], "num_classes")
            saved = read_schema(SavedConfig, checkpoint["config"], "config")
            if saved.classes is not None and len(saved.classes) != num_classes:
                raise ConfigError(f"config.classes: holds {len(saved.classes)} labels but the "
                                  f"model has {num_classes} outputs; give one label per output")
        except ConfigError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        # The preprocessing fields are checked together, when any is set.
        preprocess = validate_preprocess(saved.to_dict(), where) if saved.describes_input \
            else None
        return cls(arch, num_classes, saved, preprocess)

    def to_dict(self) -> dict:
        """The checkpoint's `config` entry: plain types, fields left unset are left out."""
        return self.saved.to_dict()

    def required_preprocess(self, where: str) -> Preprocess:
        """The preprocessing, which running the model needs, checked to run here (a pipeline
        naming the user's transforms rebuilds from their --code): CheckpointError for a bare
        weights container or a pipeline that cannot run."""
        if self.preprocess is None:
            raise CheckpointError(f"{where}: {missing_input_size(None)}")
        self.preprocess.check_code(where)
        return self.preprocess
