"""`kernelpack predict`: the kernel's own runtime, run on the host over a folder of images.

It reuses the runtime's pieces as the kernel runs them (`inference_core.runner.discover`,
`load_ensemble`, `prepared_batches`, and `EnsemblePredictor.predict` for preprocessing, TTA and
blending), without a budget: every view of every model runs on every image. The result is the
blend the kernel writes its submission from, one row per image, so a user can check it against
their own inference code (`compare`) before spending a Kaggle run, and one array per config
entry (a model, or all folds of a folds group; out-of-fold with each row's fold) for
`blend search --oof NAME=FILE`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from inference_core.blend import BlendAccumulator
from inference_core.config import EnsembleConfig
from inference_core.data import TestSet, resolve_test_set
from inference_core.discovery import Discovery
from inference_core.predict import Member
from inference_core.runner import discover, load_ensemble, prepared_batches
from inference_core.top_k import TopK, TopKRows
from inference_core.versions import DRIFT_PREFIX

from ..errors import PredictError
from ..outputs import check_output_file
from ..search.blend import blend_probs
from ..search.oof import load_npy, read_folds
from ..search.top_k import save_top_k


@dataclass
class HostPrediction:
    ids: list[str]  # one per row: sample-submission order, or the sorted image names
    # rows x classes: the kernel's blend, before the submission rule (with top_k: its top-k)
    probs: np.ndarray | TopK
    classes: list
    # config entry -> its blend (with top_k: its top-k)
    per_group: dict[str, np.ndarray | TopK] = field(default_factory=dict)
    drift: str | None = None  # the version drift line logged while loading, if any


def discover_models(config: EnsembleConfig, model_roots: Sequence[Path],
                    log: Callable[[str], None]) -> Discovery:
    """The config's models found under `model_roots` (--models), else its input roots."""
    for root in model_roots:
        if not Path(root).is_dir():
            raise PredictError(f"--models {root}: not a folder; pass a folder that holds the "
                               "checkpoints (searched recursively)")
    roots = [str(root) for root in model_roots] or config.input_roots
    return discover(config, roots, log)


def host_test_set(config: EnsembleConfig, images: Path, sample: Path | None) -> TestSet:
    """The rows `predict` runs, in its order: the config's test set with --images and --sample."""
    if not images.is_dir():
        raise PredictError(f"--images {images}: not a folder; pass the folder of test images")
    if sample is not None and not sample.is_file():
        raise PredictError(f"--sample {sample}: file not found; pass the sample submission CSV "
                           "whose id column orders the rows, or leave it out")
    test = dataclasses.replace(config.test, images=str(images.resolve()),
                               sample_submission=str(sample.resolve()) if sample else None)
    return resolve_test_set(test, Path.cwd(), config.submission.id_column)


