"""The built kernel, run offline in the sandbox: encrypted models, a swapped-in test set with a
corrupt image, and a budget so tight that only part of the ensemble fits."""

import shutil

import pandas as pd
import pytest
import torch

from examples.digits.prepare import make_competition
from inference_core.checkpoint import save_checkpoint
from inference_core.config import EnsembleConfig
from inference_core.discovery import DiscoveryError
from inference_core.kpenc import load_key
from inference_core.model_factory import create_model
from inference_core.runner import run_kernel
from kernelpack.errors import BuildError
from kernelpack.kernel.build import build_kernel, embeds_key
from kernelpack.kernel.sandbox import run_local
from kernelpack.weights.encrypt import encrypt_checkpoint, keygen


@pytest.fixture(scope="module")
def full_test_set(tmp_path_factory):
    """The 450 held-back digits: the 'hidden' test set, much larger than the public one."""
    return make_competition(tmp_path_factory.mktemp("hidden")).test_dir


def _ids(path):
    return pd.read_csv(path, dtype=str)["id"].tolist()


@pytest.mark.slow
def test_encrypted_models_give_the_same_submission_as_plain_ones(
        digits_input, ensemble_yml, tmp_path):
    plain = run_local(build_kernel(ensemble_yml, tmp_path / "plain").kernel, digits_input)
    assert plain.returncode == 0, plain.log.read_text()

    key_file = keygen(tmp_path / "kp.key")
    sealed_input = tmp_path / "input"
    (sealed_input / "digits-models").mkdir(parents=True)
    (sealed_input / "digits").symlink_to(digits_input / "digits")
    for fold in range(2):
        encrypt_checkpoint(digits_input / "digits-models" / f"cnn_f{fold}.pt",
                           load_key(key_file), sealed_input / "digits-models" /
                           f"cnn_f{fold}.kpenc")
    # Discovery goes by identity: drop the plain-file hints from the config.
    text = ensemble_yml.read_text()
    for fold in range(2):
        text = text.replace(f", path: digits-models/cnn_f{fold}.pt", "")
    ensemble_yml.write_text(text)
    sealed_kernel = build_kernel(ensemble_yml, tmp_path / "sealed", key=load_key(key_file))
    assert embeds_key(sealed_kernel.kernel) and not embeds_key(tmp_path / "plain" / "kernel.py")
    sealed = run_local(sealed_kernel.kernel, sealed_input)
    log = sealed.log.read_text()
    assert sealed.returncode == 0, log
    assert "decrypted in memory" in log
    assert load_key(key_file).hex() not in log
    assert sealed.submission.read_text() == plain.submission.read_text()
    assert sealed.outputs == [sealed.submission]  # no plaintext weights left in working/

    keyless = run_local(build_kernel(ensemble_yml, tmp_path / "keyless").kernel, sealed_input)
    errors = [line for line in keyless.log.read_text().splitlines() if "kernel error" in line]
    assert keyless.returncode == 1
    assert len(errors) == 1 and "encrypted but no key was given" in errors[0]


