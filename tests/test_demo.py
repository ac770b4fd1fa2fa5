import pandas as pd

from examples.digits.demo import format_report, run_demo


def test_demo_runs_end_to_end_and_scores_every_model_and_the_blend(tmp_path):
    lines = []
    report = run_demo(tmp_path / "demo", archs=("small_cnn",), folds=2, epochs=5, limit=400,
                      log=lines.append)
    assert [model.name for model, _ in report.models] == ["small_cnn_f0", "small_cnn_f1"]
    assert list(report.stages) == ["data", "train", "build", "run-local (offline kernel)",
                                   "score"]
    submission = pd.read_csv(report.submission, dtype=str)
    labels = pd.read_csv(tmp_path / "demo" / "heldout" / "test_labels.csv", dtype=str)
    assert sorted(submission["id"]) == sorted(labels["id"])
    # The blend's accuracy is recomputed here from the files, not taken from the report.
    merged = labels.merge(submission, on="id", suffixes=("", "_pred"))
    assert report.blend_accuracy == (merged["label"] == merged["label_pred"]).mean()
    assert report.blend_accuracy > 0.25  # ten classes: chance is 0.1; tiny training here
    assert any("network cut" in line or "kernelpack runtime" in line for line in lines)
    text = format_report(report)
    assert "blend (kernel.py, offline)" in text and "small_cnn_f1" in text
    assert "heldout" not in str(report.submission)