def predict_images(config: EnsembleConfig, images: Path, sample: Path | None = None,
                   model_roots: Sequence[Path] = (), key: bytes | None = None,
                   per_model: bool = False, folds: Path | None = None,
                   log: Callable[[str], None] = print, progress: bool = True,
                   top_k: int | None = None) -> HostPrediction:
    """Blend the ensemble of `config` (validated) over the images in `images`.

    Models are found under `model_roots`, else under the config's input roots. With
    `per_model`, each config entry is also blended on its own, without its threshold shift (a
    folds group's folds as the kernel blends them); with `folds` too (each row's fold), a folds
    group's row comes from the one fold model that held it out: out-of-fold predictions.
    `folds` is a .npy or one-column CSV of fold indices, one per row. With `top_k`, the blend
    and each entry's arrays keep only each row's `top_k` best classes, reduced batch by batch,
    so that memory is rows x k, never rows x classes (32,000 classes x a million rows)."""
    discovery = discover_models(config, model_roots, log)
    test_set = host_test_set(config, Path(images), sample)
    fold_of_row = None if folds is None else read_folds(Path(folds), len(test_set))
    log(f"images: {len(test_set)} in {images}")
    drift: list[str] = []  # kept, to be shown beside --compare's difference

    def logged(line: str) -> None:
        if line.startswith(DRIFT_PREFIX):
            drift.append(line)
        log(line)

    ensemble = load_ensemble(config, discovery, key, logged)
    members = ensemble.members
    n_classes = len(ensemble.classes)
    dense_rows = 0 if top_k else len(test_set)
    probs = np.empty((dense_rows, n_classes))
    member_probs = [np.empty_like(probs) for _ in members] if per_model else []
    if top_k:
        if per_model and fold_of_row is not None:
            check_fold_coverage(members, fold_of_row, test_set.ids)
        blend_top = TopKRows(len(test_set), top_k, n_classes)
        group_top = {member.group: TopKRows(len(test_set), top_k, n_classes)
                     for member in members} if per_model else {}
    every_view = set(ensemble.units)
    bar = tqdm(total=len(test_set), desc="predict", unit="img", file=sys.stderr,
               disable=not progress)
    with torch.inference_mode():
        for (begin, end), prepared in prepared_batches(ensemble.predictor, test_set, config,
                                                       first=config.batch_size):
            if prepared.errors:
                raise PredictError(f"{prepared.errors[0]}; the kernel would write a fallback "
                                   "row for it, which no reference matches: fix or remove it")
            blend = BlendAccumulator(end - begin, n_classes, config.blend)
            if top_k and per_model:  # this batch's rows only, reduced to top-k below
                per_member = {m: np.empty((end - begin, n_classes)) for m in range(len(members))}
            else:
                per_member = {m: array[begin:end] for m, array in enumerate(member_probs)}
            ensemble.predictor.predict(prepared, every_view, blend,
                                       per_member=per_member if per_model else None)
            unblended = np.flatnonzero(blend.row_weight <= 0)
            if unblended.size:
                row = begin + int(unblended[0])
                raise PredictError(f"row {row} (id {test_set.ids[row]}): every model gave NaN or "
                                   "infinite outputs; check the models' weights, nothing was "
                                   "written")
            if top_k:
                blend_top.put(begin, blend.result())
            else:
                probs[begin:end] = blend.result()
            if top_k and per_model:
                batch_folds = None if fold_of_row is None else fold_of_row[begin:end]
                # Warnings (a plain entry is not out-of-fold) are logged with the first batch.
                by_group = per_entry_arrays(members, [per_member[m] for m in range(len(members))],
                                      config.blend, batch_folds, test_set,
                                      log if begin == 0 else lambda _: None)
                for group, group_probs in by_group.items():
                    group_top[group].put(begin, group_probs)
            bar.update(end - begin)
    bar.close()
    if summary := ensemble.predictor.left_out_summary():
        log(f"WARNING {summary}")
    if top_k:
        return HostPrediction(list(test_set.ids), blend_top.result, ensemble.classes,
                              {group: rows.result for group, rows in group_top.items()},
                              drift[0] if drift else None)
    by_group = per_entry_arrays(members, member_probs, config.blend, fold_of_row, test_set, log) \
        if per_model else {}
    return HostPrediction(list(test_set.ids), probs, ensemble.classes, by_group,
                          drift[0] if drift else None)


