"""A 2019-style package as published: its own albumentations transform (an `A.ImageOnlyTransform`
subclass, saved in the checkpoint by `A.to_dict`), a factory taking `n_classes`, no wrapper.

Imported with `import-checkpoint --code`, predicted on the host with `kernelpack predict` and in
a sandbox kernel (seeded random-crop TTA too), each compared with this test's own reference: the
package's transform object called as its training code calls it, the crops cut by the documented
rule, the model's own forward. A checkpoint naming any other code is refused before that code is
imported.
"""

import csv
import json
import random
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from inference_core.errors import CheckpointError, KernelError
from inference_core.model_config import ModelConfig
from inference_core.pipelines import albumentations_pipeline, custom_transform_modules
from inference_core.preprocess import validate_preprocess
from kernelpack.cli import main
from kernelpack.kernel.sandbox import run_local
from kernelpack.kernel.user_code import import_user_code

PACKAGE = "kp2019_posterize"  # unique: imported once per session, on the host
CLASSES, SIDE, CROP, CROPS = 4, 40, 32, 3
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.2, 0.3)
TRAINED_WITH = "0.4.6"  # the albumentations of 2019
FILES = {
    "__init__.py": "",
    "transforms.py": """
        import albumentations as A
        import numpy as np


        class Posterize(A.ImageOnlyTransform):
            '''Keep the top `bits` bits of each channel (the 2019 kernel's own transform).'''

            def __init__(self, bits=4, p=1.0):
                super().__init__(p=p)
                self.bits = bits

            def apply(self, img, **params):
                return img & np.uint8((0xFF << (8 - self.bits)) & 0xFF)

            def get_transform_init_args_names(self):
                return ("bits",)
    """,
    "models.py": """
        from torch import nn


        def get_model(n_classes, width=8):
            return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes))
    """,
}


