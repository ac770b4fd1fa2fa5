"""`kernelpack fanout` against the local Kaggle service with two workers and the real `kaggle`
client: the assembled files equal `kernelpack predict`'s (test rows and out-of-fold), and a
shard killed midway, a shard whose kernel fails, a rerun after Ctrl-C and an output tampered
with on the way are each handled without a wrong file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from fanout_helpers import MODELS_SLUG, USER, fanout_world, same_files, save_models

from kernelpack.fanout.state import FanoutState
from kernelpack.kaggle.session import KaggleSession

# Each shard is a kernel run in the service's sandbox (torch imported, models loaded).
pytestmark = pytest.mark.slow

SHARDS_OF_TEST_ROWS = ["--rows-per-shard", "16", "--models-per-shard", "2"]  # 2 x 2 shards


@pytest.fixture
def fanout(tmp_path, digits_input):
    with fanout_world(tmp_path, digits_input) as world:
        yield world


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_input):
    """`kernelpack predict`'s own files for the test rows and the out-of-fold rows."""
    folder = tmp_path_factory.mktemp("fanout-reference")
    with fanout_world(folder, digits_input, workers=1) as world:
        world.predict(folder / "test" / "preds.npy", *world.test_args())
        world.predict(folder / "oof" / "preds.npy", *world.oof_args(), "--per-model")
        world.predict(folder / "oof-topk" / "preds.npz", *world.oof_args(), "--per-model",
                      "--top-k", "3")
        world.predict(folder / "topk" / "preds.npz", *world.test_args(), "--top-k", "3")
    return folder


def test_test_rows_equal_predict_and_a_rerun_skips_every_verified_shard(fanout, reference,
                                                                        tmp_path):
    out = tmp_path / "out" / "preds.npy"
    run = fanout.fanout(out, *fanout.test_args(), *SHARDS_OF_TEST_ROWS)
    assert run.returncode == 0, run.stderr
    assert "shards: 4 (0 verified before, 4 verified now, 0 failed; 4 pushed" in run.stdout
    names = same_files(out.parent, reference / "test")
    assert names == ["preds.cnn.npy", "preds.npy", "preds.solo.npy"]
    # Not vacuous: the entries disagree, and the blend is neither of them.
    cnn, solo = np.load(out.parent / "preds.cnn.npy"), np.load(out.parent / "preds.solo.npy")
    assert np.abs(cnn - solo).max() > 1e-3
    assert len(fanout.kernel_versions()) == 4

    (out.parent / "preds.npy").unlink()
    again = fanout.fanout(out, *fanout.test_args(), *SHARDS_OF_TEST_ROWS)
    assert again.returncode == 0, again.stderr
    assert "shards: 4 (4 verified before, 0 verified now, 0 failed; 0 pushed" in again.stdout
    same_files(out.parent, reference / "test")
    assert set(fanout.kernel_versions().values()) == {1}


def test_out_of_fold_files_equal_predict_and_each_fold_model_sees_only_its_rows(fanout,
                                                                                reference,
                                                                                tmp_path):
    out = tmp_path / "oof" / "preds.npy"
    run = fanout.fanout(out, *fanout.oof_fanout_args())
    assert run.returncode == 0, run.stderr
    # cnn_f0 on its 6 rows, cnn_f1 on its 6, solo (no folds group) on all 12: three kernels.
    assert "shards: 3 (" in run.stdout
    assert not out.exists()     # no whole blend out of fold
    reference_files = sorted(p.name for p in (reference / "oof").glob("preds.*.npy"))
    assert reference_files == ["preds.cnn.npy", "preds.solo.npy"]
    for name in reference_files:
        np.testing.assert_allclose(np.load(out.parent / name),
                                   np.load(reference / "oof" / name), rtol=0, atol=1e-6)


def _same_top_k_files(folder, reference_folder, names) -> None:
    assert sorted(p.name for p in folder.glob("*.npz")) == names
    for name in names:
        ours, theirs = np.load(folder / name), np.load(reference_folder / name)
        np.testing.assert_array_equal(ours["indices"], theirs["indices"])
        np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], rtol=0,
                                   atol=1e-6)


