"""The kernel's multilabel rule (`inference_core.submission.multilabel_mask`) without a full sort.

`multilabel_mask` ranks every class of every row (an argsort of rows x classes) to apply the
`max_labels` cut and the `min_labels` top-up. Only the rows that are cut or topped up need an
order, and only of their best k classes: `top_k_mask` finds the k-th largest value by partition
(linear time) and breaks ties to the lower class index, as the kernel's stable sort does. The
result is the same mask, bit for bit (tests/test_fast_rule.py checks it against the kernel's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Up to this k, k passes of argmax (which returns the first, lowest, column of a tie) are
# cheaper than a partition and a running count of the ties.
ARGMAX_K = 4


def top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Each row's `k` largest values (ties to the lower column), as a mask; k >= width: all."""
    rows, width = values.shape
    if k <= 0:
        return np.zeros(values.shape, dtype=bool)
    if k >= width:
        return np.ones(values.shape, dtype=bool)
    if k <= ARGMAX_K:
        chosen = np.zeros(values.shape, dtype=bool)
        # A chosen value becomes -inf; a -inf among the values, the lowest finite one, so that
        # it still ranks above the chosen ones (and ties among them go to the lower column).
        left = np.maximum(values, np.finfo(np.float64).min, dtype=np.float64)
        every_row = np.arange(rows)
        for _ in range(k):
            best = np.argmax(left, axis=1)
            chosen[every_row, best] = True
            left[every_row, best] = -np.inf
        return chosen
    kth = np.partition(values, width - k, axis=1)[:, width - k, None]
    chosen = values > kth
    ties = values == kth
    needed = k - chosen.sum(axis=1, keepdims=True)
    chosen |= ties & (np.cumsum(ties, axis=1) <= needed)
    return chosen


def rule_mask(probs: np.ndarray, threshold: float | Sequence[float] | np.ndarray,
              min_labels: int = 1, max_labels: int | None = None) -> np.ndarray:
    """`multilabel_mask(probs, rank_order(probs), ...)` for float64 `probs`, sorting only the
    rows the label counts change."""
    thresholds = np.asarray(threshold, dtype=np.float64)
    mask = probs >= thresholds
    above = mask.sum(axis=1)
    if max_labels is not None:
        over = np.flatnonzero(above > max_labels)
        if over.size:
            # Only classes at or above their threshold compete for the max_labels places.
            competing = np.where(mask[over], probs[over], -np.inf)
            mask[over] = top_k_mask(competing, max_labels)
    top = min(min_labels, max_labels) if max_labels is not None else min_labels
    short = np.flatnonzero(above < min_labels)
    if short.size:
        mask[short] = top_k_mask(probs[short], top)
    return mask
