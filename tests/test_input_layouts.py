"""One built kernel, run offline in the sandbox (network cut) against its inputs laid out as Kaggle
mounts them: flat, today's layout and a mixture write the same submission; a competition mounted
twice stops the kernel with one line naming both; `--test-dir` swaps the test set in wherever the
kernel finds it."""

import json
import shutil

import pytest
import yaml

from conftest import ENSEMBLE_YML
from kernelpack.config import validate_host_config
from kernelpack.kernel.build import build_kernel
from kernelpack.kernel.folder import CONFIG_FILE
from kernelpack.kernel.sandbox import hidden_test_swaps, run_local

# Mount point under input/ -> the source in the `digits_input` fixture (flat there).
LAYOUTS = {
    "flat": {"digits": "digits", "digits-models": "digits-models"},
    "today": {"competitions/digits": "digits", "datasets/tester/digits-models": "digits-models"},
    "mixed": {"competitions/digits": "digits", "digits-models": "digits-models"},
}


def _lay_out(digits_input, input_dir, mounts):
    for point, source in mounts.items():
        (input_dir / point).parent.mkdir(parents=True, exist_ok=True)
        (input_dir / point).symlink_to(digits_input / source, target_is_directory=True)
    return input_dir


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """The kernel of ENSEMBLE_YML, which names its inputs by slug (`digits/test`,
    `digits-models/cnn_f0.pt`)."""
    folder = tmp_path_factory.mktemp("layouts")
    (folder / "ensemble.yml").write_text(ENSEMBLE_YML)
    return build_kernel(folder / "ensemble.yml", folder / "out").kernel.parent


@pytest.mark.slow
def test_flat_todays_and_mixed_layouts_write_the_same_submission(kernel, digits_input,
                                                                 tmp_path):
    submissions = {}
    for name, mounts in LAYOUTS.items():
        input_dir = _lay_out(digits_input, tmp_path / name / "input", mounts)
        result = run_local(kernel, input_dir, root=tmp_path / name / "sandbox")
        log = result.log.read_text()
        assert result.returncode == 0, log
        test_at = next(point for point, source in mounts.items() if source == "digits")
        layout = "flat" if test_at == "digits" else "competitions"
        assert (f"input test.images 'digits/test': ../input/{test_at}/test ({layout} layout)"
                in log), log
        models_at = next(point for point, source in mounts.items() if source == "digits-models")
        assert f"found    cnn_f1                   {models_at}/cnn_f1.pt" in log, log
        submissions[name] = result.submission.read_text()
    assert submissions["today"] == submissions["flat"] == submissions["mixed"]
    assert submissions["flat"].count("\n") == 31  # the header and the 30 test ids


@pytest.mark.slow
def test_a_competition_mounted_twice_stops_the_kernel_with_one_line_naming_both(
        kernel, digits_input, tmp_path):
    input_dir = _lay_out(digits_input, tmp_path / "input", LAYOUTS["today"])
    shutil.copytree(digits_input / "digits", input_dir / "digits")  # another copy, flat
    result = run_local(kernel, input_dir, root=tmp_path / "sandbox")
    log = result.log.read_text()
    errors = [line for line in log.splitlines() if "kernel error" in line]
    assert result.returncode == 1 and "Traceback" not in log, log
    assert len(errors) == 1 and errors[0].endswith(
        "'digits/test': 2 sources are mounted as 'digits' under ../input (digits and "
        "competitions/digits); attach only one of them to the kernel, or name the path from the "
        "input root (e.g. competitions/digits/test)"), log


def test_a_swapped_in_test_set_goes_where_the_kernel_finds_the_test_set(digits_input, tmp_path):
    kernel_dir = tmp_path / "out"
    kernel_dir.mkdir()
    config = validate_host_config(yaml.safe_load(ENSEMBLE_YML)).ensemble
    (kernel_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict()))  # as `build` writes it
    for name, mounts in LAYOUTS.items():
        input_dir = _lay_out(digits_input, tmp_path / name, mounts)
        test_at = next(point for point, source in mounts.items() if source == "digits")
        swaps = hidden_test_swaps(kernel_dir, digits_input / "digits" / "test", input_dir,
                                  tmp_path)
        assert sorted(swaps) == [f"{test_at}/sample_submission.csv", f"{test_at}/test"], name
