"""Blend weights fitted on out-of-fold predictions: on the simplex, with restarts, checked by fold.

The objective is the kernel's own computation: `inference_core.blend.BlendAccumulator` blends the
OOF probabilities (weighted mean, or weighted geometric mean in log space, after each model's
threshold shift) and `kernelpack.search.metrics` scores the labels the kernel would write. Weights
are `|x| / sum |x|`, so Nelder-Mead searches freely while every candidate stays on the simplex and a
model can get exactly 0 (the iMet 2019 winners passed bounds to Nelder-Mead, which ignores them).
The metrics are piecewise constant in the weights, so the search restarts from random points of
the simplex; each single model and equal weights are candidates too, so the fit never scores
below them on the OOF rows. Fitting on k-1 folds and scoring the held-out one shows how much of
the gain is real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from inference_core.blend import BlendAccumulator
from inference_core.config import SubmissionSection

from ..errors import SearchError
from .metrics import Metric
from .oof import OofSet

# Written to the YAML with 4 decimals; every score reported is that of the rounded weights.
WEIGHT_DECIMALS = 4
SIMPLEX_STEP = 0.3
EVALUATIONS_PER_MODEL = 150


def blend_probs(probs: Sequence[np.ndarray], weights: Sequence[float], mode: str,
                shifts: Sequence[float] | None = None) -> np.ndarray:
    """The kernel's blend of one probability array per model."""
    accumulator = BlendAccumulator(*probs[0].shape, mode=mode)
    shifts = shifts if shifts is not None else [0.0] * len(probs)
    for p, weight, shift in zip(probs, weights, shifts, strict=True):
        accumulator.add(p, float(weight), threshold_shift=shift)
    return accumulator.result()


@dataclass(frozen=True)
class Problem:
    """What one fit scores: the models' OOF probabilities on some rows, and how to score them."""

    probs: list[np.ndarray]
    truth: np.ndarray
    metric: Metric
    mode: str
    submission: SubmissionSection
    shifts: list[float]

    def score(self, weights: Sequence[float]) -> float:
        blended = blend_probs(self.probs, weights, self.mode, self.shifts)
        return self.metric.score(blended, self.truth, self.submission)

    def rows(self, index: np.ndarray) -> Problem:
        return Problem([p[index] for p in self.probs], self.truth[index], self.metric,
                       self.mode, self.submission, self.shifts)


def _on_simplex(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    total = a.sum()
    return a / total if total > 0 else np.full(len(x), 1.0 / len(x))


def _rounded(weights: np.ndarray) -> np.ndarray:
    rounded = np.round(weights, WEIGHT_DECIMALS)
    return rounded if rounded.sum() > 0 else weights


def fit_weights(problem: Problem, restarts: int, seed: int) -> tuple[np.ndarray, float]:
    """The best rounded simplex weights found for `problem`, and their score."""
    n = len(problem.probs)
    sign = -1.0 if problem.metric.greater_is_better else 1.0
    candidates = [np.full(n, 1.0 / n), *np.eye(n)]
    if n > 1:
        rng = np.random.default_rng(seed)
        starts = [np.full(n, 1.0 / n), *rng.dirichlet(np.ones(n), size=restarts - 1)]
        for x0 in starts:
            result = minimize(lambda x: sign * problem.score(_on_simplex(x)), x0,
                              method="Nelder-Mead",
                              options={"initial_simplex": np.vstack([x0, x0 + SIMPLEX_STEP
                                                                     * np.eye(n)]),
                                       "xatol": 1e-4, "fatol": 1e-12,
                                       "maxfev": EVALUATIONS_PER_MODEL * n})
            candidates.append(_on_simplex(result.x))
    best, best_score = None, None
    for candidate in candidates:
        weights = _rounded(candidate)
        score = problem.score(weights)
        # Ties keep the earlier candidate: equal weights first, then single models.
        if best_score is None or problem.metric.better(score, best_score):
            best, best_score = weights, score
    return best, best_score


@dataclass
class BlendFoldCheck:
    """Weights fitted without one fold, and scores on that held-out fold."""

    fold: int
    weights: np.ndarray
    fitted: float  # those weights
    equal: float  # equal weights
    best_single: float  # the model that scored best on the other folds


@dataclass
class BlendSearch:
    names: list[str]
    metric: str
    mode: str
    weights: np.ndarray
    score: float
    equal_score: float
    single_scores: list[float]
    folds: list[BlendFoldCheck]

    @property
    def weight_spread(self) -> np.ndarray:
        """Per model: the largest distance between a fold's weight and the full fit's."""
        if not self.folds:
            return np.zeros(len(self.names))
        return np.max([np.abs(f.weights - self.weights) for f in self.folds], axis=0)


def search_blend(oof: OofSet, metric: Metric, mode: str, submission: SubmissionSection,
                 shifts: Sequence[float] | None = None, restarts: int = 8,
                 seed: int = 0) -> BlendSearch:
    """Fit weights on all OOF rows, and again without each fold to check them on it."""
    if restarts < 1:
        raise SearchError(f"--restarts {restarts}: must be at least 1")
    n = len(oof.names)
    problem = Problem(oof.probs, oof.truth, metric, mode, submission,
                      list(shifts) if shifts is not None else [0.0] * n)
    weights, score = fit_weights(problem, restarts, seed)
    singles = [problem.score(np.eye(n)[i]) for i in range(n)]
    checks = []
    for fold in ([] if oof.folds is None else np.unique(oof.folds)):
        train, held = problem.rows(oof.folds != fold), problem.rows(oof.folds == fold)
        fold_weights, _ = fit_weights(train, restarts, seed)
        train_singles = [train.score(np.eye(n)[i]) for i in range(n)]
        best = 0
        for i in range(1, n):
            if metric.better(train_singles[i], train_singles[best]):
                best = i
        checks.append(BlendFoldCheck(int(fold), fold_weights, held.score(fold_weights),
                                held.score(np.full(n, 1.0 / n)), held.score(np.eye(n)[best])))
    return BlendSearch(oof.names, metric.name, mode, weights, score,
                       problem.score(np.full(n, 1.0 / n)), singles, checks)
