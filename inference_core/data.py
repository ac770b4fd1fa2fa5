"""Test images: find them under the input roots, decode them, and prepare them for a model.

The test ids come from the sample submission when the config names one (the order Kaggle scores
in), else from a glob over the test folder. Preprocessing follows the checkpoint's config:
`resize: stretch` makes `input_size` x `input_size`; `resize: keep_aspect` makes the longest side
`input_size` and rounds the other to a multiple of 16 (what stride-16/32 networks need), so a
batch may hold several shapes and is run shape by shape.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import TestSetError

SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class TestSet:
    ids: list[str]
    paths: list[Path]

    __test__ = False  # not a pytest test class despite the name

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Preprocess:
    """How one group of models wants its input; models with equal settings share one tensor."""

    input_size: int
    resize: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_checkpoint_config(cls, config: dict, name: str) -> Preprocess:
        try:
            size = int(config["input_size"])
            resize = config.get("resize", "stretch")
            mean = tuple(float(v) for v in config.get("mean", (0.485, 0.456, 0.406)))
            std = tuple(float(v) for v in config.get("std", (0.229, 0.224, 0.225)))
        except (KeyError, TypeError, ValueError) as exc:
            raise TestSetError(
                f"{name}: checkpoint config lacks a usable input_size/mean/std ({exc}); save the "
                "checkpoint with config input_size (int), mean and std (3 floats each)"
            ) from None
        if resize not in ("stretch", "keep_aspect"):
            raise TestSetError(f"{name}: checkpoint config resize must be 'stretch' or "
                               f"'keep_aspect', got {resize!r}")
        if resize == "keep_aspect" and size % SIZE_MULTIPLE:
            raise TestSetError(f"{name}: input_size {size} must be a multiple of {SIZE_MULTIPLE} "
                               "with resize: keep_aspect")
        return cls(size, resize, mean, std)


def find_input_root(roots: list[str]) -> Path:
    """The first input root that exists (`/kaggle/input` on Kaggle, `../input` in the sandbox)."""
    for root in roots:
        if Path(root).is_dir():
            return Path(root)
    raise TestSetError(
        f"no input root found (tried {', '.join(roots)}); attach the competition and model "
        "datasets to the kernel, or set input_roots in the config"
    )


def resolve_test_set(test: dict, input_root: Path, id_column: str) -> TestSet:
    """Ids and image paths of the test set described by the config's `test` section."""
    folder = input_root / test["images"]
    if not folder.is_dir():
        raise TestSetError(
            f"test folder {test['images']!r} not found under {input_root}; attach the competition "
            "data to the kernel or fix test.images in the config"
        )
    if test["sample_submission"]:
        ids = _ids_from_sample_submission(input_root / test["sample_submission"], id_column)
        paths = [_image_path(folder, image_id, test["extension"]) for image_id in ids]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise TestSetError(
                f"{len(missing)} of {len(ids)} test images listed in {test['sample_submission']} "
                f"are missing from {folder} (first: {missing[0]}); check test.extension"
            )
    else:
        paths = sorted(p for p in folder.glob(test["pattern"]) if p.is_file())
        if not paths:
            raise TestSetError(f"test folder {folder} has no files matching {test['pattern']!r}; "
                               "fix test.pattern in the config")
        ids = [p.stem for p in paths]
    return TestSet(ids=ids, paths=paths)


def _image_path(folder: Path, image_id: str, extension: str) -> Path:
    exact = folder / image_id
    return exact if exact.suffix and exact.is_file() else folder / f"{image_id}{extension}"


def _ids_from_sample_submission(path: Path, id_column: str) -> list[str]:
    if not path.is_file():
        raise TestSetError(f"sample submission {path} not found; attach the competition data or "
                           "fix test.sample_submission in the config")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if id_column not in (reader.fieldnames or []):
            raise TestSetError(f"{path}: no column {id_column!r} (columns: {reader.fieldnames}); "
                               "set submission.id_column in the config")
        return [row[id_column] for row in reader]


def decode_image(path: str | os.PathLike, at_least: int | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB; raises TestSetError naming the file if it cannot be decoded.

    With `at_least`, a JPEG is decoded straight at a reduced scale (1/2, 1/4 or 1/8, by the
    decoder's DCT scaling) whose sides all stay at least `at_least` pixels: a 640 px photo for a
    160 px model decodes several times faster, and resizing it then loses nothing."""
    try:
        with Image.open(path) as image:
            if at_least and image.format == "JPEG":
                image.draft("RGB", (at_least, at_least))
            return np.array(image.convert("RGB"))  # a writable copy, as torch wants
    except (OSError, ValueError) as exc:
        raise TestSetError(f"{path}: cannot decode image ({exc})") from None


def target_size(height: int, width: int, preprocess: Preprocess) -> tuple[int, int]:
    """(height, width) the image is resized to."""
    size = preprocess.input_size
    if preprocess.resize == "stretch":
        return size, size
    scale = size / max(height, width)

    def snap(side: int) -> int:
        return max(SIZE_MULTIPLE, round(side * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return (size, snap(width)) if height >= width else (snap(height), size)


def to_tensor(image: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """Resize (bilinear) and normalise an HxWx3 uint8 image into a 3xH'xW' float tensor."""
    height, width = target_size(image.shape[0], image.shape[1], preprocess)
    if (height, width) != image.shape[:2]:
        image = np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)
