import ast
import json
import subprocess
import sys

import pandas as pd
import pytest

from inference_core.errors import ConfigError
from kernelpack.cli import main
from kernelpack.kernel.build import build_kernel
from kernelpack.kernel.sandbox import network_namespace_available, run_local


def test_build_writes_one_self_contained_file_and_private_offline_metadata(ensemble_yml, tmp_path):
    result = build_kernel(ensemble_yml, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "kernel-config.json", "kernel-metadata.json", "kernel.py"]
    text = result.kernel.read_text()
    tree = ast.parse(text)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    assert imported <= set(sys.stdlib_module_names)  # the bootstrap needs only the stdlib
    metadata = json.loads(result.metadata.read_text())
    assert metadata["id"] == "tester/digits-kernel"
    assert metadata["code_file"] == "kernel.py"
    assert metadata["is_private"] is True and metadata["enable_internet"] is False
    assert metadata["competition_sources"] == ["digits"]


def test_identical_inputs_build_byte_identical_kernels(ensemble_yml, tmp_path):
    first = build_kernel(ensemble_yml, tmp_path / "a").kernel.read_bytes()
    second = build_kernel(ensemble_yml, tmp_path / "b").kernel.read_bytes()
    assert first == second
    ensemble_yml.write_text(ensemble_yml.read_text().replace("blend: gmean", "blend: mean"))
    assert build_kernel(ensemble_yml, tmp_path / "c").kernel.read_bytes() != first


def _expected_rows(digits_input):
    return pd.read_csv(digits_input / "digits" / "sample_submission.csv", dtype=str)["id"]


@pytest.mark.slow
def test_kernel_runs_with_python_isolated_from_an_empty_directory_offline(
        ensemble_yml, digits_input, tmp_path):
    kernel = build_kernel(ensemble_yml, tmp_path / "out").kernel
    work = tmp_path / "kaggle" / "working"
    work.mkdir(parents=True)
    (tmp_path / "kaggle" / "input").symlink_to(digits_input)
    temp = tmp_path / "kaggle" / "tmp"
    temp.mkdir()
    command = [sys.executable, "-I", str(kernel)]
    if network_namespace_available():
        command = ["unshare", "-n", "--", *command]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(temp)})
    assert done.returncode == 0, done.stdout + done.stderr
    frame = pd.read_csv(work / "submission.csv", dtype=str)
    assert frame["id"].tolist() == _expected_rows(digits_input).tolist()
    assert set(frame["label"]) <= {str(d) for d in range(10)}
    assert list(temp.iterdir()) == []  # the unpacked bundle is gone
    assert sorted(p.name for p in work.iterdir()) == ["submission.csv"]


@pytest.mark.slow
def test_kernel_runs_in_the_sandbox_where_the_project_cannot_be_imported(
        ensemble_yml, digits_input, tmp_path):
    out = tmp_path / "out"
    build_kernel(ensemble_yml, out)
    lines = []
    result = run_local(out, digits_input, on_line=lines.append)
    assert result.returncode == 0, "\n".join(lines)
    assert result.submission == result.root / "working" / "submission.csv"
    assert len(pd.read_csv(result.submission)) == len(_expected_rows(digits_input))
    assert result.outputs == [result.submission]
    assert list((result.root / "temp").glob("kernelpack-*")) == []
    assert any("blend gmean" in line for line in lines)


@pytest.mark.slow
def test_run_local_reports_the_submission_file_the_config_names(
        ensemble_yml, digits_input, tmp_path, capsys):
    ensemble_yml.write_text(ensemble_yml.read_text().replace(
        "submission: {format: multiclass}", "submission: {format: multiclass, file: preds.csv}"))
    out = tmp_path / "out"
    build_kernel(ensemble_yml, out)
    assert main(["run-local", str(out), "--input", str(digits_input)]) == 0, \
        capsys.readouterr().err
    written = (out / "sandbox" / "working" / "preds.csv").resolve()
    assert f"submission written: {written} (" in capsys.readouterr().out
    assert len(pd.read_csv(written)) == len(_expected_rows(digits_input))
    assert sorted(p.name for p in written.parent.iterdir()) == ["preds.csv"]


@pytest.mark.slow
def test_kernel_runs_when_pasted_into_a_notebook_cell(ensemble_yml, digits_input, tmp_path):
    kernel = build_kernel(ensemble_yml, tmp_path / "out").kernel
    cell = tmp_path / "cell" / "kernel.py"
    cell.parent.mkdir()
    # A notebook cell has no __file__: exec the kernel's text in a fresh namespace.
    cell.write_text(f"exec(compile({kernel.read_text()!r}, '<cell>', 'exec'), "
                    "{'__name__': '__main__'})\n")
    result = run_local(cell, digits_input)
    assert result.returncode == 0, result.log.read_text()
    assert result.submission is not None


def _one_line_kernel_error(result):
    log = result.log.read_text()
    assert result.returncode == 1, log
    errors = [line for line in log.splitlines() if line.startswith("kernel error:")]
    assert len(errors) == 1 and "Traceback" not in log, log
    return errors[0]


@pytest.mark.slow
def test_missing_test_folder_is_one_line_and_exit_code_1(ensemble_yml, digits_input, tmp_path):
    ensemble_yml.write_text(ensemble_yml.read_text().replace("images: digits/test",
                                                             "images: digits/tests"))
    out = tmp_path / "out"
    build_kernel(ensemble_yml, out)
    line = _one_line_kernel_error(run_local(out, digits_input))
    assert "test folder 'digits/tests' not found" in line and "test.images" in line


