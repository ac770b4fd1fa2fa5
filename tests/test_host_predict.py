"""`kernelpack predict`: the kernel's runtime on the host, checked against this test's own torch
forward (PIL/cv2 resize, normalisation, the model, the views and the blend written out by hand;
no inference_core code), and `--compare` catching a preprocessing slip."""

from __future__ import annotations

import csv
import importlib
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from inference_core.checkpoint import save_checkpoint
from kernelpack import cli

SIZE, CLASSES, EPS = 32, 5, 1e-7
PACKAGE = "hostpredict_tinynet"
NET = """
    from torch import nn


    def build(num_classes: int) -> nn.Module:
        # Every input pixel reaches the logits: a resize slip shows in the probabilities.
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
"""
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.2, 0.3)
ENSEMBLE = """\
models:
  - {name: tiny, folds: [0, 1], weight: 2}
  - {name: solo, weight: 1}
test: {images: unused/test}
submission: {format: probabilities}
blend: gmean
tta_blend: mean
tta: [identity, hflip]
batch_size: 3
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The user's package, three checkpoints (area resize), real images and a sample CSV."""
    root = tmp_path_factory.mktemp("host-predict")
    package = root / "src" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "net.py").write_text(textwrap.dedent(NET))
    sys.path.insert(0, str(package.parent))
    try:
        build = importlib.import_module(f"{PACKAGE}.net").build
    finally:
        sys.path.remove(str(package.parent))

    models = {}
    config = {"input_size": SIZE, "mean": list(MEAN), "std": list(STD),
              "activation": "softmax", "preprocess": {"interpolation": "area"}}
    for seed, (name, fold) in enumerate([("tiny", 0), ("tiny", 1), ("solo", None)]):
        torch.manual_seed(seed)
        model = build(CLASSES).eval()
        with torch.no_grad():
            model[1].weight.mul_(8.0)  # confident, so that a slip moves the probabilities
        save_checkpoint(root / "models" / f"{name}_{seed}.pt", f"{PACKAGE}.net:build", CLASSES,
                        {**config, "name": name, "fold": fold}, model)
        models[(name, fold)] = model

    images = root / "images"
    images.mkdir()
    digits = load_digits()
    for index in range(7):
        gray = (digits.images[index] * 16).clip(0, 255).astype(np.uint8)
        rgb = np.stack([gray, 255 - gray, (gray * 0.7).astype(np.uint8)], axis=-1)
        size = (56, 44) if index % 2 else (45, 61)  # (width, height), never 32 x 32
        Image.fromarray(rgb).resize(size, Image.BICUBIC).save(images / f"img{index}.png")
    sample = root / "sample.csv"
    order = ["img3", "img0", "img6", "img1", "img5", "img2", "img4"]
    with open(sample, "w", newline="") as handle:
        csv.writer(handle).writerows([["id", "label"]] + [[i, 0] for i in order])
    ensemble = root / "ensemble.yml"
    ensemble.write_text(ENSEMBLE)
    return {"root": root, "package": package, "models": models, "images": images,
            "sample": sample, "order": order, "config": ensemble}


def _reference(setup, ids, interpolation=cv2.INTER_AREA, mean=MEAN):
    """By hand: read, resize to 32 x 32, normalise; each model on the image and its mirror,
    mean over the two views; weighted gmean over the models (tiny's weight 2 split over its two
    folds). Also each group on its own, as --per-model writes it."""
    batch = []
    for image_id in ids:
        rgb = np.array(Image.open(setup["images"] / f"{image_id}.png").convert("RGB"))
        resized = cv2.resize(rgb, (SIZE, SIZE), interpolation=interpolation)
        x = torch.from_numpy(resized).permute(2, 0, 1).float() / 255.0
        batch.append((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))
    x = torch.stack(batch)
    logs, each = {}, {}
    with torch.no_grad():
        for key, model in setup["models"].items():
            views = [model(x).softmax(1).double().numpy(),
                     model(x.flip(-1)).softmax(1).double().numpy()]
            each[key] = (views[0] + views[1]) / 2
            logs[key] = np.log(np.clip(each[key], EPS, 1.0))
    blend = np.exp((logs[("tiny", 0)] + logs[("tiny", 1)] + logs[("solo", None)]) / 3)
    tiny = np.exp((logs[("tiny", 0)] + logs[("tiny", 1)]) / 2)
    return blend, {"tiny": tiny, "solo": np.exp(logs[("solo", None)]), "each": each}


