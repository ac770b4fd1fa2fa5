"""The threshold search's exact scores at scale: every grid threshold of a rule at once, and one
class's threshold changed with every other class's held.

For a score that is a mean over rows of a function of the row's true positive, false positive
and false negative counts (f2, accuracy), the kernel's rule (`multilabel_mask`) needs no mask:

* a global threshold labels a prefix of the row's rank order: all classes at or above it, or its
  first `top` (topped up), or its first `max_labels` (cut). So the count of classes at or above
  each grid value (one histogram of the row's values over the grid) and the running count of
  true labels along the row's best few ranks give every (threshold, min_labels, max_labels)
  cell's counts, for all rows, without a sort;
* moving one class's threshold flips that class in the rows whose value lies between the old and
  the new threshold, and a flip changes the row's counts by a rule that needs only the row's
  state: its count and true count at or above threshold, and, when rows are cut to
  `max_labels`, the running true count along its first `max_labels + 1` labelled classes and the
  rank of the last one kept. Each row's score with the class flipped, summed by grid cell, gives
  the score of every threshold of that class at once.

Both are exact: the counts are the mask's counts, and the scores the metric's of them.
"""

from __future__ import annotations

import numpy as np

from .fast_rule import top_k_mask
from .metrics import Metric

# Rows handled at once when a pass covers every row.
CHUNK_ROWS = 4096


def _ranked_columns(values: np.ndarray, k: int) -> np.ndarray:
    """Each row's `k` best columns (k < width), in the kernel's rank order."""
    chosen = top_k_mask(values, k)
    columns = np.nonzero(chosen)[1].reshape(len(values), k)
    best_first = np.argsort(-np.take_along_axis(values, columns, axis=1), axis=1,
                            kind="stable")
    return np.take_along_axis(columns, best_first, axis=1)


class GridCounts:
    """Per row: its count of classes, and of true classes, at or above each grid value, and the
    running count of true labels along its `depth` best ranks."""

    def __init__(self, probs: np.ndarray, truth: np.ndarray, grid: np.ndarray,
                 depth: int) -> None:
        rows, width = probs.shape
        self.n_classes = width
        depth = min(depth, width)
        cells = len(grid) + 1
        self.above = np.empty((len(grid), rows), dtype=np.int32)
        self.true_above = np.empty((len(grid), rows), dtype=np.int32)
        self.ranked_true = np.zeros((rows, depth + 1), dtype=np.int32)
        self.n_true = truth.sum(axis=1)
        for start in range(0, rows, CHUNK_ROWS):
            p = np.asarray(probs[start:start + CHUNK_ROWS], dtype=np.float64)
            t = truth[start:start + CHUNK_ROWS]
            n = len(p)
            # cell: how many grid values are <= p, so p >= grid[j] exactly when cell > j.
            cell = np.searchsorted(grid, p, side="right") + np.arange(n)[:, None] * cells
            for target, hits in ((self.above, None), (self.true_above, t)):
                counts = np.bincount(cell.ravel() if hits is None else cell[hits],
                                     minlength=n * cells).reshape(n, cells)
                at_or_above = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
                target[:, start:start + n] = at_or_above[:, 1:].T
            if depth < width:
                order = _ranked_columns(p, depth)
            else:
                order = np.argsort(-p, axis=1, kind="stable")
            self.ranked_true[start:start + n, 1:] = np.cumsum(
                np.take_along_axis(t, order, axis=1), axis=1)

    def scores(self, metric: Metric, rows: np.ndarray,
               label_counts: list[tuple[int, int | None]]) -> np.ndarray:
        """The mean score over `rows` of each (label count pair, grid threshold)."""
        # Row-major, so that each threshold's mean adds its rows in the order (and pairwise
        # grouping) of the exhaustive scan's mean: the same bits.
        above = np.ascontiguousarray(self.above[:, rows])
        true_above = np.ascontiguousarray(self.true_above[:, rows])
        ranked = self.ranked_true[rows]
        n_true = self.n_true[rows][None, :]
        scores = np.empty((len(label_counts), above.shape[0]))
        for i, (min_labels, max_labels) in enumerate(label_counts):
            top = min(min_labels, max_labels) if max_labels is not None else min_labels
            top = min(top, self.n_classes)
            short = above < min_labels
            labels = np.where(short, top, above)
            tp = np.where(short, ranked[:, top][None, :], true_above)
            if max_labels is not None and max_labels < self.n_classes:
                over = above > max_labels
                labels[over] = max_labels
                tp = np.where(over, ranked[:, max_labels][None, :], tp)
            scores[i] = metric.on_counts(tp, labels - tp, n_true - tp).mean(axis=1)
        return scores


