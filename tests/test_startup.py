"""A submission exists from the moment the test ids are known: the fallback submission (what each
format can name before any checkpoint is read), written before torch is imported, and start-up
that answers to the deadline (loading, the optimise check) until the models' submission
replaces it."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from inference_core.budget import Deadlines
from inference_core.checkpoint import save_checkpoint
from inference_core.config import EnsembleConfig, SubmissionSection
from inference_core.discovery import match_models, scan_input_roots
from inference_core.errors import TestSetError
from inference_core.fallback import fallback_classes, write_fallback_submission
from inference_core.fields import read_schema
from inference_core.model_factory import create_model
from inference_core.runner import load_ensemble, run_kernel
from inference_core.startup import start_kernel
from kernelpack.kernel.build import build_kernel
from kernelpack.kernel.sandbox import run_local

ROOT = Path(__file__).resolve().parents[1]


def _submission(**fields) -> SubmissionSection:
    return read_schema(SubmissionSection, fields, "submission")


def _fallback(tmp_path, submission, ids, sample=None) -> tuple[pd.DataFrame, str]:
    classes, source = fallback_classes(submission, sample)
    write_fallback_submission(tmp_path / "out.csv", submission, ids, classes)
    return pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False), source


def _sample(tmp_path, text: str) -> Path:
    path = tmp_path / "sample_submission.csv"
    path.write_text(text)
    return path


def test_with_classes_listed_the_fallback_rows_are_the_runtimes_uniform_prior(tmp_path):
    ids = ["b", "a", "c"]  # written in the order given, never sorted
    frame, source = _fallback(tmp_path, _submission(format="multiclass",
                                                    classes=["cat", "dog", "eel"]), ids)
    assert source == "submission.classes"
    assert frame.columns.tolist() == ["id", "label"]
    assert frame["id"].tolist() == ids and set(frame["label"]) == {"cat"}
    frame, _ = _fallback(tmp_path, _submission(format="topk", k=2, classes=["x", "y", "z"]), ids)
    assert set(frame["label"]) == {"x y"}
    # 1/3 is under the threshold: min_labels takes the most probable, ties to the first class
    frame, _ = _fallback(tmp_path, _submission(format="multilabel", classes=["x", "y", "z"],
                                               id_column="Id", label_column="Predicted"), ids)
    assert frame.columns.tolist() == ["Id", "Predicted"] and set(frame["Predicted"]) == {"x"}
    frame, _ = _fallback(tmp_path, _submission(format="probabilities", classes=["x", "y"]), ids)
    assert frame.columns.tolist() == ["id", "x", "y"]
    assert set(frame["x"]) == set(frame["y"]) == {"0.5"}


def test_without_classes_the_fallback_reads_what_the_sample_submission_gives(tmp_path):
    ids = ["img_2", "img_1"]
    sample = _sample(tmp_path, "image_id,healthy,rust,scab,multiple\nimg_2,0.25,0.25,0.25,0.25\n")
    frame, source = _fallback(tmp_path, _submission(format="probabilities", id_column="image_id"),
                              ids, sample)
    assert frame.columns.tolist() == ["image_id", "healthy", "rust", "scab", "multiple"]
    assert frame["image_id"].tolist() == ids and set(frame["rust"]) == {"0.25"}
    assert source == "the columns of sample_submission.csv"

    sample = _sample(tmp_path, "id,label\nimg_2,7\nimg_1,7\n")
    frame, source = _fallback(tmp_path, _submission(format="multiclass"), ids, sample)
    assert set(frame["label"]) == {"7"} and source == "the first label of sample_submission.csv"

    # A sample with no label to copy, or none at all: class 0, as the runtime names it.
    sample = _sample(tmp_path, "id,label\nimg_2,\nimg_1,\n")
    frame, source = _fallback(tmp_path, _submission(format="topk"), ids, sample)
    assert set(frame["label"]) == {"0"} and source.startswith("class 0")
    frame, _ = _fallback(tmp_path, _submission(format="multiclass"), ids)
    assert frame["id"].tolist() == ids and set(frame["label"]) == {"0"}

    # Per-class thresholds say how many classes there are; at 1/2 each, class 1 passes its own.
    frame, source = _fallback(tmp_path, _submission(format="multilabel", threshold=[0.9, 0.2]),
                              ids, sample)
    assert set(frame["label"]) == {"1"} and source == "one class per submission.threshold"


def test_a_fallback_over_many_classes_formats_one_row_not_one_per_image(tmp_path):
    # 40,000 ids x 32,000 classes would be ten GB of probabilities formatted row by row.
    ids = [f"id{i}" for i in range(40_000)]
    classes = list(range(32_000))
    started = time.perf_counter()
    write_fallback_submission(tmp_path / "big.csv", _submission(format="topk", k=5), ids, classes)
    assert time.perf_counter() - started < 20
    frame = pd.read_csv(tmp_path / "big.csv", dtype=str)
    assert frame["id"].tolist() == ids
    (labels,) = set(frame["label"])  # one row for all: five of the tied classes
    assert len(set(labels.split())) == 5 and all(0 <= int(c) < 32_000 for c in labels.split())


def _config(digits_input, **extra) -> dict:
    return {"models": [{"name": "cnn_f0"}, {"name": "cnn_f1"}],
            "input_roots": [str(digits_input)],
            "test": {"images": "digits/test", "sample_submission": "digits/sample_submission.csv"},
            "submission": {"format": "multiclass"}, "batch_size": 16, **extra}


def _sample_ids(digits_input) -> list[str]:
    return pd.read_csv(digits_input / "digits" / "sample_submission.csv", dtype=str)["id"].tolist()


def test_the_kernel_start_writes_the_fallback_submission_without_importing_torch(
        digits_input, tmp_path):
    program = ("import json, sys\n"
               "from inference_core.startup import start_kernel\n"
               f"start = start_kernel(json.loads({json.dumps(_config(digits_input))!r}), "
               f"{str(tmp_path)!r})\n"
               "heavy = sorted(m for m in ('torch', 'torchvision', 'timm', 'cv2', 'PIL') "
               "if m in sys.modules)\n"
               "print('HEAVY', heavy, len(start.test_set))\n")
    run = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "HEAVY [] 30" in run.stdout
    assert "fallback submission written" in run.stdout
    submission = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    assert submission["id"].tolist() == _sample_ids(digits_input)


def test_a_budget_spent_before_the_models_keeps_the_fallback_submission(digits_input, tmp_path):
    config = EnsembleConfig.from_dict(_config(digits_input, budget={"seconds": 5}))
    lines: list[str] = []
    # The budget counts from the process start: here it ended long ago.
    summary = run_kernel(config, working_dir=tmp_path, log=lines.append, progress=False,
                         started=time.monotonic() - 60)
    assert summary.fallback_rows == summary.rows == 30 and summary.members == []
    assert any("ran out before the models were looked for; the fallback submission stands" in line
               for line in lines)
    assert lines[-1].startswith("kept the fallback submission")
    submission = pd.read_csv(summary.submission, dtype=str)
    assert submission["id"].tolist() == _sample_ids(digits_input)


def test_a_model_that_cannot_load_in_time_is_left_out_with_a_log_line(digits_input):
    config = EnsembleConfig.from_dict(_config(digits_input))
    found, unreadable = scan_input_roots(config.input_roots)
    discovery = match_models(config, found, unreadable)
    lines: list[str] = []
    past = Deadlines(plan=time.monotonic() - 1, hard_stop=time.monotonic())
    assert load_ensemble(config, discovery, None, lines.append, past) is None
    assert [line for line in lines if "left out" in line] == [
        "deadline guard: cnn_f0 left out; loading it would take about 0.0 s of the 0.0 s left "
        "before the deadline",
        "deadline guard: cnn_f1 left out; loading it would take about 0.0 s of the 0.0 s left "
        "before the deadline"]
    ahead = Deadlines(plan=time.monotonic() + 600, hard_stop=time.monotonic() + 700)
    ensemble = load_ensemble(config, discovery, None, lines.append, ahead)
    assert [member.name for member in ensemble.members] == ["cnn_f0", "cnn_f1"]


def test_start_kernel_refuses_a_missing_test_set_before_writing_anything(digits_input,
                                                                       tmp_path):
    config = _config(digits_input)
    config["test"] = {"images": "digits/no-such-folder"}
    with pytest.raises(TestSetError, match="no-such-folder"):
        start_kernel(config, tmp_path)
    assert not (tmp_path / "submission.csv").exists()


CLEAR_LAST_LINES = (
    r"run-local: kernel stopped at the \d+ s budget; it left submission\.csv \(30 rows, as last "
    r"written\)",
    r"\[ *[\d.]+s\] wrote submission\.csv \(30 rows, \d+ fallback\) in [\d.]+ s of a \d+ s "
    r"budget",
    r"\[ *[\d.]+s\] kept the fallback submission submission\.csv \(30 rows, all fallback\) "
    r"after [\d.]+ s of a \d+ s budget",
)


@pytest.mark.slow
def test_every_budget_from_one_second_up_leaves_a_valid_submission_and_a_clear_last_line(
        digits_input, tmp_path):
    # Four ResNet-18s at 224 px: on 2 cores, importing torch, loading 170 MB of weights and the
    # optimise-and-check pass take about 15 s before the first timed batch, more than the
    # first three budgets; the last is a few times that.
    inputs = tmp_path / "input"
    (inputs / "heavy-models").mkdir(parents=True)
    (inputs / "digits").symlink_to(digits_input / "digits")
    for i in range(4):
        torch.manual_seed(i)
        save_checkpoint(inputs / "heavy-models" / f"m{i}.pt", "resnet18", 10,
                        {"name": f"m{i}", "input_size": 224, "mean": [0.5] * 3,
                         "std": [0.25] * 3}, create_model("resnet18", num_classes=10))
    config = tmp_path / "heavy.yml"
    config.write_text("models:\n" + "".join(f"  - {{name: m{i}}}\n" for i in range(4))
                      + "test: {images: digits/test, "
                        "sample_submission: digits/sample_submission.csv}\n"
                        "submission: {format: multiclass}\ntta: [identity, hflip]\n"
                        "batch_size: 16\n")
    build_kernel(config, tmp_path / "out")
    ids = _sample_ids(digits_input)
    for budget in (1, 4, 9, 45):
        result = run_local(tmp_path / "out", inputs, budget=budget)
        log = result.log.read_text()
        assert result.submission is not None, log
        submission = pd.read_csv(result.submission, dtype=str)
        assert submission.columns.tolist() == ["id", "label"], log
        assert submission["id"].tolist() == ids, log
        assert set(submission["label"]) <= {str(c) for c in range(10)}, log
        last = result.last_line()
        assert any(re.fullmatch(pattern, last) for pattern in CLEAR_LAST_LINES), log
        assert result.timed_out == last.startswith("run-local: kernel stopped"), log
        lines = log.splitlines()
        written = next(i for i, line in enumerate(lines) if "fallback submission written" in line)
        assert not any("kernelpack runtime: torch" in line for line in lines[:written]), log
    # The last budget is a few times the start-up: the models' own submission, in time.
    assert not result.timed_out and result.returncode == 0, log
    assert re.search(r"wrote submission\.csv \(30 rows, 0 fallback\)", log), log
