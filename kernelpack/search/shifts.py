"""Per-model threshold shifts fitted on OOF, after the weights (`blend search --fit-shifts`).

The kernel subtracts each model's `threshold_shift` from its probabilities before the blend
(`inference_core.blend`); the 2019 iMet winners tuned one per architecture. Here each `--oof` name
(one model, or all folds of one architecture, which share one shift) gets one, fitted at the
blend's fitted weights:

* coordinate search, one model at a time: first a coarse grid of shifts (-0.3 to 0.3, step
  0.05), then the 0.01 grid around the best; a move is taken only when it scores strictly better,
  so a shift that changes nothing stays where it started (the base config's, else 0);
* the objective is the kernel's blend formula (in float32) and label rule on the OOF rows (a
  random sample of `SEARCH_ROWS` of them at scale), the other models' weighted sum kept while one
  model's shift varies, so that a candidate computes one model's term;
* the shifts found are scored exactly on every row of the fit against the starting ones, and the
  better kept;
* the same fit runs without each fold, at that fold's fitted weights, and is scored on the
  held-out fold against the starting shifts. The fitted shifts are written only when they win on
  the held-out folds (mean over folds); otherwise the starting shifts stay, as threshold search
  keeps the global threshold when per-class ones do not hold up.

In `mean` mode the shifts only move the blend by their weighted mean (one number in effect, as a
threshold would); in `gmean` mode each model's shift changes the blend's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from inference_core.blend import BLEND_EPS
from inference_core.config import SubmissionSection

from ..progress import show_best, step_bar
from .blend import SEARCH_ROWS, ExactScores, Problem
from .metrics import Metric
from .oof import OofSet
from .top_k import TopKExactScores, TopKOofSet, TopKProblem

COARSE = np.round(np.arange(-0.30, 0.3001, 0.05), 2)
FINE = np.round(np.arange(-0.04, 0.0401, 0.01), 2)
SWEEPS = 3


class ShiftObjective:
    """The metric of the blend at fixed `weights`, as a function of the shifts, on rows held in
    memory: the kernel's formula (shift, clip and log for gmean, weight, add, divide) in float32,
    close to the kernel's float64 and only a search objective (what the search keeps is scored
    exactly). While one model's shift varies, the other models' weighted sum is kept, so a
    candidate computes one model's term and one addition."""

    def __init__(self, probs: Sequence[np.ndarray], truth: np.ndarray, weights: Sequence[float],
                 mode: str, metric: Metric, submission: SubmissionSection) -> None:
        self.probs = [np.asarray(p, dtype=np.float32) for p in probs]
        self.truth = truth
        self.weights = [float(w) for w in weights]
        self.mode, self.metric, self.submission = mode, metric, submission
        self.total_weight = np.float32(sum(self.weights))
        self._terms: list[dict[float, np.ndarray]] = [{} for _ in self.probs]
        self._rest: tuple[tuple, np.ndarray] | None = None

    def _term(self, m: int, shift: float) -> np.ndarray:
        cache = self._terms[m]
        if shift not in cache:
            if len(cache) >= 2:  # the current shift's term and one candidate's
                cache.pop(next(iter(cache)))
            p = self.probs[m] - np.float32(shift)
            if self.mode == "gmean":
                np.log(np.clip(p, BLEND_EPS, 1.0, out=p), out=p)
            p *= np.float32(self.weights[m])
            cache[shift] = p
        return cache[shift]

    def _sum(self, shifts: Sequence[float], skip: int | None = None) -> np.ndarray:
        total = np.zeros(self.probs[0].shape, dtype=np.float32)
        for m, (weight, shift) in enumerate(zip(self.weights, shifts, strict=True)):
            if weight > 0 and m != skip:
                total += self._term(m, float(shift))
        return total

    def score(self, shifts: Sequence[float], varying: int | None = None) -> float:
        """The metric at `shifts`; `varying`: the one model whose shift differs from the last
        call's (the others' sum is then reused)."""
        shifts = [float(s) for s in shifts]
        if varying is None:
            total = self._sum(shifts)
        else:
            key = (varying, tuple(shifts[:varying] + shifts[varying + 1:]))
            if self._rest is None or self._rest[0] != key:
                self._rest = (key, self._sum(shifts, skip=varying))
            total = self._rest[1].copy()
            if self.weights[varying] > 0:
                total += self._term(varying, shifts[varying])
        total /= self.total_weight
        if self.mode == "gmean":
            np.exp(total, out=total)
        return self.metric.score(total, self.truth, self.submission)


