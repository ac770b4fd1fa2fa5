"""Turn scikit-learn's handwritten digits into a small Kaggle-style image competition.

`load_digits()` ships 1797 real 8x8 scans (grey levels 0..16) inside scikit-learn, so the demo
needs no download. The competition folder mirrors a Kaggle dataset (`train.csv`, `train/`,
`test/`, `sample_submission.csv`); the test labels are written beside it, never inside it, so a
kernel cannot peek at them.

Two competitions share the images and the split: `digits` (multiclass: which digit) and
`digits-attributes` (multilabel, like iMet's attributes: is the digit even, prime, at least 5,
does it have a closed loop; a 1 has none of them, so some rows have no label at all).
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10
ATTRIBUTES = ("even", "prime", "ge5", "loop")
_HAS_ATTRIBUTE = {
    "even": {0, 2, 4, 6, 8},
    "prime": {2, 3, 5, 7},
    "ge5": {5, 6, 7, 8, 9},
    "loop": {0, 6, 8, 9},
}
COMPETITIONS = {"digits": "multiclass", "digits-attributes": "multilabel"}


@dataclass(frozen=True)
class CompetitionPaths:
    competition_dir: Path
    train_csv: Path
    train_dir: Path
    test_dir: Path
    sample_submission: Path
    test_labels: Path


def _write_png(pixels: np.ndarray, path: Path, scale: int) -> None:
    # 0..16 ink levels -> 0..255 grey; bilinear upsampling gives the soft edges of a real scan.
    grey = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)
    image = Image.fromarray(grey)
    if scale != 1:
        height, width = grey.shape
        image = image.resize((width * scale, height * scale), Image.Resampling.BILINEAR)
    image.save(path, format="PNG")


def attribute_labels(digit: int) -> str:
    """The space-separated attributes of a digit, in the order of ATTRIBUTES ("" for a 1)."""
    return " ".join(name for name in ATTRIBUTES if digit in _HAS_ATTRIBUTE[name])


def make_competition(out_dir: Path, *, test_fraction: float = 0.25, scale: int = 4, seed: int = 0,
                     limit: int | None = None, name: str = "digits") -> CompetitionPaths:
    """Write competition `name` under `out_dir/competition/<name>` and the held-back test labels
    to `out_dir/heldout/` (`test_labels.csv` for digits, `<name>_test_labels.csv` otherwise);
    the same arguments give byte-identical files."""
    if name not in COMPETITIONS:
        raise ValueError(f"competition must be one of {', '.join(COMPETITIONS)}, got {name!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    out_dir = Path(out_dir)
    digits = load_digits()
    images, labels = digits.images, digits.target
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    ids = np.array([f"img_{index:05d}" for index in range(len(labels))])
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )
    # Sorted ids make every CSV independent of the split's internal order.
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)

    competition_dir = out_dir / "competition" / name
    prefix = "" if name == "digits" else f"{name}_"
    paths = CompetitionPaths(
        competition_dir=competition_dir,
        train_csv=competition_dir / "train.csv",
        train_dir=competition_dir / "train",
        test_dir=competition_dir / "test",
        sample_submission=competition_dir / "sample_submission.csv",
        test_labels=out_dir / "heldout" / f"{prefix}test_labels.csv",
    )
    # Start from scratch so images of an earlier split (other seed or limit) cannot linger.
    if competition_dir.exists():
        shutil.rmtree(competition_dir)
    for folder in (paths.train_dir, paths.test_dir, paths.test_labels.parent):
        folder.mkdir(parents=True, exist_ok=True)

    for folder, indices in ((paths.train_dir, train_idx), (paths.test_dir, test_idx)):
        for index in indices:
            _write_png(images[index], folder / f"{ids[index]}.png", scale)

    if COMPETITIONS[name] == "multilabel":
        labels = np.array([attribute_labels(digit) for digit in labels], dtype=object)
    blank = 0 if COMPETITIONS[name] == "multiclass" else ""
    pd.DataFrame({"id": ids[train_idx], "label": labels[train_idx]}).to_csv(
        paths.train_csv, index=False)
    pd.DataFrame({"id": ids[test_idx], "label": blank}).to_csv(paths.sample_submission,
                                                                index=False)
    pd.DataFrame({"id": ids[test_idx], "label": labels[test_idx]}).to_csv(
        paths.test_labels, index=False)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.digits.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="writes competition/digits and heldout here")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--scale", type=int, default=4, help="upsampling factor of the 8x8 scans")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N digits")
    parser.add_argument("--competition", choices=list(COMPETITIONS), default="digits")
    args = parser.parse_args(argv)
    paths = make_competition(args.out_dir, test_fraction=args.test_fraction, scale=args.scale,
                             seed=args.seed, limit=args.limit, name=args.competition)
    n_train = sum(1 for _ in paths.train_dir.glob("*.png"))
    n_test = sum(1 for _ in paths.test_dir.glob("*.png"))
    print(f"competition: {paths.competition_dir} ({n_train} train, {n_test} test images)")
    print(f"held-back test labels: {paths.test_labels}")


if __name__ == "__main__":
    main()
