"""Train the example's own model (`own_model/digitnet`) the way many competitors do: images read
with cv2, albumentations for augmentation and validation, a LightningModule-style checkpoint.

Nothing here uses kernelpack or inference_core: this is "the user's training code". Each fold is
saved as `{"epoch": ..., "state_dict": {"model.<key>": ...}}` (what Lightning writes when the
network is `self.model`), and the validation transform is saved with `A.to_dict`, so that
`kernelpack import-checkpoint --config digitnet.json --strip-prefix model.` brings both in.
The user's own validation predictions are kept per fold, for `kernelpack predict --compare`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

OWN_MODEL_DIR = Path(__file__).resolve().parent / "own_model"
PACKAGE = OWN_MODEL_DIR / "digitnet"
ARCH = "digitnet.net:build"
STEM = "digitnet"
INPUT_SIZE = 28  # not the PNGs' 32 px: the resize (INTER_AREA) is part of what must match
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
NUM_CLASSES = 10


def validation_transform() -> A.Compose:
    return A.Compose([
        A.Resize(INPUT_SIZE, INPUT_SIZE, interpolation=cv2.INTER_AREA),
        A.Normalize(mean=MEAN, std=STD),
        ToTensorV2(),
    ])


def training_transform() -> A.Compose:
    return A.Compose([
        A.Affine(rotate=(-10, 10), scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), p=1.0),
        *validation_transform().transforms,
    ])


def read_rgb(path: Path) -> np.ndarray:
    """cv2 reads BGR; the models see RGB."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _import_digitnet():
    sys.path.insert(0, str(OWN_MODEL_DIR))
    try:
        from digitnet import build
    finally:
        sys.path.remove(str(OWN_MODEL_DIR))
    return build


def _batch(images: list[np.ndarray], transform: A.Compose) -> torch.Tensor:
    return torch.stack([transform(image=image)["image"] for image in images]).float()


@torch.no_grad()
def _validate(model: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    model.eval()
    transform = validation_transform()
    return np.concatenate([model(_batch(images[i:i + 256], transform)).softmax(1).numpy()
                           for i in range(0, len(images), 256)])


@dataclass(frozen=True)
class OwnTraining:
    checkpoints: list[Path]  # one Lightning-style file per fold
    model_config: Path  # digitnet.json: the rest of the checkpoint config, for --config
    user_oof: list[Path]  # the user's own validation probabilities, one file per fold
    fold_ids: list[Path]  # the ids of each fold's held-out rows (a sample-submission CSV)
    val_scores: list[float]  # each fold's validation accuracy, from the user's own code
    seconds: list[float]


def train_own(competition_dir: Path, folds_file: Path, out_dir: Path, *, epochs: int = 4,
              seed: int = 0, log: Callable[[str], None] = print) -> OwnTraining:
    """Train DigitNet on every fold of `folds_file` (the demo's split) and save it as above."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build = _import_digitnet()
    table = pd.read_csv(Path(competition_dir) / "train.csv", dtype=str)
    images = [read_rgb(Path(competition_dir) / "train" / f"{i}.png") for i in table["id"]]
    labels = torch.tensor(table["label"].astype(int).to_numpy())
    fold_of_row = np.load(folds_file)
    augment = training_transform()
    result = OwnTraining([], out_dir / f"{STEM}.json", [], [], [], [])
    for fold in sorted(set(fold_of_row.tolist())):
        start = time.perf_counter()
        train_rows = np.flatnonzero(fold_of_row != fold)
        val_rows = np.flatnonzero(fold_of_row == fold)
        torch.manual_seed(seed * 1000 + fold)
        rng = np.random.default_rng(seed * 1000 + fold)
        model = build(NUM_CLASSES)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
        batches = max(1, math.ceil(len(train_rows) / 64))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3,
                                                       total_steps=epochs * batches)
        for _ in range(epochs):
            model.train()
            for rows in np.array_split(rng.permutation(train_rows), batches):
                x = _batch([images[r] for r in rows], augment)
                loss = F.cross_entropy(model(x), labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        probs = _validate(model, [images[r] for r in val_rows])
        accuracy = float((probs.argmax(1) == labels.numpy()[val_rows]).mean())
        checkpoint = out_dir / f"{STEM}_f{fold}.ckpt"
        torch.save({"epoch": epochs, "global_step": epochs * batches,
                    "hyper_parameters": {"lr": 3e-3, "width": 16},
                    "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
                   checkpoint)
        user_oof = out_dir / f"{STEM}_f{fold}.user.npy"
        np.save(user_oof, probs)
        ids = out_dir / f"fold{fold}_ids.csv"
        table.iloc[val_rows][["id"]].to_csv(ids, index=False)
        result.checkpoints.append(checkpoint)
        result.user_oof.append(user_oof)
        result.fold_ids.append(ids)
        result.val_scores.append(accuracy)
        result.seconds.append(time.perf_counter() - start)
        log(f"{STEM}_f{fold} (own code, albumentations + cv2): val acc {accuracy:.3f} in "
            f"{result.seconds[-1]:.1f} s")
    result.model_config.write_text(json.dumps({
        "input_size": INPUT_SIZE, "activation": "softmax", "classes": list(range(NUM_CLASSES)),
        "preprocess": {"decode": "cv2", "albumentations": A.to_dict(validation_transform())},
    }, indent=1))
    return result
