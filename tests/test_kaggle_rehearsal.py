"""The whole rehearsal with a real built kernel: push the model dataset, push the kernel built by
`build_kernel`, let it run in the service's sandbox with its sources mounted as Kaggle mounts them
today, submit it and get a score on held-back labels.
"""

import shutil

import pytest
from kaggle_helpers import USER, kaggle_world, submit_and_check_score

from conftest import ENSEMBLE_YML
from kernelpack.kaggle.service import add_competition
from kernelpack.kernel.build import build_kernel

# A built kernel run and scored by the local Kaggle service.
pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch, flat_input=False)


def test_built_kernel_is_pushed_run_submitted_and_scored(world, tmp_path, digits_input):
    labels = digits_input.parent / "heldout" / "test_labels.csv"
    add_competition(world.root, "digits", digits_input / "digits", labels)
    models = shutil.copytree(digits_input / "digits-models", tmp_path / "digits-models")
    pushed = world.kernelpack("dataset", "push", str(models), "--public", "--wait")
    assert pushed.returncode == 0, pushed

    config = tmp_path / "ensemble.yml"
    config.write_text(ENSEMBLE_YML.replace(
        "competition_sources: [digits]}",
        f"competition_sources: [digits], dataset_sources: [{USER}/digits-models]}}"))
    build_kernel(config, tmp_path / "out")
    run = world.kernelpack("kernel", "push", str(tmp_path / "out"), "--wait")
    log = world.kernelpack("kernel", "logs", f"{USER}/digits-kernel").stdout
    assert run.returncode == 0, (run, log)
    # The config names the competition and the models by slug; the kernel found them in
    # competitions/digits/ and datasets/tester/digits-models/.
    assert "input test.images 'digits/test': ../input/competitions/digits/test (competitions " \
           "layout)" in log, log
    assert f"found    cnn_f0                   datasets/{USER}/digits-models/cnn_f0.pt" in log, log

    submit_and_check_score(world, "digits", f"{USER}/digits-kernel", labels)