@pytest.mark.slow
def test_unknown_arch_in_a_checkpoint_is_one_line(ensemble_yml, digits_input, tmp_path):
    import torch

    checkpoint = torch.load(digits_input / "digits-models" / "cnn_f1.pt", weights_only=True)
    models = tmp_path / "input" / "digits-models"
    models.mkdir(parents=True)
    (tmp_path / "input" / "digits").symlink_to(digits_input / "digits")
    (models / "cnn_f0.pt").symlink_to(digits_input / "digits-models" / "cnn_f0.pt")
    torch.save({**checkpoint, "arch": "small_cn"}, models / "cnn_f1.pt")
    out = tmp_path / "out"
    build_kernel(ensemble_yml, out)
    line = _one_line_kernel_error(run_local(out, tmp_path / "input"))
    assert "unknown architecture 'small_cn'; close names: small_cnn" in line


def test_cli_build_reports_a_config_missing_a_field_in_one_line(ensemble_yml, tmp_path, capsys):
    ensemble_yml.write_text(ensemble_yml.read_text().replace(
        "submission: {format: multiclass}\n", ""))
    assert main(["build", str(ensemble_yml), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "ensemble.yml: submission: missing; add a section with submission.format" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError):
        build_kernel(ensemble_yml, tmp_path / "out")


def test_build_prints_the_bundlers_warnings_for_the_users_code(ensemble_yml, tmp_path, capsys):
    """`build --code` carries the user's code through the bundler: its warnings reach the user."""
    package = tmp_path / "oldcode"
    package.mkdir()
    (package / "__init__.py").write_text("import imp  # gone in Python 3.12\n")
    assert main(["build", str(ensemble_yml), "-o", str(tmp_path / "out"),
                 "--code", str(package)]) == 0
    err = capsys.readouterr().err
    assert "kernelpack: warning:" in err and "imp" in err and "__init__.py" in err


@pytest.mark.parametrize("notebook", [False, True])
def test_a_kernel_that_embeds_a_key_is_written_owner_only_even_over_an_older_build(
        ensemble_yml, tmp_path, notebook):
    import os
    import stat

    out = tmp_path / "out"
    plain = build_kernel(ensemble_yml, out, notebook=notebook)
    os.chmod(plain.kernel, 0o644)
    keyed = build_kernel(ensemble_yml, out, key=os.urandom(32), notebook=notebook)
    assert keyed.kernel == plain.kernel
    assert stat.S_IMODE(keyed.kernel.stat().st_mode) == 0o600
    again = build_kernel(ensemble_yml, out, notebook=notebook)  # no key: readable as before
    assert stat.S_IMODE(again.kernel.stat().st_mode) & 0o044


@pytest.mark.parametrize(("written", "shape", "gpu", "tpu"), [
    ("NvidiaTeslaT4", "NvidiaTeslaT4", True, False),
    ("T4 x2", "NvidiaTeslaT4", True, False),
    ("gpu p100", "NvidiaTeslaP100", True, False),
    ("TPU VM v3-8", "Tpu1VmV38", False, True),
    ("none", None, False, False),
])
def test_the_accelerator_is_the_clients_machine_shape_and_enable_gpu_follows_it(
        ensemble_yml, tmp_path, written, shape, gpu, tpu):
    ensemble_yml.write_text(ensemble_yml.read_text().replace(
        "kernel: {", f"kernel: {{accelerator: {written}, "))
    metadata = json.loads(build_kernel(ensemble_yml, tmp_path / "out").metadata.read_text())
    assert metadata.get("machine_shape") == shape
    assert (metadata["enable_gpu"], metadata["enable_tpu"]) == (gpu, tpu)


def test_an_accelerator_the_client_does_not_know_or_a_contradicting_enable_gpu_is_refused(
        ensemble_yml, tmp_path):
    original = ensemble_yml.read_text()
    ensemble_yml.write_text(original.replace("kernel: {", "kernel: {accelerator: A100, "))
    with pytest.raises(ConfigError, match=r"kernel\.accelerator: must be one of NvidiaTeslaT4 "
                                          r"\(GPU T4 x2\), NvidiaTeslaP100 \(GPU P100\), "
                                          r"Tpu1VmV38 \(TPU VM v3-8\) or none, got 'A100'"):
        build_kernel(ensemble_yml, tmp_path / "out")
    ensemble_yml.write_text(original.replace(
        "kernel: {", "kernel: {accelerator: TPU, enable_gpu: true, "))
    with pytest.raises(ConfigError, match=r"kernel\.enable_gpu: true contradicts kernel\."
                                          r"accelerator Tpu1VmV38, which is no GPU; remove "
                                          r"enable_gpu"):
        build_kernel(ensemble_yml, tmp_path / "out")
    # Without an accelerator, enable_gpu alone still asks for a GPU (of Kaggle's choosing).
    ensemble_yml.write_text(original.replace("kernel: {", "kernel: {enable_gpu: true, "))
    metadata = json.loads(build_kernel(ensemble_yml, tmp_path / "out").metadata.read_text())
    assert metadata["enable_gpu"] is True and "machine_shape" not in metadata
