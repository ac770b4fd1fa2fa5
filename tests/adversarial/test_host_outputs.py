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


def test_build_never_overwrites_a_kernel_py_it_did_not_write_nor_writes_into_the_code(tmp_path):
    config = tmp_path / "ensemble.yml"
    config.write_text(CONFIG)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "kernel.py").write_text("# my own notebook export\nprint('weeks of work')\n")
    assert_one_line_error(kernelpack("build", config, "-o", mine), "not written by kernelpack")
    assert (mine / "kernel.py").read_text().startswith("# my own notebook export")
    assert sorted(p.name for p in mine.iterdir()) == ["kernel.py"]
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    done = kernelpack("build", config, "-o", package / "out", "--code", package)
    assert_one_line_error(done, "lies inside your code mypkg")
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py"]
    # Its own output is rebuilt in place.
    assert kernelpack("build", config, "-o", tmp_path / "out").code == 0
    assert kernelpack("build", config, "-o", tmp_path / "out").code == 0


def test_encrypt_or_decrypt_onto_their_own_input_is_refused(tmp_path):
    key = tmp_path / "k.key"
    assert kernelpack("keygen", "-o", key).code == 0
    plain = tmp_path / "blob.bin"
    plain.write_bytes(b"weights")
    assert_one_line_error(kernelpack("encrypt", plain, "--key", key, "-o", plain),
                          "is the input file itself")
    assert plain.read_bytes() == b"weights"
    assert_one_line_error(kernelpack("decrypt", plain, "--key", key, "-o", plain),
                          "is the input file itself")
    assert plain.read_bytes() == b"weights"
    assert_one_line_error(kernelpack("decrypt", plain, "--key", key, "-o", "/dev/null"),
                          "not a regular file")


def test_an_output_under_a_file_is_one_line_from_the_system(tmp_path):
    config = tmp_path / "ensemble.yml"
    config.write_text(CONFIG)
    blocker = tmp_path / "a-file"
    blocker.write_text("keep")
    assert_one_line_error(kernelpack("build", config, "-o", blocker / "out"), "a-file",
                          "Not a directory")
    entry = tmp_path / "main.py"
    entry.write_text("print('hi')\n")
    assert_one_line_error(kernelpack("bundle", entry, "-o", blocker / "k.py"), "a-file")
    assert blocker.read_text() == "keep"


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


@pytest.mark.parametrize("value", ["0", "-2"])
def test_submit_version_must_name_a_version(value):
    # 0 used to mean "the newest" (a falsy version); no service is reached before the check
    done = kernelpack("submit", "digits", "--kernel", "me/k", "--version", value)
    assert_one_line_error(done, "argument --version", f"must be at least 1, got {value}", code=2)


def test_no_command_writes_onto_its_own_input(tmp_path):
    import torch

    from inference_core.model_factory import create_model

    weights = tmp_path / "weights.pth"
    torch.save(create_model("small_cnn", num_classes=3).state_dict(), weights)
    original = weights.read_bytes()
    link = tmp_path / "link.pth"
    link.symlink_to(weights)
    for target in (weights, link):  # the input itself, and through a link
        assert_one_line_error(kernelpack("import-checkpoint", weights, "-o", target, "--arch",
                                         "small_cnn", "--num-classes", 3, "--name", "a"),
                              f"-o {target}", "is the input file itself")
    assert weights.read_bytes() == original
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\na,x\n")
    for target in (weights, labels):
        assert_one_line_error(kernelpack("prototypes", "--checkpoint", weights, "--images",
                                         tmp_path, "--labels", labels, "-o", target),
                              f"-o {target}", "is the input file itself")
    assert weights.read_bytes() == original and labels.read_text() == "id,label\na,x\n"
    config = tmp_path / "ensemble.yml"
    config.write_text(CONFIG)
    sample = tmp_path / "sample.csv"
    sample.write_text("id,label\na,0\n")
    for target, extra in ((config, ()), (sample, ("--sample", sample))):
        assert_one_line_error(kernelpack("predict", config, "--images", tmp_path, *extra,
                                         "-o", target), f"-o {target}",
                              "is the input file itself")
    # --per-model writes PREDS.<entry>.npy beside PREDS: those may not be inputs either
    (tmp_path / "preds.a.npy").write_bytes(b"mine")
    assert_one_line_error(kernelpack("predict", config, "--images", tmp_path, "--per-model",
                                     "--compare", tmp_path / "preds.a.npy",
                                     "-o", tmp_path / "preds.npy"),
                          f"--per-model {tmp_path / 'preds.a.npy'}", "is the input file itself")
    assert config.read_text() == CONFIG and (tmp_path / "preds.a.npy").read_bytes() == b"mine"


@pytest.mark.parametrize(("flag", "value", "problem"), [
    ("--seed", "-5", "must be at least 0, got -5"),
    ("--restarts", "100000000", "must be at most 1000, got 100000000"),
    ("--restarts", "0", "must be at least 1, got 0"),
])
def test_blend_search_flags_out_of_range_are_usage_errors(tmp_path, flag, value, problem):
    done = kernelpack("blend", "search", "--oof", f"a={tmp_path / 'a.npy'}", "--labels",
                      tmp_path / "l.csv", "--folds", tmp_path / "f.npy", "--metric", "f2",
                      "-o", tmp_path / "x.yml", flag, value)
    assert_one_line_error(done, f"argument {flag}", problem, code=2)


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "empty file; the labels CSV needs columns id and label"),
    (b"id,label\n", "no rows; the labels CSV needs one row per OOF sample"),
    (b'id,label\n"a,1\n', "not a readable CSV ("),
])
@pytest.mark.parametrize("command", ["blend", "threshold"])
def test_an_empty_or_broken_labels_csv_is_one_line_in_both_searches(tmp_path, content, problem,
                                                                     command):
    import numpy as np

    np.save(tmp_path / "a.npy", np.full((3, 4), 0.5))
    np.save(tmp_path / "f.npy", np.array([0, 1, 0]))
    (tmp_path / "l.csv").write_bytes(content)
    (tmp_path / "base.yml").write_text(CONFIG.replace("multiclass", "multilabel"))
    extra = ("--metric", "f2") if command == "blend" else ("--base", tmp_path / "base.yml")
    done = kernelpack(command, "search", "--oof", f"a={tmp_path / 'a.npy'}", "--labels",
                      tmp_path / "l.csv", "--folds", tmp_path / "f.npy", *extra,
                      "-o", tmp_path / "x.yml")
    assert_one_line_error(done, "l.csv: ", problem)
    assert not (tmp_path / "x.yml").exists()
