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
