"""Train a small K-fold ensemble on a digits competition, on CPU, in one to two minutes.

Every (architecture, fold) pair becomes one kernelpack checkpoint named `<stem>_f<fold>`; the
out-of-fold probabilities of each architecture are saved as `<stem>.npy`, so blend weights and
thresholds can be fitted offline (`kernelpack blend search`, `kernelpack threshold search`)
without ever touching the test set. Multiclass competitions train with softmax cross-entropy;
given `classes`, a multilabel one (space-separated labels) trains with sigmoid outputs.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.model_selection import StratifiedKFold
from torch import nn

from inference_core.checkpoint import save_checkpoint
from inference_core.config import SubmissionSection
from inference_core.model_factory import create_model
from kernelpack.search.metrics import f2, label_mask

NUM_CLASSES = 10
INPUT_SIZE = 32
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
DEFAULT_ARCHS = ("small_cnn", "torchvision.resnet18")
DEFAULT_EPOCHS = 6
# The kernel's default rule: what the multilabel models' validation F2 is reported at.
DEFAULT_RULE = SubmissionSection(format="multilabel")
MAX_LR = 3e-3
WEIGHT_DECAY = 0.05


@dataclass(frozen=True)
class TrainedModel:
    name: str
    arch: str
    fold: int
    path: Path
    val_score: float  # accuracy (multiclass) or F2 at threshold 0.5 (multilabel) on its fold
    seconds: float


def model_stem(arch: str, multilabel: bool = False) -> str:
    """`torchvision.resnet18` -> `torchvision_resnet18` (`..._attributes` when multilabel), the
    OOF name of the architecture and the start of its checkpoint names."""
    return arch.replace(".", "_") + ("_attributes" if multilabel else "")


def oof_filename(arch: str, multilabel: bool = False) -> str:
    """`torchvision.resnet18` -> `torchvision_resnet18.npy`."""
    return model_stem(arch, multilabel) + ".npy"


def target_matrix(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Space-separated labels -> a rows x classes 0/1 float32 matrix."""
    column = {c: j for j, c in enumerate(classes)}
    targets = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for row, text in enumerate(labels):
        for label in text.split():
            targets[row, column[label]] = 1.0
    return targets


