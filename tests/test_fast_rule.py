"""The searches' fast multilabel rule is the kernel's rule, bit for bit: on random rows with many
ties, per-class thresholds, and label counts that top rows up and cut them."""

import itertools

import numpy as np
import pytest

from inference_core.submission import multilabel_mask, rank_order
from kernelpack.search.fast_rule import rule_mask, top_k_mask


def _tied_probs(rows, classes, seed):
    # Values on a 0.05 grid: most rows hold ties, at and around the thresholds.
    rng = np.random.default_rng(seed)
    return np.round(rng.random((rows, classes)) ** 2 * 20) / 20


@pytest.mark.parametrize("min_labels,max_labels",
                         [(0, None), (1, None), (3, None), (2, 1), (1, 2), (3, 5), (0, 1),
                          (12, None), (12, 3)])
@pytest.mark.parametrize("per_class", [False, True])
def test_rule_mask_is_the_kernels_multilabel_mask(min_labels, max_labels, per_class):
    probs = _tied_probs(400, 10, seed=min_labels * 7 + (max_labels or 0))
    rng = np.random.default_rng(1)
    threshold = np.round(rng.random(10), 2) if per_class else 0.35
    expected = multilabel_mask(probs, rank_order(probs), threshold, min_labels, max_labels)
    got = rule_mask(probs, threshold, min_labels, max_labels)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected)
    # The rule did cut and top up rows here, so both paths were exercised.
    counts = got.sum(axis=1)
    if max_labels is not None:
        assert counts.max() <= max_labels


def test_top_k_mask_breaks_ties_to_the_lower_column():
    values = np.array([[0.5, 0.7, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    for k, first, second in [(0, [], []), (2, [0, 1], [0, 1]), (3, [0, 1, 2], [0, 1, 2]),
                             (9, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4])]:
        mask = top_k_mask(values, k)
        assert np.flatnonzero(mask[0]).tolist() == first
        assert np.flatnonzero(mask[1]).tolist() == second


def test_rule_mask_on_every_label_count_of_a_small_grid():
    probs = _tied_probs(200, 6, seed=3)
    for lo, hi in itertools.product(range(0, 4), (None, 1, 2, 3, 5)):
        for t in (0.0, 0.05, 0.5, 1.0):
            np.testing.assert_array_equal(
                rule_mask(probs, t, lo, hi), multilabel_mask(probs, rank_order(probs), t, lo, hi))


@pytest.mark.parametrize("k", [1, 3, 4, 5, 7])
def test_top_k_mask_matches_a_stable_sort_for_small_and_large_k(k):
    values = _tied_probs(300, 9, seed=k)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    expected = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(expected, order, True, axis=1)
    np.testing.assert_array_equal(top_k_mask(values, k), expected)


def test_top_k_mask_ranks_minus_infinity_last_and_keeps_k():
    values = np.array([[-np.inf, 0.3, -np.inf, -np.inf, 0.9, -np.inf]])
    for k, expected in [(2, [1, 4]), (3, [0, 1, 4]), (4, [0, 1, 2, 4])]:
        assert np.flatnonzero(top_k_mask(values, k)[0]).tolist() == expected
