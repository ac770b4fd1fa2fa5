"""Blending in two levels: one model's TTA views (`combine_views`: mean, geometric mean or max),
then the models (`BlendAccumulator`: weighted mean or weighted geometric mean, streamed).

Members are added one at a time, in any order and in any row batches; the accumulator holds one
running sum and one weight per row, so memory does not grow with the number of members, and a
member that covered only some rows (dropped late by a deadline) is re-normalised per row.

    mean:  sum_m w_m (p_m - s_m) / sum_m w_m
    gmean: exp(sum_m w_m log(p_m - s_m) / sum_m w_m)

where `s_m` is the member's threshold shift (0 by default); shifted probabilities are clipped to
[eps, 1] before the log so that a zero never turns the whole row into zero. A model's views
are combined first, each after the model's shift, with the same formulas unweighted (or their
element-wise max); combining them with the blend's own mode gives exactly what adding every
view with weight w_m / n_views would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLEND_EPS = 1e-7

Rows = slice | np.ndarray | None


def combine_views(views: Sequence, mode: str, threshold_shift: float = 0.0) -> np.ndarray:
    """One model's probabilities from its TTA views (each rows x classes), after its shift."""
    if len(views) == 1 and mode in ("mean", "max"):  # the view itself: no stacked copy
        one = np.array(views[0], dtype=np.float64)
        one -= threshold_shift
        return one
    stacked = np.stack([np.asarray(view, dtype=np.float64) for view in views]) - threshold_shift
    if mode == "mean":
        return stacked.mean(axis=0)
    if mode == "gmean":
        return np.exp(np.log(np.clip(stacked, BLEND_EPS, 1.0)).mean(axis=0))
    if mode == "max":
        return stacked.max(axis=0)
    raise ValueError(f"TTA blend mode must be 'mean', 'gmean' or 'max', got {mode!r}")


def _index(rows: Rows) -> slice | np.ndarray:
    """`rows` as an index; consecutive rows (the usual batch) as a slice, which numpy adds
    into in place, where an index array makes it gather, add and scatter."""
    if rows is None:
        return slice(None)
    if (isinstance(rows, np.ndarray) and rows.ndim == 1 and rows.size and rows[0] >= 0
            and np.all(np.diff(rows) == 1)):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def _check_weight(weight: float) -> None:
    if weight < 0:
        raise ValueError(f"blend weight must be >= 0, got {weight}")


class BlendAccumulator:
    """Running weighted (geometric) mean over `n_rows` x `n_classes` probabilities."""

    def __init__(self, n_rows: int, n_classes: int, mode: str = "mean") -> None:
        if mode not in ("mean", "gmean"):
            raise ValueError(f"blend mode must be 'mean' or 'gmean', got {mode!r}")
        self.mode = mode
        self._sum = np.zeros((n_rows, n_classes), dtype=np.float64)
        self.row_weight = np.zeros(n_rows, dtype=np.float64)

    def add(self, probs, weight: float, rows: Rows = None, threshold_shift: float = 0.0) -> None:
        """Add one member's probabilities for `rows` (all rows when None)."""
        self.add_columns(probs, weight, rows, slice(None), threshold_shift)
        self.count(weight, rows)

    def add_columns(self, probs, weight: float, rows: Rows, columns: slice,
                    threshold_shift: float = 0.0) -> None:
        """Add a member's probabilities for `rows` x `columns` only: a member scored in class
        chunks adds each chunk this way, then `count`s itself once."""
        _check_weight(weight)
        if weight == 0:
            return
        # One float64 copy, worked on in place: at 32,000 classes each temporary is a batch
        # x classes array.
        p = np.array(probs, dtype=np.float64)
        p -= threshold_shift
        if self.mode == "gmean":
            np.log(np.clip(p, BLEND_EPS, 1.0, out=p), out=p)
        p *= weight
        self._sum[_index(rows), columns] += p

    def count(self, weight: float, rows: Rows = None) -> None:
        """Record that a member of `weight` covered `rows` (after all its columns are in)."""
        _check_weight(weight)
        self.row_weight[_index(rows)] += weight

    def result(self, rows: Rows = None) -> np.ndarray:
        """The blend for `rows`; every one of them must have received some weight."""
        index = slice(None) if rows is None else rows
        weight = self.row_weight[index]
        if np.any(weight <= 0):
            missing = np.flatnonzero(weight <= 0)
            raise ValueError(f"{missing.size} rows received no member (first: row {missing[0]})")
        blended = self._sum[index] / weight[:, None]
        return np.exp(blended) if self.mode == "gmean" else blended

