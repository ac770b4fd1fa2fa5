"""Find the ensemble's models under the input roots, by identity, not by file name.

Every input root (`/kaggle/input`, `../input`, ...) is walked recursively, through symlinks and
whatever the layout: `<dataset>/<any depth>/`, a Kaggle Model's `<model>/<framework>/<variation>/
<version>/` (framework lower-cased: `pytorch`), and today's `competitions/<slug>/`,
`datasets/<owner>/<slug>/`, `models/<owner>/<model>/...`, `notebooks/<owner>/<slug>/`. Each `.kpenc`
container is identified by its public manifest, each plain checkpoint (`.pt`, `.pth`) by the config
stored in it (read with mmap, so scanning does not read the weights). A config entry matches on
`name`, and on `fold`, `sha256` and `path` when it gives them (`path` as found, or by slug without
the layout's folders and owner, see `inputs.as_named`); each fold of a `folds:` group matches on
the group's name (or `NAME_f<k>`) and that fold. Missing, duplicate and unused files are
reported in one readable block.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import load_checkpoint
from .config import EnsembleConfig, EnsembleMember
from .errors import KernelError
from .files import sha256_file
from .inputs import as_named
from .kpenc import inspect, is_kpenc
from .model_config import ModelConfig

MODEL_SUFFIXES = (".kpenc", ".pt", ".pth")


class DiscoveryError(KernelError):
    """A required model is missing, or a model's identity matches several different files."""


@dataclass
class FoundModel:
    path: Path  # as found, under its root
    relative: str  # relative to its input root, for messages and `path` hints
    encrypted: bool
    name: str
    fold: int | None
    _sha256: str | None = None
    # A plain checkpoint's config, read (and checked) here once; an encrypted one's is read when
    # the runner decrypts it.
    config: ModelConfig | None = None

    @property
    def sha256(self) -> str:
        """SHA-256 of the plaintext checkpoint (from the manifest, or hashed on first use)."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256


@dataclass
class Discovery:
    matched: dict[str, FoundModel] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    duplicates: dict[str, list[FoundModel]] = field(default_factory=dict)
    unused: list[FoundModel] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        """One block for the log: what was found where, and what was not."""
        lines = [f"models: {len(self.matched)} found, {len(self.missing)} missing, "
                 f"{len(self.duplicates)} with duplicate copies, {len(self.unused)} unused files"]
        lines += [f"  found    {name:<24} {found.relative}" + (" (encrypted)" if found.encrypted
                                                               else "")
                  for name, found in self.matched.items()]
        lines += [f"  MISSING  {name}" for name in self.missing]
        for name, copies in self.duplicates.items():
            lines.append(f"  copies   {name:<24} identical files: "
                         + ", ".join(c.relative for c in copies) + " (using the first)")
        lines += [f"  unused   {found.relative} ({found.name}"
                  + (f", fold {found.fold})" if found.fold is not None else ")")
                  for found in self.unused]
        lines += [f"  skipped  {path}: {reason}" for path, reason in self.unreadable]
        return "\n".join(lines)


def _walk(root: Path, seen: set[str]):
    """Files under `root`, following symlinks, each real directory once (no loops)."""
    for directory, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs.sort()
        for name in sorted(files):
            if name.endswith(MODEL_SUFFIXES):
                yield Path(directory) / name


def _identify(path: Path, relative: str) -> FoundModel:
    if is_kpenc(path):
        manifest = inspect(path).manifest
        return FoundModel(path, relative, True, manifest.name or path.stem, manifest.fold,
                          manifest.sha256)
    config = ModelConfig.from_checkpoint(load_checkpoint(path, relative, mmap=True), relative)
    return FoundModel(path, relative, False, config.name or path.stem, config.fold, config=config)


def scan_input_roots(roots: list[str]) -> tuple[list[FoundModel], list[tuple[str, str]]]:
    """Every model file under the existing roots, and the files that could not be read."""
    found: list[FoundModel] = []
    unreadable: list[tuple[str, str]] = []
    seen: set[str] = set()
    for root in roots:
        if not Path(root).is_dir():
            continue
        for path in _walk(Path(root), seen):
            relative = path.relative_to(root).as_posix()
            try:
                found.append(_identify(path, relative))
            except (KernelError, OSError) as exc:
                unreadable.append((relative, str(exc).removeprefix(f"{relative}: ")))
    return found, unreadable


def _fits(member: EnsembleMember, found: FoundModel) -> bool:
    # A fold of a folds group may be saved under the group's name or as NAME_f<k>.
    entry = member.entry
    return (found.name in (entry.name, member.label)
            and (member.fold is None or found.fold == member.fold)
            and (entry.path is None
                 or entry.path.strip("/") in (found.relative, as_named(found.relative)))
            and (entry.sha256 is None or found.sha256 == entry.sha256))


def match_models(config: EnsembleConfig, found: list[FoundModel],
                 unreadable: list[tuple[str, str]] | None = None) -> Discovery:
    """Match config entries (each fold of a folds group apart, by name and fold) to files; raise
    DiscoveryError when an identity matches different files. Results are keyed by the member's
    label (NAME, or NAME_f<k> for a fold). Call `check_missing` after logging the report."""
    discovery = Discovery(unreadable=list(unreadable or []))
    used: set[int] = set()
    for member in config.members():
        i, label = member.index, member.label
        candidates = [f for f in found if _fits(member, f)]
        if not candidates:
            discovery.missing.append(label)
            continue
        if len(candidates) > 1 and len({c.sha256 for c in candidates}) > 1:
            raise DiscoveryError(
                f"models[{i}] {label!r}: {len(candidates)} different files match ("
                + ", ".join(c.relative for c in candidates)
                + f"); add fold, sha256 or path to models[{i}] to pick one"
            )
        if len(candidates) > 1:
            discovery.duplicates[label] = candidates
        discovery.matched[label] = candidates[0]
        used.update(id(c) for c in candidates)
    discovery.unused = [f for f in found if id(f) not in used]
    return discovery


def check_missing(discovery: Discovery, config: EnsembleConfig) -> None:
    """Raise DiscoveryError if a required model (or fold), or every model, is missing."""
    required = [m for m in config.members()
                if m.entry.required and m.label in discovery.missing]
    if required:
        folds = [f"models[{m.index}].folds" for m in required if m.entry.folds is not None]
        raise DiscoveryError(
            f"required model(s) {', '.join(m.describe() for m in required)} not found "
            "under the input roots; attach the dataset that holds them, "
            + (f"list only the folds you have in {', '.join(dict.fromkeys(folds))}, " if folds
               else "")
            + "or set required: false to run without them"
        )
    if not discovery.matched:
        raise DiscoveryError("none of the config's models was found under the input roots; "
                             "attach the model datasets to the kernel")