@pytest.mark.parametrize("kind", ["oof", "test"])
def test_top_k_comes_back_as_k_classes_a_row_and_equals_predict(fanout, reference, tmp_path,
                                                                 kind):
    # Out of fold each shard sends its member's lists; on test rows each shard holds every
    # model (--models-per-shard 3) and sends each entry's and the whole blend's lists.
    out = tmp_path / kind / "preds.npz"
    args = [*fanout.oof_fanout_args()] if kind == "oof" else [
        *fanout.test_args(), "--models-per-shard", "3", "--rows-per-shard", "16"]
    run = fanout.fanout(out, *args, "--top-k", "3")
    assert run.returncode == 0, run.stderr
    downloaded = list((out.parent / "preds.fanout").rglob("*.npy"))
    assert downloaded and all(p.name.endswith((".indices.npy", ".probabilities.npy"))
                              for p in downloaded)
    _same_top_k_files(out.parent, reference / ("oof-topk" if kind == "oof" else "topk"),
                      ["preds.cnn.npz", "preds.solo.npz"] if kind == "oof" else
                      ["preds.cnn.npz", "preds.npz", "preds.solo.npz"])


def _kill_the_first_run_midway(root, killed: list) -> None:
    """Kill the first shard kernel a moment after it started (torch is being imported or the
    models loaded), with every process in it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pid_file in root.glob(f"kernels/{USER}/*/1/run.pid"):
            try:
                pid = int(pid_file.read_text())
            except ValueError:     # being written
                continue
            time.sleep(0.5)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:   # it ended first: try the next one
                continue
            killed.append(pid_file.parent.parent.name)
            return
        time.sleep(0.02)


def test_a_shard_killed_midway_is_run_again(fanout, reference, tmp_path):
    killed: list[str] = []
    killer = threading.Thread(target=_kill_the_first_run_midway, args=(fanout.world.root,
                                                                       killed))
    killer.start()
    out = tmp_path / "out" / "preds.npy"
    run = fanout.fanout(out, *fanout.test_args(), *SHARDS_OF_TEST_ROWS)
    killer.join()
    assert killed, "no run was killed"
    assert run.returncode == 0, run.stderr
    assert "1 retried" in run.stdout
    assert fanout.kernel_versions()[killed[0]] == 2
    same_files(out.parent, reference / "test")


def test_a_failing_shard_writes_nothing_then_a_rerun_reuses_the_verified_shards(
        fanout, reference, tmp_path):
    # On Kaggle, solo is now another model than the one here: its kernels must refuse it.
    stale = save_models(tmp_path / "stale" / MODELS_SLUG, solo_seed=99)
    assert fanout.world.kernelpack("dataset", "push", str(stale), "--wait", "--quiet"
                                   ).returncode == 0
    out = tmp_path / "out" / "preds.npy"
    args = [*fanout.test_args(), "--rows-per-shard", "16", "--retries", "0"]
    run = fanout.fanout(out, *args)
    assert run.returncode == 1, run
    assert run.stderr.count("FAILED") == 2     # solo's two row slices
    assert "the attached copy is stale" in run.stderr   # from the kernel's log tail
    assert "nothing was written" in run.stderr
    assert not list(out.parent.glob("*.npy"))

    # The right models pushed again (from a fresh folder: the first one's push is remembered
    # there and would be skipped): only the two failed shards run.
    fixed = shutil.copytree(fanout.models, tmp_path / "fixed" / MODELS_SLUG,
                            ignore=shutil.ignore_patterns(".*"))
    assert fanout.world.kernelpack("dataset", "push", str(fixed), "--wait", "--quiet"
                                   ).returncode == 0
    again = fanout.fanout(out, *args)
    assert again.returncode == 0, again.stderr
    assert "shards: 6 (4 verified before, 2 verified now, 0 failed; 2 pushed" in again.stdout
    same_files(out.parent, reference / "test")


def test_a_rerun_after_ctrl_c_follows_the_running_shards_and_pushes_only_the_rest(
        fanout, reference, tmp_path, monkeypatch):
    commit = FanoutState.commit

    def commit_then_interrupt(self, name, checked):
        commit(self, name, checked)
        raise KeyboardInterrupt

    monkeypatch.setattr(FanoutState, "commit", commit_then_interrupt)
    out = tmp_path / "out" / "preds.npy"
    run = fanout.fanout(out, *fanout.test_args(), *SHARDS_OF_TEST_ROWS)
    assert run.returncode == 130, run
    assert "run the same command again" in run.stderr
    assert not list(out.parent.glob("*.npy"))
    monkeypatch.setattr(FanoutState, "commit", commit)

    again = fanout.fanout(out, *fanout.test_args(), *SHARDS_OF_TEST_ROWS)
    assert again.returncode == 0, again.stderr
    assert "shards: 4 (1 verified before, 3 verified now" in again.stdout
    # The shard running at Ctrl-C was followed, not pushed again: one version per shard.
    assert set(fanout.kernel_versions().values()) == {1}
    same_files(out.parent, reference / "test")


def test_an_output_tampered_with_on_the_way_is_refused_and_run_again(fanout, reference,
                                                                      tmp_path, monkeypatch):
    download = KaggleSession.kernel_output
    tampered: list[str] = []

    def tamper_then_download(self, ref, path):
        if not tampered:   # the first output: one number changed after the kernel wrote it
            slug = ref.split("/")[1]
            versions = sorted(fanout.world.root.glob(f"kernels/{USER}/{slug}/[0-9]*"),
                              key=lambda p: int(p.name))
            member = versions[-1] / "run" / "working" / "member-0.npy"
            array = np.load(member)
            array[0, 0] += 0.25
            np.save(member, array)
            tampered.append(slug)
        return download(self, ref, path)

    monkeypatch.setattr(KaggleSession, "kernel_output", tamper_then_download)
    out = tmp_path / "out" / "preds.npy"
    run = fanout.fanout(out, *fanout.test_args(), *SHARDS_OF_TEST_ROWS)
    assert run.returncode == 0, run.stderr
    assert "1 retried" in run.stdout
    assert fanout.kernel_versions()[tampered[0]] == 2
    same_files(out.parent, reference / "test")


def test_each_shard_kernel_attaches_only_the_dataset_that_holds_its_models(fanout, reference,
                                                                           tmp_path):
    # solo moves into a dataset of its own: its shard needs that one, cnn's shard the other.
    solo = tmp_path / "fanout-solo"
    solo.mkdir()
    (fanout.models / "solo.pt").rename(solo / "solo.pt")
    pushed = fanout.world.kernelpack("dataset", "push", str(solo), "--wait", "--quiet")
    assert pushed.returncode == 0, pushed
    config = tmp_path / "two-datasets.yml"
    config.write_text(fanout.config.read_text().replace(
        f"dataset_sources: [{USER}/{MODELS_SLUG}]",
        f"dataset_sources: [{USER}/{MODELS_SLUG}, {USER}/fanout-solo]"))
    out = tmp_path / "out" / "preds.npy"
    run = fanout.world.kernelpack(
        "fanout", str(config), "--models", str(fanout.models), "--models", str(solo), "-o",
        str(out), "--poll-seconds", "0.3", "--quiet", *fanout.test_args(),
        "--models-per-shard", "1", "--rows-per-shard", "1000")
    assert run.returncode == 0, run.stderr
    assert "shards: 3 (" in run.stdout  # cnn_f0, cnn_f1 and solo: one model per shard
    same_files(out.parent, reference / "test")
    attached = sorted(
        (record["competition_sources"], record["dataset_sources"])
        for record in (json.loads(path.read_text()) for path in (
            out.parent / "preds.fanout" / "kernels").glob("*/kernel-metadata.json")))
    assert attached == [(["digits"], [f"{USER}/{MODELS_SLUG}"])] * 2 \
        + [(["digits"], [f"{USER}/fanout-solo"])]