def coordinate_search(objective: Callable[[list[float], int | None], float],
                      start: Sequence[float], active: Sequence[bool],
                      greater_is_better: bool) -> list[float]:
    """Shifts from `start`, one model (of the `active` ones) at a time: the coarse grid, then
    the fine grid around the best; only strictly better moves are taken. `objective` is told
    which model's shift it is varying."""
    sign = -1.0 if greater_is_better else 1.0
    current = [float(s) for s in start]
    best = sign * objective(current, None)
    for _ in range(SWEEPS):
        moved = False
        for m in (i for i, on in enumerate(active) if on):
            for grid in (COARSE, np.round(current[m] + FINE, 2)):
                for value in grid:
                    value = float(value)
                    if value == current[m] or not -1.0 < value < 1.0:
                        continue
                    trial = current.copy()
                    trial[m] = value
                    score = sign * objective(trial, m)
                    if score < best:
                        best, current, moved = score, trial, True
        if not moved:
            break
    return current


@dataclass
class ShiftFoldCheck:
    """Shifts fitted without one fold (at that fold's weights), scored on the held-out fold."""

    fold: int
    shifts: list[float]
    fitted: float  # the fold's weights with these shifts
    start: float  # the fold's weights with the starting shifts


@dataclass
class ShiftSearch:
    names: list[str]
    metric: str
    greater_is_better: bool
    start: list[float]  # the base config's shifts (0 without one)
    fitted: list[float]  # fitted on every OOF row
    fitted_score: float
    start_score: float
    folds: list[ShiftFoldCheck]

    @property
    def held_out_wins(self) -> bool:
        """Whether the fitted shifts beat the starting ones on the held-out folds (mean); True
        without folds, where nothing can be checked."""
        if not self.folds:
            return True
        fitted = float(np.mean([f.fitted for f in self.folds]))
        start = float(np.mean([f.start for f in self.folds]))
        return fitted > start if self.greater_is_better else fitted < start

    @property
    def chosen(self) -> list[float]:
        return self.fitted if self.held_out_wins and self.fitted != self.start else self.start

    @property
    def chosen_score(self) -> float:
        return self.fitted_score if self.chosen is self.fitted else self.start_score


class ExactShifts:
    """Exact scores of (weights, shifts) on any rows of the OOF set, one exact scorer per shift
    vector (its per-row results are kept, so every fold reads one pass)."""

    def __init__(self, oof: OofSet | TopKOofSet, metric: Metric, mode: str,
                 submission: SubmissionSection, start: list[float]) -> None:
        if isinstance(oof, TopKOofSet):
            top_k = TopKProblem(oof, metric, mode, submission, start)
            self._make = lambda shifts: TopKExactScores(top_k.with_shifts(shifts))
        else:
            self._make = lambda shifts: ExactScores(Problem(oof.probs, oof.truth, metric, mode,
                                                            submission, shifts))
        self._by_shifts: dict[tuple[float, ...], ExactScores | TopKExactScores] = {}

    def score(self, weights: np.ndarray, shifts: Sequence[float],
              rows: np.ndarray | None = None) -> float:
        key = tuple(float(s) for s in shifts)
        if key not in self._by_shifts:
            self._by_shifts[key] = self._make(list(key))
        return self._by_shifts[key].score(np.asarray(weights, dtype=np.float64), rows)


def _objective(oof: OofSet | TopKOofSet, metric: Metric, mode: str,
               submission: SubmissionSection, rows: np.ndarray, weights: np.ndarray
               ) -> Callable[[list[float], int | None], float]:
    """The shift search's objective on `rows` (positions) at `weights`."""
    if isinstance(oof, TopKOofSet):
        problem = TopKProblem(oof, metric, mode, submission, [0.0] * len(oof.names), rows)
        return lambda shifts, _: problem.score_outputs(problem.outputs_many([weights],
                                                                            shifts)[0])
    return ShiftObjective([p[rows] for p in oof.probs], oof.truth[rows], weights, mode, metric,
                          submission).score


