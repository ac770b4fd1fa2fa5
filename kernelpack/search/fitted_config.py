"""Fitted weights, thresholds and OOF values written into an ensemble config, and read back out
of one.

An OOF file stands for one model or for all folds of one model: with a base config, the entries
of `--oof NAME=...` are the one named NAME (a plain model, or a `folds:` group, which takes the
weight itself and splits it over its folds in the kernel) and those named `NAME_f<k>` (one entry
per fold, the naming of the digits example). They share NAME's weight equally, so that the fold
models together take the place of the OOF predictions they made.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from inference_core.config import EnsembleConfig, ModelEntry, SubmissionSection
from inference_core.errors import ConfigError
from inference_core.fields import read_schema, to_plain

from ..config import HostConfig, read_yaml, validate_host_config, validate_loaded
from ..errors import SearchError
from .values import VALUE_DECIMALS, OofValues


def entries_of(models: Sequence[ModelEntry], names: Sequence[str], source: str
               ) -> dict[str, list[int]]:
    """Indices of the config's model entries that each OOF name stands for; every entry must
    belong to exactly one name, since the weights are fitted over all of them together."""
    groups: dict[str, list[int]] = {name: [] for name in names}
    for i, entry in enumerate(models):
        owners = [name for name in names
                  if re.fullmatch(re.escape(name) + r"(_f\d+)?", entry.name)]
        if len(owners) != 1:
            problem = "matches no --oof name" if not owners else \
                f"matches several --oof names ({', '.join(owners)})"
            raise SearchError(
                f"{source}: models[{i}] {entry.name!r} {problem}; pass --oof NAME=PATH for "
                f"NAME = {entry.name!r} or its model (entries NAME or NAME_f<k>), or remove "
                "the entry")
        groups[owners[0]].append(i)
    for name, indices in groups.items():
        if not indices:
            raise SearchError(f"{source}: no model entry named {name!r} or {name}_f<k> for "
                              f"--oof {name}; add its models to the config or drop that --oof")
    return groups


def _entries(raw: dict) -> list[ModelEntry]:
    """The model entries of a raw config (as written, or as fitted here), read."""
    return [read_schema(ModelEntry, entry, f"models[{i}]")
            for i, entry in enumerate(raw["models"])]


def read_base(path: Path | None) -> tuple[dict, HostConfig | None]:
    """The base config as written (to keep the user's file) and validated (for its values)."""
    if path is None:
        return {}, None
    raw = read_yaml(path)
    return raw, validate_loaded(raw, path)


def with_weights(raw: dict, names: Sequence[str], weights: Sequence[float], mode: str,
                 submission: SubmissionSection, source: str) -> dict:
    """`raw` (a base config, or {}) with the fitted weights and blend mode; without a base, one
    model entry per OOF name and the submission section the weights were fitted for."""
    config = copy.deepcopy(raw)
    if not config:
        config["models"] = [{"name": name, "weight": float(w)}
                            for name, w in zip(names, weights, strict=True)]
        config["submission"] = {key: value for key, value in to_plain(submission).items()
                                if key in ("format", "classes", "threshold", "min_labels",
                                           "max_labels") and value is not None}
    else:
        groups = entries_of(_entries(config), names, source)
        for name, weight in zip(names, weights, strict=True):
            for i in groups[name]:
                config["models"][i]["weight"] = float(weight) / len(groups[name])
    config["blend"] = mode
    return config


def entry_folds(entry: ModelEntry, name: str) -> int | tuple[int, ...] | None:
    """The fold(s) whose OOF rows an entry of `--oof NAME` predicted: a `folds:` group's list,
    a NAME_f<k> entry's `fold` (or k); None for the entry named NAME itself."""
    if entry.folds is not None or entry.name == name:
        return entry.folds
    return int(entry.name.rsplit("_f", 1)[1]) if entry.fold is None else entry.fold


def with_values(config: dict, values: OofValues, source: str) -> dict:
    """`config` (raw, as written) with each model's OOF value (`kernelpack.search.values`): an
    entry named NAME gets NAME's value, a `folds:` group one value per fold, and a NAME_f<k>
    entry the value of fold k. A fold with no OOF rows (fold indices that do not match the
    models') cannot be measured: its entries then share NAME's value evenly, as one number."""
    config = copy.deepcopy(config)
    entries = _entries(config)
    groups = entries_of(entries, values.names, source)
    for name, value, per_fold in zip(values.names, values.values, values.fold_values,
                                     strict=True):
        folds_of = {i: entry_folds(entries[i], name) for i in groups[name]}
        measured = all(int(f) in per_fold for folds in folds_of.values() if folds is not None
                       for f in np.atleast_1d(folds))
        for i, folds in folds_of.items():
            entry = config["models"][i]
            if folds is None or not measured:
                entry["value"] = round(value / len(folds_of), VALUE_DECIMALS)
            elif isinstance(folds, tuple):
                entry["value"] = [per_fold[int(f)] for f in folds]
            else:
                entry["value"] = per_fold[int(folds)]
    return config


def with_thresholds(raw: dict, threshold: float | list[float], min_labels: int,
                    max_labels: int | None) -> dict:
    config = copy.deepcopy(raw)
    config["submission"] = {**config["submission"], "threshold": threshold,
                            "min_labels": min_labels, "max_labels": max_labels}
    return config


def oof_weights(config: EnsembleConfig, names: Sequence[str], source: str
                ) -> tuple[list[float], list[float]]:
    """Per OOF name: the summed weight of its entries and their (common) threshold shift."""
    groups = entries_of(config.models, names, source)
    weights, shifts = [], []
    for name in names:
        entries = [config.models[i] for i in groups[name]]
        entry_shifts = {entry.threshold_shift for entry in entries}
        if len(entry_shifts) > 1:
            raise SearchError(f"{source}: the entries of {name!r} have different "
                              f"threshold_shift values {sorted(entry_shifts)}; one OOF file "
                              "can only be blended with one shift, so give them the same")
        weights.append(sum(entry.weight for entry in entries))
        shifts.append(entry_shifts.pop())
    return weights, shifts


def write_config(config: dict, path: Path, header: str) -> None:
    """Validate (when complete) and write; `header` becomes a comment block on top."""
    if "test" in config:
        try:
            validate_host_config(config)
        except ConfigError as exc:
            raise SearchError(f"{path}: the fitted config is not valid ({exc})") from None
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(comment + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def with_shifts(config: dict, names: Sequence[str], shifts: Sequence[float], source: str
                ) -> dict:
    """`config` (raw, as fitted) with each OOF name's threshold shift on every entry it stands
    for (a folds group, or its NAME_f<k> entries, share one)."""
    config = copy.deepcopy(config)
    groups = entries_of(_entries(config), names, source)
    for name, shift in zip(names, shifts, strict=True):
        for i in groups[name]:
            config["models"][i]["threshold_shift"] = float(shift)
    return config
