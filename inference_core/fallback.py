"""The fallback row: what the submission says for an image no model predicted."""

from __future__ import annotations

import numpy as np

from .blend import BlendAccumulator


class FallbackPrior:
    """Fills rows no model predicted (an undecodable image, or time ran out) with the mean of
    the rows blended so far: the test set's own class prior, uniform before the first row."""

    def __init__(self, n_classes: int) -> None:
        self.total = np.zeros(n_classes)
        self.predicted = 0
        self.rows = 0

    def complete(self, accumulator: BlendAccumulator) -> np.ndarray:
        missing = np.flatnonzero(accumulator.row_weight == 0)
        if missing.size:
            prior = (self.total / self.predicted if self.predicted
                     else np.full(self.total.size, 1.0 / self.total.size))
            accumulator.add(np.tile(prior, (missing.size, 1)), 1.0, rows=missing)
        blended = accumulator.result()
        done = np.setdiff1d(np.arange(len(blended)), missing)
        self.total += blended[done].sum(axis=0)
        self.predicted += done.size
        self.rows += missing.size
        return blended
