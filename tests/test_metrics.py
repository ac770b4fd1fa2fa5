"""Metrics score the labels the kernel would write; checked against the kernel's own label rule
and against scikit-learn's metrics."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, fbeta_score, log_loss

from inference_core.config import SubmissionSection
from inference_core.submission import multiclass_labels, multilabel_labels
from kernelpack.errors import SearchError
from kernelpack.search.fast_rule import rule_mask
from kernelpack.search.metrics import (
    METRICS,
    f2,
    get_metric,
    label_mask,
    logloss,
    macro_f1,
    macro_f1_of_labels,
)


def _kernel_mask(probs, threshold, min_labels, max_labels):
    classes = list(range(probs.shape[1]))
    mask = np.zeros(probs.shape, dtype=bool)
    for row, text in enumerate(multilabel_labels(probs, classes, threshold, min_labels,
                                                 max_labels)):
        mask[row, [int(c) for c in text.split()]] = True
    return mask


@pytest.mark.parametrize("min_labels", [0, 1, 2, 3])
@pytest.mark.parametrize("max_labels", [None, 1, 2, 4])
@pytest.mark.parametrize("per_class", [False, True])
def test_label_mask_is_the_kernels_multilabel_rule(min_labels, max_labels, per_class):
    rng = np.random.default_rng(min_labels * 10 + (max_labels or 0) + per_class)
    # Rounded to tenths: many ties, which the kernel breaks by class index.
    probs = np.round(rng.random((300, 6)), 1)
    threshold = list(np.round(rng.uniform(0.2, 0.8, 6), 2)) if per_class else 0.5
    expected = _kernel_mask(probs, threshold, min_labels, max_labels)
    if max_labels is not None and max_labels < min_labels:
        # A config refuses max_labels below min_labels; the rule label_mask applies still
        # handles it as the kernel does.
        np.testing.assert_array_equal(rule_mask(probs, threshold, min_labels, max_labels),
                                      expected)
        return
    rule = SubmissionSection(format="multilabel", threshold=threshold if not per_class else
                             tuple(threshold), min_labels=min_labels, max_labels=max_labels)
    np.testing.assert_array_equal(label_mask(probs, rule), expected)


def test_label_mask_is_the_kernels_argmax_for_multiclass():
    probs = np.array([[0.2, 0.4, 0.4], [0.5, 0.1, 0.4], [0.3, 0.3, 0.3]])
    mask = label_mask(probs, SubmissionSection(format="multiclass"))
    assert [list(np.flatnonzero(row)) for row in mask] == \
        [[c] for c in multiclass_labels(probs, [0, 1, 2])]
    assert mask.sum(axis=1).tolist() == [1, 1, 1]


def _masks(seed, rows=200, classes=5):
    rng = np.random.default_rng(seed)
    truth = rng.random((rows, classes)) < 0.3
    predicted = rng.random((rows, classes)) < 0.4
    # scikit-learn's per-row F-beta has no convention for empty rows: give each row a label.
    truth[np.arange(rows), rng.integers(0, classes, rows)] = True
    predicted[np.arange(rows), rng.integers(0, classes, rows)] = True
    return predicted, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_metrics_agree_with_scikit_learn(seed):
    predicted, truth = _masks(seed)
    assert f2(predicted, truth) == pytest.approx(
        fbeta_score(truth, predicted, beta=2, average="samples"))
    assert macro_f1(predicted, truth) == pytest.approx(f1_score(truth, predicted,
                                                                average="macro"))
    assert METRICS["accuracy"].score(
        np.where(predicted, 0.9, 0.1), truth,
        SubmissionSection(format="multilabel", threshold=0.5, min_labels=0, max_labels=None),
    ) == pytest.approx(accuracy_score(truth, predicted))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_macro_f1_averages_the_classes_that_occur_as_scikit_learn_does(seed):
    # Herbarium-like: most classes of the config never occur in these rows, and a blend that
    # writes one more class of them must lose for it, not gain 1 / classes.
    rng = np.random.default_rng(seed)
    rows, classes = 200, 60
    truth = rng.integers(0, 12, rows)
    predicted = np.where(rng.random(rows) < 0.7, truth, rng.integers(0, 20, rows))
    expected = f1_score(truth, predicted, average="macro")
    assert macro_f1_of_labels(predicted, truth, classes) == pytest.approx(expected)
    eye = np.eye(classes, dtype=bool)
    assert macro_f1(eye[predicted], eye[truth]) == pytest.approx(expected)
    assert METRICS["macro_f1"].score(eye[predicted] * 0.9 + 0.01, eye[truth], SubmissionSection(
        format="multiclass")) == pytest.approx(expected)


def test_macro_f1_of_nothing_to_find_and_nothing_found_is_one():
    nothing = np.zeros((3, 4), dtype=bool)
    assert macro_f1(nothing, nothing) == 1.0


def test_f2_of_empty_rows_is_one_when_nothing_is_predicted_and_zero_otherwise():
    truth = np.array([[False, False], [False, False], [True, False]])
    predicted = np.array([[False, False], [True, False], [True, False]])
    assert f2(predicted, truth) == pytest.approx((1 + 0 + 1) / 3)


def test_logloss_matches_scikit_learn_for_both_formats():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=100) * 0.9  # rows sum to 0.9: normalised first
    labels = rng.integers(0, 4, 100)
    truth = np.eye(4, dtype=bool)[labels]
    assert logloss(probs, truth, multilabel=False) == pytest.approx(
        log_loss(labels, probs / probs.sum(1, keepdims=True), labels=range(4)))
    binary = rng.random((100, 3))
    binary_truth = rng.random((100, 3)) < 0.5
    expected = np.mean([log_loss(binary_truth[:, c], binary[:, c]) for c in range(3)])
    assert logloss(binary, binary_truth, multilabel=True) == pytest.approx(expected)
    assert not METRICS["logloss"].greater_is_better and METRICS["f2"].greater_is_better


def test_an_unknown_metric_is_named_with_the_known_ones():
    with pytest.raises(SearchError) as error:
        get_metric("f3")
    message = str(error.value)
    assert "'f3'" in message and "accuracy" in message and "f2" in message
    assert "\n" not in message
    with pytest.raises(SearchError, match="format 'ranked': the label metrics"):
        METRICS["f2"].score(np.eye(2), np.eye(2, dtype=bool), SubmissionSection(format="ranked"))


def test_the_cli_help_lists_exactly_the_metrics_there_are():
    """`kernelpack blend search --help` names the metrics without importing numpy: its list must
    stay the registry's."""
    from kernelpack.cli.search import METRIC_NAMES

    assert tuple(METRICS) == METRIC_NAMES
