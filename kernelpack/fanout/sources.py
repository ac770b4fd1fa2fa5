"""Which of the config's Kaggle sources each shard's kernel attaches: every source that holds
none of the ensemble's checkpoints (the competition, image datasets), and of those that hold
checkpoints, only the ones holding the shard's own members. A Kaggle session mounts (and for a
Model or dataset, copies in) everything attached, so a shard of one fold model does not wait for
six architectures' weights.

Where a checkpoint lives on Kaggle is read from where it lies here: the `dataset-metadata.json`
of a folder it lies in (the folder `kernelpack dataset push` pushed, which names the dataset), else
the slug its path starts with as the kernel would name it (`datasets/alice/imet-models/a.pt` and
`imet-models/a.pt` both say `imet-models`), else the name of the folder it was found under. Only
a name that one source of the config answers to counts. A member whose source is not known this
way makes its shards attach every source: a missing source would fail the shard, an extra one
only costs time.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from inference_core.discovery import FoundModel
from inference_core.inputs import as_named

from ..config import KernelSection
from ..metadata import DATASET_METADATA

SOURCE_FIELDS = ("competition_sources", "dataset_sources", "kernel_sources", "model_sources")
Source = tuple[str, str]  # (kernel-metadata.json field, ref)
MAX_METADATA_BYTES = 1 << 20


def source_slug(field_name: str, ref: str) -> str:
    """The folder name Kaggle mounts a source under: a competition's ref is its slug; a
    dataset's or notebook's is OWNER/SLUG; a Model's is OWNER/MODEL/FRAMEWORK/VARIATION[/N]."""
    if field_name == "competition_sources":
        return ref
    parts = ref.split("/")
    return parts[1] if len(parts) > 1 else ref


def _root(found: FoundModel) -> Path:
    """The folder the checkpoint was found under (an input root, or --models)."""
    root = found.path
    for _ in PurePosixPath(found.relative).parts:
        root = root.parent
    return root


def _pushed_ids(found: FoundModel) -> list[str]:
    """The dataset ids of the pushed folders the checkpoint lies in, nearest first."""
    root = _root(found)
    ids = []
    folder = found.path.parent
    while True:
        path = folder / DATASET_METADATA
        # A regular file of a sane size only: a FIFO would block, a huge file fill memory.
        if path.is_file() and path.stat().st_size <= MAX_METADATA_BYTES:
            # Not one that names a dataset: passed over.
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                ids.append(str(json.loads(path.read_text(encoding="utf-8"))["id"]))
        if folder == root or folder == folder.parent:
            return ids
        folder = folder.parent


def _slugs(found: FoundModel) -> list[str]:
    """Names the checkpoint's source may go by, most telling first."""
    named = PurePosixPath(as_named(found.relative)).parts
    return ([named[0]] if len(named) > 1 else []) + [_root(found).name]


@dataclass
class ShardSources:
    """The sources of the config's kernel section, and which of them hold whose checkpoints."""

    kernel: KernelSection
    holders: dict[Source, set[str]] = field(default_factory=dict)  # source -> member labels
    unplaced: dict[str, str] = field(default_factory=dict)  # label -> where it was found

    @classmethod
    def locate(cls, kernel: KernelSection, found: Mapping[str, FoundModel],
               read_paths: Iterable[str] = ()) -> ShardSources:
        """Place each member's checkpoint (label -> where discovery found it) in a source.
        `read_paths` are the input paths every shard reads (its images, as the config names
        them): their sources stay attached even if they hold checkpoints too."""
        sources = [(name, ref) for name in SOURCE_FIELDS for ref in getattr(kernel, name)]
        plan = cls(kernel)
        read = {PurePosixPath(as_named(path)).parts[0] for path in read_paths
                if path and not PurePosixPath(path).is_absolute()}
        for label, model in found.items():
            placed = None
            for dataset_id in _pushed_ids(model):
                if ("dataset_sources", dataset_id) in sources:
                    placed = ("dataset_sources", dataset_id)
                    break
            for slug in [] if placed else _slugs(model):
                matches = [source for source in sources if source_slug(*source) == slug]
                if len(matches) == 1:
                    placed = matches[0]
                    break
            if placed is None:
                plan.unplaced[label] = model.relative
            elif source_slug(*placed) not in read:
                plan.holders.setdefault(placed, set()).add(label)
        return plan

    def for_shard(self, labels: Iterable[str]) -> dict[str, list[str]]:
        """The kernel-metadata.json source lists of a shard of these members."""
        labels = set(labels)
        every = not labels.isdisjoint(self.unplaced)

        def needed(source: Source) -> bool:
            holds = self.holders.get(source)
            return every or holds is None or not holds.isdisjoint(labels)

        return {name: [ref for ref in getattr(self.kernel, name) if needed((name, ref))]
                for name in SOURCE_FIELDS}

    def describe(self) -> str:
        """One log line: what a shard attaches."""
        if not self.holders:
            return "shard kernels attach every source of the config (none holds a checkpoint)"
        held = "; ".join(f"{ref} holds {', '.join(sorted(labels))}"
                         for (_, ref), labels in self.holders.items())
        line = f"shard kernels attach their own members' sources only ({held})"
        if self.unplaced:
            line += (f"; every source for {', '.join(sorted(self.unplaced))}, whose source is "
                     "not known (found at " + ", ".join(sorted(self.unplaced.values())) + ")")
        return line
