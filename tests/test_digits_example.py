"""The digits example: a deterministic Kaggle-style competition and a K-fold ensemble on CPU."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from examples.digits.prepare import ATTRIBUTES, attribute_labels, make_competition
from examples.digits.train import load_train, oof_filename, predict_proba, train_ensemble
from inference_core.checkpoint import CHECKPOINT_KEYS, model_from_checkpoint

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

LIMIT = 300


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    return make_competition(tmp_path_factory.mktemp("digits"), limit=LIMIT)


@pytest.fixture(scope="module")
def ensemble(competition, tmp_path_factory):
    base = tmp_path_factory.mktemp("trained")
    lines: list[str] = []
    trained = train_ensemble(competition.competition_dir, base / "models", base / "oof",
                             archs=("small_cnn",), folds=2, epochs=2, log=lines.append)
    return trained, base / "oof", lines


def test_competition_layout_and_held_back_labels(competition, tmp_path):
    root = competition.competition_dir
    assert root.name == "digits" and root.parent.name == "competition"
    assert {p.name for p in root.iterdir()} == {
        "train.csv", "train", "test", "sample_submission.csv"}
    # The answers live beside the competition, never inside it.
    assert competition.test_labels.is_file()
    assert root not in competition.test_labels.parents

    train = pd.read_csv(competition.train_csv, dtype={"id": str})
    sample = pd.read_csv(competition.sample_submission, dtype={"id": str})
    answers = pd.read_csv(competition.test_labels, dtype={"id": str})
    assert list(train.columns) == list(sample.columns) == list(answers.columns) == ["id", "label"]
    assert len(train) + len(sample) == LIMIT
    assert len(sample) == LIMIT // 4
    assert (sample["label"] == 0).all()
    assert list(sample["id"]) == sorted(sample["id"])
    assert list(sample["id"]) == sorted(p.stem for p in competition.test_dir.glob("*.png"))
    assert set(train["id"]) == {p.stem for p in competition.train_dir.glob("*.png")}
    assert not set(train["id"]) & set(sample["id"])
    assert list(answers["id"]) == list(sample["id"])
    assert train["id"].str.fullmatch(r"img_\d{5}").all()
    # Stratified: every digit appears in both splits.
    assert set(train["label"]) == set(answers["label"]) == set(range(10))


def test_competition_images_are_real_upsampled_digits(competition):
    for path in sorted(competition.test_dir.glob("*.png"))[:10]:
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (32, 32)
            pixels = np.asarray(image)
        assert pixels.std() > 20 and pixels.max() > 150 and pixels.min() < 20


def test_competition_is_deterministic_and_rewrites_cleanly(tmp_path):
    first = make_competition(tmp_path / "a", limit=LIMIT)
    second = make_competition(tmp_path / "b", limit=LIMIT)
    files = _files(first.competition_dir)
    assert len(files) == LIMIT + 2
    assert files == _files(second.competition_dir)
    assert first.test_labels.read_bytes() == second.test_labels.read_bytes()

    # Another seed into the same folder leaves no image of the first split behind.
    other = make_competition(tmp_path / "a", limit=LIMIT, seed=1)
    assert _files(other.competition_dir) != files
    n_rows = len(pd.read_csv(other.train_csv)) + len(pd.read_csv(other.sample_submission))
    assert len(list(other.competition_dir.rglob("*.png"))) == n_rows == LIMIT


@pytest.mark.slow
def test_train_ensemble_writes_loadable_checkpoints(ensemble):
    trained, _, lines = ensemble
    assert [(m.name, m.arch, m.fold) for m in trained] == [
        ("small_cnn_f0", "small_cnn", 0), ("small_cnn_f1", "small_cnn", 1)]
    for model in trained:
        checkpoint = torch.load(model.path, map_location="cpu", weights_only=True)
        assert set(checkpoint) == set(CHECKPOINT_KEYS)
        assert checkpoint["arch"] == "small_cnn" and checkpoint["num_classes"] == 10
        config = checkpoint["config"]
        assert config["name"] == model.name and config["fold"] == model.fold
        assert config["input_size"] == 32 and config["resize"] == "stretch"
        assert config["mean"] == [0.5] * 3 and config["std"] == [0.25] * 3
        assert config["classes"] == list(range(10))
        assert 0.0 <= model.val_score <= 1.0 and model.seconds > 0
        assert f"{model.name}: val acc {model.val_score:.3f} in " in "\n".join(lines)


@pytest.mark.slow
def test_out_of_fold_predictions_match_the_saved_models(ensemble, competition):
    trained, oof_dir, _ = ensemble
    table, pixels = load_train(competition.competition_dir)
    folds = np.load(oof_dir / "folds.npy")
    oof = np.load(oof_dir / oof_filename("small_cnn"))
    assert oof_filename("torchvision.resnet18") == "torchvision_resnet18.npy"
    assert folds.shape == (len(table),) and set(folds) == {0, 1}
    assert np.bincount(folds).min() >= len(table) // 2 - 1
    assert oof.shape == (len(table), 10) and oof.dtype == np.float32
    np.testing.assert_allclose(oof.sum(axis=1), 1.0, atol=1e-5)
    labels = pd.read_csv(oof_dir / "labels.csv", dtype=str)
    assert labels.equals(table[["id", "label"]])

    # Each fold's rows are exactly what its checkpoint predicts, and its accuracy is theirs.
    for model in trained:
        rows = np.flatnonzero(folds == model.fold)
        checkpoint = torch.load(model.path, map_location="cpu", weights_only=True)
        restored = model_from_checkpoint(checkpoint)
        probs = predict_proba(restored, pixels[torch.from_numpy(rows)])
        np.testing.assert_allclose(probs, oof[rows], atol=1e-5)
        accuracy = (oof[rows].argmax(1) == table["label"].astype(int).to_numpy()[rows]).mean()
        assert model.val_score == pytest.approx(accuracy)


@pytest.mark.slow
def test_training_is_deterministic(ensemble, competition, tmp_path):
    _, oof_dir, _ = ensemble
    train_ensemble(competition.competition_dir, tmp_path / "models", tmp_path / "oof",
                   archs=("small_cnn",), folds=2, epochs=2, log=lambda line: None)
    for name in ("small_cnn.npy", "folds.npy", "labels.csv"):
        assert (tmp_path / "oof" / name).read_bytes() == (oof_dir / name).read_bytes()


def test_attributes_competition_shares_the_split_and_labels_each_digit(competition, tmp_path):
    attributes = make_competition(competition.competition_dir.parent.parent, limit=LIMIT,
                                  name="digits-attributes")
    assert attributes.competition_dir.name == "digits-attributes"
    assert attributes.test_labels.name == "digits-attributes_test_labels.csv"
    for digits_csv, attributes_csv in ((competition.train_csv, attributes.train_csv),
                                       (competition.test_labels, attributes.test_labels)):
        digits = pd.read_csv(digits_csv, dtype={"id": str})
        labelled = pd.read_csv(attributes_csv, dtype=str, keep_default_na=False)
        assert labelled["id"].tolist() == digits["id"].tolist()
        assert labelled["label"].tolist() == [attribute_labels(d) for d in digits["label"]]
    assert [attribute_labels(d) for d in (0, 1, 2, 7, 8)] == [
        "even loop", "", "even prime", "prime ge5", "even ge5 loop"]
    sample = pd.read_csv(attributes.sample_submission, dtype=str, keep_default_na=False)
    assert set(sample["label"]) == {""}
    with pytest.raises(ValueError, match="competition must be one of digits, digits-attributes"):
        make_competition(tmp_path, name="letters")


@pytest.mark.slow
def test_multilabel_training_saves_sigmoid_models_and_their_oof(competition, tmp_path):
    attributes = make_competition(tmp_path / "data", limit=LIMIT, name="digits-attributes")
    trained = train_ensemble(attributes.competition_dir, tmp_path / "models", tmp_path / "oof",
                             archs=("small_cnn",), folds=2, epochs=1, classes=ATTRIBUTES,
                             log=lambda line: None)
    assert [m.name for m in trained] == ["small_cnn_attributes_f0", "small_cnn_attributes_f1"]
    oof = np.load(tmp_path / "oof" / oof_filename("small_cnn", multilabel=True))
    assert oof.shape == (LIMIT - LIMIT // 4, len(ATTRIBUTES))
    assert not np.allclose(oof.sum(axis=1), 1.0)  # independent sigmoids, not a softmax
    _, pixels = load_train(attributes.competition_dir)
    folds = np.load(tmp_path / "oof" / "folds.npy")
    for model in trained:
        checkpoint = torch.load(model.path, map_location="cpu", weights_only=True)
        assert checkpoint["config"]["activation"] == "sigmoid"
        assert checkpoint["config"]["classes"] == list(ATTRIBUTES)
        rows = np.flatnonzero(folds == model.fold)
        probs = predict_proba(model_from_checkpoint(checkpoint), pixels[torch.from_numpy(rows)],
                              activation="sigmoid")
        np.testing.assert_allclose(probs, oof[rows], atol=1e-5)
