"""The fallback row: what the submission says for an image no model predicted, and the whole
fallback submission a kernel writes the moment its test ids are known.

Before any checkpoint is read (torch is not even imported yet) the labels may be unknown, so the
fallback submission names what a torch-free read can give, in this order:

- `submission.classes`, when the config lists them: the rows are exactly the fallback rows the
  runtime writes later (the uniform prior: the first class; the first k for top-k; for
  multilabel, the classes the thresholds keep at a uniform probability);
- probabilities: the sample submission's columns after the id column (the columns Kaggle scores),
  each at 1/number of columns;
- multilabel with one threshold per class: classes 0..n-1, one per threshold;
- otherwise one label for every row: the first label in the sample submission's label column (a
  label Kaggle's own example accepts), else class 0 (what the runtime writes for a model without
  class names).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .blend import BlendAccumulator
from .config import SubmissionSection
from .files import open_csv
from .submission import SubmissionWriter


class FallbackPrior:
    """Fills rows no model predicted (an undecodable image, or time ran out) with the mean of
    the rows blended so far: the test set's own class prior, uniform before the first row."""

    def __init__(self, n_classes: int) -> None:
        self.total = np.zeros(n_classes)
        self.predicted = 0
        self.rows = 0

    def prior(self) -> np.ndarray:
        """The row a missing image gets now."""
        return (self.total / self.predicted if self.predicted
                else np.full(self.total.size, 1.0 / self.total.size))

    def complete(self, accumulator: BlendAccumulator) -> np.ndarray:
        missing = np.flatnonzero(accumulator.row_weight == 0)
        if missing.size:
            accumulator.add(np.tile(self.prior(), (missing.size, 1)), 1.0, rows=missing)
        blended = accumulator.result()
        done = np.setdiff1d(np.arange(len(blended)), missing)
        self.total += blended[done].sum(axis=0)
        self.predicted += done.size
        self.rows += missing.size
        return blended


def fallback_classes(submission: SubmissionSection, sample: Path | None) -> tuple[list, str]:
    """The labels a fallback submission names before any checkpoint is read (see the module's
    doc), and where they came from, for the log; `sample` is the sample submission, if any."""
    if submission.classes:
        return list(submission.classes), "submission.classes"
    header, first = _sample_head(sample)
    if submission.format == "probabilities":
        columns = [name for name in header if name != submission.id_column]
        if columns:
            return columns, f"the columns of {sample.name}"
    elif submission.format == "multilabel" and isinstance(submission.threshold, tuple):
        return list(range(len(submission.threshold))), "one class per submission.threshold"
    elif submission.label_column in header:
        label = first[header.index(submission.label_column)] if len(first) == len(header) else ""
        if label.strip():
            return [label], f"the first {submission.label_column} of {sample.name}"
    return [0], "class 0 (no submission.classes" + (
        ")" if sample is None else f" and none to read in {sample.name})")


def _sample_head(sample: Path | None) -> tuple[list[str], list[str]]:
    """The sample submission's header and first row (empty when there is none)."""
    if sample is None:
        return [], []
    with open_csv(sample) as handle:
        reader = csv.reader(handle)
        return next(reader, []), next(reader, [])


def write_fallback_submission(path: str | os.PathLike, submission: SubmissionSection,
                              ids: Sequence[str], classes: Sequence) -> None:
    """Write a whole submission of fallback rows (the uniform prior over `classes`) for `ids`,
    in order, atomically: `path` is the old file or the whole new one, never half of either."""
    with SubmissionWriter(path, submission, classes) as out:
        out.write_same_row(ids, FallbackPrior(len(classes)).prior())