def _predict(setup, out, *extra):
    return cli.main(["predict", str(setup["config"]), "--images", str(setup["images"]),
                     "--models", str(setup["root"] / "models"), "--code", str(setup["package"]),
                     "-o", str(out), "--quiet", *extra])


def test_predict_is_the_tests_own_forward_in_sample_order_and_per_model(setup, tmp_path,
                                                                         capsys):
    out = tmp_path / "preds.npy"
    assert _predict(setup, out, "--sample", str(setup["sample"]), "--per-model") == 0
    printed = capsys.readouterr().out
    expected, groups = _reference(setup, setup["order"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)
    for name in ("tiny", "solo"):
        path = tmp_path / f"preds.{name}.npy"
        assert f"--oof {name}={path}" in printed
        np.testing.assert_allclose(np.load(path), groups[name], atol=1e-6)
    # Not a vacuous match: the models disagree and the rows are far from uniform.
    assert np.abs(groups["tiny"] - groups["solo"]).max() > 0.05
    assert groups["solo"].max() > 0.5 and np.abs(expected - 1 / CLASSES).max() > 0.1


def test_without_a_sample_rows_follow_the_sorted_image_names(setup, tmp_path):
    out = tmp_path / "preds.npy"
    assert _predict(setup, out) == 0
    expected, _ = _reference(setup, sorted(setup["order"]))
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_with_folds_a_groups_file_holds_out_of_fold_predictions(setup, tmp_path, capsys):
    folds = np.array([0, 1, 1, 0, 0, 1, 0])  # of the rows in sample order
    np.save(tmp_path / "folds.npy", folds)
    out = tmp_path / "oof.npy"
    assert cli.main(["predict", str(setup["config"]), "--images", str(setup["images"]),
                     "--models", str(setup["root"] / "models"), "--code",
                     str(setup["package"]), "--sample", str(setup["sample"]), "-o", str(out),
                     "--per-model", "--folds", str(tmp_path / "folds.npy")]) == 0
    assert "WARNING solo is not a folds group" in capsys.readouterr().out
    _, groups = _reference(setup, setup["order"])
    expected = np.where((folds == 0)[:, None], groups["each"][("tiny", 0)],
                        groups["each"][("tiny", 1)])
    np.testing.assert_allclose(np.load(tmp_path / "oof.tiny.npy"), expected, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "oof.solo.npy"), groups["solo"], atol=1e-6)

    np.save(tmp_path / "folds.npy", np.array([0, 1, 2, 0, 0, 1, 0]))
    assert _predict(setup, out, "--sample", str(setup["sample"]), "--per-model", "--folds",
                    str(tmp_path / "folds.npy")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--folds: row 2 (id img6) is in fold 2, but tiny has no model of that fold" in err


def _save_reference(setup, tmp_path, **slip):
    path = tmp_path / "mine.npy"
    np.save(path, _reference(setup, setup["order"], **slip)[0].astype(np.float32))
    return path


@pytest.mark.parametrize("slip", [{"interpolation": cv2.INTER_LINEAR},
                                  {"mean": (0.485, 0.456, 0.406)}],
                         ids=["bilinear-instead-of-area", "imagenet-mean"])
def test_compare_fails_on_a_preprocessing_slip(setup, tmp_path, capsys, slip):
    reference = _save_reference(setup, tmp_path, **slip)
    code = _predict(setup, tmp_path / "preds.npy", "--sample", str(setup["sample"]),
                    "--compare", str(reference))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"predictions differ from {reference}: max |difference|" in err
    assert "above the tolerance 0.0001" in err


def test_compare_passes_when_the_preprocessing_matches(setup, tmp_path, capsys):
    reference = _save_reference(setup, tmp_path)
    assert _predict(setup, tmp_path / "preds.npy", "--sample", str(setup["sample"]),
                    "--compare", str(reference)) == 0
    assert "within the tolerance 0.0001" in capsys.readouterr().out
    # float32 rounding of the reference is far inside the default; a zero tolerance is not.
    assert _predict(setup, tmp_path / "preds.npy", "--sample", str(setup["sample"]),
                    "--compare", str(reference), "--tolerance", "0") == 1


def test_bad_inputs_get_one_line_naming_them(setup, tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.zeros((7, CLASSES + 1)))
    assert _predict(setup, tmp_path / "preds.npy", "--compare", str(tmp_path / "wide.npy")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--compare {tmp_path / 'wide.npy'}: shape (7, 6), but the prediction is (7, 5)" in err
    code = cli.main(["predict", str(setup["config"]), "--images", str(tmp_path / "absent"),
                     "--models", str(setup["root"] / "models"), "--code",
                     str(setup["package"]), "-o", str(tmp_path / "p.npy"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "--images " in err and "not a folder; pass the folder of test images" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    assert _predict({**setup, "images": tmp_path / "broken"}, tmp_path / "p.npy") == 1
    err = capsys.readouterr().err
    assert "img0.png: cannot decode image" in err and "fix or remove it" in err
    assert _predict(setup, tmp_path / "p.npy", "--folds", str(tmp_path / "folds.npy")) == 1
    assert "out-of-fold files come with --per-model" in capsys.readouterr().err


def _config_with(setup, tmp_path, tta, tta_blend):
    path = tmp_path / "variant.yml"
    path.write_text(ENSEMBLE.replace("tta: [identity, hflip]", f"tta: [{', '.join(tta)}]")
                    .replace("tta_blend: mean", f"tta_blend: {tta_blend}"))
    return {**setup, "config": path}


def test_crop_views_and_max_over_views_match_the_tests_own_forward(setup, tmp_path):
    variant = _config_with(setup, tmp_path, ["identity", "center_crop:0.75"], "max")
    assert _predict(variant, tmp_path / "preds.npy", "--sample", str(setup["sample"])) == 0
    batch = []
    for image_id in setup["order"]:
        rgb = np.array(Image.open(setup["images"] / f"{image_id}.png").convert("RGB"))
        x = torch.from_numpy(cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
        x = x.permute(2, 0, 1).float() / 255.0
        batch.append((x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))
    x = torch.stack(batch)
    crop = torch.nn.functional.interpolate(x[..., 4:28, 4:28], size=(SIZE, SIZE),
                                           mode="bilinear", align_corners=False)
    with torch.no_grad():
        per_model = [np.maximum(model(x).softmax(1).double().numpy(),
                                model(crop).softmax(1).double().numpy())
                     for model in setup["models"].values()]
    expected = np.exp(sum(np.log(np.clip(p, EPS, 1.0)) for p in per_model) / 3)
    np.testing.assert_allclose(np.load(tmp_path / "preds.npy"), expected, atol=1e-6)
    assert np.abs(expected - _reference(setup, setup["order"])[0]).max() > 1e-3


def test_a_scale_view_on_a_fixed_size_model_is_one_line_naming_the_fix(setup, tmp_path,
                                                                       capsys):
    variant = _config_with(setup, tmp_path, ["identity", "scale:1.25"], "mean")
    assert _predict(variant, tmp_path / "preds.npy") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "model tiny_f0: forward pass failed on TTA views identity, scale:1.25" in err
    assert "cannot take scale:F views: drop them from its tta" in err


def test_a_model_with_nan_weights_is_left_out_of_the_blend_and_its_own_file_refused(
        setup, tmp_path, capsys):
    import copy
    import shutil

    models = tmp_path / "models"
    shutil.copytree(setup["root"] / "models", models)
    broken = copy.deepcopy(setup["models"][("solo", None)])
    with torch.no_grad():
        broken[1].weight.fill_(float("nan"))
    save_checkpoint(models / "solo_2.pt", f"{PACKAGE}.net:build", CLASSES,
                    {"input_size": SIZE, "mean": list(MEAN), "std": list(STD),
                     "activation": "softmax", "preprocess": {"interpolation": "area"},
                     "name": "solo"}, broken)
    args = ["predict", str(setup["config"]), "--images", str(setup["images"]), "--models",
            str(models), "--code", str(setup["package"]), "--sample", str(setup["sample"])]
    out = tmp_path / "preds"  # no .npy: written exactly there
    assert cli.main([*args, "-o", str(out)]) == 0
    assert "WARNING left out of the blend for non-finite outputs: solo (7 images)" in \
        capsys.readouterr().out
    _, groups = _reference(setup, setup["order"])
    with open(out, "rb") as handle:  # the blend of the finite members only
        np.testing.assert_allclose(np.load(handle), groups["tiny"], atol=1e-6)
    assert not (tmp_path / "preds.npy").exists()
    per_model = tmp_path / "per-model.npy"
    assert cli.main([*args, "--per-model", "--quiet", "-o", str(per_model)]) == 1
    error = capsys.readouterr().err
    assert "entry 'solo' holds NaN or infinite probabilities in 7 rows" in error
    assert not per_model.exists() and not (tmp_path / "per-model.tiny.npy").exists()
