"""A fan-out's world: the local Kaggle service with several workers, a Kaggle account, the digits
competition, a small ensemble (a folds group and a plain model, small_cnn) pushed as a dataset,
and `kernelpack predict`'s own files for the same work, to compare the fan-out's with."""

from __future__ import annotations

import contextlib
import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from kaggle_helpers import _CREDENTIAL_VARIABLES, _PROXY_VARIABLES, KEY, USER, World, kaggle_account

from conftest import CNN_CONFIG
from inference_core.checkpoint import save_checkpoint
from inference_core.model_factory import create_model
from kernelpack.cli import main
from kernelpack.kaggle.service import KaggleService, add_competition

MODELS_SLUG = "fanout-models"
ENSEMBLE = f"""\
models:
  - {{name: cnn, folds: [0, 1], weight: 2}}
  - {{name: solo, weight: 1, threshold_shift: 0.01}}
test:
  images: digits/test
  sample_submission: digits/sample_submission.csv
submission: {{format: multiclass}}
blend: gmean
tta_blend: mean
tta: [identity, hflip]
batch_size: 4
kernel: {{competition_sources: [digits], dataset_sources: [{USER}/{MODELS_SLUG}]}}
"""
TRAIN_ROWS = 12  # of the digits' training images, for the out-of-fold runs


def save_models(folder: Path, solo_seed: int = 7) -> Path:
    """cnn folds 0 and 1 and solo, untrained small_cnn checkpoints with distinct seeds."""
    for seed, (name, fold) in ((3, ("cnn", 0)), (4, ("cnn", 1)), (solo_seed, ("solo", None))):
        torch.manual_seed(seed)
        model = create_model("small_cnn", num_classes=10, width=8)
        save_checkpoint(folder / f"{name}{'' if fold is None else fold}.pt", "small_cnn", 10,
                        {**CNN_CONFIG, "name": name, "fold": fold}, model)
    return folder


@dataclass
class FanoutWorld:
    world: World
    config: Path
    models: Path
    competition: Path  # the digits competition folder here (test/, train/, ...)
    train_sample: Path  # TRAIN_ROWS training ids, as a sample CSV
    folds: Path  # their folds

    def fanout(self, output: Path, *extra: str):
        return self.world.kernelpack(
            "fanout", str(self.config), "--models", str(self.models), "-o", str(output),
            "--poll-seconds", "0.3", "--quiet", *extra)

    def test_args(self) -> list[str]:
        return ["--images", str(self.competition / "test"), "--sample",
                str(self.competition / "sample_submission.csv"), "--per-model"]

    def oof_args(self) -> list[str]:
        return ["--images", str(self.competition / "train"), "--sample", str(self.train_sample),
                "--folds", str(self.folds)]

    def oof_fanout_args(self) -> list[str]:
        return [*self.oof_args(), "--kaggle-images", "digits/train"]

    def predict(self, output: Path, *args: str) -> None:
        """`kernelpack predict` of the same work, on this machine."""
        assert main(["predict", str(self.config), "--models", str(self.models), "-o",
                     str(output), "--quiet", *args]) == 0

    def kernel_versions(self) -> dict[str, int]:
        """Every kernel of the service and how many versions were pushed."""
        found = {}
        for record in sorted(self.world.root.glob(f"kernels/{USER}/*/kernel.json")):
            found[record.parent.name] = sum(1 for p in record.parent.iterdir() if p.is_dir())
        return found


@contextlib.contextmanager
def service_world(tmp_path: Path, workers: int = 2):
    """The service with `workers` running kernels at once, and a Kaggle account around it."""
    home, tmp = kaggle_account(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        for name in _PROXY_VARIABLES + _CREDENTIAL_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("HOME", str(home))
        patch.setenv("KAGGLE_CONFIG_DIR", str(home / "config"))
        patch.setattr(tempfile, "tempdir", str(tmp))
        with KaggleService(tmp_path / "service", users={USER: KEY}, flat_input=True,
                           workers=workers) as service:
            yield World(service, service.store.root, home, tmp)


@contextlib.contextmanager
def fanout_world(tmp_path: Path, digits_input: Path, workers: int = 2):
    """The service (with `workers`), the account, the competition, the models pushed."""
    with service_world(tmp_path, workers) as world:
        competition = digits_input / "digits"
        add_competition(world.root, "digits", competition,
                        digits_input.parent / "heldout" / "test_labels.csv")
        models = save_models(tmp_path / MODELS_SLUG)
        pushed = world.kernelpack("dataset", "push", str(models), "--wait", "--quiet")
        assert pushed.returncode == 0, pushed
        config = tmp_path / "fanout-ensemble.yml"
        config.write_text(ENSEMBLE)
        with open(competition / "train.csv") as handle:
            ids = [row["id"] for row in csv.DictReader(handle)][:TRAIN_ROWS]
        sample = tmp_path / "train-sample.csv"
        sample.write_text("id,label\n" + "".join(f"{i},0\n" for i in ids))
        folds = tmp_path / "folds.npy"
        np.save(folds, np.arange(TRAIN_ROWS) % 2)
        yield FanoutWorld(world, config, models, competition, sample, folds)


def same_files(ours: Path, reference: Path) -> list[str]:
    """The .npy files of two output folders: the same names, values within float tolerance."""
    names = sorted(p.name for p in ours.glob("*.npy"))
    assert names == sorted(p.name for p in reference.glob("*.npy"))
    for name in names:
        np.testing.assert_allclose(np.load(ours / name), np.load(reference / name),
                                   rtol=0, atol=1e-6, err_msg=name)
    return names
