"""A shard's output checked before it is used, and the checked shards put together into exactly
the files `kernelpack predict` writes.

A downloaded output is used only when its manifest (`shard.json`, written last by the shard
kernel) names this shard, lists exactly the shard's ids in order and exactly its members, and
every array it lists is there, a plain .npy of the right shape and dtype whose SHA-256 is the
one in the manifest. Anything else (a run that stopped before its manifest, an output changed on
the way, one from other work) is refused with the reason.

Assembly takes every shard's member arrays into one rows x classes array per member, then
hands them to `predict`'s own pieces: its per-entry blend (a folds group's out-of-fold rows
included) and its writer. The whole blend of test rows is summed from the shards' weighted
blends, row by row, with the blend's own formula. Nothing is written until every shard is
there and checked, and each file goes into place with a rename.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference_core.blend import BLEND_EPS
from inference_core.files import sha256_file
from inference_core.top_k import TopK, TopKRows

from ..errors import PredictError
from ..weights.predict import HostPrediction, per_entry_arrays, write_predictions
from .plan import MemberWork, Rows, Shard

MANIFEST = "shard.json"  # as the shard kernel names it (shard_entry.MANIFEST)
MANIFEST_FORMAT = 1


class OutputRejected(PredictError):
    """A shard's output failed its check: it is not used, and the shard runs again."""


@dataclass(frozen=True)
class _Member:
    """What predict's per-entry blend reads of a member."""

    group: str
    fold: int | None
    weight: float


def _array(folder: Path, entry: dict, expected_file: str, shape: tuple[int, ...], what: str,
           dtype: type = np.float64) -> np.ndarray:
    named = entry.get("file") if isinstance(entry, dict) else None
    if named != expected_file:
        raise OutputRejected(f"{what}: the manifest names {named!r}, expected "
                             f"{expected_file!r}")
    path = folder / expected_file
    if path.is_symlink() or not path.is_file():
        raise OutputRejected(f"{what}: {expected_file} is missing from the output")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise OutputRejected(f"{what}: {expected_file} has SHA-256 {digest[:16]}..., the "
                             f"manifest says {str(entry.get('sha256'))[:16]}...: it changed "
                             "after the kernel wrote it")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise OutputRejected(f"{what}: {expected_file} is not a readable .npy ({exc})") from None
    if array.shape != shape or array.dtype != dtype:
        raise OutputRejected(f"{what}: {expected_file} is {array.dtype} {array.shape}, expected "
                             f"{np.dtype(dtype)} {shape}")
    return array


def check_output(folder: Path, shard: Shard, rows: Rows) -> dict:
    """The manifest of a shard's output in `folder`, once everything in it checked out;
    OutputRejected with the reason otherwise."""
    path = folder / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise OutputRejected(f"shard {shard.name}: no {MANIFEST} in its output: the run "
                             "stopped before it finished writing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise OutputRejected(f"shard {shard.name}: {MANIFEST} is not readable JSON ({exc})"
                             ) from None
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("shard") != shard.name:
        raise OutputRejected(f"shard {shard.name}: {MANIFEST} is for shard "
                             f"{manifest.get('shard')!r} (format {manifest.get('format')!r})")
    ids = [rows.ids[r] for r in shard.rows]
    if manifest.get("ids") != ids:
        raise OutputRejected(f"shard {shard.name}: its output's ids are not the shard's "
                             f"{len(ids)} rows in order")
    labels = [m.label for m in shard.members]
    listed = manifest.get("members")
    if not isinstance(listed, list) or [m.get("label") for m in listed
                                        if isinstance(m, dict)] != labels:
        raise OutputRejected(f"shard {shard.name}: its output's members are not {labels}")
    width = manifest.get("num_classes")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise OutputRejected(f"shard {shard.name}: num_classes {width!r} is not a count")
    n = len(ids)
    if shard.top_k:
        for name, stem, entry in _top_k_entries(shard, manifest):
            _check_top_k(folder, entry, stem, n, min(shard.top_k, width), width,
                         f"shard {shard.name} {name}")
        return manifest
    for index, entry in enumerate(listed):
        _array(folder, entry, f"member-{index}.npy", (n, width),
               f"shard {shard.name} member {labels[index]}")
    if shard.blend:
        for key, shape in (("blend", (n, width)), ("weight", (n,))):
            if not isinstance(manifest.get(key), dict):
                raise OutputRejected(f"shard {shard.name}: the manifest lists no {key}.npy")
            _array(folder, manifest[key], f"{key}.npy", shape, f"shard {shard.name} {key}")
    return manifest


