"""checkpoint_fields: a checkpoint's arch, num_classes and config without torch, equal to what
torch.load reads; anything but a plain checkpoint goes through load_checkpoint."""

import subprocess
import sys

import pytest
import torch

from inference_core.checkpoint import load_checkpoint, save_checkpoint
from inference_core.errors import CheckpointError
from inference_core.model_factory import create_model
from kernelpack.weights.checkpoint_fields import checkpoint_fields

CONFIG = {"name": "cnn_f3", "fold": 3, "input_size": 32, "resize": "stretch",
          "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "activation": "softmax",
          "classes": list("abcd"), "model_kwargs": {"width": 4}}


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "cnn.pt", "small_cnn", 4, CONFIG,
                           create_model("small_cnn", num_classes=4, width=4))


def _torch_fields(path):
    loaded = load_checkpoint(path)
    return {key: loaded[key] for key in ("arch", "num_classes", "config")}


def test_fields_equal_torch_loads_and_need_no_torch(checkpoint):
    assert checkpoint_fields(checkpoint) == _torch_fields(checkpoint)
    assert checkpoint_fields(checkpoint)["config"]["classes"] == list("abcd")
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from kernelpack.weights.checkpoint_fields import "
         f"checkpoint_fields; f = checkpoint_fields({str(checkpoint)!r}); "
         "print(f['arch'], f['config']['fold'], 'torch' in sys.modules)"],
        capture_output=True, text=True, timeout=60)
    assert probe.stdout.split() == ["small_cnn", "3", "False"], probe.stderr


def test_the_legacy_format_and_refused_files_go_through_torch(checkpoint, tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(checkpoint, weights_only=True), legacy,
               _use_new_zipfile_serialization=False)
    assert checkpoint_fields(legacy) == _torch_fields(checkpoint)
    pickled = tmp_path / "whole.pt"
    torch.save({"arch": "small_cnn", "num_classes": 4, "config": CONFIG, "state_dict": {},
                "model": create_model("small_cnn", num_classes=4, width=4)}, pickled)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        checkpoint_fields(pickled)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        checkpoint_fields(tmp_path / "nowhere.pt")
