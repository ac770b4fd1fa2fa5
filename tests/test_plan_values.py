"""The values `blend search` and `threshold search` write reproduce the OOF score drops they
claim, recomputed here with plain numpy and scikit-learn (not kernelpack's blend or metrics)."""

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import fbeta_score, log_loss

from kernelpack import cli

ROWS, CLASSES = 240, 4


def _inputs(tmp_path, names, multilabel=False, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, ROWS)
    truth = np.eye(CLASSES, dtype=bool)[labels]
    if multilabel:
        truth = truth | (rng.random((ROWS, CLASSES)) < 0.3)
    argv = []
    probs = {}
    for i, name in enumerate(names):
        # Each model sees the truth through its own amount of noise.
        logits = (2.0 - 0.1 * i) * truth + rng.normal(0, 1.2, (ROWS, CLASSES))
        p = (1 / (1 + np.exp(-logits)) if multilabel
             else np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
        probs[name] = p
        np.save(tmp_path / f"{name}.npy", p)
        argv.append(f"--oof={name}={tmp_path / f'{name}.npy'}")
    label_text = [" ".join(str(c) for c in np.flatnonzero(row)) for row in truth]
    pd.DataFrame({"id": [f"r{i}" for i in range(ROWS)], "label": label_text}).to_csv(
        tmp_path / "labels.csv", index=False)
    folds = np.arange(ROWS) % 3
    np.save(tmp_path / "folds.npy", folds)
    return probs, truth, folds, [*argv, "--labels", str(tmp_path / "labels.csv"), "--folds",
                                 str(tmp_path / "folds.npy")]


def _blend(probs, weights, present):
    """Weighted mean of the models present on each row (`present[name]`: a row mask)."""
    total = sum(weights[n] * probs[n] * present[n][:, None] for n in probs)
    return total / sum(weights[n] * present[n] for n in probs)[:, None]


def _drops(probs, weights, folds, score):
    """What the score loses without each name, and without it on each fold's rows."""
    everywhere = {n: np.ones(ROWS, dtype=bool) for n in probs}
    full = score(_blend(probs, weights, everywhere))
    drops = {}
    for name in probs:
        drops[name] = full - score(_blend(probs, weights,
                                          {**everywhere, name: np.zeros(ROWS, dtype=bool)}))
        for k in range(3):
            drops[name, k] = full - score(_blend(probs, weights,
                                                 {**everywhere, name: folds != k}))
    return drops


def test_blend_search_values_reproduce_the_oof_logloss_drop(tmp_path):
    probs, truth, folds, argv = _inputs(tmp_path, ["cnn", "res", "solo"])
    base = {"models": [{"name": "cnn", "folds": [0, 1, 2]},
                       *({"name": f"res_f{k}", "fold": k} for k in range(3)),
                       {"name": "solo"}],
            "test": {"images": "t"}, "submission": {"format": "multiclass"}, "blend": "mean"}
    (tmp_path / "base.yml").write_text(yaml.safe_dump(base))
    out = tmp_path / "fitted.yml"
    assert cli.main(["blend", "search", *argv, "--metric", "logloss", "--base",
                     str(tmp_path / "base.yml"), "--restarts", "2", "-o", str(out)]) == 0
    models = yaml.safe_load(out.read_text())["models"]
    assert "how much the OOF logloss worsens without the model" in out.read_text()
    weights = {"cnn": models[0]["weight"], "res": sum(m["weight"] for m in models[1:4]),
               "solo": models[4]["weight"]}
    assert min(weights.values()) > 0  # every model matters, so every drop is measurable
    labels = truth.argmax(axis=1)
    drops = _drops(probs, weights, folds,
                   lambda p: -log_loss(labels, p, labels=list(range(CLASSES))))
    # One number per member: a list on the folds group, a number on each fold entry and model.
    assert models[0]["value"] == pytest.approx([drops["cnn", k] for k in range(3)], abs=1e-6)
    assert [m["value"] for m in models[1:4]] == pytest.approx(
        [drops["res", k] for k in range(3)], abs=1e-6)
    assert models[4]["value"] == pytest.approx(drops["solo"], abs=1e-6)
    # Log loss averages over rows: a model's fold values add up to its own drop.
    assert sum(models[0]["value"]) == pytest.approx(drops["cnn"], abs=3e-6)
    assert drops["cnn"] > 0 and drops["solo"] > 0


def test_threshold_search_values_are_at_the_chosen_rule(tmp_path):
    probs, truth, folds, argv = _inputs(tmp_path, ["cnn", "res"], multilabel=True, seed=3)
    base = {"models": [{"name": "cnn", "folds": [0, 1, 2], "weight": 0.6},
                       {"name": "res", "weight": 0.4}],
            "test": {"images": "t"},
            "submission": {"format": "multilabel", "classes": list(range(CLASSES)),
                           "min_labels": 0},
            "blend": "mean"}
    (tmp_path / "base.yml").write_text(yaml.safe_dump(base))
    out = tmp_path / "final.yml"
    assert cli.main(["threshold", "search", *argv, "--metric", "f2", "--base",
                     str(tmp_path / "base.yml"), "--min-support", "1000", "-o", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    rule = config["submission"]
    assert isinstance(rule["threshold"], float) and rule["max_labels"] is None
    # min_labels 0 or more: rows with fewer labels above the threshold get their best ones.
    def score(p):
        predicted = p >= rule["threshold"] - 1e-12
        order = np.argsort(-p, axis=1, kind="stable")
        for row in range(ROWS):
            missing = rule["min_labels"] - predicted[row].sum()
            if missing > 0:
                predicted[row, order[row, :rule["min_labels"]]] = True
        return fbeta_score(truth, predicted, beta=2, average="samples", zero_division=1.0)

    drops = _drops(probs, {"cnn": 0.6, "res": 0.4}, folds, score)
    models = config["models"]
    assert models[0]["value"] == pytest.approx([drops["cnn", k] for k in range(3)], abs=1e-6)
    assert models[1]["value"] == pytest.approx(drops["res"], abs=1e-6)
    assert drops["cnn"] != 0