def per_entry_arrays(members: list[Member], member_probs: list[np.ndarray], mode: str,
                     fold_of_row: np.ndarray | None, test_set: TestSet,
                     log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """Each config entry's blend of its members, or its out-of-fold rows given each row's fold."""
    by_group = {}
    for group in dict.fromkeys(member.group for member in members):
        indices = [m for m, member in enumerate(members) if member.group == group]
        if fold_of_row is not None and members[indices[0]].fold is not None:
            by_group[group] = _out_of_fold(group, [members[m] for m in indices],
                                           [member_probs[m] for m in indices], fold_of_row,
                                           test_set)
            continue
        if fold_of_row is not None:
            log(f"WARNING {group} is not a folds group: its --per-model file predicts every row, "
                "not out-of-fold")
        by_group[group] = blend_probs([member_probs[m] for m in indices],
                                      [members[m].weight for m in indices], mode)
    return by_group


def _out_of_fold(group: str, members: list[Member], probs: list[np.ndarray], folds: np.ndarray,
                 test_set: TestSet) -> np.ndarray:
    """Each row as predicted by the fold model of the group that held that row out."""
    result = np.full_like(probs[0], np.nan)
    for member, member_probs in zip(members, probs, strict=True):
        rows = folds == member.fold
        result[rows] = member_probs[rows]
    uncovered = np.flatnonzero(np.isnan(result[:, 0]))
    if uncovered.size:
        raise _fold_gap(group, members, folds, int(uncovered[0]), test_set.ids)
    return result


def _fold_gap(group: str, members: Sequence[Member], folds: np.ndarray, first: int,
              ids: Sequence[str]) -> PredictError:
    """The error for row `first`, whose fold has no model in the folds group."""
    have = ", ".join(str(member.fold) for member in members)
    return PredictError(f"--folds: row {first} (id {ids[first]}) is in fold "
                        f"{folds[first]}, but {group} has no model of that fold (found folds "
                        f"{have}); add it to the folds group and --models, or leave those rows "
                        "out of --sample")


def check_fold_coverage(members: Sequence[Member], folds: np.ndarray, ids: Sequence[str]
                        ) -> None:
    """Before any image runs (top-k files are made batch by batch; a fan-out pushes nothing
    first): every row's fold has a model in each folds group. `members` need only `group` and
    `fold`."""
    for group in dict.fromkeys(member.group for member in members):
        in_group = [member for member in members if member.group == group]
        if in_group[0].fold is None:
            continue
        uncovered = np.flatnonzero(~np.isin(folds, [member.fold for member in in_group]))
        if uncovered.size:
            raise _fold_gap(group, in_group, folds, int(uncovered[0]), ids)


def per_group_path(output: Path, group: str) -> Path:
    """Where `--per-model` writes a config entry's array: `PREDS.<name>.npy` beside PREDS.npy
    (`PREDS.<name>.npz` beside a top-k PREDS.npz)."""
    if "/" in group or "\\" in group:
        raise PredictError(f"model name {group!r} holds a path separator; it cannot name the "
                           "--per-model file; rename the config entry")
    suffix = ".npz" if output.suffix == ".npz" else ".npy"
    return output.with_name(f"{output.stem}.{group}{suffix}")


def check_prediction_outputs(output: Path, groups: Sequence[str] | None,
                             inputs: Sequence[Path | None]) -> None:
    """Before any work: `output` and, for `groups` (--per-model), each entry's file beside it
    are files to write and none of the command's `inputs`."""
    check_output_file(output, inputs=inputs, makes_folder=True)
    for group in groups or ():
        check_output_file(per_group_path(output, group), "--per-model", inputs=inputs,
                          makes_folder=True)


def write_predictions(prediction: HostPrediction, output: Path) -> list[Path]:
    """The blend to `output` (exactly that path, in .npy format; top-k lists as a top-k .npz,
    `kernelpack.search.top_k`), and each config entry's blend beside it. Arrays holding NaN or
    infinities are refused, naming the entry, before any is written: a blend fitted on them
    would be silently wrong."""
    arrays = {output: ("the blend", prediction.probs)}
    for group, probs in prediction.per_group.items():
        arrays[per_group_path(output, group)] = (f"entry {group!r}", probs)
    for path, (what, probs) in arrays.items():
        values = probs.probabilities if isinstance(probs, TopK) else probs
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if bad.size:
            raise PredictError(f"{path}: {what} holds NaN or infinite probabilities in {bad.size} "
                               f"rows (first: row {bad[0]}, id {prediction.ids[bad[0]]}); check "
                               "that model's weights and inputs, nothing was written")
    output.parent.mkdir(parents=True, exist_ok=True)
    for path, (_, probs) in arrays.items():
        with open(path, "wb") as handle:  # np.save(path) would add .npy to another name
            if isinstance(probs, TopK):
                save_top_k(handle, probs, len(prediction.classes))
            else:
                np.save(handle, probs)
    return list(arrays)


@dataclass
class Comparison:
    max_difference: float
    row: int
    column: int

    def within(self, tolerance: float) -> bool:
        return self.max_difference <= tolerance


def compare_predictions(probs: np.ndarray, reference_path: Path) -> Comparison:
    """The largest absolute difference between `probs` and the array saved at `reference_path`,
    and where it is; a reference of another shape is refused with one line."""
    reference = load_npy(reference_path, f"--compare {reference_path}",
                         "pass your own predictions saved with numpy.save", PredictError)
    if reference.shape != probs.shape:
        raise PredictError(f"--compare {reference_path}: shape {reference.shape}, but the "
                           f"prediction is {probs.shape} (one row per image, one column per "
                           "class); save the reference in the same row order and width")
    difference = np.abs(probs - reference.astype(np.float64))
    if not np.all(np.isfinite(difference)):
        raise PredictError(f"--compare {reference_path}: holds NaN or infinite values; save "
                           "finite probabilities")
    row, column = np.unravel_index(int(np.argmax(difference)), difference.shape)
    return Comparison(float(difference[row, column]), int(row), int(column))
