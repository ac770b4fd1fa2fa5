"""Log loss and multiclass macro F1 in blend search take the per-row path (a mean of each row's
loss; each row's label, counted per class), so every fold reads one pass; the optimiser's sample
computes log loss in float32 and macro F1 on the classes that can win, and log loss restarts stop
once two reach one optimum. The reported scores stay the exact ones of the written weights."""

import numpy as np
import pytest

from inference_core.config import SubmissionSection
from kernelpack.search import blend as blend_module
from kernelpack.search.blend import blend_probs, search_blend
from kernelpack.search.metrics import METRICS, label_mask, logloss, macro_f1
from kernelpack.search.oof import OofSet

MULTICLASS = SubmissionSection(format="multiclass")


def _mixture(rows, classes, weights, seed):
    rng = np.random.default_rng(seed)
    probs = [rng.dirichlet(np.full(classes, 0.5), size=rows) for _ in weights]
    mix = sum(w * p for w, p in zip(weights, probs, strict=True))
    labels = np.array([rng.choice(classes, p=row / row.sum()) for row in mix])
    return probs, np.eye(classes, dtype=bool)[labels]


@pytest.mark.parametrize("multilabel", [False, True])
def test_the_mean_of_row_losses_is_the_log_loss(multilabel):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(6), size=200)
    truth = rng.random((200, 6)) < 0.3 if multilabel else np.eye(6, dtype=bool)[
        rng.integers(0, 6, 200)]
    submission = SubmissionSection(format="multilabel" if multilabel else "multiclass")
    rows = METRICS["logloss"].row_scores(probs, truth, submission)
    assert rows.shape == (200,)
    assert float(np.mean(rows)) == pytest.approx(logloss(probs, truth, multilabel), rel=1e-12)


def test_sampled_log_loss_fit_reports_the_exact_log_loss_of_its_weights(monkeypatch):
    monkeypatch.setattr(blend_module, "SEARCH_ROWS", 500)  # the sampled path, on small data
    true_weights = [0.6, 0.3, 0.1]
    probs, truth = _mixture(2000, 5, true_weights, seed=1)
    folds = np.arange(2000) % 4
    oof = OofSet(list("abc"), probs, truth, list(range(5)), [], folds)
    result = search_blend(oof, METRICS["logloss"], "mean", MULTICLASS, restarts=4)
    np.testing.assert_allclose(result.weights, true_weights, atol=0.1)
    exact = logloss(blend_probs(probs, result.weights, "mean"), truth, False)
    assert result.score == pytest.approx(exact, rel=1e-12)
    assert result.score <= min(result.single_scores) and result.score <= result.equal_score
    for check in result.folds:
        held = folds == check.fold
        expected = logloss(blend_probs([p[held] for p in probs], check.weights, "mean"),
                           truth[held], False)
        assert check.fitted == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric, stops", [("logloss", True), ("accuracy", False)])
def test_restarts_stop_once_two_reach_one_optimum_for_log_loss_only(monkeypatch, metric,
                                                                    stops):
    calls = []
    original = blend_module._nelder_mead

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(blend_module, "_nelder_mead", counted)
    probs, truth = _mixture(600, 4, [0.7, 0.3], seed=2)
    oof = OofSet(list("ab"), probs, truth, list(range(4)), [], None)
    search_blend(oof, METRICS[metric], "gmean", MULTICLASS, restarts=8)
    assert (len(calls) < 8) == stops


def test_sampled_multiclass_macro_f1_reports_the_exact_score_of_its_weights(monkeypatch):
    monkeypatch.setattr(blend_module, "SEARCH_ROWS", 500)
    probs, truth = _mixture(2000, 12, [0.5, 0.4, 0.1], seed=3)
    folds = np.arange(2000) % 4
    oof = OofSet(list("abc"), probs, truth, list(range(12)), [], folds)
    result = search_blend(oof, METRICS["macro_f1"], "gmean", MULTICLASS, restarts=3)

    def exact(weights, rows):
        blended = blend_probs([p[rows] for p in probs], weights, "gmean")
        return macro_f1(label_mask(blended, MULTICLASS), truth[rows])

    every = np.ones(2000, dtype=bool)
    assert result.score == exact(result.weights, every)
    assert result.score >= max(result.single_scores) and result.score >= result.equal_score
    for check in result.folds:
        assert check.fitted == exact(check.weights, folds == check.fold)
