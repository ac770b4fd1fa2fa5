"""The blend search's objective at scale: a random sample of the OOF rows, made small.

Nelder-Mead scores thousands of weight vectors; on 109k rows x 1,103 classes each would be a
pass over gigabytes. The optimiser instead scores a sample of rows, and of each row only the
classes that any weighting could label:

* each model's shifted probabilities (logged, for gmean) are computed once, in float32, and a
  candidate's blend is one matrix product;
* a blend lies between the smallest and the largest of the models' values, so a class whose
  largest value is below its threshold is never above it, and, when rows are topped up to
  `top` labels, a class whose largest value is below the row's `top`-th largest smallest value
  is never among the row's best `top`. Such classes are dropped (for f2 and accuracy, whose
  rows keep their count of true labels dropped, and multiclass macro_f1, scored from each row's
  argmax class; multilabel macro_f1 and logloss keep every class, logloss is then computed in
  float32), and at most `MAX_KEPT` classes per row are kept, those with the largest values.

The result is close to the exact score, not equal to it (float32, the sample, the cap): the
candidates it finds are scored exactly, on every row, before one is chosen.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from inference_core.blend import BLEND_EPS
from inference_core.config import SubmissionSection

from .fast_rule import rule_mask, top_k_mask
from .metrics import LOGLOSS_EPS, Metric, macro_f1_of_labels

# Classes kept per sampled row, at most (the ones with the largest model value).
MAX_KEPT = 64
# The value of a dropped class and of the padding: below every real one, even weighted.
LOW = np.float32(-1e30)


def _kept_classes(upper: np.ndarray, lower: np.ndarray, thresholds: np.ndarray,
                  top: int) -> np.ndarray:
    """Per row, the columns (ascending, so that ties still go to the lower class) that some
    weighting could label, at most `MAX_KEPT`, padded with -1."""
    floor = thresholds[None, :].repeat(len(upper), axis=0)
    if top > 0:
        width = upper.shape[1]
        kth = np.partition(lower, width - min(top, width), axis=1)[:, width - min(top, width)]
        floor = np.minimum(floor, kth[:, None])
    keep = upper >= floor
    width = min(MAX_KEPT, max(int(keep.sum(axis=1).max()), 1))
    score = np.where(keep, upper, -np.inf)
    best = np.argpartition(-score, width - 1, axis=1)[:, :width] if width < upper.shape[1] \
        else np.tile(np.arange(upper.shape[1]), (len(upper), 1))
    best = np.sort(best, axis=1)
    kept = np.take_along_axis(keep, best, axis=1)
    return np.where(kept, best, -1)


class SampledProblem:
    """A blend problem's objective (`blend.Problem`'s fields) on `rows`, with only the classes
    that can be labelled kept (for a mean over rows); see the module's note for what is
    approximated."""

    sampled = True  # the blend search confirms its results exactly

    def __init__(self, probs: Sequence[np.ndarray], truth: np.ndarray, metric: Metric,
                 mode: str, submission: SubmissionSection, shifts: Sequence[float],
                 rows: np.ndarray) -> None:
        self.metric, self.submission = metric, submission
        self.gmean = mode == "gmean"
        self.multilabel = self.submission.format == "multilabel"
        truth = truth[rows]
        shifted = []
        for model_probs, shift in zip(probs, shifts, strict=True):
            p = np.asarray(model_probs[rows], dtype=np.float32) - np.float32(shift)
            shifted.append(np.clip(p, BLEND_EPS, 1.0) if self.gmean else p)
        # Multiclass macro F1 needs only each row's argmax too: pruned, scored from labels.
        self.by_labels = metric.name == "macro_f1" and not self.multilabel
        self.pruned = metric.on_counts is not None or self.by_labels
        # Each row's one true class: for macro F1 and log loss (`_class_logloss`), multiclass.
        self.labels = truth.argmax(axis=1) if not self.multilabel else None
        self.n_classes = truth.shape[1]
        if not self.pruned:
            self.truth = truth
            self.stack = np.stack([np.log(p) if self.gmean else p for p in shifted])
            return
        n_classes = truth.shape[1]
        thresholds = np.broadcast_to(np.asarray(
            self.submission.threshold if self.multilabel else np.inf, dtype=np.float64),
            (n_classes,))
        stack = np.stack(shifted)
        columns = _kept_classes(stack.max(axis=0), stack.min(axis=0), thresholds,
                                self._top())
        del stack
        valid = columns >= 0
        safe = np.where(valid, columns, 0)
        kept_truth = np.take_along_axis(truth, safe, axis=1) & valid
        # Each row's true labels outside the kept classes: never predicted, still counted.
        outside = truth.sum(axis=1) - kept_truth.sum(axis=1)
        pad = np.arange(int(outside.max()))[None, :] < outside[:, None]
        self.truth = np.concatenate([kept_truth, pad], axis=1)
        width = columns.shape[1]
        self.stack = np.full((len(shifted), len(rows), self.truth.shape[1]), LOW,
                             dtype=np.float32)
        for layer, p in zip(self.stack, shifted, strict=True):
            values = np.take_along_axis(p, safe, axis=1)
            layer[:, :width] = np.where(valid, np.log(values) if self.gmean else values, LOW)
        self.thresholds = np.full(self.truth.shape, np.inf)
        self.thresholds[:, :width] = np.where(valid, thresholds[safe], np.inf)
        self.columns = np.concatenate([safe, np.zeros((len(rows), pad.shape[1]), dtype=int)],
                                      axis=1)

    @property
    def n_models(self) -> int:
        return len(self.stack)

    def subset(self, rows: np.ndarray) -> SampledProblem:
        """The same objective on some of the sampled rows (`rows`: a mask or an index)."""
        part = copy.copy(self)
        part.truth = self.truth[rows]
        if self.labels is not None:
            part.labels = self.labels[rows]
        part.stack = np.ascontiguousarray(self.stack[:, rows])
        if self.pruned:
            part.thresholds = self.thresholds[rows]
            part.columns = self.columns[rows]
        return part

    def _top(self) -> int:
        """How many labels a row is topped up to (multiclass: its one argmax)."""
        if not self.multilabel:
            return 1
        top = self.submission.min_labels
        return top if self.submission.max_labels is None else min(top,
                                                                  self.submission.max_labels)

    def _class_logloss(self, blended: np.ndarray) -> float:
        """Multiclass log loss in float32, in place: the optimiser's objective evaluated tens of
        thousands of times (the float64 metric copies the sample twice per call)."""
        np.clip(blended, LOGLOSS_EPS, 1.0, out=blended)
        true = blended[np.arange(len(blended)), self.labels]
        return float(-np.mean(np.log(true / blended.sum(axis=1))))

    def score(self, weights: Sequence[float]) -> float:
        w = np.asarray(weights, dtype=np.float32)
        # einsum, not a BLAS product: at these sizes BLAS's thread start-up dominates.
        blended = np.einsum("m,mrc->rc", w, self.stack) / w.sum()
        if self.gmean:
            np.exp(blended, out=blended)
        if not self.pruned:
            if self.metric.on_labels is None and self.labels is not None:
                return self._class_logloss(blended)
            return self.metric.score(blended, self.truth, self.submission)
        blended = blended.astype(np.float64)
        if self.by_labels:
            best = self.columns[np.arange(len(blended)), np.argmax(blended, axis=1)]
            return macro_f1_of_labels(best, self.labels, self.n_classes)
        if self.multilabel:
            mask = rule_mask(blended, self.thresholds, self.submission.min_labels,
                             self.submission.max_labels)
        else:
            mask = top_k_mask(blended, 1)
        return float(np.mean(self.metric.on_masks(mask, self.truth)))
