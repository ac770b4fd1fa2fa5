"""Multilabel decision rule fitted on the blended OOF probabilities: thresholds and label counts.

Scored with the kernel's own rule (`kernelpack.search.metrics.label_mask`), in three steps:

1. one global threshold on a 0.01 grid, jointly with `min_labels` (0..3) and `max_labels`;
2. per-class thresholds by coordinate ascent from the global one, only for classes with at least
   `min_support` positive OOF rows (a rare class keeps the global threshold: a handful of rows
   would only fit noise);
3. both fitted again without each fold and scored on it; per-class thresholds are chosen only
   when they beat the global one there too, since on the rows they were fitted on they always do.

For f2 and accuracy (a mean over rows) steps 1 and 2 count instead of building a mask per
candidate (`grid_rule`): the same choices, in seconds at iMet's 109k rows x 1,103 classes.
macro_f1 takes the exhaustive scan, fine at small sizes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference_core.config import SubmissionSection

from ..errors import SearchError
from ..progress import show_best, step_bar
from .fast_rule import rule_mask
from .grid_rule import CHUNK_ROWS, ClassFlips, GridCounts
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


def _score(rule: Rule, probs: np.ndarray, truth: np.ndarray, metric: Metric) -> float:
    if metric.on_counts is None:
        return metric.on_labels(_mask(rule, probs), truth)
    # A mean over rows, taken in row chunks: the same rows' scores, the same mean.
    scores = np.concatenate([
        metric.on_masks(_mask(rule, probs[start:start + CHUNK_ROWS]),
                        truth[start:start + CHUNK_ROWS])
        for start in range(0, len(truth), CHUNK_ROWS)])
    return float(np.mean(scores))


def _mask(rule: Rule, probs: np.ndarray) -> np.ndarray:
    return rule_mask(np.asarray(probs, dtype=np.float64), rule.threshold, rule.min_labels,
                     rule.max_labels)


def _label_counts(base: SubmissionSection, n_classes: int) -> list[tuple[int, int | None]]:
    """(min_labels, max_labels) pairs tried, the config's own first, so that a tie keeps them."""
    counts = [(base.min_labels, base.max_labels)]
    counts += [(lo, hi) for lo in MIN_LABELS if lo <= n_classes
               for hi in (None, *[k for k in MAX_LABELS if k < n_classes])
               if (hi is None or lo <= hi) and (lo, hi) != counts[0]]
    return counts


def fit_global(probs: np.ndarray, truth: np.ndarray, metric: Metric, base: SubmissionSection
               ) -> Rule:
    counts = _label_counts(base, probs.shape[1])
    best, best_score = None, None
    for lo, hi in counts:
        for t in GRID:
            rule = Rule(float(t), lo, hi)
            score = _score(rule, probs, truth, metric)
            if best_score is None or metric.better(score, best_score):
                best, best_score = rule, score
    return best


def fit_global_by_counts(grid: GridCounts, rows: np.ndarray, metric: Metric,
                         base: SubmissionSection) -> Rule:
    """`fit_global` on `rows` from their grid counts: every threshold of a label count pair at
    once, the same rule chosen (the first best, in the same order)."""
    counts = _label_counts(base, grid.n_classes)
    scores = grid.scores(metric, rows, counts)
    best = int(np.argmax(scores))  # the first of equal bests, as the scan keeps
    lo, hi = counts[best // len(GRID)]
    return Rule(float(GRID[best % len(GRID)]), lo, hi)


def fit_per_class(probs: np.ndarray, truth: np.ndarray, metric: Metric, start: Rule,
                  eligible: np.ndarray) -> Rule:
    thresholds = np.full(probs.shape[1], start.threshold, dtype=np.float64)
    best_score = _score(start, probs, truth, metric)
    for _ in range(PASSES):
        for c in np.flatnonzero(eligible):
            for t in GRID:
                trial = thresholds.copy()
                trial[c] = t
                score = _score(Rule(tuple(trial), start.min_labels, start.max_labels),
                               probs, truth, metric)
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
                      submission: SubmissionSection, min_support: int = 20,
                      progress: bool = False) -> ThresholdSearch:
    """`submission` is the config's submission section; its rule is the baseline. With
    `progress`, a bar (fits done, and the best held-out score so far) once it runs long."""
    if submission.format != "multilabel":
        raise SearchError(f"submission.format is {submission.format!r}; threshold search is "
                          "for multilabel submissions (multiclass takes the argmax)")
    if metric.name == "logloss":
        raise SearchError("--metric logloss: thresholds do not change the log loss; use f2, "
                          "macro_f1 or accuracy")
    if min_support < 1:
        raise SearchError(f"--min-support {min_support}: must be at least 1")
    baseline = Rule(submission.threshold, submission.min_labels, submission.max_labels)

    by_counts = metric.on_counts is not None
    if by_counts:
        depth = max(k for pair in _label_counts(submission, probs.shape[1]) for k in pair
                    if k is not None)
        grid = GridCounts(probs, truth, GRID, depth)
        flips = ClassFlips(probs, truth, GRID, grid, metric)

    def fit(rows: np.ndarray) -> tuple[Rule, Rule, np.ndarray]:
        eligible = truth[rows].sum(axis=0) >= min_support
        if not by_counts:
            global_rule = fit_global(probs[rows], truth[rows], metric, submission)
            per_class = fit_per_class(probs[rows], truth[rows], metric, global_rule, eligible)
            return global_rule, per_class, eligible
        global_rule = fit_global_by_counts(grid, rows, metric, submission)
        thresholds = flips.fit(rows, global_rule.threshold, global_rule.min_labels,
                               global_rule.max_labels, eligible, PASSES)
        return global_rule, Rule(tuple(float(t) for t in thresholds), global_rule.min_labels,
                                 global_rule.max_labels), eligible

    everything = np.ones(len(truth), dtype=bool)
    bar = step_bar(1 + len(np.unique(folds)), "threshold search", progress)
    global_rule, per_class_rule, eligible = fit(everything)
    bar.update(1)
    checks = []
    for fold in np.unique(folds):
        held = folds == fold
        fold_global, fold_per_class, _ = fit(~held)
        checks.append(ThresholdFoldCheck(
            int(fold),
            *(_score(rule, probs[held], truth[held], metric)
              for rule in (baseline, fold_global, fold_per_class))))
        bar.update(1)
        show_best(bar, metric.name, max(max(c.global_, c.per_class) for c in checks))
    bar.close()
    return ThresholdSearch(
        metric.name, baseline, _score(baseline, probs, truth, metric), global_rule,
        _score(global_rule, probs, truth, metric), per_class_rule,
        _score(per_class_rule, probs, truth, metric), eligible, checks)
