"""Marginal values on OOF: how much the blended OOF score worsens without each model.

The kernel's budget planner keeps the model views with the most value per second, so the
searches write each model's value into the fitted config (`value:` on a model entry; one per
fold on a `folds:` group). Values are in the units of the search's metric, positive when the
model helps:

    value(NAME)         score(blend of every name) - score(blend without NAME)
    value(NAME fold k)  the same, with NAME left out only on fold k's rows

(sign flipped for log loss, where lower is better). A fold's rows are the OOF rows its model
predicted, so leaving NAME out there is what the blend loses without that fold model. Blends are
the kernel's own (`BlendAccumulator`, the fitted weights and shifts, per-row weights), and a row
left with no model gets the kernel's fallback row (`FallbackPrior`). For scores averaged over
rows (log loss, accuracy, f2) a name's fold values add up to its value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference_core.blend import BlendAccumulator
from inference_core.config import SubmissionSection
from inference_core.fallback import FallbackPrior

from .blend import Problem
from .metrics import Metric
from .oof import OofSet
from .top_k import TopKExactScores, TopKOofSet, TopKProblem

# Values are written with 6 decimals (they reproduce the score drop to that precision).
VALUE_DECIMALS = 6


@dataclass
class OofValues:
    names: list[str]
    values: list[float]  # per name
    fold_values: list[dict[int, float]]  # per name: fold index -> value (empty without folds)


def blended_score(oof: OofSet, weights: Sequence[float], mode: str, shifts: Sequence[float],
                  metric: Metric, submission: SubmissionSection,
                  present: Sequence[np.ndarray | None] | None = None) -> float:
    """The metric of the kernel's blend of the OOF set; with `present`, name i is in the blend
    only on the rows where `present[i]` (a boolean mask; None: every row) is true."""
    accumulator = BlendAccumulator(*oof.probs[0].shape, mode=mode)
    present = present if present is not None else [None] * len(oof.probs)
    for probs, weight, shift, rows in zip(oof.probs, weights, shifts, present, strict=True):
        if rows is None:
            accumulator.add(probs, float(weight), threshold_shift=shift)
        elif rows.any():
            accumulator.add(probs[rows], float(weight), rows=np.flatnonzero(rows),
                            threshold_shift=shift)
    return metric.score(FallbackPrior(oof.probs[0].shape[1]).complete(accumulator), oof.truth,
                        submission)


def oof_values(oof: OofSet, weights: Sequence[float], mode: str, shifts: Sequence[float] | None,
               metric: Metric, submission: SubmissionSection) -> OofValues:
    """Every name's value and, with folds, every fold's value (rounded as written)."""
    shifts = list(shifts) if shifts is not None else [0.0] * len(oof.names)
    if isinstance(oof, TopKOofSet):
        return top_k_values(oof, weights, mode, shifts, metric, submission)
    sign = 1.0 if metric.greater_is_better else -1.0
    folds = [] if oof.folds is None else [int(f) for f in np.unique(oof.folds)]
    everywhere = np.ones(len(oof.truth), dtype=bool)
    n = len(oof.names)
    # A mean over rows, with another name weighted (no row left to the fallback): the blend
    # without each name, once, gives the score without it on any fold's rows; all the blends
    # share one pass over the OOF arrays.
    by_rows = [metric.by_rows and any(w > 0 for j, w in enumerate(weights)
                                                    if j != i) for i in range(n)]
    if any(by_rows):
        problem = Problem(oof.probs, oof.truth, metric, mode, submission, shifts)
        full_rows, *without = problem.row_scores_many(
            [weights, *([0.0 if j == i else w for j, w in enumerate(weights)]
                        for i in range(n) if by_rows[i])])
        without_rows = dict(zip([i for i in range(n) if by_rows[i]], without, strict=True))

    def value(full: float, without: float) -> float:
        return round(sign * (full - without), VALUE_DECIMALS) + 0.0  # no -0.0 in the YAML

    def name_values(left_out: int) -> tuple[float, dict[int, float]]:
        if by_rows[left_out]:
            full, rows = float(np.mean(full_rows)), without_rows[left_out]
            return (value(full, float(np.mean(rows))),
                    {f: value(full, float(np.mean(np.where(oof.folds == f, rows, full_rows))))
                     for f in folds})
        full = blended_score(oof, weights, mode, shifts, metric, submission)

        def drop(rows: np.ndarray) -> float:
            present = [None] * len(oof.names)
            present[left_out] = ~rows
            return value(full, blended_score(oof, weights, mode, shifts, metric, submission,
                                             present))

        return drop(everywhere), {f: drop(oof.folds == f) for f in folds}

    per_name = [name_values(i) for i in range(n)]
    return OofValues(list(oof.names), [v for v, _ in per_name], [f for _, f in per_name])


def top_k_values(oof: TopKOofSet, weights: Sequence[float], mode: str,
                 shifts: Sequence[float], metric: Metric, submission: SubmissionSection
                 ) -> OofValues:
    """`oof_values` on top-k OOF, from each blend's per-row outputs (label or loss): the blend
    without a name on a fold's rows is the blend without it there, the full blend elsewhere.
    A row left with no model gets the kernel's fallback row, the uniform prior before any row
    is blended: its argmax, class 0, and a log loss of log(num_classes)."""
    problem = TopKProblem(oof, metric, mode, submission, shifts)
    exact = TopKExactScores(problem)
    sign = 1.0 if metric.greater_is_better else -1.0
    folds = [] if oof.folds is None else [int(f) for f in np.unique(oof.folds)]
    full = exact.outputs(weights)
    fallback = np.full(oof.n_rows, np.log(oof.num_classes) if metric.name == "logloss" else 0,
                       dtype=full.dtype)
    full_score = problem.score_outputs(full)

    def value(outputs: np.ndarray) -> float:
        return round(sign * (full_score - problem.score_outputs(outputs)), VALUE_DECIMALS) + 0.0

    values, fold_values = [], []
    for i in range(len(oof.names)):
        others = [0.0 if j == i else float(w) for j, w in enumerate(weights)]
        without = exact.outputs(others) if any(w > 0 for w in others) else fallback
        values.append(value(without))
        fold_values.append({f: value(np.where(oof.folds == f, without, full)) for f in folds})
    return OofValues(list(oof.names), values, fold_values)


def format_values(values: OofValues, metric: str) -> str:
    """The report's table: each name's value and its folds' values."""
    width = max(len(name) for name in values.names) + 2
    folds = sorted({f for per_name in values.fold_values for f in per_name})
    lines = [f"value: how much the OOF {metric} worsens without the model (or fold)",
             f"{'model':<{width}}{'value':>10}" + "".join(f"{'fold ' + str(f):>10}"
                                                        for f in folds)]
    for name, value, per_fold in zip(values.names, values.values, values.fold_values,
                                     strict=True):
        lines.append(f"{name:<{width}}{value:>10.5f}"
                     + "".join(f"{per_fold[f]:>10.5f}" for f in folds))
    return "\n".join(lines)
