"""The kernel itself refuses non-finite numbers and escaping output paths, from a hand-edited
config or the environment, before it predicts anything: one line and exit code 1."""

from __future__ import annotations

import math

import pytest

from inference_core.config import BUDGET_ENV
from inference_core.runner import main


def _config(digits_input, **submission) -> dict:
    return {"models": [{"name": "cnn_f0"}],
            "test": {"images": "digits/test", "sample_submission": "digits/sample_submission.csv"},
            "submission": {"format": "multiclass", **submission},
            "input_roots": [str(digits_input)], "batch_size": 64}


@pytest.mark.parametrize("value", ["nan", "inf", "-3", "0", "soon"])
def test_a_budget_variable_that_is_not_a_positive_finite_number_stops_the_kernel(
        digits_input, tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(BUDGET_ENV, value)
    assert main(_config(digits_input)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and BUDGET_ENV in err[0] and "positive, finite" in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../escaped.csv", "/tmp/escaped.csv", "sub/../../escaped.csv"])
def test_a_submission_file_outside_the_working_folder_is_refused(digits_input, tmp_path,
                                                                 monkeypatch, capsys, name):
    work = tmp_path / "working"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(_config(digits_input, file=name)) == 1
    err = capsys.readouterr().err
    assert "submission.file" in err and "working folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["working"]
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(("field", "value"), [("weight", math.nan), ("weight", math.inf),
                                              ("threshold_shift", math.nan)])
def test_a_hand_edited_non_finite_model_number_stops_the_kernel(digits_input, tmp_path,
                                                                monkeypatch, capsys, field,
                                                                value):
    monkeypatch.chdir(tmp_path)
    config = _config(digits_input)
    config["models"][0][field] = value
    assert main(config) == 1
    assert f"models[0].{field}: must be a finite number" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_fractional_budget_is_reported_as_given_not_rounded(digits_input, tmp_path,
                                                              monkeypatch):
    from inference_core.config import EnsembleConfig
    from inference_core.runner import run_kernel

    monkeypatch.setenv(BUDGET_ENV, "3600.5")
    lines: list[str] = []
    run_kernel(EnsembleConfig.from_dict(_config(digits_input)), tmp_path, log=lines.append,
               progress=False)
    log = "\n".join(lines)
    assert "budget 3600.5 s (plan within 3240.5 s)" in log  # "3600" before; 10% margin
    assert "s of a 3600.5 s budget" in log