BLEND = ""  # the whole blend's key among a top-k shard's lists (no entry is named "")


def _top_k_files(shard: Shard) -> list[tuple[str, str]]:
    """(what, file stem) of each top-k list a shard sends, in the shard kernel's order: out of
    fold, each member's rows under its entry's name; on test rows, each entry's blend, then the
    whole blend (BLEND)."""
    if not shard.blend:
        return [(member.group, f"member-{index}") for index, member in enumerate(shard.members)]
    groups = list(dict.fromkeys(member.group for member in shard.members))
    return [*((group, f"entry-{j}") for j, group in enumerate(groups)), (BLEND, "blend")]


def _top_k_entries(shard: Shard, manifest: dict) -> list[tuple[str, str, object]]:
    """(what, file stem, manifest entry) of each list the shard must have sent."""
    listed = manifest.get("entries") if shard.blend else manifest.get("members")
    listed = listed if isinstance(listed, list) else []
    found = []
    for number, (name, stem) in enumerate(_top_k_files(shard)):
        if name == BLEND:
            found.append(("blend", stem, manifest.get("blend")))
            continue
        entry = listed[number] if number < len(listed) else None
        if shard.blend and (not isinstance(entry, dict) or entry.get("group") != name):
            raise OutputRejected(f"shard {shard.name}: its output's entries are not "
                                 f"{[n for n, _ in _top_k_files(shard) if n != BLEND]}")
        found.append((f"entry {name}" if shard.blend else f"member "
                      f"{shard.members[number].label}", stem, entry))
    return found


def _check_top_k(folder: Path, entry: object, stem: str, n: int, k: int, width: int,
                 what: str) -> None:
    arrays = entry if isinstance(entry, dict) else {}
    indices = _array(folder, arrays.get("indices"), f"{stem}.indices.npy", (n, k), what,
                     np.int32)
    _array(folder, arrays.get("probabilities"), f"{stem}.probabilities.npy", (n, k), what)
    if indices.size and (indices.min() < 0 or indices.max() >= width):
        raise OutputRejected(f"{what}: {stem}.indices.npy holds classes outside "
                             f"0..{width - 1}")


def _members_arrays(shards: Sequence[tuple[Shard, Path]], members: Sequence[MemberWork],
                    n_rows: int, width: int) -> list[np.ndarray]:
    by_label = {m.label: np.full((n_rows, width), np.nan) for m in members}
    for shard, folder in shards:
        rows = np.asarray(shard.rows, dtype=np.int64)
        for index, member in enumerate(shard.members):
            by_label[member.label][rows] = np.load(folder / f"member-{index}.npy")
    return [by_label[m.label] for m in members]


def _blend(shards: Sequence[tuple[Shard, Path]], n_rows: int, width: int, mode: str,
           ids: Sequence[str]) -> np.ndarray:
    """The whole blend from the shards' blends: sum_s w_s b_s / sum_s w_s (mean) or
    exp(sum_s w_s log b_s / sum_s w_s) (gmean), row by row, which is the blend's own formula over
    all members (each b_s is its members' weighted blend, w_s their summed weight)."""
    total = np.zeros((n_rows, width))
    weight = np.zeros(n_rows)
    for shard, folder in shards:
        rows = np.asarray(shard.rows, dtype=np.int64)
        blend, row_weight = np.load(folder / "blend.npy"), np.load(folder / "weight.npy")
        covered = row_weight > 0
        part = blend[covered]
        if mode == "gmean":   # the shard's blend is exp of its mean log: back to the log
            part = np.log(np.clip(part, BLEND_EPS, 1.0))
        total[rows[covered]] += part * row_weight[covered, None]
        weight[rows] += row_weight
    unblended = np.flatnonzero(weight <= 0)
    if unblended.size:
        row = int(unblended[0])
        raise PredictError(f"row {row} (id {ids[row]}): every model gave NaN or infinite "
                           "outputs; check the models' weights, nothing was written")
    total /= weight[:, None]
    return np.exp(total) if mode == "gmean" else total


def _top_k(probs: np.ndarray, k: int) -> TopK:
    rows = TopKRows(len(probs), k, probs.shape[1])
    rows.put(0, probs)
    return rows.result


