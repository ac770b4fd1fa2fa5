"""Prototype heads in a built kernel: a torchvision and a timm backbone, their prototypes made by
`kernelpack prototypes` from real digit images, blended into a top-k submission offline; the
labels are checked against this test's own PIL + torch forward and distance formulas. About
30 s: a whole kernel build and offline sandbox run, the path a user's prototype model takes."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from examples.digits.prepare import make_competition
from inference_core.checkpoint import load_checkpoint, save_checkpoint
from inference_core.model_factory import create_model
from kernelpack import cli

pytestmark = pytest.mark.slow

SIZE, DIM, K = 32, 16, 3
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# name: (backbone arch, metric, temperature). Untrained backbones embed every digit almost
# alike; small temperatures spread the members' probabilities over the classes.
MEMBERS = {"tv": ("torchvision.resnet18", "sqeuclidean", 0.005),
           "tm": ("timm.test_resnet", "cosine", 0.0005)}
ENSEMBLE = """\
models:
  - {name: tv, path: protos/tv.pt}
  - {name: tm, path: protos/tm.pt}
test:
  images: digits/test
  sample_submission: digits/sample_submission.csv
submission: {format: topk, k: 3}
blend: mean
tta: [identity]
batch_size: 8
kernel: {id: tester/prototype-kernel, competition_sources: [digits]}
"""


def _pixels(path):
    """The model input, by hand: PIL RGB, bilinear resize, scale and normalise."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    normalised = (array / 255.0 - np.array(MEAN)) / np.array(STD)
    return torch.from_numpy(normalised.transpose(2, 0, 1).astype(np.float32))


def _probabilities(backbone, prototypes, metric, temperature, inputs):
    with torch.no_grad():
        e = backbone(inputs).double()
    p = prototypes.double()
    if metric == "cosine":
        e, p = e / e.norm(dim=1, keepdim=True), p / p.norm(dim=1, keepdim=True)
        logits = (e[:, None] * p[None]).sum(-1) / temperature
    else:
        logits = -((e[:, None] - p[None]) ** 2).sum(-1) / temperature
    return logits.softmax(dim=1)


def test_torchvision_and_timm_prototype_members_run_in_a_kernel(tmp_path):
    paths = make_competition(tmp_path / "data", limit=80)
    input_dir = tmp_path / "input"
    shutil.copytree(paths.competition_dir, input_dir / "digits")
    backbones = {}
    for seed, (name, (arch, metric, temperature)) in enumerate(MEMBERS.items()):
        torch.manual_seed(seed)
        backbones[name] = create_model(arch, DIM).eval()
        save_checkpoint(tmp_path / f"{name}-embedder.pt", arch, DIM,
                        {"name": name, "input_size": SIZE, "mean": list(MEAN),
                         "std": list(STD)}, backbones[name])
        assert cli.main(["prototypes", "--checkpoint", str(tmp_path / f"{name}-embedder.pt"),
                         "--images", str(paths.train_dir), "--labels", str(paths.train_csv),
                         "-o", str(input_dir / "protos" / f"{name}.pt"), "--metric", metric,
                         "--temperature", str(temperature), "--quiet"]) == 0
    config = tmp_path / "ensemble.yml"
    config.write_text(ENSEMBLE)
    assert cli.main(["build", str(config), "-o", str(tmp_path / "out")]) == 0
    assert cli.main(["run-local", str(tmp_path / "out"), "--input", str(input_dir)]) == 0

    log = (tmp_path / "out" / "sandbox" / "kernel.log").read_text()
    assert "loaded tv (prototype:torchvision.resnet18, 10 classes" in log
    assert "loaded tm (prototype:timm.test_resnet, 10 classes" in log
    submission = pd.read_csv(tmp_path / "out" / "sandbox" / "working" / "submission.csv",
                             dtype=str)
    ids = pd.read_csv(paths.sample_submission, dtype=str)["id"].tolist()
    assert submission["id"].tolist() == ids

    inputs = torch.stack([_pixels(paths.test_dir / f"{i}.png") for i in ids])
    blend = sum(_probabilities(backbones[name],
                               load_checkpoint(input_dir / "protos" / f"{name}.pt")
                               ["state_dict"]["prototypes"], metric, temperature, inputs)
                for name, (_, metric, temperature) in MEMBERS.items()) / len(MEMBERS)
    ranked = blend.argsort(dim=1, descending=True)
    top = blend.gather(1, ranked)
    # Compare the labels where the order is clear: neighbours differ by more than float noise.
    clear = (top[:, :K].log() - top[:, 1:K + 1].log()).min(dim=1).values > 1e-3
    assert int(clear.sum()) >= len(ids) // 2
    for row in np.flatnonzero(clear.numpy()):
        assert submission["label"][row] == " ".join(str(int(c)) for c in ranked[row, :K])
    # Not a vacuous match: the members' rows are not near uniform.
    assert float(top[:, 0].min()) > 0.2
