"""Shards: which members of the ensemble run on which rows, each named by what it computes.

`kernelpack predict --per-model` runs every member on every row. The fan-out cuts that work:

- test rows (no `--folds`): every member on every row, cut into row slices of `rows_per_shard`
  and, across members, into groups of `models_per_shard` (a row slice's blend is then the sum of
  its member groups' weighted blends);
- out-of-fold (`--folds`): a folds group's fold model only on the rows it held out, in slices of
  `rows_per_shard`; a plain entry (not a folds group) on every row, as `predict` does.

A shard's name is the SHA-256 of everything its output depends on: the kernel's code (the
bundled runtime and the user's code), the ensemble config (preprocessing choices, TTA, blend
modes, precision), each member's label, weight and checkpoint SHA-256, the rows (ids, image
files and their sizes) and where the images lie on Kaggle. The same work gets the same name, so a
verified output is reused on the next run, and anything that changes the numbers changes the
name, so a stale output is never picked up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import PredictError

NAME_PREFIX = "s"
HASH_CHARS = 20  # 80 bits: no two shards of one fan-out, or of a user's fan-outs, share a name


@dataclass(frozen=True)
class MemberWork:
    """One member as the host found it: what the kernel must load and at which weight."""

    label: str
    group: str
    fold: int | None  # its fold, when its entry is a folds group
    weight: float
    sha256: str  # of the checkpoint (the plaintext's, for an encrypted one)


@dataclass(frozen=True)
class Rows:
    """The rows of `predict`, in its order: ids, image files under the images folder, sizes."""

    ids: tuple[str, ...]
    files: tuple[str, ...]
    sizes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Shard:
    name: str
    members: tuple[MemberWork, ...]
    rows: tuple[int, ...]  # indices into Rows
    blend: bool  # its blend and row weights are assembled (test rows), or not (out-of-fold)
    # With --top-k, where the shard holds what each list is of (see plan_shards): its rows come
    # back as their k best classes.
    top_k: int | None = None

    def spec(self, rows: Rows, images: str) -> dict:
        """What the shard kernel is given (plain JSON)."""
        return {"name": self.name, "images": images, "blend": self.blend, "top_k": self.top_k,
                "ids": [rows.ids[r] for r in self.rows],
                "files": [rows.files[r] for r in self.rows],
                "members": [{"label": m.label, "weight": m.weight, "sha256": m.sha256,
                             "fold": m.fold, "group": m.group} for m in self.members]}

    def describe(self) -> str:
        labels = ", ".join(m.label for m in self.members)
        return f"{self.name} ({labels}; {len(self.rows)} rows)"


def _slices(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[start:start + size] for start in range(0, len(rows), size)]


def _name(digest_of_code: str, config: dict, members: Sequence[MemberWork], rows: Rows,
          indices: Sequence[int], images: str, blend: bool, top_k: int | None) -> str:
    content = {"code": digest_of_code, "config": config, "images": images, "blend": blend,
               "members": [[m.label, m.weight, m.sha256] for m in members],
               "rows": [[rows.ids[r], rows.files[r], rows.sizes[r]] for r in indices]}
    if top_k is not None:  # absent otherwise: the names of dense shards stay as they were
        content["top_k"] = top_k
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return f"{NAME_PREFIX}{hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]}"


def plan_shards(members: Sequence[MemberWork], rows: Rows, folds: np.ndarray | None, *,
                config: dict, code_digest: str, images: str, rows_per_shard: int,
                models_per_shard: int, top_k: int | None = None) -> list[Shard]:
    """The shards of the work, in a stable order (member groups, then row slices). With
    `top_k`, a shard brings back each row's `top_k` best classes only where it holds what the
    lists are of: out of fold (`folds`) always (a row's value is one member's, so its top-k is
    the entry's); on test rows when every shard holds every member (`models_per_shard` at least
    the members), so that it blends each entry and the whole ensemble itself. Otherwise shards
    of test rows bring back every class and the host reduces, since an entry's or the whole
    blend's best classes are not the best of a part's."""
    if rows_per_shard < 1 or models_per_shard < 1:
        raise PredictError(f"rows per shard {rows_per_shard} and models per shard "
                           f"{models_per_shard}: each must be 1 or more")
    if not members:
        raise PredictError("no model of the config was found (or every weight is 0); nothing "
                           "to fan out")
    every_row = np.arange(len(rows))
    work: list[tuple[tuple[MemberWork, ...], np.ndarray, bool]] = []
    if folds is None:
        for start in range(0, len(members), models_per_shard):
            group = tuple(members[start:start + models_per_shard])
            work += [(group, piece, True) for piece in _slices(every_row, rows_per_shard)]
    else:
        plain = [m for m in members if m.fold is None]
        for member in (m for m in members if m.fold is not None):
            held_out = np.flatnonzero(folds == member.fold)
            work += [((member,), piece, False) for piece in _slices(held_out, rows_per_shard)]
        for start in range(0, len(plain), models_per_shard):
            group = tuple(plain[start:start + models_per_shard])
            work += [(group, piece, False) for piece in _slices(every_row, rows_per_shard)]
    shards = []
    for group, piece, blend in work:
        indices = tuple(int(r) for r in piece)
        k = top_k if not blend or len(group) == len(members) else None
        shards.append(Shard(_name(code_digest, config, group, rows, indices, images, blend, k),
                            group, indices, blend, k))
    return shards