def _write(folder, files):
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def _transform(package_module, posterize=True):
    """The training code's validation transform (cv2-read RGB in, CHW tensor out)."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    steps = [A.LongestMaxSize(max_size=SIDE, interpolation=cv2.INTER_AREA),
             A.PadIfNeeded(SIDE, SIDE, border_mode=cv2.BORDER_CONSTANT, fill=0)]
    steps += [package_module.Posterize(bits=3)] if posterize else []
    return A.Compose([*steps, A.Normalize(mean=MEAN, std=STD), ToTensorV2()])


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    """The package on disk (imported as --code does), its checkpoint imported by the CLI from a
    plain state dict, test images of two shapes and an ensemble config with random crops."""
    import albumentations as A

    root = tmp_path_factory.mktemp("custom-transform")
    package = _write(root / "src" / PACKAGE, FILES)
    import_user_code([package])
    from kp2019_posterize import models, transforms

    torch.manual_seed(3)
    model = models.get_model(CLASSES).eval()
    with torch.no_grad():
        model[-1].weight.mul_(20.0)  # confident: a pixel slip moves the probabilities
    torch.save(model.state_dict(), root / "weights.pth")  # as the 2019 training saved it
    config = root / "config.json"
    config.write_text(json.dumps({
        "activation": "softmax", "classes_argument": "n_classes", "model_kwargs": {"width": 8},
        "versions": {"albumentations": TRAINED_WITH},  # what the user's training ran
        "preprocess": {"decode": "cv2", "albumentations": A.to_dict(_transform(transforms))}}))
    inputs = root / "input"
    checkpoint = inputs / "alb-models" / "alb.pt"
    assert main(["import-checkpoint", str(root / "weights.pth"), "-o", str(checkpoint),
                 "--arch", f"{PACKAGE}.models:get_model", "--num-classes", str(CLASSES),
                 "--name", "alb", "--config", str(config), "--code", str(package)]) == 0

    images = inputs / "comp" / "test"
    images.mkdir(parents=True)
    digits = load_digits()
    ids = []
    for index in range(6):
        gray = (digits.images[index] * 16).clip(0, 255).astype(np.uint8)
        rgb = np.stack([gray, 255 - gray, (gray * 0.6).astype(np.uint8)], axis=-1)
        size = (52, 37) if index % 2 else (30, 61)  # (width, height): padded both ways
        Image.fromarray(rgb).resize(size, Image.BICUBIC).save(images / f"d{index}.png")
        ids.append(f"d{index}.png")
    with open(inputs / "comp" / "sample_submission.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id"]] + [[i] for i in ids])
    ensemble = root / "ensemble.yml"
    ensemble.write_text(json.dumps({
        "models": [{"name": "alb"}],
        "test": {"images": "comp/test", "sample_submission": "comp/sample_submission.csv"},
        "submission": {"format": "probabilities"}, "blend": "mean", "tta_blend": "mean",
        "tta": ["identity", f"random_crop:{CROP}x{CROPS}"], "batch_size": 4,
        "kernel": {"id": "tester/custom-transform"}}))
    return {"root": root, "package": package, "inputs": inputs, "ids": ids, "model": model,
            "transforms": transforms, "ensemble": ensemble, "checkpoint": checkpoint}


def _reference(setup, posterize=True):
    """By hand: cv2.imread -> RGB, the package's transform, then the identity view and CROPS
    crops of CROP x CROP at top = floor(u * (SIDE - CROP + 1)), left = floor(v * ...), with
    u, v = random.Random(i).random() twice; softmax of the model, mean over the views."""
    transform = _transform(setup["transforms"], posterize)
    rows = []
    for image_id in setup["ids"]:
        bgr = cv2.imread(str(setup["inputs"] / "comp" / "test" / image_id), cv2.IMREAD_COLOR)
        x = transform(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))["image"].float()
        views = [x]
        for i in range(CROPS):
            draw = random.Random(i)
            top = int(draw.random() * (SIDE - CROP + 1))
            left = int(draw.random() * (SIDE - CROP + 1))
            views.append(x[:, top:top + CROP, left:left + CROP])
        with torch.no_grad():
            probs = [setup["model"](view[None]).softmax(1)[0].double().numpy() for view in views]
        rows.append(np.mean(probs, axis=0))
    return np.array(rows)


def test_host_predict_rebuilds_the_packages_own_transform(setup, tmp_path, capsys):
    out = tmp_path / "preds.npy"
    reference = _reference(setup)
    np.save(tmp_path / "mine.npy", reference)
    assert main(["predict", str(setup["ensemble"]), "--images",
                 str(setup["inputs"] / "comp" / "test"), "--models", str(setup["inputs"]),
                 "--code", str(setup["package"]), "-o", str(out),
                 "--compare", str(tmp_path / "mine.npy")]) == 0
    printed = capsys.readouterr().out
    assert "albumentations LongestMaxSize > PadIfNeeded > Posterize > Normalize > ToTensorV2" \
        in printed
    assert f"WARNING version drift: albumentations {TRAINED_WITH} -> " \
           f"{sys.modules['albumentations'].__version__} (alb)" in printed
    np.testing.assert_allclose(np.load(out), reference, atol=1e-6)
    # Not vacuous: the package's transform changes the predictions, as do the crops.
    assert np.abs(_reference(setup, posterize=False) - reference).max() > 1e-2
    assert np.abs(reference - 1 / CLASSES).max() > 0.1


def test_the_checkpoint_names_the_module_the_kernel_bundles(setup):
    saved = torch.load(setup["checkpoint"], weights_only=True)["config"]
    pipeline = saved["preprocess"]["albumentations"]
    assert custom_transform_modules(pipeline) == [f"{PACKAGE}.transforms"]
    assert saved["versions"]["albumentations"] == TRAINED_WITH  # given: kept over the found
    assert saved["versions"]["torch"] == str(torch.__version__)


@pytest.mark.slow
def test_the_kernel_rebuilds_it_from_the_bundled_package(setup, tmp_path):
    # End to end (10-30 s): a build with --code, a kernel started offline in a fresh `python -I`.
    out = tmp_path / "kernel"
    assert main(["build", str(setup["ensemble"]), "-o", str(out), "--code",
                 str(setup["package"])]) == 0
    result = run_local(out, setup["inputs"])
    log = result.log.read_text()
    assert result.returncode == 0, log
    assert "Posterize" in log and "random_crop:32#2" in log
    assert f"WARNING version drift: albumentations {TRAINED_WITH} -> " in log
    with open(result.submission, newline="") as handle:
        rows = list(csv.reader(handle))
    assert [row[0] for row in rows[1:]] == setup["ids"]
    kernel = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    assert np.abs(kernel - _reference(setup)).max() < 1e-5


# --- a checkpoint names code: only albumentations' own and the user's --code ------------------


def _pipeline(*names):
    return {"__version__": "2.0.8", "transform": {
        "__class_fullname__": "Compose", "p": 1.0, "transforms": [
            {"__class_fullname__": name, "p": 1.0} for name in names]}}


@pytest.fixture
def stranger(tmp_path, monkeypatch):
    """An importable module, not passed with --code, that would record being imported."""
    name = "kp_stranger_transforms"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import albumentations as A
        IMPORTED = True


        class Sneaky(A.ImageOnlyTransform):
            def apply(self, img, **params):
                return img
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_class_outside_the_users_code_is_refused_before_its_module_is_imported(
        setup, stranger, tmp_path, capsys):
    config = {"preprocess": {"albumentations": _pipeline("HorizontalFlip", f"{stranger}.Sneaky")}}
    # Read without running (a host command without --code, such as encrypt): names checked only.
    checkpoint = {"arch": f"{PACKAGE}.models:get_model", "num_classes": CLASSES,
                  "config": {**config, "classes_argument": "n_classes"}}
    model_config = ModelConfig.from_checkpoint(checkpoint, "m.pt")
    with pytest.raises(CheckpointError) as error:
        model_config.required_preprocess("m.pt")  # what the kernel and predict run first
    assert str(error.value) == (
        f"m.pt: preprocess.albumentations: transform '{stranger}.Sneaky' is from module "
        f"'{stranger}', which is neither albumentations nor code you passed with --code; a "
        "checkpoint may only name those: add --code PATH (the package that defines it) to "
        "import-checkpoint, predict and build, or save the pipeline without it")
    with pytest.raises(KernelError, match="neither albumentations nor code you passed"):
        albumentations_pipeline(json.dumps(config["preprocess"]["albumentations"]))
    assert stranger not in sys.modules

    (tmp_path / "c.json").write_text(json.dumps({**config, "classes_argument": "n_classes"}))
    torch.save(setup["model"].state_dict(), tmp_path / "w.pth")
    assert main(["import-checkpoint", str(tmp_path / "w.pth"), "-o", str(tmp_path / "o.pt"),
                 "--arch", f"{PACKAGE}.models:get_model", "--num-classes", str(CLASSES),
                 "--name", "x", "--config", str(tmp_path / "c.json")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"transform '{stranger}.Sneaky'" in err
    assert stranger not in sys.modules and not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("name, message", [
    (f"{PACKAGE}.transforms.Posterise",
     f"module '{PACKAGE}.transforms' defines no albumentations transform (a subclass of "
     "A.BasicTransform) named 'Posterise'"),
    (f"{PACKAGE}.missing.Posterize", f"transform '{PACKAGE}.missing.Posterize': module "
     f"'{PACKAGE}.missing' not found"),
    ("os.system; rm", "__class_fullname__ 'os.system; rm' is not a class name"),
])
def test_a_bad_name_in_the_users_code_is_one_line(setup, name, message):
    with pytest.raises(CheckpointError) as error:
        validate_preprocess({"preprocess": {"albumentations": _pipeline(name)}}, "m.pt")
    assert message in str(error.value) and "\n" not in str(error.value)
