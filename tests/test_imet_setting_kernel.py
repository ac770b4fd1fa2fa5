"""The iMet 2019 setting in a real kernel: SE-ResNeXt50 at 288 px, trained with the usual
`model.avg_pool = nn.AdaptiveAvgPool2d(1)` replacement, its state dict brought in with
`import-checkpoint` without key changes, run offline at 288x288 and on non-square keep-aspect
batches (pretrainedmodels is vendored into the bundle: the Kaggle image lacks it)."""

import csv
import json
import textwrap
import warnings

import numpy as np
import pretrainedmodels
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

from kernelpack.cli import main

# A full-size SE-ResNeXt50 trained, then run in a kernel.
pytestmark = pytest.mark.slow

SIZE = 288
CLASSES = 7
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# (width, height) of each test image: square, landscape and portrait.
IMAGE_SIZES = {"square.png": (300, 300), "wide.jpg": (400, 250), "tall.png": (210, 330)}


def _trained_the_2019_way() -> nn.Module:
    torch.manual_seed(0)  # the whole init, not only the head: a confidence test needs one model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = pretrainedmodels.se_resnext50_32x4d(num_classes=1000, pretrained=None)
    model.avg_pool = nn.AdaptiveAvgPool2d(1)
    model.last_linear = nn.Linear(model.last_linear.in_features, CLASSES)
    torch.manual_seed(0)
    with torch.no_grad():
        model.last_linear.weight.normal_(0, 5.0)  # confident outputs: a slip would show
    return model.eval()


def _keep_aspect_size(width: int, height: int) -> tuple[int, int]:
    """Longest side to SIZE, the other scaled and snapped to a multiple of 16 (width, height)."""
    scale = SIZE / max(width, height)

    def snap(side):
        return max(16, round(side * scale / 16) * 16)

    return (SIZE, snap(height)) if width >= height else (snap(width), SIZE)


def _reference(model, paths) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for path in paths:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image = image.resize(_keep_aspect_size(*image.size), Image.BILINEAR)
            x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0
            x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
            rows.append(model(x[None]).softmax(1)[0].numpy())
    return np.array(rows)


def test_se_resnext50_at_288_and_non_square_keep_aspect_in_a_kernel(tmp_path):
    torch.set_num_threads(1)
    model = _trained_the_2019_way()
    state_file = tmp_path / "se50_f0.pth"
    torch.save(model.state_dict(), state_file)  # keys as training saved them, unchanged

    input_dir = tmp_path / "input"
    test_dir = input_dir / "comp" / "test"
    test_dir.mkdir(parents=True)
    digits = load_digits()
    for index, (name, size) in enumerate(IMAGE_SIZES.items()):
        gray = (digits.images[index] * 16).clip(0, 255).astype(np.uint8)
        rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1)
        Image.fromarray(rgb).resize(size, Image.BICUBIC).save(test_dir / name)
    with open(input_dir / "comp" / "sample_submission.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id"]] + [[name] for name in IMAGE_SIZES])

    config_file = tmp_path / "se50.json"
    config_file.write_text(json.dumps({"input_size": SIZE, "resize": "keep_aspect",
                                       "mean": MEAN, "std": STD, "activation": "softmax"}))
    (input_dir / "models").mkdir()
    assert main(["import-checkpoint", str(state_file), "-o", str(input_dir / "models" / "se50.pt"),
                 "--arch", "se_resnext50_32x4d", "--num-classes", str(CLASSES),
                 "--name", "se50", "--fold", "0", "--config", str(config_file)]) == 0

    ensemble = tmp_path / "ensemble.yml"
    ensemble.write_text(textwrap.dedent("""\
        models: [{name: se50, fold: 0}]
        test: {images: comp/test, sample_submission: comp/sample_submission.csv}
        submission: {format: probabilities}
        tta: [identity]
        batch_size: 3
        kernel: {id: tester/imet-setting}
        """))
    assert main(["build", str(ensemble), "-o", str(tmp_path / "out")]) == 0
    assert main(["run-local", str(tmp_path / "out"), "--input", str(input_dir)]) == 0

    with open(tmp_path / "out" / "sandbox" / "working" / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    assert [row[0] for row in rows] == list(IMAGE_SIZES)
    kernel = np.array([[float(v) for v in row[1:]] for row in rows])
    expected = _reference(model, [test_dir / name for name in IMAGE_SIZES])
    assert np.abs(kernel - expected).max() < 1e-4
    assert expected.max() > 3 / CLASSES  # far from uniform: the comparison has teeth
