"""Out-of-fold (OOF) inputs of the searches: each model's OOF probabilities, the labels, the folds.

    --oof NAME=PATH.npy   one model's OOF probabilities: rows x classes, one row per labelled
                          sample in the order of LABELS.csv, columns in the order of the classes
    LABELS.csv            columns `id` and `label`; a multilabel row holds space-separated labels
                          (or none)
    FOLDS                 each row's fold index: a .npy, or a CSV with one column

Every check names the file, the problem and the fix, before any search starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import SearchError

# Rows checked at once when an OOF array is read.
CHECK_ROWS = 8192


@dataclass
class OofSet:
    """What a search fits on; `truth` is a rows x classes boolean mask."""

    names: list[str]
    probs: list[np.ndarray]
    truth: np.ndarray
    classes: list
    ids: list[str]
    folds: np.ndarray | None

    @property
    def n_rows(self) -> int:
        return len(self.truth)


def parse_oof_args(specs: Sequence[str]) -> dict[str, Path]:
    """`["cnn=oof/cnn.npy", ...]` -> {"cnn": Path("oof/cnn.npy"), ...}."""
    paths: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SearchError(f"--oof {spec!r}: expected NAME=PATH.npy, e.g. "
                              "--oof small_cnn=oof/small_cnn.npy")
        if name in paths:
            raise SearchError(f"--oof {spec!r}: model name {name!r} is given twice; "
                              "give each model once, under a unique name")
        paths[name] = Path(path)
    if not paths:
        raise SearchError("--oof: no OOF files given; pass --oof NAME=PATH.npy for each model")
    return paths


def read_labels(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise SearchError(f"{path}: labels file not found; pass the CSV of OOF labels "
                          "(columns id and label) with --labels") from None
    except pd.errors.EmptyDataError:
        raise SearchError(f"{path}: empty file; the labels CSV needs columns id and label and "
                          "one row per OOF sample") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        problem = str(exc).strip().splitlines()[0][:160]
        raise SearchError(f"{path}: not a readable CSV ({problem}); save the labels as UTF-8 "
                          "CSV with columns id and label") from None
    missing = [column for column in ("id", "label") if column not in table.columns]
    if missing:
        raise SearchError(f"{path}: no column {missing[0]!r} (found {list(table.columns)}); "
                          "the labels CSV needs columns id and label")
    if table.empty:
        raise SearchError(f"{path}: no rows; the labels CSV needs one row per OOF sample")
    repeated = table["id"][table["id"].duplicated()]
    if not repeated.empty:
        raise SearchError(f"{path}: id {repeated.iloc[0]} appears more than once; give one row "
                          "per labelled sample")
    return table


def label_classes(labels: pd.DataFrame, n_columns: int, source: Path) -> list[int]:
    """Classes when none are configured: the labels must then be column indices 0..n-1."""
    for row, (image_id, text) in enumerate(zip(labels["id"], labels["label"], strict=True)):
        for token in text.split():
            if not (token.isdigit() and int(token) < n_columns):
                raise SearchError(
                    f"{source}: row {row + 2} (id {image_id}) has label {token!r}, which is not "
                    f"a column index of the {n_columns}-column OOF arrays; fix the label, or "
                    "list the classes (one per OOF column, in order) in submission.classes of "
                    "the --base config")
    return list(range(n_columns))


def truth_mask(labels: pd.DataFrame, classes: Sequence, multilabel: bool,
               source: Path) -> np.ndarray:
    column = {str(c): j for j, c in enumerate(classes)}
    truth = np.zeros((len(labels), len(classes)), dtype=bool)
    for row, (image_id, text) in enumerate(zip(labels["id"], labels["label"], strict=True)):
        tokens = text.split()
        if not multilabel and len(tokens) != 1:
            raise SearchError(
                f"{source}: row {row + 2} (id {image_id}) holds {len(tokens)} labels "
                f"{text!r}, but the submission format is multiclass; give one label per row, "
                "or use format multilabel")
        for token in tokens:
            if token not in column:
                raise SearchError(
                    f"{source}: row {row + 2} (id {image_id}) has label {token!r}, which is not "
                    f"one of the {len(classes)} classes; fix the label or submission.classes")
            truth[row, column[token]] = True
    return truth


def read_folds(path: Path, n_rows: int) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            folds = np.load(path, allow_pickle=False)
        else:
            table = pd.read_csv(path, header=None, dtype=str)
            if table.shape[1] != 1:
                raise SearchError(f"{path}: {table.shape[1]} columns; a folds CSV holds one "
                                  "column, the fold index of each labelled row")
            values = table[0].tolist()
            # A header line (e.g. "fold") is fine; it is the only non-number allowed.
            if values and not values[0].lstrip("-").isdigit():
                values = values[1:]
            if not all(v.lstrip("-").isdigit() for v in values):
                raise SearchError(f"{path}: fold indices must be integers; fix the file")
            folds = np.array([int(v) for v in values])
    except FileNotFoundError:
        raise SearchError(f"{path}: folds file not found; pass each row's fold index "
                          "(.npy or one-column CSV) with --folds") from None
    except ValueError as exc:
        raise SearchError(f"{path}: not a .npy array ({exc}); save the fold indices with "
                          "numpy.save, or as a one-column CSV") from None
    if folds.ndim != 1 or not np.issubdtype(folds.dtype, np.integer):
        raise SearchError(f"{path}: expected a 1-D array of integer fold indices, got "
                          f"{folds.dtype} with shape {folds.shape}; save one index per row")
    if len(folds) != n_rows:
        raise SearchError(f"{path}: {len(folds)} fold indices but the labels have {n_rows} "
                          "rows; give one fold index per labelled row, in the same order")
    if folds.min() < 0:
        raise SearchError(f"{path}: negative fold index {folds.min()}; folds are 0, 1, ...")
    if len(np.unique(folds)) < 2:
        raise SearchError(f"{path}: all rows are in fold {folds[0]}; the fold check needs at "
                          "least two folds")
    return folds.astype(np.int64)


def load_npy(path: Path, where: str, missing_fix: str,
             error: type[Exception] = SearchError, mmap: bool = False) -> np.ndarray:
    """The array saved at `path` (memory-mapped with `mmap`); a missing or unreadable file
    raises `error` naming `where`."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise error(f"{where}: file not found; {missing_fix}") from None
    except ValueError as exc:
        raise error(f"{where}: not a .npy array ({exc}); save it with numpy.save") from None


