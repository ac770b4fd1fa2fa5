"""Multilabel decision rule fitted on the blended OOF probabilities: thresholds and label counts.

Scored with the kernel's own rule (`kernelpack.search.metrics.label_mask`), in three steps:

1. one global threshold on a 0.01 grid, jointly with `min_labels` (0..3) and `max_labels`;
2. per-class thresholds by coordinate ascent from the global one, only for classes with at least
   `min_support` positive OOF rows (a rare class keeps the global threshold: a handful of rows
   would only fit noise);
3. both fitted again without each fold and scored on it; per-class thresholds are chosen only
   when they beat the global one there too, since on the rows they were fitted on they always do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference_core.config import SubmissionSection
from inference_core.submission import multilabel_mask, rank_order

from ..errors import SearchError
from .metrics import Metric

GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
MIN_LABELS = (0, 1, 2, 3)
MAX_LABELS = (1, 2, 3, 5, 10, 20)
PASSES = 2


@dataclass(frozen=True)
class Rule:
    """A multilabel decision rule; `threshold` is one float or one per class."""

    threshold: float | tuple[float, ...]
    min_labels: int
    max_labels: int | None


def _score(rule: Rule, probs: np.ndarray, truth: np.ndarray, metric: Metric,
           order: np.ndarray | None = None) -> float:
    order = rank_order(probs) if order is None else order
    mask = multilabel_mask(probs, order, rule.threshold, rule.min_labels, rule.max_labels)
    return metric.on_labels(mask, truth)


def fit_global(probs: np.ndarray, truth: np.ndarray, metric: Metric, base: SubmissionSection
               ) -> Rule:
    n_classes = probs.shape[1]
    # The config's own label counts come first, so a tie keeps them.
    counts = [(base.min_labels, base.max_labels)]
    counts += [(lo, hi) for lo in MIN_LABELS if lo <= n_classes
               for hi in (None, *[k for k in MAX_LABELS if k < n_classes])
               if (hi is None or lo <= hi) and (lo, hi) != counts[0]]
    order = rank_order(probs)
    best, best_score = None, None
    for lo, hi in counts:
        for t in GRID:
            rule = Rule(float(t), lo, hi)
            score = _score(rule, probs, truth, metric, order)
            if best_score is None or metric.better(score, best_score):
                best, best_score = rule, score
    return best


def fit_per_class(probs: np.ndarray, truth: np.ndarray, metric: Metric, start: Rule,
                  eligible: np.ndarray) -> Rule:
    order = rank_order(probs)
    thresholds = np.full(probs.shape[1], start.threshold, dtype=np.float64)
    best_score = _score(start, probs, truth, metric, order)
    for _ in range(PASSES):
        for c in np.flatnonzero(eligible):
            for t in GRID:
                trial = thresholds.copy()
                trial[c] = t
                score = _score(Rule(tuple(trial), start.min_labels, start.max_labels),
                               probs, truth, metric, order)
                if metric.better(score, best_score):
                    thresholds, best_score = trial, score
    return Rule(tuple(float(t) for t in thresholds), start.min_labels, start.max_labels)


@dataclass
class ThresholdFoldCheck:
    fold: int
    baseline: float  # the config's rule as it was
    global_: float
    per_class: float


@dataclass
class ThresholdSearch:
    metric: str
    baseline: Rule
    baseline_score: float
    global_rule: Rule
    global_score: float
    per_class_rule: Rule
    per_class_score: float
    eligible: np.ndarray
    folds: list[ThresholdFoldCheck]

    def held_out(self, attribute: str) -> float:
        return float(np.mean([getattr(f, attribute) for f in self.folds]))

    @property
    def chosen(self) -> Rule:
        """Per-class thresholds only when they also win on the held-out folds (every metric
        that thresholds change is greater-is-better)."""
        wins = self.held_out("per_class") > self.held_out("global_")
        return self.per_class_rule if wins and self.eligible.any() else self.global_rule


def search_thresholds(probs: np.ndarray, truth: np.ndarray, folds: np.ndarray, metric: Metric,
                      submission: SubmissionSection, min_support: int = 20
                      ) -> ThresholdSearch:
    """`submission` is the config's submission section; its rule is the baseline."""
    if submission.format != "multilabel":
        raise SearchError(f"submission.format is {submission.format!r}; threshold search is "
                          "for multilabel submissions (multiclass takes the argmax)")
    if metric.name == "logloss":
        raise SearchError("--metric logloss: thresholds do not change the log loss; use f2, "
                          "macro_f1 or accuracy")
    if min_support < 1:
        raise SearchError(f"--min-support {min_support}: must be at least 1")
    baseline = Rule(submission.threshold, submission.min_labels, submission.max_labels)

    def fit(rows: np.ndarray) -> tuple[Rule, Rule, np.ndarray]:
        eligible = truth[rows].sum(axis=0) >= min_support
        global_rule = fit_global(probs[rows], truth[rows], metric, submission)
        per_class = fit_per_class(probs[rows], truth[rows], metric, global_rule, eligible)
        return global_rule, per_class, eligible

    everything = np.ones(len(truth), dtype=bool)
    global_rule, per_class_rule, eligible = fit(everything)
    checks = []
    for fold in np.unique(folds):
        held = folds == fold
        fold_global, fold_per_class, _ = fit(~held)
        checks.append(ThresholdFoldCheck(
            int(fold),
            *(_score(rule, probs[held], truth[held], metric)
              for rule in (baseline, fold_global, fold_per_class))))
    return ThresholdSearch(
        metric.name, baseline, _score(baseline, probs, truth, metric), global_rule,
        _score(global_rule, probs, truth, metric), per_class_rule,
        _score(per_class_rule, probs, truth, metric), eligible, checks)