def load_train(competition_dir: Path) -> tuple[pd.DataFrame, torch.Tensor]:
    """train.csv and its images as one float tensor (N, 3, 32, 32) in 0..1, in train.csv order.

    Images are read the way the kernel reads them (RGB, stretched to the input size), so training
    and inference see the same pixels.
    """
    competition_dir = Path(competition_dir)
    # Labels stay strings: digits, or space-separated attributes ("" for none).
    table = pd.read_csv(competition_dir / "train.csv", dtype=str, keep_default_na=False)
    arrays = []
    for image_id in table["id"]:
        with Image.open(competition_dir / "train" / f"{image_id}.png") as image:
            image = image.convert("RGB")
            if image.size != (INPUT_SIZE, INPUT_SIZE):
                image = image.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(image))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    return table, pixels.contiguous()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotation, zoom and shift; no flips, since a mirrored 2 is no longer a 2."""
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-math.radians(10), math.radians(10))
    zoom = uniform(0.9, 1.1)
    shift = torch.stack([uniform(-0.125, 0.125), uniform(-0.125, 0.125)], dim=1)  # +-2 px
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    theta = torch.cat([theta, shift.unsqueeze(2)], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Zero padding is black, the background of the digits before normalisation.
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                  activation: str = "softmax") -> np.ndarray:
    """Softmax (or sigmoid) probabilities (N, classes) as float32 for images in 0..1."""
    model.eval()
    chunks = [model(_normalise(batch)) for batch in x.split(batch_size)]
    logits = torch.cat(chunks)
    probs = logits.sigmoid() if activation == "sigmoid" else F.softmax(logits, dim=1)
    return probs.numpy().astype(np.float32)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
         generator: torch.Generator) -> None:
    # Float targets are multilabel (one 0/1 column per class), integer ones class indices.
    loss_fn = F.binary_cross_entropy_with_logits if y.is_floating_point() else F.cross_entropy
    # Near-equal batches instead of a ragged last one: BatchNorm cannot train on a batch of one.
    n_batches = max(1, math.ceil(len(y) / batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=MAX_LR, total_steps=epochs * n_batches)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for idx in order.tensor_split(n_batches):
            inputs = _normalise(_augment(x[idx], generator))
            loss = loss_fn(model(inputs), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def train_ensemble(competition_dir: Path, models_dir: Path, oof_dir: Path, *,
                   archs: Sequence[str] = DEFAULT_ARCHS, folds: int = 3,
                   epochs: int = DEFAULT_EPOCHS, batch_size: int = 64, seed: int = 0,
                   classes: Sequence[str] | None = None,
                   log: Callable[[str], None] = print) -> list[TrainedModel]:
    """Train every arch on every fold; write `<name>.pt` checkpoints to `models_dir` and the
    out-of-fold probabilities, fold indices and labels to `oof_dir`. With `classes`, the
    competition is multilabel over those classes."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    models_dir, oof_dir = Path(models_dir), Path(oof_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    oof_dir.mkdir(parents=True, exist_ok=True)

    table, pixels = load_train(competition_dir)
    multilabel = classes is not None
    if multilabel:
        targets = target_matrix(table["label"], classes)
        labels = torch.from_numpy(targets)
        classes = list(classes)
    else:
        labels = torch.tensor(table["label"].astype(int).to_numpy(), dtype=torch.long)
        classes = list(range(NUM_CLASSES))
    activation = "sigmoid" if multilabel else "softmax"

    def score(probs: np.ndarray, rows: np.ndarray) -> float:
        if multilabel:
            return f2(label_mask(probs, DEFAULT_RULE), targets[rows] > 0)
        return float((probs.argmax(1) == labels.numpy()[rows]).mean())

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of_row = np.empty(len(table), dtype=np.int64)
    for fold, (_, val_idx) in enumerate(splitter.split(np.zeros(len(table)), table["label"])):
        fold_of_row[val_idx] = fold
    np.save(oof_dir / "folds.npy", fold_of_row)
    table[["id", "label"]].to_csv(oof_dir / "labels.csv", index=False)

    trained: list[TrainedModel] = []
    for arch in archs:
        oof = np.zeros((len(table), len(classes)), dtype=np.float32)
        for fold in range(folds):
            name = f"{model_stem(arch, multilabel)}_f{fold}"
            start = time.perf_counter()
            train_idx = torch.from_numpy(np.flatnonzero(fold_of_row != fold))
            val_idx = np.flatnonzero(fold_of_row == fold)
            # One seed per fold: initial weights, batch order and augmentation are reproducible.
            torch.manual_seed(seed * 1000 + fold)
            generator = torch.Generator().manual_seed(seed * 1000 + fold)
            model = create_model(arch, num_classes=len(classes))
            _fit(model, pixels[train_idx], labels[train_idx], epochs=epochs,
                 batch_size=batch_size, generator=generator)
            oof[val_idx] = predict_proba(model, pixels[torch.from_numpy(val_idx)],
                                         activation=activation)
            val_score = score(oof[val_idx], val_idx)
            config = {"name": name, "fold": fold, "input_size": INPUT_SIZE, "resize": "stretch",
                      "mean": list(MEAN), "std": list(STD), "activation": activation,
                      "classes": classes}
            path = save_checkpoint(models_dir / f"{name}.pt", arch, len(classes), config, model)
            seconds = time.perf_counter() - start
            log(f"{name}: val {score_name(multilabel)} {val_score:.3f} in {seconds:.1f} s")
            trained.append(TrainedModel(name, arch, fold, path, val_score, seconds))
        np.save(oof_dir / oof_filename(arch, multilabel), oof)
        log(f"{arch}: out-of-fold {score_name(multilabel)} "
            f"{score(oof, np.arange(len(table))):.3f}")
    return trained


def score_name(multilabel: bool) -> str:
    return "F2@0.5" if multilabel else "acc"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.digits.train", description=__doc__.splitlines()[0])
    parser.add_argument("--competition", type=Path, required=True,
                        help="folder with train.csv and train/*.png")
    parser.add_argument("--models", type=Path, required=True, help="checkpoints go here")
    parser.add_argument("--oof", type=Path, required=True,
                        help="out-of-fold probabilities, folds.npy and labels.csv go here")
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS))
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", nargs="+", default=None,
                        help="multilabel: the classes, in output order (e.g. even prime ge5 "
                             "loop for digits-attributes)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    trained = train_ensemble(args.competition, args.models, args.oof, archs=args.archs,
                             folds=args.folds, epochs=args.epochs, batch_size=args.batch_size,
                             seed=args.seed, classes=args.classes)
    print(f"trained {len(trained)} models in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
