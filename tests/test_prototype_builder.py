"""`kernelpack prototypes`: prototypes of real digit images, checked against this test's own
PIL + torch computation (resize, normalisation, embedding and per-class means written out by
hand), and one clear line for each input it cannot use."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from examples.digits.prepare import make_competition
from inference_core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from inference_core.config import PROTOTYPE_METRICS as METRICS
from inference_core.model_factory import create_model
from kernelpack import cli

DIM, SIZE = 12, 24
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.2, 0.3)
PREPROCESS = {"input_size": SIZE, "resize": "stretch", "mean": list(MEAN), "std": list(STD)}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Training digits as PNGs (32 x 32, resized to 24 by the checkpoint), and an embedding
    backbone saved as a plain checkpoint: small_cnn whose 12 outputs are the embedding."""
    root = tmp_path_factory.mktemp("prototypes")
    paths = make_competition(root, limit=80)
    torch.manual_seed(3)
    backbone = create_model("small_cnn", DIM, width=4).eval()
    save_checkpoint(root / "embedder.pt", "small_cnn", DIM,
                    {"name": "embedder", **PREPROCESS, "model_kwargs": {"width": 4}}, backbone)
    return {"root": root, "train": paths.train_dir, "csv": paths.train_csv,
            "backbone": backbone, "frame": pd.read_csv(paths.train_csv)}


def reference_prototypes(digits, metric):
    """Each digit's prototype from PIL, numpy and the backbone called directly."""
    inputs = []
    for image_id in digits["frame"]["id"]:
        with Image.open(digits["train"] / f"{image_id}.png") as image:
            pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE),
                                                            Image.Resampling.BILINEAR))
        normalised = (pixels / 255.0 - np.array(MEAN)) / np.array(STD)
        inputs.append(torch.from_numpy(normalised.transpose(2, 0, 1).astype(np.float32)))
    with torch.no_grad():
        embeddings = digits["backbone"](torch.stack(inputs)).double()
    if metric == "cosine":
        embeddings = embeddings / embeddings.norm(dim=1, keepdim=True)
    labels = torch.tensor(digits["frame"]["label"].to_numpy())
    means = torch.stack([embeddings[labels == digit].mean(0) for digit in range(10)])
    return means / means.norm(dim=1, keepdim=True) if metric == "cosine" else means


def run(*args):
    return cli.main(["prototypes", *map(str, args), "--quiet"])


@pytest.mark.parametrize("metric,dtype", [("cosine", "float32"), ("sqeuclidean", "float16")])
def test_prototypes_equal_the_per_class_means_computed_directly(digits, tmp_path, capsys,
                                                                metric, dtype):
    out = tmp_path / "protos.pt"
    assert run("--checkpoint", digits["root"] / "embedder.pt", "--images", digits["train"],
               "--labels", digits["csv"], "-o", out, "--metric", metric, "--temperature", "0.1",
               "--dtype", dtype, "--batch-size", "7", "--class-chunk", "3") == 0
    assert f"10 class prototypes ({DIM}-d, {metric}) from 60 images" in capsys.readouterr().out
    checkpoint = load_checkpoint(out)
    assert checkpoint["arch"] == "prototype:small_cnn" and checkpoint["num_classes"] == 10
    assert checkpoint["config"]["classes"] == list(range(10))
    assert checkpoint["config"]["model_kwargs"] == {"width": 4, "embedding_dim": DIM,
                                                    "metric": metric, "temperature": 0.1}
    assert checkpoint["config"]["activation"] == "softmax"
    stored = checkpoint["state_dict"]["prototypes"]
    assert stored.dtype == getattr(torch, dtype)
    expected = reference_prototypes(digits, metric)
    tolerance = 1e-3 if dtype == "float16" else 1e-5
    torch.testing.assert_close(stored.double(), expected, rtol=tolerance, atol=tolerance)
    # The written checkpoint is a working model: its backbone is the one given.
    model = model_from_checkpoint(checkpoint, "protos.pt")
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(images), digits["backbone"](images))


