"""Output paths and numeric flags that a person gets wrong: one line and exit code 1 (or argparse's
usage error, exit code 2), and nothing overwritten."""

from __future__ import annotations

import pytest
from cli_run import assert_one_line_error, kernelpack

CONFIG = "models: [{name: a}]\ntest: {images: x}\nsubmission: {format: multiclass}\n"


def test_build_onto_an_existing_file_is_one_line(tmp_path):
    config = tmp_path / "ensemble.yml"
    config.write_text(CONFIG)
    target = tmp_path / "kernel-out"
    target.write_text("not a folder")
    assert_one_line_error(kernelpack("build", config, "-o", target), f"-o {target}",
                          "not a folder")
    assert target.read_text() == "not a folder"


def test_bundle_onto_a_folder_is_one_line(tmp_path):
    entry = tmp_path / "main.py"
    entry.write_text("print('hi')\n")
    folder = tmp_path / "build"
    folder.mkdir()
    assert_one_line_error(kernelpack("bundle", entry, "-o", folder), f"-o {folder}",
                          "is a folder", "kernel.py")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_predict_tolerance_must_be_finite_and_not_negative(tmp_path, value):
    config = tmp_path / "ensemble.yml"
    config.write_text(CONFIG)
    done = kernelpack("predict", config, "--input", tmp_path, "--images", tmp_path, "-o",
                      tmp_path / "p.npy", "--tolerance", value)
    assert_one_line_error(done, "argument --tolerance", code=2)
    assert not (tmp_path / "p.npy").exists()
