"""Very wide outputs: OOF as each row's top k classes (`.npz`), blended and scored exactly as the
dense rows they stand for (every unlisted class at the model's k-th probability), checked against
an independent dense computation; with k = every class that is the dense search itself. Memory
stays rows x k, `kernelpack predict --top-k` writes the files, bad files get one line."""

import re
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from inference_core.blend import BlendAccumulator
from inference_core.checkpoint import save_checkpoint
from inference_core.config import SubmissionSection
from inference_core.top_k import top_k_of
from kernelpack import cli
from kernelpack.search.blend import Problem, search_blend
from kernelpack.search.metrics import METRICS
from kernelpack.search.oof import OofSet
from kernelpack.search.top_k import TopKOofSet, TopKProblem
from kernelpack.search.values import oof_values

MULTICLASS = SubmissionSection(format="multiclass")


def _dense(rows, classes, models, seed, decimals=None):
    rng = np.random.default_rng(seed)
    probs = [rng.dirichlet(np.full(classes, 0.4), size=rows) for _ in range(models)]
    if decimals is not None:  # ties, inside and across the lists
        probs = [np.round(p, decimals) for p in probs]
    return probs, rng.integers(0, classes, rows)


def _lists(probs, k, seed):
    """Each row's k best classes, in a shuffled order (the files need not be sorted)."""
    rng = np.random.default_rng(seed)
    out = []
    for p in probs:
        best = top_k_of(p, k)
        order = rng.permuted(np.tile(np.arange(best.indices.shape[1]), (len(p), 1)), axis=1)
        out.append((np.take_along_axis(best.indices, order, axis=1),
                    np.take_along_axis(best.probabilities, order, axis=1)))
    return out


def _top_k_set(lists, labels, classes, folds=None):
    return TopKOofSet([f"m{i}" for i in range(len(lists))], lists, labels, classes,
                      list(range(classes)), [], folds)


WEIGHTS = ([1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0])
SHIFTS = ([0.0, 0.0, 0.0], [0.01, -0.02, 0.05])


@pytest.mark.parametrize("mode", ["mean", "gmean"])
def test_k_of_every_class_is_the_dense_search_bit_for_bit(mode):
    probs, labels = _dense(400, 8, 3, seed=1)
    truth = np.eye(8, dtype=bool)[labels]
    folds = np.arange(400) % 3
    top_k = _top_k_set(_lists(probs, 8, seed=2), labels, 8, folds)
    dense = OofSet(top_k.names, probs, truth, list(range(8)), [], folds)
    for metric in ("accuracy", "macro_f1", "logloss"):
        for weights in WEIGHTS:
            for shifts in SHIFTS:
                wide = TopKProblem(top_k, METRICS[metric], mode, MULTICLASS, shifts)
                full = Problem(probs, truth, METRICS[metric], mode, MULTICLASS, shifts)
                if metric == "logloss":  # the row sums add in another order
                    assert wide.score(weights) == pytest.approx(full.score(weights), rel=1e-12)
                else:
                    assert wide.score(weights) == full.score(weights)
    for metric in ("accuracy", "macro_f1"):
        a = search_blend(top_k, METRICS[metric], mode, MULTICLASS, restarts=2)
        b = search_blend(dense, METRICS[metric], mode, MULTICLASS, restarts=2)
        np.testing.assert_array_equal(a.weights, b.weights)
        assert a.score == b.score and a.single_scores == b.single_scores
        assert [f.fitted for f in a.folds] == [f.fitted for f in b.folds]
        va = oof_values(top_k, a.weights, mode, None, METRICS[metric], MULTICLASS)
        vb = oof_values(dense, b.weights, mode, None, METRICS[metric], MULTICLASS)
        assert va.values == vb.values and va.fold_values == vb.fold_values


def _filled(lists, classes):
    """The rows the lists stand for, built here by hand: every unlisted class at the list's
    smallest probability."""
    rows = []
    for indices, probabilities in lists:
        dense = np.repeat(probabilities.min(axis=1)[:, None], classes, axis=1)
        for r in range(len(indices)):
            dense[r, indices[r]] = probabilities[r]
        rows.append(dense)
    return rows


