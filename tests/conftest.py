"""Shared fixtures: a small real competition (sklearn digits as PNGs) and untrained checkpoints."""

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch

from examples.digits.prepare import make_competition
from inference_core.checkpoint import save_checkpoint
from inference_core.model_factory import create_model

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CNN_CONFIG = {"input_size": 32, "resize": "stretch", "mean": [0.5] * 3, "std": [0.25] * 3,
              "activation": "softmax", "model_kwargs": {"width": 8}}

ENSEMBLE_YML = """\
models:
  - {name: cnn_f0, path: digits-models/cnn_f0.pt, weight: 2}
  - {name: cnn_f1, path: digits-models/cnn_f1.pt}
test:
  images: digits/test
  sample_submission: digits/sample_submission.csv
submission: {format: multiclass}
blend: gmean
tta: [identity, hflip]
batch_size: 16
kernel: {id: tester/digits-kernel, competition_sources: [digits]}
"""


@pytest.fixture(scope="session")
def digits_input(tmp_path_factory) -> Path:
    """`input/` laid out like /kaggle/input: `digits/` (competition) and `digits-models/`."""
    base = tmp_path_factory.mktemp("digits")
    paths = make_competition(base, limit=120)
    input_dir = base / "input"
    input_dir.mkdir()
    shutil.move(str(paths.competition_dir), input_dir / "digits")
    for fold in range(2):
        torch.manual_seed(fold)
        model = create_model("small_cnn", num_classes=10, width=8)
        save_checkpoint(input_dir / "digits-models" / f"cnn_f{fold}.pt", "small_cnn", 10,
                        {**CNN_CONFIG, "name": f"cnn_f{fold}", "fold": fold}, model)
    return input_dir


@pytest.fixture
def ensemble_yml(tmp_path) -> Path:
    path = tmp_path / "ensemble.yml"
    path.write_text(ENSEMBLE_YML)
    return path


def import_probe(*names: str) -> str:
    """Kernel code that prints IMPORTED or MISSING (and why) for each module in `names`: what a
    sandboxed kernel can import."""
    return f"""\
for name in {names!r}:
    try:
        __import__(name)
        print("IMPORTED", name)
    except ModuleNotFoundError as exc:
        print("MISSING", name, exc)
"""


def connection_probe(port: int) -> str:
    """Kernel code that prints CONNECTED, or BLOCKED and why, for a connection to `port` on this
    machine (see `listening_port`)."""
    return f"""\
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5)
    print("CONNECTED")
except OSError as exc:
    print("BLOCKED", exc)
"""


@pytest.fixture
def listening_port():
    """A server on this machine that accepts one connection: what an offline run must not
    reach."""
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    yield server.getsockname()[1]
    server.close()
