"""Blend weights fitted on out-of-fold predictions: on the simplex, with restarts, checked by fold.

The objective is the kernel's own computation: `inference_core.blend.BlendAccumulator` blends the
OOF probabilities (weighted mean, or weighted geometric mean in log space, after each model's
threshold shift) and `kernelpack.search.metrics` scores the labels the kernel would write. Weights
are `|x| / sum |x|`, so Nelder-Mead searches freely while every candidate stays on the simplex and a
model can get exactly 0 (the iMet 2019 winners passed bounds to Nelder-Mead, which ignores them).
The metrics are piecewise constant in the weights, so the search restarts from random points of
the simplex; each single model, equal weights and the obvious mixes are candidates too, so the
fit never scores below them on the OOF rows. Fitting on k-1 folds and scoring the held-out one
shows how much of the gain is real.

Past `SEARCH_ROWS` rows the optimiser scores a small sample (`sample.SampledProblem`), and only
its best results, with the candidates above, are scored exactly on every row (`ExactScores`):
what is written and reported is always the exact score. Top-k OOF (`top_k`, very wide outputs)
takes the same path with its own exact scorer and sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from inference_core.blend import BLEND_EPS, BlendAccumulator
from inference_core.config import SubmissionSection

from ..errors import SearchError
from ..progress import show_best, step_bar
from .metrics import Metric, macro_f1_of_labels
from .oof import OofSet
from .sample import SampledProblem
from .top_k import TopKExactScores, TopKOofSet, TopKProblem

# Written to the YAML with 4 decimals; every score reported is that of the rounded weights.
WEIGHT_DECIMALS = 4
SIMPLEX_STEP = 0.3
EVALUATIONS_PER_MODEL = 150
# Above this many rows the optimiser sees a random sample of them (`sample.SampledProblem`),
# and its best candidates are scored exactly on every row.
SEARCH_ROWS = 4_000
# The optimiser's results per fit that are scored on every row at scale (best on the sample).
CONFIRMED_PER_FIT = 2
# Log loss: starts whose results are this close (each weight) found the same optimum.
SAME_OPTIMUM = 2e-3
# Rows blended at once when scoring on every row: memory stays one chunk of the blend.
CHUNK_ROWS = 4096


def blend_probs(probs: Sequence[np.ndarray], weights: Sequence[float], mode: str,
                shifts: Sequence[float] | None = None) -> np.ndarray:
    """The kernel's blend of one probability array per model, `CHUNK_ROWS` rows at a time: the
    blend is row by row, so the chunks change no bit of it, and memory holds the result and
    one chunk's sum instead of two full arrays."""
    shifts = shifts if shifts is not None else [0.0] * len(probs)
    blended = np.empty(probs[0].shape, dtype=np.float64)
    for start in range(0, len(blended), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        accumulator = BlendAccumulator(*blended[rows].shape, mode=mode)
        for p, weight, shift in zip(probs, weights, shifts, strict=True):
            accumulator.add(p[rows], float(weight), threshold_shift=shift)
        blended[rows] = accumulator.result()
    return blended


def _shifted(probs: np.ndarray, shift: float, mode: str) -> np.ndarray:
    """A model's probabilities as `BlendAccumulator.add_columns` turns them before weighting:
    float64, shifted, and for gmean clipped and logged."""
    p = np.array(probs, dtype=np.float64)
    p -= shift
    if mode == "gmean":
        np.log(np.clip(p, BLEND_EPS, 1.0, out=p), out=p)
    return p


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
        if self.metric.by_rows:
            return float(np.mean(self.row_scores(weights)))
        blended = blend_probs(self.probs, weights, self.mode, self.shifts)
        return self.metric.score(blended, self.truth, self.submission)

    def row_scores(self, weights: Sequence[float]) -> np.ndarray:
        """Each row's part of the score, blended `CHUNK_ROWS` rows at a time (the kernel's
        blend is row by row, so the chunks change no bit of it)."""
        return self.row_scores_many([weights])[0]

    @property
    def by_labels(self) -> bool:
        """Multiclass macro F1: a function of each row's label (its argmax), not a mean over
        rows; `row_scores_many(labels=True)` gives the labels."""
        return self.metric.name == "macro_f1" and self.submission.format != "multilabel"

    def row_scores_many(self, weight_sets: Sequence[Sequence[float]], labels: bool = False
                        ) -> list[np.ndarray]:
        """`row_scores` of several weight vectors in one pass over the OOF arrays (with
        `labels`, each row's argmax instead): each model's chunk is shifted (and, for gmean,
        logged) once, as the kernel's accumulator does before weighting it, and every blend adds
        those; the blends are the kernel's, bit for bit."""
        scores = [np.empty(len(self.truth), dtype=np.int64 if labels else np.float64)
                  for _ in weight_sets]
        used = [any(w[m] > 0 for w in weight_sets) for m in range(len(self.probs))]
        for start in range(0, len(self.truth), CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            shifted = [_shifted(p[rows], shift, self.mode) if use else None
                       for p, shift, use in zip(self.probs, self.shifts, used, strict=True)]
            for weights, out in zip(weight_sets, scores, strict=True):
                # The mean of the logs, then exp: what the gmean accumulator computes.
                accumulator = BlendAccumulator(*shifted[used.index(True)].shape, mode="mean")
                for values, weight in zip(shifted, weights, strict=True):
                    if weight > 0:
                        accumulator.add(values, float(weight))
                blended = accumulator.result()
                if self.mode == "gmean":
                    np.exp(blended, out=blended)
                out[rows] = np.argmax(blended, axis=1) if labels else \
                    self.metric.row_scores(blended, self.truth[rows], self.submission)
        return scores

    @property
    def n_models(self) -> int:
        return len(self.probs)

    def rows(self, index: np.ndarray) -> Problem:
        return Problem([p[index] for p in self.probs], self.truth[index], self.metric,
                       self.mode, self.submission, self.shifts)


class ExactScores:
    """Exact scores of weight vectors on any subset of the OOF rows. For a mean over rows
    (f2, accuracy, log loss) each blend is computed once, on every row, and kept as per-row
    scores, so a candidate costs one pass over the OOF arrays whatever the folds ask of it."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        # Multiclass macro F1 keeps each row's label instead, and counts any rows' classes.
        self.by_labels = problem.by_labels
        self.per_row = problem.metric.by_rows or self.by_labels
        self.truth_labels = problem.truth.argmax(axis=1) if self.by_labels else None
        self._rows: dict[tuple[float, ...], np.ndarray] = {}

    def score(self, weights: np.ndarray, rows: np.ndarray | None = None) -> float:
        if not self.per_row:
            return (self.problem if rows is None else self.problem.rows(rows)).score(weights)
        self.prefetch([weights])
        scores = self._rows[tuple(float(w) for w in weights)]
        if self.by_labels:
            truth = self.truth_labels
            return macro_f1_of_labels(scores if rows is None else scores[rows],
                                      truth if rows is None else truth[rows],
                                      self.problem.truth.shape[1])
        return float(np.mean(scores if rows is None else scores[rows]))

    def prefetch(self, weight_sets: Sequence[np.ndarray]) -> None:
        """Compute the per-row scores (or labels) of the weight vectors not yet known, in one
        pass."""
        if not self.per_row:
            return
        keys = list(dict.fromkeys(tuple(float(w) for w in weights) for weights in weight_sets))
        missing = [key for key in keys if key not in self._rows]
        if missing:
            self._rows.update(zip(missing, self.problem.row_scores_many(
                missing, labels=self.by_labels), strict=True))


def _on_simplex(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    total = a.sum()
    return a / total if total > 0 else np.full(len(x), 1.0 / len(x))


def _rounded(weights: np.ndarray) -> np.ndarray:
    rounded = np.round(weights, WEIGHT_DECIMALS)
    return rounded if rounded.sum() > 0 else weights


def _nelder_mead(objective: Callable[[np.ndarray], float], x0: np.ndarray,
                 evaluations: int) -> np.ndarray:
    n = len(x0)
    result = minimize(lambda x: objective(_on_simplex(x)), x0, method="Nelder-Mead",
                      options={"initial_simplex": np.vstack([x0, x0 + SIMPLEX_STEP * np.eye(n)]),
                               "xatol": 1e-4, "fatol": 1e-12, "maxfev": evaluations})
    return _on_simplex(result.x)


def _pair_mixes(n: int) -> list[np.ndarray]:
    """Equal weights on every pair of models."""
    return [np.where(np.isin(np.arange(n), pair), 0.5, 0.0)
            for pair in itertools.combinations(range(n), 2)]


def _best_k_mixes(single_scores: list[float], metric: Metric) -> list[np.ndarray]:
    """Equal weights on the best 3, 4, ... n-1 models alone."""
    n = len(single_scores)
    sign = -1.0 if metric.greater_is_better else 1.0
    best_first = np.argsort([sign * s for s in single_scores], kind="stable")
    return [np.where(np.isin(np.arange(n), best_first[:k]), 1.0 / k, 0.0) for k in range(3, n)]


def fit_weights(search: Problem | SampledProblem, restarts: int, seed: int,
                exact: Callable[[np.ndarray], float], bar: Any = None
                ) -> tuple[np.ndarray, float]:
    """The best rounded simplex weights found, and their exact score. The optimiser runs on
    `search`; `exact` scores a candidate on the fit's rows. When `search` is a sample, only
    the optimiser's `CONFIRMED_PER_FIT` best results (on the sample) are scored exactly.
    Candidates: equal weights, each model, the optimiser's results, the obvious mixes."""
    metric = search.metric
    n = search.n_models
    sign = -1.0 if metric.greater_is_better else 1.0
    candidates = [np.full(n, 1.0 / n), *np.eye(n)]
    if n > 1:
        rng = np.random.default_rng(seed)
        starts = [np.full(n, 1.0 / n), *rng.dirichlet(np.ones(n), size=restarts - 1)]
        found = []
        for i, x0 in enumerate(starts):
            result = _rounded(_nelder_mead(lambda w: sign * search.score(w), x0,
                                           EVALUATIONS_PER_MODEL * n))
            # Log loss is smooth (convex in the weights for rows that sum to 1): once two
            # starts end at one optimum, the others would too.
            converged = metric.on_labels is None and any(
                np.abs(result - f).max() <= SAME_OPTIMUM for f in found)
            found.append(result)
            if bar is not None:
                bar.update(len(starts) - i if converged else 1)
                best_found = min(sign * search.score(w) for w in found)
                show_best(bar, metric.name, sign * best_found)
            if converged:
                break
        if getattr(search, "sampled", False):
            on_sample = [sign * search.score(w) for w in found]
            found = [found[i] for i in np.argsort(on_sample, kind="stable")[:CONFIRMED_PER_FIT]]
        # The obvious mixes a competitor would try by hand: the fit never scores below one.
        candidates += found + _pair_mixes(n) + _best_k_mixes(
            [exact(np.eye(n)[i]) for i in range(n)], metric)
    best, best_score = None, None
    for candidate in candidates:
        weights = _rounded(candidate)
        score = exact(weights)
        # Ties keep the earlier candidate: equal weights first, then single models.
        if best_score is None or metric.better(score, best_score):
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


def search_blend(oof: OofSet | TopKOofSet, metric: Metric, mode: str,
                 submission: SubmissionSection,
                 shifts: Sequence[float] | None = None, restarts: int = 8,
                 seed: int = 0, progress: bool = False) -> BlendSearch:
    """Fit weights on all OOF rows, and again without each fold to check them on it; with
    `progress`, a bar (optimiser starts, and the best score so far) once it runs long."""
    if restarts < 1:
        raise SearchError(f"--restarts {restarts}: must be at least 1")
    n = len(oof.names)
    shifts = list(shifts) if shifts is not None else [0.0] * n
    if isinstance(oof, TopKOofSet):
        problem = TopKProblem(oof, metric, mode, submission, shifts)
        exact = TopKExactScores(problem)
    else:
        problem = Problem(oof.probs, oof.truth, metric, mode, submission, shifts)
        exact = ExactScores(problem)
    everything = np.ones(oof.n_rows, dtype=bool)
    sampled = None
    if oof.n_rows > SEARCH_ROWS:
        sample = np.sort(np.random.default_rng(seed).choice(oof.n_rows, SEARCH_ROWS,
                                                            replace=False))
        sampled = problem.sample(sample) if isinstance(problem, TopKProblem) else \
            SampledProblem(oof.probs, oof.truth, metric, mode, submission, shifts, sample)

    def fit(rows: np.ndarray) -> tuple[np.ndarray, float]:
        search = problem.rows(rows) if sampled is None else sampled.subset(rows[sample])
        return fit_weights(search, restarts, seed, lambda w: exact.score(w, rows), bar)

    fits = 1 + (0 if oof.folds is None else len(np.unique(oof.folds)))
    bar = step_bar(fits * restarts if n > 1 else 0, "blend search", progress)

    # The candidates every fit shares, scored in one pass over the OOF arrays.
    exact.prefetch([np.full(n, 1.0 / n), *np.eye(n), *_pair_mixes(n)])
    exact.prefetch(_best_k_mixes([exact.score(np.eye(n)[i]) for i in range(n)], metric))
    weights, score = fit(everything)
    singles = [exact.score(np.eye(n)[i]) for i in range(n)]
    checks = []
    for fold in ([] if oof.folds is None else np.unique(oof.folds)):
        train, held = oof.folds != fold, oof.folds == fold
        fold_weights, _ = fit(train)
        train_singles = [exact.score(np.eye(n)[i], train) for i in range(n)]
        best = 0
        for i in range(1, n):
            if metric.better(train_singles[i], train_singles[best]):
                best = i
        checks.append(BlendFoldCheck(int(fold), fold_weights, exact.score(fold_weights, held),
                                     exact.score(np.full(n, 1.0 / n), held),
                                     exact.score(np.eye(n)[best], held)))
    bar.close()
    return BlendSearch(oof.names, metric.name, mode, weights, score,
                       exact.score(np.full(n, 1.0 / n)), singles, checks)
