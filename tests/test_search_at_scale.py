"""The searches past their exhaustive sizes: a blend fitted on a row sample and confirmed on every
row never scores below equal weights, a single model or an obvious mix under an independent F2
(the kernel's own writer, scikit-learn's F2); the printed reports stay a screenful at many
classes while `--report` holds every class."""

import itertools
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import fbeta_score

from inference_core.config import SubmissionSection
from inference_core.submission import SubmissionWriter
from kernelpack import cli
from kernelpack.search.blend import SEARCH_ROWS, blend_probs, search_blend
from kernelpack.search.metrics import METRICS
from kernelpack.search.oof import OofSet


def _imet_like(rows, classes, quality, seed):
    """Long-tailed labels (~3 a row) and models of `quality` sharing part of their noise; a
    quality of 0 is a useless model."""
    rng = np.random.default_rng(seed)
    frequency = np.minimum(3.0 / np.arange(1, classes + 1) ** 0.9
                           / np.sum(1.0 / np.arange(1, classes + 1) ** 0.9), 0.6)
    truth = rng.random((rows, classes)) < frequency
    prior = np.log(frequency / (1 - frequency))
    shared = rng.standard_normal((rows, classes))
    probs = []
    for q in quality:
        logit = prior + 1.5 * (0.6 * shared + 0.8 * rng.standard_normal((rows, classes)))
        probs.append(1 / (1 + np.exp(-(logit + q * (truth - 0.3)))))
    return probs, truth


def _written_f2(probs, truth, submission, tmp_path):
    """F2 of what the kernel's writer writes for `probs`, by scikit-learn."""
    classes = list(range(truth.shape[1]))
    with SubmissionWriter(tmp_path / "s.csv", submission, classes) as writer:
        writer.write([str(i) for i in range(len(truth))], probs)
    written = pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False)
    predicted = np.zeros(truth.shape, dtype=bool)
    for row, text in enumerate(written[submission.label_column]):
        predicted[row, [int(c) for c in text.split()]] = True
    return fbeta_score(truth, predicted, beta=2, average="samples", zero_division=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mean", "gmean"])
def test_a_sampled_fit_never_scores_below_an_obvious_candidate(mode, tmp_path):
    rows = SEARCH_ROWS + 600
    quality = (3.0, 2.4, 2.0, 0.0)
    probs, truth = _imet_like(rows, 40, quality, seed=len(mode))
    submission = SubmissionSection(format="multilabel", threshold=0.3, min_labels=1,
                                   max_labels=5)
    oof = OofSet([f"m{i}" for i in range(4)], probs, truth, list(range(40)),
                 [str(i) for i in range(rows)], np.arange(rows) % 3)
    result = search_blend(oof, METRICS["f2"], mode, submission, restarts=3)
    assert len(result.folds) == 3

    def score(weights):
        return _written_f2(blend_probs(probs, weights, mode), truth, submission, tmp_path)

    fitted = score(result.weights)
    assert fitted == pytest.approx(result.score, abs=1e-12)
    obvious = [np.full(4, 0.25), *np.eye(4)]
    obvious += [np.isin(np.arange(4), pair) * 0.5 for pair in itertools.combinations(range(4), 2)]
    obvious += [np.array([1, 1, 1, 0]) / 3]
    for weights in obvious:
        assert fitted >= score(weights) - 1e-12, weights
    # The useless model gets (almost) nothing.
    assert result.weights[3] < 0.05


def _wide_inputs(tmp_path, classes=60, rows=900):
    probs, truth = _imet_like(rows, classes, (2.5,), seed=3)
    np.save(tmp_path / "m.npy", probs[0].astype(np.float32))
    labels = [" ".join(f"c{j}" for j in np.flatnonzero(row)) for row in truth]
    pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "label": labels}).to_csv(
        tmp_path / "labels.csv", index=False)
    np.save(tmp_path / "folds.npy", np.arange(rows) % 3)
    config = {"models": [{"name": "m", "path": "m/m.pt"}], "test": {"images": "t"},
              "submission": {"format": "multilabel", "classes": [f"c{j}" for j in
                                                                 range(classes)]}}
    (tmp_path / "in.yml").write_text(yaml.safe_dump(config))
    return [f"--oof=m={tmp_path / 'm.npy'}", "--labels", str(tmp_path / "labels.csv"),
            "--folds", str(tmp_path / "folds.npy"), "--base", str(tmp_path / "in.yml")]


