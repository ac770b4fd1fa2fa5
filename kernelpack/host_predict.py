"""`kernelpack predict`: the kernel's own runtime, run on the host over a folder of images.

It reuses the runtime's pieces as the kernel runs them (`inference_core.runner.discover`,
`load_ensemble`, `prepared_batches`, and `EnsemblePredictor.predict` for preprocessing, TTA and
blending), without a budget: every view of every model runs on every image. The result is the
blend the kernel writes its submission from, one row per image, so a user can check it against
their own inference code (`compare`) before spending a Kaggle run, and one array per config
entry (a model, or all folds of a folds group) for `blend search --oof NAME=FILE`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from inference_core.blend import BlendAccumulator
from inference_core.data import TestSet, resolve_test_set
from inference_core.runner import discover, load_ensemble, prepared_batches

from .errors import KernelpackError


class PredictError(KernelpackError):
    """`kernelpack predict` cannot run on these inputs, or its output cannot be compared."""


@dataclass
class HostPrediction:
    ids: list[str]  # one per row: sample-submission order, or the sorted image names
    probs: np.ndarray  # rows x classes: the kernel's blend, before the submission rule
    classes: list
    per_group: dict[str, np.ndarray] = field(default_factory=dict)  # config entry -> its blend


def _test_set(config: dict, images: Path, sample: Path | None) -> TestSet:
    if not images.is_dir():
        raise PredictError(f"--images {images}: not a folder; pass the folder of test images")
    if sample is not None and not sample.is_file():
        raise PredictError(f"--sample {sample}: file not found; pass the sample submission CSV "
                           "whose id column orders the rows, or leave it out")
    test = {**config["test"], "images": str(images.resolve()),
            "sample_submission": str(sample.resolve()) if sample else None}
    return resolve_test_set(test, Path.cwd(), config["submission"]["id_column"])


def predict_images(config: dict, images: Path, sample: Path | None = None,
                   model_roots: Sequence[Path] = (), key: bytes | None = None,
                   per_group: bool = False, log: Callable[[str], None] = print,
                   progress: bool = True) -> HostPrediction:
    """Blend the ensemble of `config` (validated) over the images in `images`.

    Models are found under `model_roots`, else under the config's input roots. With
    `per_group`, each config entry's members are also blended on their own (a folds group's
    folds as the kernel blends them, without the threshold shift)."""
    for root in model_roots:
        if not Path(root).is_dir():
            raise PredictError(f"--models {root}: not a folder; pass a folder that holds the "
                               "checkpoints (searched recursively)")
    roots = [str(root) for root in model_roots] or config["input_roots"]
    discovery = discover(config["models"], roots, log)
    test_set = _test_set(config, Path(images), sample)
    log(f"images: {len(test_set)} in {images}")
    ensemble = load_ensemble(config, discovery, key, log)
    n_classes = len(ensemble.classes)
    groups = list(dict.fromkeys(member.group for member in ensemble.members))
    probs = np.empty((len(test_set), n_classes))
    by_group = {group: np.empty_like(probs) for group in groups} if per_group else {}
    every_view = set(ensemble.units)
    bar = tqdm(total=len(test_set), desc="predict", unit="img", file=sys.stderr,
               disable=not progress)
    with torch.inference_mode():
        for (begin, end), prepared in prepared_batches(ensemble.predictor, test_set, config,
                                                       first=config["batch_size"]):
            if prepared.errors:
                raise PredictError(f"{prepared.errors[0]}; the kernel would write a fallback "
                                   "row for it, which no reference matches: fix or remove it")
            blend = BlendAccumulator(end - begin, n_classes, config["blend"])
            group_blends = {g: BlendAccumulator(end - begin, n_classes, config["blend"])
                            for g in by_group}
            ensemble.predictor.predict(prepared, every_view, blend,
                                       per_group=group_blends if per_group else None)
            probs[begin:end] = blend.result()
            for group, accumulator in group_blends.items():
                by_group[group][begin:end] = accumulator.result()
            bar.update(end - begin)
    bar.close()
    return HostPrediction(list(test_set.ids), probs, ensemble.classes, by_group)


def per_group_path(output: Path, group: str) -> Path:
    """Where `--per-model` writes a config entry's array: `PREDS.<name>.npy` beside PREDS.npy."""
    if "/" in group or "\\" in group:
        raise PredictError(f"model name {group!r} holds a path separator; it cannot name the "
                           "--per-model file; rename the config entry")
    return output.with_name(f"{output.stem}.{group}.npy")


def write_predictions(prediction: HostPrediction, output: Path) -> list[Path]:
    """The blend to `output` (.npy), and each config entry's blend beside it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, prediction.probs)
    written = [output]
    for group, probs in prediction.per_group.items():
        path = per_group_path(output, group)
        np.save(path, probs)
        written.append(path)
    return written


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
    try:
        reference = np.load(reference_path, allow_pickle=False)
    except FileNotFoundError:
        raise PredictError(f"--compare {reference_path}: file not found; pass your own "
                           "predictions saved with numpy.save") from None
    except ValueError as exc:
        raise PredictError(f"--compare {reference_path}: not a .npy array ({exc}); save your "
                           "predictions with numpy.save") from None
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