def _independent_scores(filled, labels, weights, shifts, mode, classes):
    """Accuracy, macro F1 (over every class; a class never true nor predicted scores 1) and
    log loss of the kernel's blend of the filled rows, computed without kernelpack.search."""
    accumulator = BlendAccumulator(len(labels), classes, mode)
    for p, w, s in zip(filled, weights, shifts, strict=True):
        accumulator.add(p, w, threshold_shift=s)
    blend = accumulator.result()
    predicted = np.argmax(blend, axis=1)  # the first of a tie: the lower class
    f1 = []
    for c in range(classes):
        tp = int(np.sum((predicted == c) & (labels == c)))
        fp, fn = int(np.sum(predicted == c)) - tp, int(np.sum(labels == c)) - tp
        if tp + fp + fn:  # a class neither true nor written has no F1 (scikit-learn's rule)
            f1.append(2 * tp / (2 * tp + fp + fn))
    clipped = np.clip(blend, 1e-15, 1 - 1e-15)
    loss = -np.mean(np.log(clipped[np.arange(len(labels)), labels] / clipped.sum(axis=1)))
    return {"accuracy": float(np.mean(predicted == labels)), "macro_f1": float(np.mean(f1)),
            "logloss": float(loss)}


@pytest.mark.parametrize("mode", ["mean", "gmean"])
@pytest.mark.parametrize("k", [1, 3])
def test_top_k_lists_score_as_the_dense_rows_they_stand_for(mode, k):
    classes = 12
    probs, labels = _dense(300, classes, 3, seed=3, decimals=2)
    lists = _lists(probs, k, seed=4)
    top_k = _top_k_set(lists, labels, classes)
    filled = _filled(lists, classes)
    ties = 0
    for weights in WEIGHTS:
        for shifts in SHIFTS:
            expected = _independent_scores(filled, labels, weights, shifts, mode, classes)
            for metric, value in expected.items():
                got = TopKProblem(top_k, METRICS[metric], mode, MULTICLASS, shifts).score(weights)
                if metric == "logloss":
                    assert got == pytest.approx(value, rel=1e-12)
                else:
                    assert got == value, (metric, weights, shifts)
    # Not vacuous: some rows' best is an unlisted class (a tie at the fill, to the lower class).
    blend = sum(f for f in filled) / 3
    best = np.argmax(blend, axis=1)
    for r in range(len(labels)):
        ties += best[r] not in np.concatenate([idx[r] for idx, _ in lists])
    assert ties > 0 or k == 3