def test_threshold_report_summarises_many_classes_and_writes_them_all(tmp_path, capsys):
    argv = _wide_inputs(tmp_path)
    report = tmp_path / "report.json"
    assert cli.main(["threshold", "search", *argv, "--min-support", "60", "-o",
                     str(tmp_path / "out.yml"), "--report", str(report)]) == 0
    printed = capsys.readouterr().out.split("value:")[0]
    lines = printed.strip().splitlines()
    assert len(lines) <= 10 and max(len(line) for line in lines) <= 200
    assert "60 thresholds (min" in printed
    assert "classes are below the minimum support and keep the global threshold" in printed
    assert "worst classes under the chosen rule" in printed
    full = json.loads(report.read_text())
    assert len(full["rules"]["per_class"]["threshold"]) == 60
    assert [c["class"] for c in full["classes"]] == [f"c{j}" for j in range(60)]
    assert sum(not c["own_threshold"] for c in full["classes"]) > 0
    assert len(full["folds"]) == 3 and full["chosen"] in ("global", "per_class")


def test_blend_report_json_holds_every_model_and_fold(tmp_path, capsys):
    argv = _wide_inputs(tmp_path, classes=8, rows=300)
    report = tmp_path / "blend.json"
    assert cli.main(["blend", "search", *argv, "--metric", "f2", "--restarts", "2", "-o",
                     str(tmp_path / "out.yml"), "--report", str(report)]) == 0
    full = json.loads(report.read_text())
    assert [m["name"] for m in full["models"]] == ["m"] and full["models"][0]["weight"] == 1.0
    assert len(full["folds"]) == 3 and full["metric"] == "f2"


@pytest.mark.parametrize("mode", ["mean", "gmean"])
def test_chunked_blends_of_many_weightings_are_the_kernels_bit_for_bit(mode):
    from kernelpack.search.blend import CHUNK_ROWS, Problem

    rows = CHUNK_ROWS + 300  # two chunks, the second partial
    probs, truth = _imet_like(rows, 12, (2.0, 1.0, 0.0), seed=5)
    submission = SubmissionSection(format="multilabel", threshold=0.25, min_labels=1,
                                   max_labels=4)
    shifts = [0.02, 0.0, 0.05]
    problem = Problem(probs, truth, METRICS["f2"], mode, submission, shifts)
    weight_sets = [[0.5, 0.3, 0.2], [0.0, 1.0, 0.0], [0.25, 0.0, 0.75]]
    for weights, got in zip(weight_sets, problem.row_scores_many(weight_sets), strict=True):
        blended = blend_probs(probs, weights, mode, shifts)
        expected = METRICS["f2"].row_scores(blended, truth, submission)
        np.testing.assert_array_equal(got, expected)
        assert np.mean(got) == METRICS["f2"].score(blended, truth, submission)


def test_a_long_search_shows_a_bar_with_the_best_score(monkeypatch, capsys):
    from kernelpack import progress

    probs, truth = _imet_like(200, 6, (2.0, 1.0), seed=7)
    oof = OofSet(["a", "b"], probs, truth, list(range(6)), [str(i) for i in range(200)],
                 np.arange(200) % 2)
    submission = SubmissionSection(format="multilabel", threshold=0.3)
    search_blend(oof, METRICS["f2"], "mean", submission, restarts=2, progress=True)
    assert capsys.readouterr().err == ""  # a search of a second or less draws no bar
    # A search that has run past the delay: the bar, with the best score so far.
    monkeypatch.setattr(progress, "STEP_BAR_DELAY", 0.0)
    search_blend(oof, METRICS["f2"], "mean", submission, restarts=2, progress=True)
    err = capsys.readouterr().err
    assert "blend search" in err and "6/6" in err and re.search(r"best f2 0\.\d{4}", err)
    search_blend(oof, METRICS["f2"], "mean", submission, restarts=2, progress=False)
    assert capsys.readouterr().err == ""
