"""Submission writers: multiclass (argmax), multilabel (thresholds, min/max labels), top-k
(the k best labels, as Herbarium and landmark competitions score), probabilities.

Rows are written as they are blended (memory does not grow with the test set) into a temporary
file beside the target, which replaces the submission file only when every row is in: a kernel that
dies half-way never leaves a truncated submission behind.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .config import SubmissionSection
from .errors import ConfigError
from .files import atomic_write

TOPK_ROWS = 32


def multiclass_labels(probs: np.ndarray, classes: Sequence) -> list:
    return [classes[i] for i in np.argmax(probs, axis=1)]


def topk_labels(probs: np.ndarray, classes: Sequence, k: int) -> list[str]:
    """The `k` most probable labels per row, best first (ties in class order), space-separated.

    argpartition picks the k best in linear time, so 32,000 classes cost no full sort; rows go
    `TOPK_ROWS` at a time, as its index array is as large as the rows it sorts."""
    k = min(k, probs.shape[1])
    labels = []
    for start in range(0, len(probs), TOPK_ROWS):
        block = probs[start:start + TOPK_ROWS]
        top = np.sort(np.argpartition(-block, k - 1, axis=1)[:, :k], axis=1)
        best_first = np.argsort(-np.take_along_axis(block, top, axis=1), axis=1, kind="stable")
        order = np.take_along_axis(top, best_first, axis=1)
        labels += [" ".join(str(classes[i]) for i in row) for row in order]
    return labels


def rank_order(probs: np.ndarray) -> np.ndarray:
    """Classes of each row by falling probability, ties to the lower class index. A threshold
    search computes it once for all the rules it tries."""
    return np.argsort(-np.asarray(probs, dtype=np.float64), axis=1, kind="stable")


def multilabel_mask(probs: np.ndarray, order: np.ndarray, threshold: float | Sequence[float],
                    min_labels: int = 1, max_labels: int | None = None) -> np.ndarray:
    """The multilabel rule as a rows x classes mask: every class at or above its threshold, cut
    to the `max_labels` most probable; a row with fewer than `min_labels` takes its top
    `min_labels` instead (then the cut). `order` is the rows' `rank_order`."""
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), probs.shape[1:])
    above_in_order = np.take_along_axis(probs >= thresholds, order, axis=1)
    chosen_in_order = above_in_order.copy()
    if max_labels is not None:
        chosen_in_order &= np.cumsum(above_in_order, axis=1) <= max_labels
    top = min(min_labels, max_labels) if max_labels is not None else min_labels
    short = above_in_order.sum(axis=1) < min_labels
    chosen_in_order[short] = np.arange(probs.shape[1]) < top
    mask = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(mask, order, chosen_in_order, axis=1)
    return mask


def multilabel_labels(probs: np.ndarray, classes: Sequence, threshold: float | Sequence[float],
                      min_labels: int = 1, max_labels: int | None = None) -> list[str]:
    """Space-separated labels per row by `multilabel_mask`, listed in class order."""
    mask = multilabel_mask(probs, rank_order(probs), threshold, min_labels, max_labels)
    return [" ".join(str(classes[i]) for i in np.flatnonzero(row)) for row in mask]


class SubmissionWriter:
    """Streams rows into `path` atomically; use as a context manager."""

    def __init__(self, path: str | os.PathLike, submission: SubmissionSection,
                 classes: Sequence) -> None:
        self.path = Path(path)
        self.submission = submission
        self.classes = list(classes)
        threshold = submission.threshold
        if isinstance(threshold, tuple) and len(threshold) != len(self.classes):
            raise ConfigError(
                f"submission.threshold has {len(threshold)} values but the models have "
                f"{len(self.classes)} classes; give one per class or a single one"
            )
        self._output = None
        self._handle = None
        self._writer = None

    def __enter__(self) -> SubmissionWriter:
        self._output = atomic_write(self.path, "w", newline="")
        self._handle = self._output.__enter__()
        self._writer = csv.writer(self._handle)
        self._writer.writerow(self._header())
        return self

    def _header(self) -> list[str]:
        id_column = self.submission.id_column
        if self.submission.format == "probabilities":
            return [id_column] + [str(c) for c in self.classes]
        return [id_column, self.submission.label_column]

    def write(self, ids: Sequence[str], probs: np.ndarray) -> None:
        self._writer.writerows([image_id, *cells]
                               for image_id, cells in zip(ids, self._cells(probs), strict=True))

    def write_same_row(self, ids: Sequence[str], probs: np.ndarray) -> None:
        """Write one row of probabilities for every id in `ids`, formatted once: a fallback
        submission of a million rows and 32,000 classes costs one row's labels."""
        cells = next(self._cells(np.asarray(probs)[None]))
        self._writer.writerows([image_id, *cells] for image_id in ids)

    def _cells(self, probs: np.ndarray) -> Iterator[list]:
        """Each row's cells after the id: its probabilities (formatted a row at a time: a batch
        of 32,000 columns would be millions of strings), or its labels in the format."""
        fmt = self.submission.format
        if fmt == "probabilities":
            return ([f"{p:.6g}" for p in row] for row in probs)
        if fmt == "multiclass":
            labels = multiclass_labels(probs, self.classes)
        elif fmt == "topk":
            labels = topk_labels(probs, self.classes, self.submission.k)
        else:
            labels = multilabel_labels(probs, self.classes, self.submission.threshold,
                                       self.submission.min_labels, self.submission.max_labels)
        return ([label] for label in labels)

    def __exit__(self, exc_type, exc, tb) -> None:
        # Renames the whole file into place, or removes it when writing failed.
        self._output.__exit__(exc_type, exc, tb)