def search_shifts(oof: OofSet | TopKOofSet, metric: Metric, mode: str,
                  submission: SubmissionSection,
                  weights: Sequence[float], fold_weights: dict[int, np.ndarray],
                  start: Sequence[float] | None = None, seed: int = 0,
                  progress: bool = False) -> ShiftSearch:
    """Fit one shift per OOF name at `weights` (and without each fold, at `fold_weights[fold]`),
    from `start` (default 0), as the module's note says."""
    n = len(oof.names)
    start = [float(s) for s in start] if start is not None else [0.0] * n
    exact = ExactShifts(oof, metric, mode, submission, start)
    n_rows = oof.n_rows
    sample = np.arange(n_rows) if n_rows <= SEARCH_ROWS else np.sort(
        np.random.default_rng(seed).choice(n_rows, SEARCH_ROWS, replace=False))
    folds = [] if oof.folds is None else [int(f) for f in np.unique(oof.folds)]
    bar = step_bar(1 + len(folds), "shift search", progress)

    def fit(rows: np.ndarray, fit_weights: np.ndarray) -> list[float]:
        """Shifts fitted on `rows` (a mask of every OOF row), at `fit_weights`."""
        objective = _objective(oof, metric, mode, submission, sample[rows[sample]],
                               fit_weights)
        found = coordinate_search(objective, start, [w > 0 for w in fit_weights],
                                  metric.greater_is_better)
        bar.update(1)
        if found != start and metric.better(exact.score(fit_weights, found, rows),
                                            exact.score(fit_weights, start, rows)):
            show_best(bar, metric.name, exact.score(fit_weights, found, rows))
            return found
        return list(start)

    everything = np.ones(n_rows, dtype=bool)
    weights = np.asarray(weights, dtype=np.float64)
    fitted = fit(everything, weights)
    checks = []
    for fold in folds:
        held = oof.folds == fold
        w = np.asarray(fold_weights[fold], dtype=np.float64)
        shifts = fit(~held, w)
        checks.append(ShiftFoldCheck(fold, shifts, exact.score(w, shifts, held),
                                     exact.score(w, start, held)))
    bar.close()
    return ShiftSearch(list(oof.names), metric.name, metric.greater_is_better, start, fitted,
                       exact.score(weights, fitted), exact.score(weights, start), checks)


def format_shift_search(result: ShiftSearch) -> str:
    """The shifts fitted, their scores, and the fold check; a screenful at any number of
    models."""
    width = max(len(name) for name in [*result.names, "model"]) + 2
    chosen = result.chosen is result.fitted
    lines = ["threshold shifts (subtracted from each model's probabilities before the blend):",
             f"{'model':<{width}}{'start':>8}{'fitted':>8}{'written':>9}"]
    for name, s0, s1, s2 in zip(result.names, result.start, result.fitted, result.chosen,
                                strict=True):
        lines.append(f"{name:<{width}}{s0:>8.2f}{s1:>8.2f}{s2:>9.2f}")
    lines.append(f"OOF {result.metric}: {result.start_score:.4f} with the starting shifts, "
                 f"{result.fitted_score:.4f} with the fitted ones")
    if result.folds:
        lines += [f"fit on the other folds, scored on the held-out fold ({result.metric}):",
                  f"{'fold':<6}{'fitted':>10}{'start':>10}   shifts"]
        for f in result.folds:
            lines.append(f"{f.fold:<6}{f.fitted:>10.4f}{f.start:>10.4f}   "
                         + " ".join(f"{s:.2f}" for s in f.shifts))
        lines.append(f"{'mean':<6}{np.mean([f.fitted for f in result.folds]):>10.4f}"
                     f"{np.mean([f.start for f in result.folds]):>10.4f}")
    if result.fitted == result.start:
        lines.append("written: the starting shifts (no shift scored better on the OOF rows)")
    elif chosen:
        lines.append("written: the fitted shifts (they also win on the held-out folds)")
    else:
        lines.append("written: the starting shifts (the fitted ones do not win on the held-out "
                     "folds)")
    return "\n".join(lines)


def shift_report(result: ShiftSearch) -> dict:
    return {"metric": result.metric, "written": "fitted" if result.chosen is result.fitted
            else "start", "score": result.chosen_score, "start_score": result.start_score,
            "fitted_score": result.fitted_score,
            "models": [{"name": n, "start": s0, "fitted": s1, "written": s2}
                       for n, s0, s1, s2 in zip(result.names, result.start, result.fitted,
                                                result.chosen, strict=True)],
            "folds": [{"fold": f.fold, "shifts": f.shifts, "fitted": f.fitted, "start": f.start}
                      for f in result.folds]}
