"""Scores of a blend, computed on the labels the kernel would write for it.

The search must optimise what the kernel computes, so every metric but `logloss` first turns the
blended probabilities into label sets with the kernel's own rule (argmax for multiclass; for
multilabel, the rule of `inference_core.submission.multilabel_mask`, which the kernel's writer
uses: every class at or above its threshold, topped up to `min_labels` and cut to `max_labels` by
probability; `fast_rule` computes the same mask without sorting every row).

    accuracy   share of rows whose label set is exactly right (argmax accuracy for multiclass)
    macro_f1   F1 of each class over the rows, averaged over the classes that are true in some
               row or written in some row (scikit-learn's `f1_score(average="macro")` of label
               vectors, and Kaggle's of label sets binarised over the labels that occur)
    f2         F2 of each row's label set, averaged over the rows (the iMet metric)
    logloss    multiclass: cross-entropy of the row-normalised blend (Kaggle's convention);
               multilabel: mean binary cross-entropy over rows and classes
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inference_core.config import SubmissionSection

from ..errors import SearchError
from .fast_rule import rule_mask

# Kaggle clips probabilities to [1e-15, 1 - 1e-15] before its log loss.
LOGLOSS_EPS = 1e-15


def label_mask(probs: np.ndarray, submission: SubmissionSection) -> np.ndarray:
    """The labels the kernel writes for `probs` (rows x classes), as a boolean mask.

    `submission` is the config's submission section: format, threshold (one, or one per class),
    min_labels and max_labels."""
    probs = np.asarray(probs, dtype=np.float64)
    fmt = submission.format
    if fmt in ("multiclass", "probabilities"):
        mask = np.zeros(probs.shape, dtype=bool)
        mask[np.arange(len(probs)), np.argmax(probs, axis=1)] = True
        return mask
    if fmt != "multilabel":
        raise SearchError(f"submission.format {fmt!r}: the label metrics know the labels of "
                          "multiclass and multilabel submissions only; use --metric logloss")
    return rule_mask(probs, submission.threshold, submission.min_labels, submission.max_labels)


def _f_beta(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float) -> np.ndarray:
    """F-beta from counts; nothing to find and nothing found scores 1."""
    b2 = beta * beta
    numerator = (1 + b2) * tp
    denominator = numerator + b2 * fn + fp
    return np.divide(numerator, denominator, out=np.ones_like(numerator, dtype=np.float64),
                     where=denominator > 0)


def row_counts(predicted: np.ndarray, truth: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: true positives, false positives, false negatives of the labels written."""
    tp = np.sum(predicted & truth, axis=1)
    fp = np.sum(predicted, axis=1) - tp
    fn = np.sum(truth, axis=1) - tp
    return tp, fp, fn


def accuracy_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    return (fp == 0) & (fn == 0)


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(accuracy_counts(*row_counts(predicted, truth))))


def _macro_f1_of_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """Mean F1 over the classes that occur (true or written somewhere). A class that never
    occurs has no F1: counting it as 1 (or 0) would let the score move with how many classes a
    blend leaves unwritten, and no competition's scorer counts it. Nothing anywhere scores 1."""
    occurs = (tp + fp + fn) > 0
    if not occurs.any():
        return 1.0
    return float(np.mean(_f_beta(tp[occurs], fp[occurs], fn[occurs], 1.0)))


def macro_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = np.sum(predicted & truth, axis=0)
    fp = np.sum(predicted & ~truth, axis=0)
    fn = np.sum(~predicted & truth, axis=0)
    return _macro_f1_of_counts(tp, fp, fn)


def macro_f1_of_labels(predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    """`macro_f1` of one label per row, from the rows' predicted and true class indices (the
    same counts as from the masks, so the same number), without rows x classes masks."""
    hit = predicted == truth
    tp = np.bincount(truth[hit], minlength=n_classes)
    fp = np.bincount(predicted, minlength=n_classes) - tp
    fn = np.bincount(truth, minlength=n_classes) - tp
    return _macro_f1_of_counts(tp, fp, fn)


def f2_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    return _f_beta(tp, fp, fn, 2.0)


def f2(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(f2_counts(*row_counts(predicted, truth))))


def logloss(probs: np.ndarray, truth: np.ndarray, multilabel: bool) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    if multilabel:
        return float(-np.mean(np.where(truth, np.log(p), np.log1p(-p))))
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[truth])))


def logloss_rows(probs: np.ndarray, truth: np.ndarray, multilabel: bool) -> np.ndarray:
    """Each row's log loss: its mean over rows is `logloss` (every row has one true class, or
    for multilabel the same number of classes), up to the order of the additions."""
    p = np.clip(np.asarray(probs, dtype=np.float64), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    if multilabel:
        return -np.mean(np.where(truth, np.log(p), np.log1p(-p)), axis=1)
    return -np.log(p[truth] / p.sum(axis=1))


@dataclass(frozen=True)
class Metric:
    """A score of (labels written, true labels), or for logloss of (probabilities, labels).

    `on_counts`, for a score that is a mean over rows, gives each row's part from the row's
    true positive, false positive and false negative counts: a search then scores any subset of
    rows (a fold) from one pass over the blend, blends in row chunks, and counts labels without
    building masks. `on_rows` does the same for log loss, from the probabilities (`by_rows`:
    either)."""

    name: str
    greater_is_better: bool
    on_labels: Callable[[np.ndarray, np.ndarray], float] | None = None
    on_counts: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    on_rows: Callable[[np.ndarray, np.ndarray, bool], np.ndarray] | None = None

    @property
    def by_rows(self) -> bool:
        """Whether the score is a mean of per-row parts (`row_scores`)."""
        return self.on_counts is not None or self.on_rows is not None

    def score(self, probs: np.ndarray, truth: np.ndarray, submission: SubmissionSection
              ) -> float:
        if self.on_labels is None:
            return logloss(probs, truth, submission.format == "multilabel")
        return self.on_labels(label_mask(probs, submission), truth)

    def row_scores(self, probs: np.ndarray, truth: np.ndarray, submission: SubmissionSection
                   ) -> np.ndarray:
        """Each row's part of the score (its mean over rows is `score`); needs `by_rows`."""
        if self.on_counts is None:
            return self.on_rows(probs, truth, submission.format == "multilabel")
        return self.on_masks(label_mask(probs, submission), truth)

    def on_masks(self, predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Each row's part of the score of the labels `predicted`; needs `on_counts`."""
        return self.on_counts(*row_counts(predicted, truth))

    def better(self, a: float, b: float) -> bool:
        """True when score `a` is strictly better than score `b`."""
        return a > b if self.greater_is_better else a < b


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", True, accuracy, accuracy_counts),
    "macro_f1": Metric("macro_f1", True, macro_f1),
    "f2": Metric("f2", True, f2, f2_counts),
    "logloss": Metric("logloss", False, on_rows=logloss_rows),
}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise SearchError(f"--metric {name!r}: unknown metric; use one of {', '.join(METRICS)}")
    return METRICS[name]
