"""The modules of the user's code that the ensemble's checkpoints name (`build --models DIR`).

A checkpoint names code in two places: its arch (`package.module:callable`, also behind
`prototype:`) and, for an albumentations pipeline, the `__class_fullname__` of each custom
transform (`package.module.ClassName`, which the kernel imports to rebuild the class). The build
bundles the import closure of these modules; knowing them lets it fail on the host when one of
them cannot be imported in the kernel, instead of after Kaggle's queue. Plain checkpoints are
read with mmap (not their weights); an encrypted one names its arch in its public manifest (its
preprocessing is sealed, so its custom transforms stay unknown).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from inference_core.config import EnsembleConfig
from inference_core.discovery import match_models, scan_input_roots
from inference_core.kpenc import inspect
from inference_core.model_factory import PROTOTYPE_PREFIX
from inference_core.pipelines import custom_transform_modules

from ..errors import BuildError


def _arch_module(arch: str | None) -> str | None:
    while arch and arch.startswith(PROTOTYPE_PREFIX):
        arch = arch.removeprefix(PROTOTYPE_PREFIX)
    if not arch or ":" not in arch:
        return None  # a registered name or timm.<name>: no module of the user's
    return arch.split(":", 1)[0]


def named_modules(config: EnsembleConfig, folders: Sequence[str | Path],
                  tops: Sequence[str]) -> dict[str, str]:
    """{module: "checkpoint FILE: arch ..."} for each module of the user's code (top-level
    names `tops`) that a checkpoint of `config` found under `folders` names. Raises BuildError
    for a folder that is missing or holds none of the config's models."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise BuildError(f"--models {folder}: not a folder; pass the folder that holds the "
                             "checkpoints (searched recursively)")
    found, _ = scan_input_roots([str(folder) for folder in folders])
    matched = match_models(config, found).matched
    if folders and not matched:
        raise BuildError(f"--models {', '.join(map(str, folders))}: none of the config's models "
                         "is there (matched by the name in each checkpoint); pass the folder of "
                         "the checkpoints the config lists")
    named: dict[str, str] = {}
    for model in sorted(matched.values(), key=lambda model: model.relative):
        who = f"checkpoint {model.relative}"
        if model.config is None:  # encrypted: the manifest's arch only
            arch = inspect(model.path).manifest.arch
            classes: list[str] = []
        else:
            arch = model.config.arch
            pipeline = model.config.preprocess.albumentations
            classes = custom_transform_modules(json.loads(pipeline)) if pipeline else []
        module = _arch_module(arch)
        if module is not None and module.split(".")[0] in tops:
            named.setdefault(module, f"{who}: arch {arch}")
        for module in classes:
            if module.split(".")[0] in tops:
                named.setdefault(module, f"{who}: an albumentations class of {module}")
    return named