def read_oof(name: str, path: Path, n_rows: int, n_classes: int | None) -> np.ndarray:
    """The OOF array, memory-mapped: the searches read it in row chunks, so memory does not
    hold every model's full array (7 x 109k x 1,103 float32 is 3.4 GB)."""
    where = f"{path} (--oof {name})"
    probs = load_npy(path, where, f"check the path after {name}=", mmap=True)
    if probs.ndim != 2:
        raise SearchError(f"{where}: shape {probs.shape}; expected rows x classes")
    if probs.shape[0] != n_rows:
        raise SearchError(f"{where}: {probs.shape[0]} rows but the labels have {n_rows}; save "
                          "one row per labelled sample, in the order of the labels CSV")
    if n_classes is not None and probs.shape[1] != n_classes:
        raise SearchError(f"{where}: {probs.shape[1]} columns but there are {n_classes} "
                          "classes; every OOF array needs one column per class")
    for start in range(0, len(probs), CHECK_ROWS):
        chunk = np.asarray(probs[start:start + CHECK_ROWS])
        if not np.all(np.isfinite(chunk)) or chunk.min() < 0 or chunk.max() > 1:
            raise SearchError(f"{where}: values outside [0, 1] (or NaN); save probabilities "
                              "(after softmax or sigmoid), not logits")
    return probs


def load_oof_set(oof: dict[str, Path], labels_path: Path, folds_path: Path | None,
                 classes: Sequence | None, multilabel: bool) -> OofSet:
    """Read and cross-check every input; `classes` None means labels are column indices."""
    labels = read_labels(labels_path)
    n_classes = None if classes is None else len(classes)
    probs = [read_oof(name, path, len(labels), n_classes) for name, path in oof.items()]
    widths = {p.shape[1] for p in probs}
    if len(widths) > 1:
        detail = ", ".join(f"{n}: {p.shape[1]}" for n, p in zip(oof, probs, strict=True))
        raise SearchError(f"--oof: the OOF arrays disagree on the number of classes ({detail}); "
                          "all models must share one label space")
    if classes is None:
        classes = label_classes(labels, probs[0].shape[1], labels_path)
    truth = truth_mask(labels, classes, multilabel, labels_path)
    folds = None if folds_path is None else read_folds(folds_path, len(labels))
    return OofSet(list(oof), probs, truth, list(classes), labels["id"].tolist(), folds)
