"""Scores of a blend, computed on the labels the kernel would write for it.

The search must optimise what the kernel computes, so every metric but `logloss` first turns the
blended probabilities into label sets with the kernel's own rule (argmax for multiclass; for
multilabel, `inference_core.submission.multilabel_mask`, the one definition the kernel's writer
uses too: every class at or above its threshold, topped up to `min_labels` and cut to
`max_labels` by probability).

    accuracy   share of rows whose label set is exactly right (argmax accuracy for multiclass)
    macro_f1   F1 of each class over the rows, averaged over the classes
    f2         F2 of each row's label set, averaged over the rows (the iMet metric)
    logloss    multiclass: cross-entropy of the row-normalised blend (Kaggle's convention);
               multilabel: mean binary cross-entropy over rows and classes
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inference_core.config import SubmissionSection
from inference_core.submission import multilabel_mask, rank_order

from ..errors import SearchError

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
    return multilabel_mask(probs, rank_order(probs), submission.threshold,
                           submission.min_labels, submission.max_labels)


def _f_beta(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float) -> np.ndarray:
    """F-beta from counts; nothing to find and nothing found scores 1."""
    b2 = beta * beta
    numerator = (1 + b2) * tp
    denominator = numerator + b2 * fn + fp
    return np.divide(numerator, denominator, out=np.ones_like(numerator, dtype=np.float64),
                     where=denominator > 0)


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.all(predicted == truth, axis=1)))


def macro_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = np.sum(predicted & truth, axis=0)
    fp = np.sum(predicted & ~truth, axis=0)
    fn = np.sum(~predicted & truth, axis=0)
    return float(np.mean(_f_beta(tp, fp, fn, 1.0)))


def f2(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = np.sum(predicted & truth, axis=1)
    fp = np.sum(predicted & ~truth, axis=1)
    fn = np.sum(~predicted & truth, axis=1)
    return float(np.mean(_f_beta(tp, fp, fn, 2.0)))


def logloss(probs: np.ndarray, truth: np.ndarray, multilabel: bool) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    if multilabel:
        return float(-np.mean(np.where(truth, np.log(p), np.log1p(-p))))
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[truth])))


@dataclass(frozen=True)
class Metric:
    """A score of (labels written, true labels), or for logloss of (probabilities, labels)."""

    name: str
    greater_is_better: bool
    on_labels: Callable[[np.ndarray, np.ndarray], float] | None = None

    def score(self, probs: np.ndarray, truth: np.ndarray, submission: SubmissionSection
              ) -> float:
        if self.on_labels is None:
            return logloss(probs, truth, submission.format == "multilabel")
        return self.on_labels(label_mask(probs, submission), truth)

    def better(self, a: float, b: float) -> bool:
        """True when score `a` is strictly better than score `b`."""
        return a > b if self.greater_is_better else a < b


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", True, accuracy),
    "macro_f1": Metric("macro_f1", True, macro_f1),
    "f2": Metric("f2", True, f2),
    "logloss": Metric("logloss", False),
}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise SearchError(f"--metric {name!r}: unknown metric; use one of {', '.join(METRICS)}")
    return METRICS[name]
