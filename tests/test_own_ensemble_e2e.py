"""End to end: a competitor's own ensemble, as trained, through kernelpack and into the kernel.

The user's package (a timm backbone plus a custom head, with a relative import), three
checkpoint formats brought in with `import-checkpoint`, an albumentations validation transform
read with cv2, non-square PNG and JPEG test images, a `folds:` entry, hflip TTA and gmean. The
kernel runs offline in the sandbox; the test's reference is written here with plain cv2,
albumentations and torch, and never imports inference_core.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from kernelpack.cli import main

SIZE = 48
CLASSES = 10
FOLDS = (0, 1, 2)
EPS = 1e-7

PACKAGE = {
    "__init__.py": "",
    "heads.py": """
        from torch import nn


        class ScaledHead(nn.Module):
            '''The custom part: a dropout + linear head whose logits are multiplied by a scale.'''

            def __init__(self, features: int, num_classes: int, scale: float = 4.0) -> None:
                super().__init__()
                self.drop = nn.Dropout(0.3)
                self.fc = nn.Linear(features, num_classes)
                self.scale = scale

            def forward(self, x):
                return self.fc(self.drop(x)) * self.scale
    """,
    "net.py": """
        import timm
        from torch import nn

        from .heads import ScaledHead


        class Net(nn.Module):
            def __init__(self, num_classes: int, backbone: str = "test_resnet") -> None:
                super().__init__()
                self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
                self.head = ScaledHead(self.backbone.num_features, num_classes)

            def forward(self, x):
                return self.head(self.backbone(x))


        def build(num_classes: int, backbone: str = "test_resnet") -> nn.Module:
            return Net(num_classes, backbone)
    """,
}


def _write_package(root):
    package = root / "ownnet"
    package.mkdir(parents=True)
    for name, text in PACKAGE.items():
        (package / name).write_text(textwrap.dedent(text))
    return package


def _load_user_net(package):
    """The user's own class, imported the way their training code would (this test's copy)."""
    for name in [m for m in sys.modules if m == "ownnet" or m.startswith("ownnet.")]:
        del sys.modules[name]
    sys.path.insert(0, str(package.parent))
    try:
        from ownnet.net import build
    finally:
        sys.path.remove(str(package.parent))
    return build


def _validation_transform() -> A.Compose:
    return A.Compose([
        A.LongestMaxSize(max_size=SIZE, interpolation=cv2.INTER_AREA),
        A.PadIfNeeded(min_height=SIZE, min_width=SIZE, border_mode=cv2.BORDER_CONSTANT),
        A.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ToTensorV2(),
    ])


def _write_test_images(folder) -> list[str]:
    """Real digits, upscaled to non-square PNGs and JPEGs (colour tinted, so RGB order matters)."""
    digits = load_digits()
    folder.mkdir(parents=True)
    ids = []
    for index in range(12):
        gray = (digits.images[index] * 16).clip(0, 255).astype(np.uint8)
        rgb = np.stack([gray, (gray * 0.6).astype(np.uint8), 255 - gray], axis=-1)
        size = (56, 40) if index % 2 else (36, 60)  # (width, height): both orientations
        image = Image.fromarray(rgb).resize(size, Image.BICUBIC)
        name = f"img{index:02d}.{'jpg' if index % 3 == 0 else 'png'}"
        image.save(folder / name, quality=90) if name.endswith("jpg") else image.save(folder / name)
        ids.append(name)
    return ids


def _save_three_formats(build, folder) -> list:
    """One fold in each format the 2019 code saved: a plain state dict, a Lightning-style dict
    with a `model.` prefix and training extras, and ceshine's `[arch, state_dict]` list."""
    folder.mkdir()
    models, files = [], []
    for fold in FOLDS:
        torch.manual_seed(100 + fold)
        model = build(CLASSES).eval()
        with torch.no_grad():  # confident, different folds: a preprocessing slip shows
            model.head.fc.weight.mul_(8.0)
        models.append(model)
        state = model.state_dict()
        if fold == 0:
            path = folder / "own_f0.pth"
            torch.save(state, path)
        elif fold == 1:
            path = folder / "own_f1.ckpt"
            torch.save({"epoch": 7, "global_step": 700, "hyper_parameters": {"lr": 0.01},
                        "state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
        else:
            path = folder / "own_f2.pth"
            torch.save(["ownnet.net:build", state], path)
        files.append(path)
    return models, files


def _reference(models, image_paths) -> np.ndarray:
    """cv2 read, the albumentations transform, each fold's model on the image and its mirror,
    gmean over the two views, then the weighted gmean over the folds (equal weights)."""
    transform = _validation_transform()
    batch = []
    for path in image_paths:
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        batch.append(transform(image=image)["image"])
    batch = torch.stack(batch).float()
    log_sum = np.zeros((len(image_paths), CLASSES))
    with torch.no_grad():
        for model in models:
            views = [model(batch).softmax(1), model(batch.flip(-1)).softmax(1)]
            logs = [np.log(np.clip(v.double().numpy(), EPS, 1.0)) for v in views]
            model_blend = np.exp(sum(logs) / len(logs))
            log_sum += np.log(np.clip(model_blend, EPS, 1.0))
    return np.exp(log_sum / len(models))


@pytest.mark.slow
def test_own_ensemble_runs_in_the_kernel_as_trained(tmp_path):
    package = _write_package(tmp_path / "src")
    build = _load_user_net(package)
    models, sources = _save_three_formats(build, tmp_path / "training")

    input_dir = tmp_path / "input"
    ids = _write_test_images(input_dir / "comp" / "test")
    with open(input_dir / "comp" / "sample_submission.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id"]] + [[i] for i in ids])

    model_config = tmp_path / "own.json"
    model_config.write_text(json.dumps({
        "input_size": SIZE, "activation": "softmax",
        "preprocess": {"decode": "cv2", "albumentations": A.to_dict(_validation_transform())},
    }))
    (input_dir / "own-models").mkdir()
    prefix = {0: [], 1: ["--strip-prefix", "model."], 2: []}
    for fold, source in zip(FOLDS, sources, strict=True):
        code = main(["import-checkpoint", str(source),
                     "-o", str(input_dir / "own-models" / f"own_f{fold}.pt"),
                     "--arch", "ownnet.net:build", "--num-classes", str(CLASSES),
                     "--name", "own", "--fold", str(fold), "--config", str(model_config),
                     "--code", str(package), *prefix[fold]])
        assert code == 0, f"import-checkpoint of fold {fold} failed"

    config = tmp_path / "ensemble.yml"
    config.write_text(textwrap.dedent("""\
        models:
          - {name: own, folds: [0, 1, 2], weight: 1.0}
        test:
          images: comp/test
          sample_submission: comp/sample_submission.csv
        submission: {format: probabilities}
        blend: gmean
        tta: [identity, hflip]
        batch_size: 5
        kernel:
          id: tester/own-ensemble
          code: [src/ownnet]
        """))
    assert main(["build", str(config), "-o", str(tmp_path / "out")]) == 0
    assert main(["run-local", str(tmp_path / "out"), "--input", str(input_dir)]) == 0

    log = (tmp_path / "out" / "sandbox" / "kernel.log").read_text()
    assert "input group [own_f0, own_f1, own_f2]: cv2 decode, albumentations LongestMaxSize" in log
    submission = tmp_path / "out" / "sandbox" / "working" / "submission.csv"
    with open(submission, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id"] + [str(c) for c in range(CLASSES)]
    assert [row[0] for row in rows[1:]] == ids
    kernel = np.array([[float(v) for v in row[1:]] for row in rows[1:]])

    expected = _reference(models, [input_dir / "comp" / "test" / i for i in ids])
    assert np.abs(kernel - expected).max() < 1e-4
    # Not a vacuous match: the folds disagree and the rows are far from uniform.
    assert np.abs(expected - 1.0 / CLASSES).max() > 0.05


def test_reference_sees_a_preprocessing_slip(tmp_path):
    """The reference is sharp enough to catch bilinear instead of area resizing."""
    package = _write_package(tmp_path / "src")
    build = _load_user_net(package)
    models, _ = _save_three_formats(build, tmp_path / "training")
    folder = tmp_path / "test"
    ids = _write_test_images(folder)
    paths = [folder / i for i in ids]
    exact = _reference(models, paths)
    slipped_transform = A.Compose([
        A.LongestMaxSize(max_size=SIZE, interpolation=cv2.INTER_LINEAR),
        *_validation_transform().transforms[1:],
    ])
    batch = []
    for path in paths:
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        batch.append(slipped_transform(image=image)["image"])
    with torch.no_grad():
        slipped = models[0](torch.stack(batch).float()).softmax(1).numpy()
        exact_first = models[0](torch.stack([
            _validation_transform()(image=cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
                                    )["image"] for p in paths]).float()).softmax(1).numpy()
    assert np.abs(slipped - exact_first).max() > 1e-3
    assert exact.shape == (len(ids), CLASSES)