def test_memory_stays_rows_by_k_at_two_hundred_thousand_classes():
    classes, rows, k = 200_000, 300, 8
    rng = np.random.default_rng(5)
    labels = rng.integers(0, classes, rows)
    lists = []
    for quality in (0.8, 0.6, 0.0):
        indices = np.stack([rng.choice(classes, k, replace=False) for _ in range(rows)])
        hit = rng.random(rows) < quality
        indices[hit, 0] = labels[hit]
        indices[hit, 1:] = np.where(indices[hit, 1:] == labels[hit, None],
                                    (labels[hit, None] + 1) % classes, indices[hit, 1:])
        probabilities = rng.dirichlet(np.ones(k), size=rows) * 0.9
        probabilities[hit, 0] += 0.05
        lists.append((indices, probabilities))
    top_k = _top_k_set(lists, labels, classes, np.arange(rows) % 2)
    tracemalloc.start()
    result = search_blend(top_k, METRICS["macro_f1"], "gmean", MULTICLASS, restarts=1)
    oof_values(top_k, result.weights, "gmean", None, METRICS["macro_f1"], MULTICLASS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # One dense rows x classes float64 array would be 480 MB.
    assert peak < 60e6, f"peak {peak / 1e6:.0f} MB"
    assert result.score > max(result.single_scores[1:]) and result.weights[2] < 0.05


def _write(tmp_path, lists, labels, classes, folds, names=("a", "b", "c")):
    argv = []
    for name, (indices, probabilities) in zip(names, lists, strict=True):
        np.savez(tmp_path / f"{name}.npz", indices=indices, probabilities=probabilities,
                 num_classes=np.int64(classes))
        argv += ["--oof", f"{name}={tmp_path / f'{name}.npz'}"]
    pd.DataFrame({"id": [f"r{i}" for i in range(len(labels))], "label": labels}).to_csv(
        tmp_path / "labels.csv", index=False)
    np.save(tmp_path / "folds.npy", folds)
    return [*argv, "--labels", str(tmp_path / "labels.csv"), "--folds",
            str(tmp_path / "folds.npy")]


def test_blend_search_on_npz_writes_weights_and_shifts_that_score_what_it_reported(
        tmp_path, capsys):
    classes = 40
    probs, labels = _dense(500, classes, 3, seed=6, decimals=3)
    lists = _lists(probs, 5, seed=7)
    argv = _write(tmp_path, lists, labels, classes, np.arange(500) % 3)
    out = tmp_path / "fitted.yml"
    assert cli.main(["blend", "search", *argv, "--metric", "macro_f1", "--mode", "gmean",
                     "--fit-shifts", "--restarts", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "threshold shifts" in printed and "value:" in printed
    raw = yaml.safe_load(out.read_text())
    weights = [m["weight"] for m in raw["models"]]
    shifts = [m["threshold_shift"] for m in raw["models"]]
    reported = float(re.search(r"macro_f1 ([0-9.]+)", out.read_text()).group(1))
    expected = _independent_scores(_filled(lists, classes), labels, weights, shifts, "gmean",
                                   classes)["macro_f1"]
    assert expected == pytest.approx(reported, abs=5e-5)


def _bad(tmp_path, case):
    probs, labels = _dense(30, 6, 2, seed=8)
    lists = _lists(probs, 3, seed=9)
    argv = _write(tmp_path, lists, labels, 6, np.arange(30) % 2, names=("a", "b"))
    a = tmp_path / "a.npz"
    indices, probabilities = lists[0]
    if case == "mixed":
        np.save(tmp_path / "b.npy", probs[1])
        argv[3] = f"b={tmp_path / 'b.npy'}"
    elif case == "no num_classes":
        np.savez(a, indices=indices, probabilities=probabilities)
    elif case == "repeated class":
        indices = indices.copy()
        indices[4, 1] = indices[4, 0]
        np.savez(a, indices=indices, probabilities=probabilities, num_classes=np.int64(6))
    elif case == "class out of range":
        np.savez(a, indices=indices + 6, probabilities=probabilities, num_classes=np.int64(6))
    elif case == "widths differ":
        np.savez(a, indices=indices, probabilities=probabilities, num_classes=np.int64(7))
    elif case == "logits":
        np.savez(a, indices=indices, probabilities=probabilities * 5, num_classes=np.int64(6))
    return argv


BAD = {
    "mixed": "some files are top-k .npz and some dense .npy",
    "no num_classes": "(--oof a): no array 'num_classes'",
    "repeated class": "(--oof a): row 4 lists a class twice",
    "class out of range": "(--oof a): class indices outside 0..5",
    "widths differ": "the top-k files disagree on num_classes (a: 7, b: 6)",
    "logits": "(--oof a): probabilities outside [0, 1]",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_top_k_file_is_one_line_naming_it(tmp_path, capsys, case):
    argv = _bad(tmp_path, case)
    assert cli.main(["blend", "search", *argv, "--metric", "accuracy",
                     "-o", str(tmp_path / "out.yml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and BAD[case] in err, err


def test_top_k_files_need_a_one_label_metric_and_no_threshold_search(tmp_path, capsys):
    argv = _bad(tmp_path, "none")
    assert cli.main(["blend", "search", *argv, "--metric", "f2",
                     "-o", str(tmp_path / "out.yml")]) == 1
    assert "--metric f2: top-k OOF files (.npz) give one label per row" in \
        capsys.readouterr().err
    (tmp_path / "base.yml").write_text(yaml.safe_dump({
        "models": [{"name": "a"}, {"name": "b"}], "test": {"images": "t"},
        "submission": {"format": "multilabel"}}))
    assert cli.main(["threshold", "search", *argv, "--base", str(tmp_path / "base.yml"),
                     "-o", str(tmp_path / "out.yml")]) == 1
    assert "need every class's probability" in capsys.readouterr().err


ENSEMBLE = """\
models:
  - {name: tiny, folds: [0, 1], weight: 2}
  - {name: solo, weight: 1}
test: {images: unused/test}
submission: {format: probabilities}
blend: gmean
tta: [identity, hflip]
batch_size: 3
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A --code package, three checkpoints of 6 classes (two folds and a plain model), 7 real
    images and a sample CSV that orders them."""
    root = tmp_path_factory.mktemp("wide-predict")
    config = {"input_size": 16, "activation": "softmax"}
    for seed, (name, fold) in enumerate([("tiny", 0), ("tiny", 1), ("solo", None)]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 6))
        save_checkpoint(root / "models" / f"{name}_{seed}.pt", "wide_tinynet.net:build", 6,
                        {**config, "name": name, "fold": fold}, model)
    package = root / "src" / "wide_tinynet"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "net.py").write_text(
        "from torch import nn\n\n\ndef build(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, num_classes))\n")
    images = root / "images"
    images.mkdir()
    for index, gray in enumerate(load_digits().images[:7]):
        Image.fromarray((gray * 16).astype(np.uint8)).convert("RGB").resize((20, 24)).save(
            images / f"img{index}.png")
    pd.DataFrame({"id": [f"img{i}" for i in (3, 0, 6, 1, 5, 2, 4)], "label": 0}).to_csv(
        root / "sample.csv", index=False)
    (root / "ensemble.yml").write_text(ENSEMBLE)
    return {"root": root, "package": package, "images": images, "sample": root / "sample.csv",
            "config": root / "ensemble.yml"}


def _predict(setup, out, *extra):
    return cli.main(["predict", str(setup["config"]), "--images", str(setup["images"]),
                     "--models", str(setup["root"] / "models"), "--code", str(setup["package"]),
                     "-o", str(out), "--quiet", *extra])


def test_predict_top_k_writes_each_rows_best_classes_of_the_dense_files(setup, tmp_path,
                                                                         capsys):
    folds = np.array([0, 1, 1, 0, 0, 1, 0])
    np.save(tmp_path / "folds.npy", folds)
    extra = ["--sample", str(setup["sample"]), "--per-model", "--folds",
             str(tmp_path / "folds.npy")]
    assert _predict(setup, tmp_path / "dense.npy", *extra) == 0
    assert _predict(setup, tmp_path / "top.npz", *extra, "--top-k", "2") == 0
    assert _predict(setup, tmp_path / "all.npz", *extra, "--top-k", "99") == 0
    printed = capsys.readouterr().out
    assert f"--oof tiny={tmp_path / 'top.tiny.npz'}" in printed
    for name in ("", ".tiny", ".solo"):
        dense = np.load(tmp_path / f"dense{name}.npy")
        with np.load(tmp_path / f"top{name}.npz") as top:
            assert int(top["num_classes"]) == dense.shape[1] and top["indices"].shape == (7, 2)
            np.testing.assert_array_equal(top["probabilities"],
                                          -np.sort(-dense, axis=1)[:, :2])
            np.testing.assert_array_equal(
                np.take_along_axis(dense, top["indices"].astype(np.int64), axis=1),
                top["probabilities"])
        with np.load(tmp_path / f"all{name}.npz") as every:  # k above the width: every class
            filled = np.zeros_like(dense)
            np.put_along_axis(filled, every["indices"].astype(np.int64),
                              every["probabilities"], axis=1)
            np.testing.assert_array_equal(filled, dense)
    assert _predict(setup, tmp_path / "top.npy", *extra, "--top-k", "2") == 1
    assert "name the output PREDS.npz" in capsys.readouterr().err
