"""Blend search: recovers a known mix, never loses to its candidates on OOF, writes a config that
reproduces its OOF score through the kernel's blend and submission writer, and refuses bad input
with one line naming it."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import accuracy_score, fbeta_score

from inference_core.blend import BlendAccumulator
from inference_core.config import EnsembleConfig, SubmissionSection
from inference_core.submission import SubmissionWriter
from kernelpack import cli
from kernelpack.config import load_config
from kernelpack.errors import SearchError
from kernelpack.search.blend import blend_probs, search_blend
from kernelpack.search.metrics import METRICS
from kernelpack.search.oof import OofSet

CLASSES = ["a", "b", "c", "d"]
MULTICLASS = SubmissionSection(format="multiclass")


def _mixture(mode, weights, rows, classes, seed):
    """OOF arrays of len(weights) models, and labels drawn from their true mix."""
    rng = np.random.default_rng(seed)
    probs = [rng.dirichlet(np.full(classes, 0.7), size=rows) for _ in weights]
    if mode == "mean":
        truth_p = sum(w * p for w, p in zip(weights, probs, strict=True))
    else:
        truth_p = np.exp(sum(w * np.log(p) for w, p in zip(weights, probs, strict=True)))
        truth_p /= truth_p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in truth_p])
    return probs, np.eye(classes, dtype=bool)[labels]


@pytest.mark.parametrize("mode", ["mean", "gmean"])
def test_search_recovers_a_known_mix_and_zeroes_a_useless_model(mode):
    true_weights = [0.6, 0.3, 0.1, 0.0]
    probs, truth = _mixture(mode, true_weights, rows=4000, classes=5, seed=1)
    oof = OofSet(list("wxyz"), probs, truth, list(range(5)), [], None)
    result = search_blend(oof, METRICS["logloss"], mode, MULTICLASS, restarts=4)
    np.testing.assert_allclose(result.weights, true_weights, atol=0.05)
    assert result.weights.min() >= 0 and result.weights.sum() == pytest.approx(1, abs=1e-3)
    assert result.score < result.equal_score and result.score < min(result.single_scores)


def test_search_never_scores_below_equal_weights_or_a_single_model_on_oof():
    probs, truth = _mixture("mean", [0.5, 0.5, 0.0], rows=300, classes=4, seed=2)
    folds = np.arange(300) % 3
    oof = OofSet(list("abc"), probs, truth, list(range(4)), [], folds)
    result = search_blend(oof, METRICS["accuracy"], "mean", MULTICLASS,
                          restarts=3)
    assert result.score >= max(result.single_scores) and result.score >= result.equal_score
    # Each fold's check holds that fold's weights and their score on the held-out rows.
    assert [check.fold for check in result.folds] == [0, 1, 2]
    for check in result.folds:
        held = folds == check.fold
        blended = blend_probs([p[held] for p in probs], check.weights, "mean")
        assert check.fitted == pytest.approx(np.mean(blended.argmax(1) == truth[held].argmax(1)))
        assert check.weights.min() >= 0 and check.weights.sum() == pytest.approx(1, abs=1e-3)
    assert result.weight_spread.shape == (3,)


def _write_inputs(tmp_path, probs, truth, classes, folds):
    paths = []
    for name, p in zip(("m1", "m2", "m3"), probs, strict=True):
        np.save(tmp_path / f"{name}.npy", p)
        paths.append(f"--oof={name}={tmp_path / f'{name}.npy'}")
    labels = [" ".join(str(classes[j]) for j in np.flatnonzero(row)) for row in truth]
    pd.DataFrame({"id": [f"r{i:03d}" for i in range(len(truth))], "label": labels}).to_csv(
        tmp_path / "labels.csv", index=False)
    np.save(tmp_path / "folds.npy", folds)
    return [*paths, "--labels", str(tmp_path / "labels.csv"), "--folds",
            str(tmp_path / "folds.npy")]


def _multilabel_oof(rows=150, seed=4):
    rng = np.random.default_rng(seed)
    truth = rng.random((rows, 4)) < 0.35
    truth[np.arange(rows), rng.integers(0, 4, rows)] = True  # at least one label per row
    probs = [np.clip(truth * rng.uniform(0.3, 0.9, truth.shape) + rng.uniform(0, s, truth.shape),
                     0, 1) for s in (0.3, 0.6, 0.9)]
    return probs, truth


def _kernel_scores(config, weighted, truth, classes, tmp_path):
    """What the kernel writes for these members, each (weight, threshold shift, probabilities),
    scored by scikit-learn."""
    accumulator = BlendAccumulator(len(truth), len(classes), config.blend)
    for weight, shift, probs in weighted:
        accumulator.add(probs, weight, threshold_shift=shift)
    ids = [f"r{i:03d}" for i in range(len(truth))]
    with SubmissionWriter(tmp_path / "submission.csv", config.submission, classes) as out:
        out.write(ids, accumulator.result())
    written = pd.read_csv(tmp_path / "submission.csv", dtype=str, keep_default_na=False)
    predicted = np.array([[str(c) in row.split() for c in classes] for row in written["label"]])
    return predicted


def _weighted(config, probs_by_entry):
    return [(entry.weight, entry.threshold_shift, probs)
            for entry, probs in zip(config.models, probs_by_entry, strict=True)]


def test_fitted_config_reproduces_its_oof_score_through_the_kernels_writer(tmp_path, capsys):
    probs, truth = _multilabel_oof()
    argv = _write_inputs(tmp_path, probs, truth, CLASSES, np.arange(150) % 3)
    base = {
        # m2 was trained in two folds: its entries share its weight.
        "models": [{"name": "m1", "path": "x/m1.pt", "threshold_shift": 0.1},
                   {"name": "m2_f0", "path": "x/m2_f0.pt"}, {"name": "m2_f1", "path": "x/m2_f1.pt"},
                   {"name": "m3", "path": "x/m3.pt"}],
        "test": {"images": "comp/test"},
        "submission": {"format": "multilabel", "classes": CLASSES, "threshold": 0.4,
                       "max_labels": 3},
        "blend": "gmean",
    }
    (tmp_path / "base.yml").write_text(yaml.safe_dump(base))
    out = tmp_path / "fitted.yml"
    assert cli.main(["blend", "search", *argv, "--metric", "f2", "--base",
                     str(tmp_path / "base.yml"), "--restarts", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fitted blend" in printed and f"wrote {out}" in printed

    config = load_config(out).ensemble
    weights = [m.weight for m in config.models]
    assert weights[1] == weights[2] and min(weights) >= 0
    assert sum(weights) == pytest.approx(1, abs=1e-3)
    # The file keeps what it was given: paths, shifts, thresholds.
    assert [m.path for m in config.models] == [m["path"] for m in base["models"]]
    assert config.models[0].threshold_shift == 0.1 and config.blend == "gmean"

    # Each fold entry of m2 stands in with m2's OOF predictions, as fold models do on test.
    predicted = _kernel_scores(config, _weighted(config, [probs[0], probs[1], probs[1], probs[2]]),
                               truth, CLASSES, tmp_path)
    kernel_f2 = fbeta_score(truth, predicted, beta=2, average="samples")
    header_score = float(re.search(r"f2 ([0-9.]+)", out.read_text()).group(1))
    assert kernel_f2 == pytest.approx(header_score, abs=5e-5)
    oof = OofSet(["m1", "m2", "m3"], probs, truth, CLASSES, [], np.arange(150) % 3)
    submission = config.submission
    searched = search_blend(oof, METRICS["f2"], "gmean", submission, [0.1, 0.0, 0.0],
                            restarts=3)
    assert kernel_f2 == pytest.approx(searched.score, abs=1e-12)


def test_without_a_base_each_oof_name_becomes_one_weighted_model(tmp_path, capsys):
    probs, truth = _mixture("mean", [0.7, 0.3, 0.0], rows=240, classes=4, seed=5)
    argv = _write_inputs(tmp_path, probs, truth, list(range(4)), np.arange(240) % 2)
    out = tmp_path / "fitted.yml"
    assert cli.main(["blend", "search", *argv, "--metric", "accuracy", "-o", str(out)]) == 0
    assert "add a test section" in capsys.readouterr().out
    raw = yaml.safe_load(out.read_text())
    assert [m["name"] for m in raw["models"]] == ["m1", "m2", "m3"]
    assert raw["submission"]["format"] == "multiclass" and raw["blend"] == "mean"
    config = EnsembleConfig.from_dict({**raw, "test": {"images": "comp/test"}})
    predicted = _kernel_scores(config, _weighted(config, probs), truth, list(range(4)), tmp_path)
    header_score = float(re.search(r"accuracy ([0-9.]+)", out.read_text()).group(1))
    assert accuracy_score(truth, predicted) == pytest.approx(header_score, abs=5e-5)


def _bad_inputs(tmp_path):
    probs, truth = _multilabel_oof(rows=30)
    return _write_inputs(tmp_path, probs, truth, list(range(4)), np.arange(30) % 2)


def _replace(argv, flag, value):
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def _setup_bad(case, tmp_path):
    argv = _bad_inputs(tmp_path)
    if case == "rows":
        np.save(tmp_path / "m2.npy", np.full((29, 4), 0.5))
    elif case == "columns":
        np.save(tmp_path / "m2.npy", np.full((30, 3), 0.5))
    elif case == "logits":
        np.save(tmp_path / "m3.npy", np.full((30, 4), 2.5))
    elif case == "label":
        labels = pd.read_csv(tmp_path / "labels.csv", dtype=str, keep_default_na=False)
        labels.loc[4, "label"] = "7"
        labels.to_csv(tmp_path / "labels.csv", index=False)
    elif case == "folds":
        np.save(tmp_path / "folds.npy", np.arange(31) % 2)
    elif case == "one-fold":
        pd.DataFrame({"fold": [0] * 30}).to_csv(tmp_path / "folds.csv", index=False)
        argv = _replace(argv, "--folds", str(tmp_path / "folds.csv"))
    elif case == "spec":
        argv[0] = "--oof=m1:" + argv[0].split("=", 2)[2]
    elif case == "missing":
        argv[0] = f"--oof=m1={tmp_path / 'nope.npy'}"
    elif case == "duplicate":
        labels = pd.read_csv(tmp_path / "labels.csv", dtype=str, keep_default_na=False)
        labels.loc[7, "id"] = labels.loc[3, "id"]
        labels.to_csv(tmp_path / "labels.csv", index=False)
    elif case == "not-npy":
        (tmp_path / "folds.npy").write_text("0\n1\n")
    elif case == "column":
        pd.DataFrame({"id": range(30), "labels": "0"}).to_csv(tmp_path / "labels.csv",
                                                              index=False)
    return argv


BAD = {
    "rows": ("m2.npy (--oof m2): 29 rows but the labels have 30", "order of the labels CSV"),
    "columns": ("disagree on the number of classes (m1: 4, m2: 3, m3: 4)",
                "share one label space"),
    "logits": ("m3.npy (--oof m3): values outside [0, 1]", "not logits"),
    "label": ("labels.csv: row 6 (id r004) has label '7'", "fix the label"),
    "folds": ("folds.npy: 31 fold indices but the labels have 30 rows", "one fold index"),
    "one-fold": ("folds.csv: all rows are in fold 0", "at least two folds"),
    "spec": ("expected NAME=PATH.npy", "--oof small_cnn="),
    "missing": ("nope.npy (--oof m1): file not found", "check the path"),
    "column": ("labels.csv: no column 'label'", "columns id and label"),
    "duplicate": ("labels.csv: id r003 appears more than once", "one row per labelled sample"),
    "not-npy": ("folds.npy: not a .npy array", "numpy.save, or as a one-column CSV"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_one_line_naming_it_and_the_fix(case, tmp_path, capsys):
    argv = _setup_bad(case, tmp_path)
    code = cli.main(["blend", "search", *argv, "--metric", "f2", "--format", "multilabel",
                     "-o", str(tmp_path / "out.yml")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("kernelpack: error: ")
    for fragment in BAD[case]:
        assert fragment in err
    assert not (tmp_path / "out.yml").exists()


def test_unknown_metric_and_base_entries_without_oof_are_refused(tmp_path, capsys):
    argv = _bad_inputs(tmp_path)
    out = str(tmp_path / "out.yml")
    assert cli.main(["blend", "search", *argv, "--metric", "auc", "-o", out]) == 1
    assert "--metric 'auc': unknown metric; use one of accuracy" in capsys.readouterr().err
    base = {"models": [{"name": "m1", "path": "m1.pt"}, {"name": "m2", "path": "m2.pt"},
                       {"name": "m3", "path": "m3.pt"}, {"name": "m4_f0", "path": "m4.pt"}],
            "test": {"images": "t"}, "submission": {"format": "multilabel"}}
    (tmp_path / "base.yml").write_text(yaml.safe_dump(base))
    assert cli.main(["blend", "search", *argv, "--metric", "f2", "--base",
                     str(tmp_path / "base.yml"), "-o", out]) == 1
    err = capsys.readouterr().err
    assert "models[3] 'm4_f0' matches no --oof name" in err and err.count("\n") == 1
    with pytest.raises(SearchError, match="--restarts 0: must be at least 1"):
        search_blend(OofSet(["a"], [np.eye(2)], np.eye(2, dtype=bool), [0, 1], [], None),
                     METRICS["accuracy"], "mean", MULTICLASS, restarts=0)


def test_a_folds_group_takes_one_oof_file_and_keeps_its_group_form(tmp_path):
    probs, truth = _multilabel_oof()
    argv = _write_inputs(tmp_path, probs, truth, CLASSES, np.arange(150) % 3)
    base = {
        "models": [{"name": "m1", "folds": [0, 1, 2, 3, 4], "tta": ["identity", "hflip"]},
                   {"name": "m2", "folds": [0, 1, 2]}, {"name": "m3", "path": "x/m3.pt"}],
        "test": {"images": "comp/test"},
        "submission": {"format": "multilabel", "classes": CLASSES, "threshold": 0.4},
        "blend": "mean",
    }
    (tmp_path / "base.yml").write_text(yaml.safe_dump(base))
    out = tmp_path / "fitted.yml"
    assert cli.main(["blend", "search", *argv, "--metric", "f2", "--base",
                     str(tmp_path / "base.yml"), "--restarts", "2", "-o", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    # One entry per group, as written; the fitted weight sits on the group entry.
    assert [(m["name"], m.get("folds")) for m in raw["models"]] == [
        ("m1", [0, 1, 2, 3, 4]), ("m2", [0, 1, 2]), ("m3", None)]
    assert raw["models"][0]["tta"] == ["identity", "hflip"]
    config = load_config(out).ensemble
    weights = [m.weight for m in config.models]
    assert sum(weights) == pytest.approx(1, abs=1e-3) and len(set(weights)) > 1

    # In the kernel each fold stands in with its group's OOF predictions, at an even share.
    members = config.members()
    assert [m.weight for m in members[:5]] == pytest.approx([weights[0] / 5] * 5)
    by_group = {"m1": probs[0], "m2": probs[1], "m3": probs[2]}
    predicted = _kernel_scores(config, [(m.weight, m.entry.threshold_shift, by_group[m.group])
                                        for m in members], truth, CLASSES, tmp_path)
    header_score = float(re.search(r"f2 ([0-9.]+)", out.read_text()).group(1))
    assert fbeta_score(truth, predicted, beta=2, average="samples") == pytest.approx(
        header_score, abs=5e-5)