def test_a_public_kernel_never_embeds_the_key(ensemble_yml, tmp_path):
    ensemble_yml.write_text(ensemble_yml.read_text().replace(
        "kernel: {id: tester/digits-kernel,", "kernel: {id: tester/k, is_private: false,"))
    with pytest.raises(BuildError, match="public kernel must not embed the decryption key"):
        build_kernel(ensemble_yml, tmp_path / "out", key=bytes(32))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_larger_swapped_in_test_set_with_a_corrupt_image_still_gives_every_row(
        digits_input, ensemble_yml, full_test_set, tmp_path):
    hidden = tmp_path / "hidden-test"
    shutil.copytree(full_test_set, hidden)
    (hidden / "img_99999.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    out = tmp_path / "out"
    build_kernel(ensemble_yml, out)
    result = run_local(out, digits_input, test_dir=hidden)
    log = result.log.read_text()
    assert result.returncode == 0, log
    ids = _ids(result.submission)
    assert len(ids) == 451 and ids == sorted(p.stem for p in hidden.iterdir())
    assert "img_99999.png: cannot decode image" in log and "fallback" in log
    assert "1 fallback" in log
    # the public test set is untouched
    assert len(_ids(digits_input / "digits" / "sample_submission.csv")) == 30


@pytest.mark.slow
def test_a_budget_that_fits_part_of_the_ensemble_still_writes_a_valid_submission_in_time(
        digits_input, full_test_set, tmp_path):
    # Six slow models (a wide CNN at 96 px) x 4 TTA views: on 2 cores each view needs seconds for
    # the 450 hidden images, so the first views fit in what the budget leaves after start-up and
    # the probe, and all 24 do not, on a quiet machine as on a busy one.
    models = tmp_path / "input" / "slow-models"
    models.mkdir(parents=True)
    (tmp_path / "input" / "digits").symlink_to(digits_input / "digits")
    lines = []
    for i in range(6):
        torch.manual_seed(i)
        save_checkpoint(models / f"wide_{i}.pt", "small_cnn", 10,
                        {"name": f"wide_{i}", "input_size": 96, "mean": [0.5] * 3,
                         "std": [0.25] * 3, "model_kwargs": {"width": 32}},
                        create_model("small_cnn", num_classes=10, width=32))
        lines.append(f"  - {{name: wide_{i}, weight: {6 - i}}}")
    config = tmp_path / "slow.yml"
    config.write_text("models:\n" + "\n".join(lines) + "\n"
                      "test: {images: digits/test, "
                      "sample_submission: digits/sample_submission.csv}\n"
                      "submission: {format: multiclass}\n"
                      "tta: [identity, hflip, vflip, rot180]\n"
                      "budget: {seconds: 30, margin: 0.2}\nbatch_size: 30\n")
    build_kernel(config, tmp_path / "out")
    result = run_local(tmp_path / "out", tmp_path / "input", budget=30, test_dir=full_test_set)
    log = result.log.read_text()
    assert not result.timed_out and result.returncode == 0, log
    assert result.seconds < 30
    assert len(_ids(result.submission)) == 450
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if "plan:" in line)
    rows = [line.split() for line in lines[start + 1:start + 25]]  # one row per model view
    kept = [row[1] for row in rows if row[0] == "runs"]
    dropped = [row[2] for row in rows if row[:2] == ["left", "out"]]
    assert len(kept) + len(dropped) == 24
    assert "wide_5:rot180" in dropped  # the last of the ranking goes first
    assert "wide_0:identity" in kept  # the heaviest weight's first view is always kept


def _run_in_process(models, digits_input, work):
    config = {"models": models, "input_roots": [str(digits_input)],
              "test": {"images": "digits/test",
                       "sample_submission": "digits/sample_submission.csv"},
              "submission": {"format": "probabilities"}, "blend": "gmean",
              "tta": ["identity", "hflip"], "batch_size": 16}
    lines = []
    work.mkdir()
    summary = run_kernel(EnsembleConfig.from_dict(config), working_dir=work, log=lines.append,
                         progress=False)
    return pd.read_csv(summary.submission).set_index("id"), "\n".join(lines)


def test_a_folds_entry_runs_as_its_per_fold_entries_and_a_missing_fold_keeps_its_share(
        digits_input, tmp_path):
    # The fixture's checkpoints are cnn_f0 (fold 0) and cnn_f1 (fold 1): NAME_f<k> naming.
    per_fold, _ = _run_in_process([{"name": "cnn_f0", "weight": 1.5},
                                   {"name": "cnn_f1", "weight": 1.5}], digits_input,
                                  tmp_path / "per-fold")
    grouped, log = _run_in_process([{"name": "cnn", "folds": [0, 1], "weight": 3}],
                                   digits_input, tmp_path / "grouped")
    assert "loaded cnn_f0" in log and "loaded cnn_f1" in log
    pd.testing.assert_frame_equal(grouped, per_fold)
    # Not a vacuous match: the folds disagree.
    fold0, _ = _run_in_process([{"name": "cnn_f0"}], digits_input, tmp_path / "fold0")
    assert (fold0 - grouped).abs().to_numpy().max() > 1e-3

    # Fold 2 was never trained: optional, the group blends the folds it has, at full weight.
    with_gap, log = _run_in_process([{"name": "cnn", "folds": [0, 1, 2], "weight": 3}],
                                    digits_input, tmp_path / "gap")
    assert "WARNING model cnn fold 2 not found; blending without it" in log
    pd.testing.assert_frame_equal(with_gap, per_fold)
    with pytest.raises(DiscoveryError) as info:
        _run_in_process([{"name": "cnn", "folds": [0, 1, 2], "required": True}], digits_input,
                        tmp_path / "required")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("required model(s) cnn fold 2 not found under the input roots")
    assert "list only the folds you have in models[0].folds" in message