def test_a_prototype_checkpoint_gets_new_prototypes_and_keeps_its_head(digits, tmp_path):
    head = create_model("prototype:small_cnn", 3, embedding_dim=DIM, width=4,
                        metric="sqeuclidean", temperature=5.0)
    head.backbone.load_state_dict(digits["backbone"].state_dict())
    save_checkpoint(tmp_path / "empty.pt", "prototype:small_cnn", 3,
                    {**PREPROCESS, "classes": ["a", "b", "c"], "model_kwargs": {
                        "embedding_dim": DIM, "width": 4, "metric": "sqeuclidean",
                        "temperature": 5.0}}, head)
    frame = digits["frame"].assign(label=[f"digit-{d}" for d in digits["frame"]["label"]])
    frame.to_csv(tmp_path / "named.csv", index=False)
    assert run("--checkpoint", tmp_path / "empty.pt", "--images", digits["train"], "--labels",
               tmp_path / "named.csv", "-o", tmp_path / "out.pt") == 0
    checkpoint = load_checkpoint(tmp_path / "out.pt")
    assert checkpoint["config"]["classes"] == [f"digit-{d}" for d in range(10)]
    assert checkpoint["config"]["model_kwargs"]["temperature"] == 5.0
    torch.testing.assert_close(checkpoint["state_dict"]["prototypes"].double(),
                               reference_prototypes(digits, "sqeuclidean"))


def _write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("case,message", [
    ("missing image", "1 of 61 images listed in"),
    ("binary csv", "cannot read it as a CSV"),
    ("no label column", "no column 'label' (columns: id, digit); name it with --label-column"),
    ("empty label", "line 3 has no label"),
    ("no rows", "no rows"),
    ("classifier", "a classifier (config.classes lists 12 labels), not an embedding model"),
    ("corrupt image", "cannot decode image"),
    ("not a checkpoint", "not a kernelpack checkpoint"),
])
def test_an_input_it_cannot_use_is_one_line(digits, tmp_path, capsys, case, message):
    checkpoint, images = digits["root"] / "embedder.pt", digits["train"]
    labels = digits["csv"]
    if case == "missing image":
        labels = _write(tmp_path / "l.csv", digits["csv"].read_text() + "img_99999,3\n")
    elif case == "binary csv":
        labels = _write(tmp_path / "l.csv", b"id,label\n\xff\xfe\x00\x81,3\n")
    elif case == "no label column":
        labels = _write(tmp_path / "l.csv", "id,digit\nimg_00000,0\n")
    elif case == "empty label":
        labels = _write(tmp_path / "l.csv", "id,label\nimg_00000,0\nimg_00001,\n")
    elif case == "no rows":
        labels = _write(tmp_path / "l.csv", "id,label\n")
    elif case == "classifier":
        checkpoint = tmp_path / "classifier.pt"
        save_checkpoint(checkpoint, "small_cnn", DIM, {**PREPROCESS, "classes": list(range(DIM)),
                                                       "model_kwargs": {"width": 4}},
                        digits["backbone"])
    elif case == "corrupt image":
        images = tmp_path / "images"
        images.mkdir()
        for image_id in digits["frame"]["id"]:
            (images / f"{image_id}.png").symlink_to(digits["train"] / f"{image_id}.png")
        first = digits["frame"]["id"][0]
        (images / f"{first}.png").unlink()
        _write(images / f"{first}.png", b"\x89PNG\r\n\x1a\ntruncated")
    elif case == "not a checkpoint":
        checkpoint = tmp_path / "weights.pt"
        torch.save(digits["backbone"].state_dict(), checkpoint)
    assert run("--checkpoint", checkpoint, "--images", images, "--labels", labels, "-o",
               tmp_path / "out.pt") == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.pt").exists()


def test_the_metric_choices_are_the_heads_metrics():
    import argparse

    from inference_core.prototypes import check_head
    from kernelpack.cli.main import make_parser

    commands = next(action for action in make_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    choices = next(action.choices for action in commands.choices["prototypes"]._actions
                   if "--metric" in action.option_strings)
    assert tuple(choices) == METRICS
    for metric in choices:  # every choice the CLI offers is one the head takes
        check_head(4, metric, 1.0, 8)
