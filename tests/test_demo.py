import re

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import fbeta_score

from examples.digits.demo import format_report, run_demo
from examples.digits.prepare import ATTRIBUTES

# Prepares, trains, builds, runs and scores two competitions: about 30 s.
pytestmark = pytest.mark.slow


def _attribute_mask(frame, column):
    return np.array([[a in row.split() for a in ATTRIBUTES] for row in frame[column]])


def test_demo_fits_runs_and_scores_both_competitions_end_to_end(tmp_path):
    lines = []
    out = tmp_path / "demo"
    report = run_demo(out, archs=("small_cnn",), folds=2, epochs=5, limit=400, log=lines.append)
    assert list(report.stages) == ["data", "train", "own model (train, import-checkpoint)",
                                   "OOF through the kernel (predict)",
                                   "fit (blend + thresholds on OOF)", "build",
                                   "run-local (offline kernels)", "score",
                                   "Kaggle loop (local service)"]
    assert [row.name for row in report.digits.rows] == [
        "small_cnn_f0", "small_cnn_f1", "digitnet_f0", "digitnet_f1", "small_cnn (2 folds)",
        "digitnet (2 folds)", "blend, equal weights", "blend, fitted (kernel.py)"]
    log = "\n".join(lines)
    assert "$ kernelpack blend search" in log and "$ kernelpack threshold search" in log
    # The own model came in through import-checkpoint, and the kernel's predictions of its
    # held-out folds match the user's own validation code.
    assert log.count("$ kernelpack import-checkpoint") == 2
    assert log.count("matches ") >= 2 and "predictions differ" not in log
    # The blend search read OOF predictions made by the kernel's own code.
    assert "--oof=digitnet=" in log and "kernel-oof" in log
    assert "network cut" in log or "kernelpack runtime" in log

    # Multiclass: the fitted weights sum to 1, and the blend's accuracy is the file's.
    fitted = yaml.safe_load((out / "ensemble.yml").read_text())
    assert sum(m["weight"] for m in fitted["models"]) == pytest.approx(1, abs=1e-3)
    submission = pd.read_csv(report.submissions["kernel"], dtype=str)
    labels = pd.read_csv(out / "heldout" / "test_labels.csv", dtype=str)
    merged = labels.merge(submission, on="id", suffixes=("", "_pred"))
    assert len(merged) == len(labels) == len(submission)
    assert report.blend_accuracy == (merged["label"] == merged["label_pred"]).mean()
    assert report.blend_accuracy > 0.25  # ten classes: chance is 0.1; tiny training here

    # Multilabel: held-back F2 recomputed by scikit-learn from the kernel's file.
    submission = pd.read_csv(report.submissions["kernel-attributes"], dtype=str,
                             keep_default_na=False)
    labels = pd.read_csv(out / "heldout" / "digits-attributes_test_labels.csv", dtype=str,
                         keep_default_na=False)
    merged = labels.merge(submission, on="id", suffixes=("", "_pred"))
    assert len(merged) == len(labels)
    f2 = fbeta_score(_attribute_mask(merged, "label"), _attribute_mask(merged, "label_pred"),
                     beta=2, average="samples", zero_division=1.0)
    assert report.f2_searched == pytest.approx(f2)
    assert report.f2_searched > report.f2_default
    # The config reproduces the OOF score that threshold search reported for it.
    reported = float(re.search(r"f2 ([0-9.]+) \(was", (out / "attributes.yml").read_text())
                     .group(1))
    assert report.attributes.rows[-1].oof == pytest.approx(reported, abs=5e-5)

    # The Kaggle loop: encrypted weights pushed as a Kaggle Model, the kernel pushed as a
    # notebook, run and submitted; the service's score on the held-back labels is the offline
    # one, and its rerun read the model version, not a plain checkpoint.
    for command in ("keygen", "encrypt", "model push", "build", "kernel push", "submit"):
        assert f"$ kernelpack {command}" in log
    assert report.kaggle is not None
    assert report.kaggle.score == pytest.approx(report.blend_accuracy, abs=5e-6)
    assert report.kaggle.agrees_with(report.blend_accuracy)
    assert not report.kaggle.agrees_with(report.blend_accuracy + 1e-4)
    kaggle = out / "kaggle"
    assert (kaggle / "kernel" / "kernel.ipynb").is_file()
    assert not list((kaggle / "encrypted").glob("*.pt"))
    assert {p.name for p in (kaggle / "encrypted").glob("*.kpenc")} == {
        f"{m['name']}.kpenc" for m in fitted["models"]}

    text = format_report(report)
    assert "blend, fitted (kernel.py)" in text and "small_cnn_attributes_f1" in text
    assert "searched thresholds" in text
    assert f"scored {report.blend_accuracy:.4f}: the same as the offline" in text
    assert all("heldout" not in str(path) for path in report.submissions.values())
