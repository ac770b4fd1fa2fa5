"""Threshold search: recovers known per-class cut points, keeps rare classes on the global one,
prefers the global threshold when per-class ones only fit noise, and writes a config whose rule
the kernel applies with the same score."""

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import fbeta_score

from inference_core.config import SubmissionSection
from inference_core.submission import SubmissionWriter
from kernelpack import cli
from kernelpack.config import load_config
from kernelpack.errors import SearchError
from kernelpack.search.metrics import METRICS
from kernelpack.search.thresholds import search_thresholds

CUTS = np.array([0.2, 0.5, 0.8, 0.5])
DEFAULT = SubmissionSection(format="multilabel", threshold=0.5, min_labels=1, max_labels=None)


def _separable(rows=600, seed=0):
    """Class c is positive exactly above CUTS[c] (+-0.05); class 3 is rare; many rows have no
    label at all, so the best rule allows zero labels."""
    rng = np.random.default_rng(seed)
    truth = rng.random((rows, 4)) < 0.3
    truth[:, 3] = False
    truth[rng.choice(rows, 8, replace=False), 3] = True
    negatives = rng.random((rows, 4)) * (CUTS - 0.05)
    positives = CUTS + 0.05 + rng.random((rows, 4)) * (0.95 - CUTS)
    return np.where(truth, positives, negatives), truth


def test_search_recovers_per_class_cut_points_and_zero_min_labels():
    probs, truth = _separable()
    result = search_thresholds(probs, truth, np.arange(600) % 3, METRICS["f2"], DEFAULT,
                               min_support=20)
    per_class = np.array(result.per_class_rule.threshold)
    assert np.all(np.abs(per_class[:3] - CUTS[:3]) <= 0.05 + 1e-9)
    # The rare class (8 positives < 20) keeps the global threshold.
    assert result.eligible.tolist() == [True, True, True, False]
    assert per_class[3] == result.global_rule.threshold
    assert result.global_rule.min_labels == 0 == result.per_class_rule.min_labels
    assert result.per_class_score > result.global_score > result.baseline_score
    assert result.held_out("per_class") > result.held_out("global_") > \
        result.held_out("baseline")
    assert result.chosen is result.per_class_rule


def test_per_class_thresholds_that_only_fit_noise_lose_to_the_global_one():
    # Every class alike and calibrated: per-class thresholds win on the rows they were fitted
    # on, and lose on held-out folds.
    rng = np.random.default_rng(0)
    probs = rng.random((300, 4))
    truth = rng.random((300, 4)) < probs
    result = search_thresholds(probs, truth, np.arange(300) % 3, METRICS["f2"], DEFAULT,
                               min_support=5)
    assert result.per_class_score > result.global_score
    assert result.held_out("per_class") < result.held_out("global_")
    assert result.chosen is result.global_rule


def _inputs(tmp_path, probs, truth, classes):
    np.save(tmp_path / "m1.npy", probs)
    labels = [" ".join(classes[j] for j in np.flatnonzero(row)) for row in truth]
    pd.DataFrame({"id": [f"r{i}" for i in range(len(truth))], "label": labels}).to_csv(
        tmp_path / "labels.csv", index=False)
    np.save(tmp_path / "folds.npy", np.arange(len(truth)) % 3)
    return [f"--oof=m1={tmp_path / 'm1.npy'}", "--labels", str(tmp_path / "labels.csv"),
            "--folds", str(tmp_path / "folds.npy")]


def test_written_rule_scores_the_same_through_the_kernels_writer(tmp_path, capsys):
    classes = ["w", "x", "y", "z"]
    probs, truth = _separable(rows=300)
    argv = _inputs(tmp_path, probs, truth, classes)
    config = {"models": [{"name": "m1_f0", "path": "m/m1_f0.pt", "weight": 0.5},
                         {"name": "m1_f1", "path": "m/m1_f1.pt", "weight": 0.5}],
              "test": {"images": "comp/test"},
              "submission": {"format": "multilabel", "classes": classes}}
    (tmp_path / "in.yml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out.yml"
    assert cli.main(["threshold", "search", *argv, "--base", str(tmp_path / "in.yml"),
                     "--min-support", "20", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chosen: per-class" in printed and "keep the global threshold: z" in printed

    fitted = load_config(out).ensemble
    rule = fitted.submission
    assert isinstance(rule.threshold, tuple) and len(rule.threshold) == 4
    assert rule.min_labels == 0 and rule.classes == tuple(classes)
    assert [m.name for m in fitted.models] == ["m1_f0", "m1_f1"]
    with SubmissionWriter(tmp_path / "submission.csv", rule, classes) as writer:
        writer.write([f"r{i}" for i in range(len(truth))], probs)
    written = pd.read_csv(tmp_path / "submission.csv", dtype=str, keep_default_na=False)
    predicted = np.array([[c in row.split() for c in classes] for row in written["label"]])
    kernel_f2 = fbeta_score(truth, predicted, beta=2, average="samples", zero_division=1.0)
    header = float(re.search(r"f2 ([0-9.]+) \(was", out.read_text()).group(1))
    assert kernel_f2 == pytest.approx(header, abs=5e-5)


def test_threshold_search_refuses_what_it_cannot_fit(tmp_path, capsys):
    probs, truth = _separable(rows=60)
    folds = np.arange(60) % 2
    with pytest.raises(SearchError, match="threshold search is for multilabel"):
        search_thresholds(probs, truth, folds, METRICS["f2"],
                          dataclasses.replace(DEFAULT, format="multiclass"))
    with pytest.raises(SearchError, match="--metric logloss: thresholds do not change"):
        search_thresholds(probs, truth, folds, METRICS["logloss"], DEFAULT)
    with pytest.raises(SearchError, match="--min-support 0: must be at least 1"):
        search_thresholds(probs, truth, folds, METRICS["f2"], DEFAULT, min_support=0)

    argv = _inputs(tmp_path, probs, truth, ["w", "x", "y", "z"])
    config = {"models": [{"name": "other", "path": "m/other.pt"}], "test": {"images": "t"},
              "submission": {"format": "multilabel", "classes": ["w", "x", "y", "z"]}}
    (tmp_path / "in.yml").write_text(yaml.safe_dump(config))
    assert cli.main(["threshold", "search", *argv, "--base", str(tmp_path / "in.yml"), "-o",
                     str(tmp_path / "out.yml")]) == 1
    err = capsys.readouterr().err
    assert "models[0] 'other' matches no --oof name" in err and err.count("\n") == 1
