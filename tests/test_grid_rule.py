"""The threshold search's counting path chooses what the exhaustive search (a full mask per
candidate rule) chooses: the same global rule and the same per-class thresholds, on rows with
ties, topped-up and cut rows, and a subset of rows (a fold)."""

import numpy as np
import pytest

from inference_core.config import SubmissionSection
from kernelpack.search.grid_rule import ClassFlips, GridCounts
from kernelpack.search.metrics import METRICS
from kernelpack.search.thresholds import (
    GRID,
    Rule,
    _label_counts,
    _score,
    fit_global,
    fit_global_by_counts,
    fit_per_class,
)


def _data(rows, classes, seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((rows, classes)) < rng.uniform(0.05, 0.5, classes)
    # Informative, on a 0.02 grid so that rows hold ties, and some classes never pass 0.5.
    probs = np.clip(np.round((0.35 * truth + rng.random((rows, classes)) * 0.6) * 50) / 50,
                    0, 1)
    return probs, truth


@pytest.mark.parametrize("metric", ["f2", "accuracy"])
@pytest.mark.parametrize("base", [(1, None), (0, 2), (2, 3)])
def test_global_rule_by_counts_is_the_exhaustive_one(metric, base):
    probs, truth = _data(300, 8, seed=len(metric) + base[0])
    submission = SubmissionSection(format="multilabel", threshold=0.5, min_labels=base[0],
                                   max_labels=base[1])
    depth = max(k for pair in _label_counts(submission, 8) for k in pair if k is not None)
    counts = GridCounts(probs, truth, GRID, depth)
    rows = np.arange(300) % 3 != 1
    for subset in (np.ones(300, dtype=bool), rows):
        expected = fit_global(probs[subset], truth[subset], METRICS[metric], submission)
        assert fit_global_by_counts(counts, subset, METRICS[metric], submission) == expected
        # Every cell's score is the exhaustive one, bit for bit.
        lo, hi = expected.min_labels, expected.max_labels
        scores = counts.scores(METRICS[metric], subset, [(lo, hi)])[0]
        for j in (0, 20, 49, 98):
            assert scores[j] == _score(Rule(float(GRID[j]), lo, hi), probs[subset],
                                       truth[subset], METRICS[metric])


@pytest.mark.parametrize("labels", [(0, None), (1, None), (2, None), (1, 2), (0, 1), (3, 3),
                                    (1, 5)])
def test_per_class_thresholds_by_flips_are_the_exhaustive_ones(labels):
    probs, truth = _data(240, 7, seed=labels[0] * 10 + (labels[1] or 0))
    metric = METRICS["f2"]
    counts = GridCounts(probs, truth, GRID, 20)
    flips = ClassFlips(probs, truth, GRID, counts, metric)
    eligible = np.array([True, True, False, True, True, True, True])
    for subset in (np.ones(240, dtype=bool), np.arange(240) % 4 != 0):
        start = Rule(0.42, *labels)
        expected = fit_per_class(probs[subset], truth[subset], metric, start, eligible)
        got = flips.fit(subset, 0.42, *labels, eligible, 2)
        np.testing.assert_array_equal(got, np.array(expected.threshold))
        # The fit moved thresholds, so the flips were exercised.
        assert np.any(got != 0.42)
