"""`blend search --fit-shifts`: one threshold shift per OOF name (a folds group shares one), fitted
after the weights, checked by fold, written into the config the kernel reads, and scoring there,
through the kernel's own blend and submission writer and an independent F2, what the search
reported."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from inference_core.blend import BlendAccumulator
from inference_core.config import SubmissionSection
from inference_core.submission import SubmissionWriter
from kernelpack import cli
from kernelpack.config import load_config
from kernelpack.search import shifts as shifts_module
from kernelpack.search.blend import search_blend
from kernelpack.search.metrics import METRICS
from kernelpack.search.oof import OofSet
from kernelpack.search.shifts import search_shifts

CLASSES = ["a", "b", "c", "d", "e", "f"]


def _biased_oof(rows=900, seed=0):
    """Three multilabel models; the second reads 0.25 too high, the third is weak and low."""
    rng = np.random.default_rng(seed)
    truth = rng.random((rows, len(CLASSES))) < 0.3
    shape = truth.shape
    probs = [np.clip(truth * rng.uniform(0.2, 0.7, shape) + rng.uniform(0, 0.5, shape), 0, 1),
             np.clip(truth * rng.uniform(0.2, 0.6, shape) + rng.uniform(0, 0.4, shape) + 0.25,
                     0, 1),
             np.clip(truth * rng.uniform(0.0, 0.3, shape) + rng.uniform(0, 0.8, shape) - 0.1,
                     0, 1)]
    return probs, truth


def _independent_f2(predicted, truth):
    """The iMet rule, row by row: F2 of the labels written; nothing true, nothing written is 1."""
    scores = []
    for p, t in zip(predicted, truth, strict=True):
        tp = sum(1 for a, b in zip(p, t, strict=True) if a and b)
        fp, fn = sum(p) - tp, sum(t) - tp
        scores.append(1.0 if tp + fp + fn == 0 else 5 * tp / (5 * tp + 4 * fn + fp))
    return sum(scores) / len(scores)


def _written_labels(config, probs_by_entry, n_rows, tmp_path):
    """The labels the kernel writes: its accumulator (weights and shifts from the config) and
    its submission writer."""
    accumulator = BlendAccumulator(n_rows, len(CLASSES), config.blend)
    for entry, probs in zip(config.models, probs_by_entry, strict=True):
        accumulator.add(probs, entry.weight, threshold_shift=entry.threshold_shift)
    ids = [f"r{i:04d}" for i in range(n_rows)]
    with SubmissionWriter(tmp_path / "submission.csv", config.submission, CLASSES) as out:
        out.write(ids, accumulator.result())
    written = pd.read_csv(tmp_path / "submission.csv", dtype=str, keep_default_na=False)
    return [[c in row.split() for c in CLASSES] for row in written["label"]]


def _inputs(tmp_path, probs, truth, folds):
    argv = []
    for name, p in zip(("se50", "incep", "weak"), probs, strict=True):
        np.save(tmp_path / f"{name}.npy", p)
        argv += ["--oof", f"{name}={tmp_path / f'{name}.npy'}"]
    labels = [" ".join(c for c, t in zip(CLASSES, row, strict=True) if t) for row in truth]
    pd.DataFrame({"id": [f"r{i:04d}" for i in range(len(truth))], "label": labels}).to_csv(
        tmp_path / "labels.csv", index=False)
    np.save(tmp_path / "folds.npy", folds)
    return [*argv, "--labels", str(tmp_path / "labels.csv"), "--folds",
            str(tmp_path / "folds.npy")]


def test_fitted_shifts_are_written_per_group_and_score_in_the_kernel_what_was_reported(
        tmp_path, capsys):
    probs, truth = _biased_oof()
    folds = np.arange(len(truth)) % 3
    argv = _inputs(tmp_path, probs, truth, folds)
    base = {"models": [{"name": "se50", "folds": [0, 1, 2]},
                       {"name": "incep_f0"}, {"name": "incep_f1"}, {"name": "incep_f2"},
                       {"name": "weak"}],
            "test": {"images": "comp/test"},
            "submission": {"format": "multilabel", "classes": CLASSES, "threshold": 0.5},
            "blend": "gmean"}
    (tmp_path / "base.yml").write_text(yaml.safe_dump(base))
    out, report = tmp_path / "fitted.yml", tmp_path / "report.json"
    assert cli.main(["blend", "search", *argv, "--metric", "f2", "--base",
                     str(tmp_path / "base.yml"), "--restarts", "3", "--fit-shifts",
                     "--report", str(report), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "threshold shifts" in printed and "held-out fold" in printed
    found = json.loads(report.read_text())["shifts"]
    assert found["written"] == "fitted"
    assert found["score"] > found["start_score"]  # the shifts help on these models

    config = load_config(out).ensemble
    written = {m.name: m.threshold_shift for m in config.models}
    # One shift per OOF name: a folds group and NAME_f<k> entries share it.
    assert len({written[f"incep_f{k}"] for k in range(3)}) == 1
    assert [written["se50"], written["incep_f0"], written["weak"]] == \
        [m["written"] for m in found["models"]]
    assert any(s != 0 for s in written.values())

    # The kernel's blend and writer with the written config score the reported number.
    by_entry = [probs[0], probs[1], probs[1], probs[1], probs[2]]
    predicted = _written_labels(config, by_entry, len(truth), tmp_path)
    assert _independent_f2(predicted, truth.tolist()) == pytest.approx(found["score"], abs=1e-12)
    # And without the shifts the kernel scores the starting number.
    unshifted = dataclasses.replace(config, models=type(config.models)(
        dataclasses.replace(entry, threshold_shift=0.0) for entry in config.models))
    predicted = _written_labels(unshifted, by_entry, len(truth), tmp_path)
    assert _independent_f2(predicted, truth.tolist()) == pytest.approx(found["start_score"],
                                                                       abs=1e-12)


def _fit(probs, truth, folds, mode, submission, metric="f2", start=None):
    oof = OofSet(["x", "y", "z"][:len(probs)], probs, truth, list(range(truth.shape[1])), [],
                 folds)
    blend = search_blend(oof, METRICS[metric], mode, submission, start, restarts=2)
    return blend, search_shifts(oof, METRICS[metric], mode, submission, blend.weights,
                                {f.fold: f.weights for f in blend.folds}, start)


@pytest.mark.parametrize("mode", ["mean", "gmean"])
def test_the_shifts_never_score_below_the_starting_ones_and_each_fold_is_checked(mode):
    probs, truth = _biased_oof(rows=600, seed=3)
    folds = np.arange(600) % 4
    submission = SubmissionSection(format="multilabel", threshold=0.45, max_labels=3)
    blend, found = _fit(probs, truth, folds, mode, submission, start=[0.0, 0.1, 0.0])
    assert found.start == [0.0, 0.1, 0.0]
    assert found.start_score == pytest.approx(blend.score, abs=1e-12)
    assert found.fitted_score >= found.start_score
    assert [f.fold for f in found.folds] == [0, 1, 2, 3]
    for check in found.folds:
        assert all(-1 < s < 1 and round(s, 2) == s for s in check.shifts)
    # What is written wins on held-out folds, or is the start.
    held = [np.mean([getattr(f, a) for f in found.folds]) for a in ("fitted", "start")]
    assert found.chosen == (found.fitted if held[0] > held[1] else found.start)


def test_argmax_of_a_weighted_mean_ignores_shifts_so_the_start_is_kept():
    rng = np.random.default_rng(7)
    probs = [rng.dirichlet(np.ones(5), size=300) for _ in range(2)]
    truth = np.eye(5, dtype=bool)[rng.integers(0, 5, 300)]
    _, found = _fit(probs, truth, np.arange(300) % 3, "mean",
                    SubmissionSection(format="multiclass"), metric="accuracy")
    assert found.fitted == [0.0, 0.0] and found.chosen == [0.0, 0.0]


def test_at_scale_the_sample_fit_is_confirmed_on_every_row(monkeypatch):
    # Fewer rows than the search samples at scale: the same sampled path, on a small set.
    monkeypatch.setattr(shifts_module, "SEARCH_ROWS", 300)
    probs, truth = _biased_oof(rows=700, seed=0)
    submission = SubmissionSection(format="multilabel", threshold=0.5)
    blend, found = _fit(probs, truth, np.arange(700) % 2, "gmean", submission)
    assert found.fitted != found.start  # found on the 300-row sample
    # The reported score of the fitted shifts is the exact one on every row.
    from kernelpack.search.blend import ExactScores, Problem

    exact = ExactScores(Problem(probs, truth, METRICS["f2"], "gmean", submission, found.fitted))
    assert found.fitted_score == pytest.approx(exact.score(blend.weights), abs=1e-12)
    assert found.fitted_score > found.start_score