def _gathered_top_k(shards: Sequence[tuple[Shard, Path]], n_rows: int, width: int,
                    ids: Sequence[str]) -> dict[str, TopK]:
    """Each top-k list (an entry's, the whole blend's under BLEND) put together from the
    shards' rows. Memory: rows x k per list."""
    k = min(shards[0][0].top_k, width)
    lists: dict[str, TopK] = {}
    filled: dict[str, np.ndarray] = {}
    for shard, folder in shards:
        rows = np.asarray(shard.rows, dtype=np.int64)
        for name, stem in _top_k_files(shard):
            if name not in lists:
                lists[name] = TopK(np.zeros((n_rows, k), dtype=np.int32), np.zeros((n_rows, k)))
                filled[name] = np.zeros(n_rows, dtype=bool)
            lists[name].indices[rows] = np.load(folder / f"{stem}.indices.npy")
            lists[name].probabilities[rows] = np.load(folder / f"{stem}.probabilities.npy")
            filled[name][rows] = True
    for name, done in filled.items():
        if not done.all():  # the plan covers every row: only a plan changed under us misses
            row = int(np.flatnonzero(~done)[0])
            raise PredictError(f"{name or 'the blend'}: row {row} (id {ids[row]}) is in no "
                               "shard's output; nothing was written, run the fan-out again")
    return lists


def assemble(shards: Sequence[tuple[Shard, Path]], members: Sequence[MemberWork], rows: Rows,
             *, mode: str, folds: np.ndarray | None, per_model: bool, output: Path,
             log: Callable[[str], None], top_k: int | None = None) -> list[Path]:
    """Write the files `predict` writes for this work from the checked shards: with test rows,
    `output` (the blend) and, with `per_model`, each entry's file beside it; out of fold
    (`folds`), each entry's file (a folds group's out-of-fold), not `output`. With `top_k`, as
    `predict --top-k` writes them (each row's `top_k` best classes, .npz). Returns the files
    written."""
    widths = {json.loads((folder / MANIFEST).read_text())["num_classes"] for _, folder in shards}
    if len(widths) != 1:
        raise PredictError(f"the shards disagree on the number of classes ({sorted(widths)}); "
                           "the models must share one label space")
    width, n_rows = widths.pop(), len(rows)
    ids = list(rows.ids)
    if shards and shards[0][0].top_k:
        # The shards sent top-k lists: no rows x classes array exists here either.
        lists = _gathered_top_k(shards, n_rows, width, ids)
        blend = lists.pop(BLEND, None)
        if folds is not None:
            for group in dict.fromkeys(m.group for m in members if m.fold is None):
                log(f"WARNING {group} is not a folds group: its --per-model file predicts "
                    "every row, not out-of-fold")
        per_group = lists if per_model or folds is not None else {}
        probs = blend if folds is None else np.empty((n_rows, 0))
        return _write(HostPrediction(ids, probs, list(range(width)), per_group), output,
                      keep_blend=folds is None)
    arrays = _members_arrays(shards, members, n_rows, width)
    per_group = {}
    if per_model or folds is not None:
        from inference_core.data import TestSet

        test_set = TestSet(ids=ids, paths=[Path(f) for f in rows.files], folder=Path("."))
        per_group = per_entry_arrays([_Member(m.group, m.fold, m.weight) for m in members],
                                     arrays, mode, folds, test_set, log)
    # Out of fold there is no whole blend (see docs/fanout.md): an empty one, not written.
    probs = _blend(shards, n_rows, width, mode, ids) if folds is None \
        else np.empty((n_rows, 0))
    if top_k:   # predict's own reduction, row by row: the same lists as its batches give
        per_group = {group: _top_k(array, top_k) for group, array in per_group.items()}
        probs = _top_k(probs, top_k) if folds is None else probs
    prediction = HostPrediction(ids, probs, list(range(width)), per_group)
    return _write(prediction, output, keep_blend=folds is None)


def _write(prediction: HostPrediction, output: Path, keep_blend: bool) -> list[Path]:
    """predict's own writer, into a folder beside the output; then each file renamed into
    place (out of fold, all but the whole blend's)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        written = write_predictions(prediction, scratch / output.name)
        keep = written if keep_blend else written[1:]
        final = []
        for path in keep:
            target = output.parent / path.name
            os.replace(path, target)
            final.append(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final