# Gains (in summed row scores) this close are scored exactly before one is preferred: a sum
# of per-row changes rounds differently from the mean the exhaustive scan compares.
MIN_GAIN = 1e-9


class ClassFlips:
    """Per-class thresholds fitted by coordinate ascent on `rows`, every grid value of one class
    scored at once from each row's state (see the module's note)."""

    def __init__(self, probs: np.ndarray, truth: np.ndarray, grid: np.ndarray,
                 counts: GridCounts, metric: Metric) -> None:
        self.probs, self.truth, self.grid, self.counts = probs, truth, grid, counts
        self.metric = metric
        n_rows, n_classes = probs.shape
        # The rows of each class whose value some grid threshold puts on either side.
        classes, rows, cells = [], [], []
        for start in range(0, n_rows, CHUNK_ROWS):
            p = np.asarray(probs[start:start + CHUNK_ROWS], dtype=np.float64)
            cell = np.searchsorted(grid, p, side="right")
            r, c = np.nonzero((cell >= 1) & (cell < len(grid)))
            classes.append(c.astype(np.int32))
            rows.append((r + start).astype(np.int32))
            cells.append(cell[r, c].astype(np.uint8))
        classes = np.concatenate(classes)
        by_class = np.argsort(classes, kind="stable")
        self.entry_rows = np.concatenate(rows)[by_class]
        self.entry_cells = np.concatenate(cells)[by_class]
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(classes,
                                                                 minlength=n_classes))])
        self.n_above = np.zeros(n_rows, dtype=np.int32)
        self.true_above = np.zeros(n_rows, dtype=np.int32)
        self.current = np.zeros(n_rows, dtype=np.float64)

    def _label_counts(self, min_labels: int, max_labels: int | None) -> None:
        n_rows, n_classes = self.probs.shape
        self.lo = min_labels
        self.hi = max_labels if max_labels is not None and max_labels < n_classes else None
        top = min(min_labels, max_labels) if max_labels is not None else min_labels
        self.top = min(top, n_classes)
        if self.hi is not None:
            self.first_true = np.zeros((n_rows, self.hi + 2), dtype=np.int32)
            self.key_value = np.full(n_rows, -np.inf)
            self.key_class = np.zeros(n_rows, dtype=np.int64)

    def _refresh(self, rows: np.ndarray, thresholds: np.ndarray) -> None:
        """Recompute the state of `rows` (an index) under `thresholds`."""
        for start in range(0, len(rows), CHUNK_ROWS):
            index = rows[start:start + CHUNK_ROWS]
            p = np.asarray(self.probs[index], dtype=np.float64)
            t = self.truth[index]
            above = p >= thresholds
            self.n_above[index] = above.sum(axis=1)
            self.true_above[index] = (above & t).sum(axis=1)
            if self.hi is not None:
                self._refresh_cut(index, p, t, above)
            tp, labels = self._rule(index, self.n_above[index], self.true_above[index])
            self.current[index] = self._row_scores(index, tp, labels)

    def _refresh_cut(self, index: np.ndarray, p: np.ndarray, t: np.ndarray,
                     above: np.ndarray) -> None:
        """The true count along each row's first max_labels + 1 labelled classes, and the last
        kept one. Only the classes at or above threshold are ranked (a few per row): one sort
        of them all, by row, falling value, then class."""
        depth = self.hi + 1
        row, column = np.nonzero(above)
        value = p[row, column]
        ranked = np.lexsort((column, -value, row))
        row, column, value = row[ranked], column[ranked], value[ranked]
        rank = np.arange(len(row)) - np.searchsorted(row, row)
        kept = rank < depth
        row, column, value, rank = row[kept], column[kept], value[kept], rank[kept]
        labelled = np.zeros((len(index), depth), dtype=np.int32)
        labelled[row, rank] = t[row, column]
        self.first_true[index] = 0
        self.first_true[index, 1:] = np.cumsum(labelled, axis=1)
        key = rank == self.hi - 1
        self.key_value[index] = -np.inf
        self.key_value[index[row[key]]] = value[key]
        self.key_class[index[row[key]]] = column[key]

    def _rule(self, index: np.ndarray, n_above: np.ndarray, true_above: np.ndarray,
              cut_true: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Labels written and true positives of `index`'s rows, from their counts at or above
        threshold (`cut_true`: the true count of the first max_labels, when cut)."""
        tp, labels = true_above.copy(), n_above.copy()
        if self.hi is not None:
            over = n_above > self.hi
            labels[over] = self.hi
            cut = self.first_true[index, self.hi] if cut_true is None else cut_true
            tp = np.where(over, cut, tp)
        short = n_above < self.lo
        labels[short] = self.top
        return np.where(short, self.counts.ranked_true[index, self.top], tp), labels

    def _row_scores(self, index: np.ndarray, tp: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self.metric.on_counts(tp, labels - tp, self.counts.n_true[index] - tp)

    def _flips(self, c: int, rows: np.ndarray, now: int) -> np.ndarray:
        """Each of `rows`' score with class `c` on the other side of its threshold."""
        value = np.asarray(self.probs[rows, c], dtype=np.float64)
        above = value >= self.grid[now]
        sign = np.where(above, -1, 1)
        true = self.truth[rows, c].astype(np.int32)
        cut_true = None
        if self.hi is not None:
            key = self.key_value[rows]
            first = self.first_true[rows]
            # Added: it takes a place among the first max_labels when it ranks before the
            # last of them. Removed: its place goes to the next when it held one.
            before = (value > key) | ((value == key) & (c < self.key_class[rows]))
            after = (value < key) | ((value == key) & (c > self.key_class[rows]))
            cut_true = np.where(
                above, np.where(after, first[:, self.hi], first[:, self.hi + 1] - true),
                np.where(before, first[:, self.hi - 1] + true, first[:, self.hi]))
        tp, labels = self._rule(rows, self.n_above[rows] + sign, self.true_above[rows]
                                + sign * true, cut_true)
        return self._row_scores(rows, tp, labels)

    def _gains(self, cells: np.ndarray, change: np.ndarray, now: int) -> np.ndarray:
        """The change of the summed row score for each grid threshold, from each row's."""
        above = cells > now
        cells_count = len(self.grid) + 1
        up = np.bincount(cells[~above], change[~above], minlength=cells_count)
        down = np.bincount(cells[above], change[above], minlength=cells_count)
        # Threshold grid[j]: rows below now with cell > j go up, rows above with cell <= j go
        # down.
        return np.cumsum(up[::-1])[::-1][1:] + np.cumsum(down)[:-1]

    def fit(self, rows: np.ndarray, start: float, min_labels: int, max_labels: int | None,
            eligible: np.ndarray, passes: int) -> np.ndarray:
        """Per-class thresholds fitted on `rows` (a mask), from `start` for every class: the
        exhaustive scan's choices exactly. The gains rule out every threshold that scores
        clearly below the best so far; the few left are scored as the scan scores them (the
        mean of every row's score), so that even ties that only rounding breaks go the same
        way."""
        self._label_counts(min_labels, max_labels)
        thresholds = np.full(self.probs.shape[1], start, dtype=np.float64)
        index = np.flatnonzero(rows)
        position = np.cumsum(rows) - 1
        self._refresh(index, thresholds)
        best_score = np.mean(self.current[index])
        now = np.full(self.probs.shape[1], int(np.flatnonzero(self.grid == start)[0]))
        for _ in range(passes):
            for c in np.flatnonzero(eligible):
                entries = slice(self.starts[c], self.starts[c + 1])
                kept = rows[self.entry_rows[entries]]
                class_rows = self.entry_rows[entries][kept]
                cells = self.entry_cells[entries][kept].astype(np.int64)
                if not class_rows.size:
                    continue
                flipped_scores = self._flips(c, class_rows, now[c])
                gains = self._gains(cells, flipped_scores - self.current[class_rows], now[c])
                # A threshold's rows differ from the one below's only when a value lies
                # between them.
                new_set = np.bincount(cells, minlength=len(self.grid) + 1)[:len(self.grid)] > 0
                new_set[0] = True
                # The scan ends on the first of the best thresholds; any it took before was
                # clearly worse, and one clearly better than where it started is always taken.
                top = gains.max()
                best = None
                for j in np.flatnonzero(new_set & (gains >= top - MIN_GAIN)):
                    flips = (cells > j) != (cells > now[c])
                    if not flips.any():
                        continue
                    trial = self.current[index]
                    trial[position[class_rows[flips]]] = flipped_scores[flips]
                    score = np.mean(trial)
                    if score > best_score or (best is None and top > MIN_GAIN):
                        best, best_score = j, score
                if best is not None:
                    flipped = class_rows[(cells > best) != (cells > now[c])]
                    thresholds[c], now[c] = self.grid[best], best
                    self._refresh(flipped, thresholds)
        return thresholds
