import numpy as np
import pytest

from inference_core.blend import BLEND_EPS, BlendAccumulator, combine_views


def _probs(rng, rows=50, classes=7):
    raw = rng.random((rows, classes)) + 0.01
    return raw / raw.sum(axis=1, keepdims=True)


@pytest.fixture
def members():
    rng = np.random.default_rng(0)
    return [(_probs(rng), w) for w in (0.5, 2.0, 1.0, 0.25)]


def test_weighted_gmean_is_exp_of_weighted_mean_log(members):
    accumulator = BlendAccumulator(50, 7, "gmean")
    for probs, weight in members:
        accumulator.add(probs, weight)
    total = sum(w for _, w in members)
    expected = np.exp(sum(w * np.log(p) for p, w in members) / total)
    np.testing.assert_allclose(accumulator.result(), expected, rtol=1e-12)


def test_weighted_mean(members):
    accumulator = BlendAccumulator(50, 7, "mean")
    for probs, weight in members:
        accumulator.add(probs, weight)
    expected = sum(w * p for p, w in members) / sum(w for _, w in members)
    np.testing.assert_allclose(accumulator.result(), expected, rtol=1e-12)


@pytest.mark.parametrize("mode", ["mean", "gmean"])
def test_streaming_in_any_order_and_row_batches_equals_all_at_once(members, mode):
    at_once = BlendAccumulator(50, 7, mode)
    for probs, weight in members:
        at_once.add(probs, weight)

    rng = np.random.default_rng(1)
    streamed = BlendAccumulator(50, 7, mode)
    for index in rng.permutation(len(members)):
        probs, weight = members[index]
        rows = rng.permutation(50)
        for chunk in np.array_split(rows, 6):
            streamed.add(probs[chunk], weight, rows=chunk)
    np.testing.assert_allclose(streamed.result(), at_once.result(), rtol=1e-12)
    # row slices must give the same as the rows they cover
    np.testing.assert_allclose(streamed.result(slice(10, 20)), at_once.result()[10:20])


def test_threshold_shift_is_subtracted_before_blending(members):
    (p1, w1), (p2, w2) = members[:2]
    accumulator = BlendAccumulator(50, 7, "mean")
    accumulator.add(p1, w1, threshold_shift=0.1)
    accumulator.add(p2, w2, threshold_shift=-0.05)
    expected = (w1 * (p1 - 0.1) + w2 * (p2 + 0.05)) / (w1 + w2)
    np.testing.assert_allclose(accumulator.result(), expected, rtol=1e-12)


def test_gmean_clips_zeros_instead_of_zeroing_the_row():
    accumulator = BlendAccumulator(1, 2, "gmean")
    accumulator.add(np.array([[0.0, 1.0]]), 1.0)
    accumulator.add(np.array([[0.5, 0.5]]), 1.0)
    result = accumulator.result()
    np.testing.assert_allclose(result, [[np.sqrt(BLEND_EPS * 0.5), np.sqrt(0.5)]])


def test_member_covering_some_rows_is_renormalised_per_row():
    accumulator = BlendAccumulator(4, 2, "mean")
    accumulator.add(np.full((4, 2), 0.2), 1.0)
    accumulator.add(np.full((2, 2), 0.8), 3.0, rows=np.array([0, 1]))  # dropped after 2 rows
    result = accumulator.result()
    np.testing.assert_allclose(result[:2], (0.2 + 3 * 0.8) / 4)
    np.testing.assert_allclose(result[2:], 0.2)
    np.testing.assert_allclose(accumulator.row_weight, [4, 4, 1, 1])


def test_rows_without_any_member_are_an_error_not_a_silent_nan():
    accumulator = BlendAccumulator(3, 2, "mean")
    accumulator.add(np.full((1, 2), 0.5), 1.0, rows=np.array([1]))
    with pytest.raises(ValueError, match="2 rows received no member"):
        accumulator.result()


def test_bad_mode_and_negative_weight_are_rejected():
    with pytest.raises(ValueError, match="blend mode"):
        BlendAccumulator(1, 1, "median")
    with pytest.raises(ValueError, match=">= 0"):
        BlendAccumulator(1, 1).add(np.ones((1, 1)), -1.0)


def test_views_are_combined_after_the_shift_by_mean_gmean_or_max():
    views = [np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])]
    np.testing.assert_allclose(combine_views(views, "mean", 0.1), [[0.3, 0.5]])
    np.testing.assert_allclose(combine_views(views, "gmean"), [[np.sqrt(0.12), np.sqrt(0.32)]])
    np.testing.assert_allclose(combine_views(views, "max", 0.1), [[0.5, 0.7]])
    with pytest.raises(ValueError, match="TTA blend mode"):
        combine_views(views, "median")
