"""`blend search` at Herbarium 2020's width (figure of `make bench`): 32,093 classes, top-k OOF
(`.npz`, k = 50) of 3 to 5 models, `--metric macro_f1` and `--metric accuracy` (top-1), 5 folds,
each command in a fresh process whose time and peak RSS are read.

The OOF lists are generated as the models would write them, without any rows x classes array: a
long-tailed class frequency (Zipf), each model's list holding the true class with a probability
that grows with its quality, the other places drawn partly from a set of confusable classes the
models share (their errors are correlated) and partly at random; probabilities are a softmax over
the listed classes scaled to leave some mass to the unlisted ones. The last model is useless (its
list ignores the label). A dense OOF array of the same rows would be rows x 32,093 x 4 bytes per
model (100,000 rows: 12.8 GB each).

    .venv/bin/python -m benchmarks.wide_search [--rows 100000] [--models 5] [--k 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.fit_at_scale import FOLDS, measure_command

ROWS, CLASSES, MODELS, K = 100_000, 32_093, 5, 50
CONFUSABLE = 20  # classes per row that every model may confuse with the true one
# How likely each model lists the true class, and how strongly it ranks it; the last is useless.
QUALITY = (0.9, 0.85, 0.8, 0.75, 0.0)
CHUNK = 10_000
SEARCH_GOAL_S = 300


def generate(folder: Path, rows: int, models: int, k: int, classes: int = CLASSES,
             seed: int = 0) -> dict:
    """Write labels.csv, folds.npy and m<i>.npz (indices, probabilities, num_classes)."""
    rng = np.random.default_rng(seed)
    frequency = 1.0 / np.arange(1, classes + 1) ** 0.8
    frequency /= frequency.sum()
    labels = rng.choice(classes, rows, p=frequency)
    quality = np.resize(np.array((*QUALITY[:models - 1], 0.0)), models)
    for m in range(models):
        indices = np.empty((rows, k), dtype=np.int32)
        probs = np.empty((rows, k), dtype=np.float32)
        model_rng = np.random.default_rng(seed + 1 + m)
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            row_rng = np.random.default_rng(seed + 1_000 + start)  # the same for every model
            confusable = row_rng.integers(0, classes, (n, CONFUSABLE))
            candidates = np.concatenate([labels[start:start + n, None], confusable,
                                         model_rng.integers(0, classes, (n, 3 * k))], axis=1)
            listed = model_rng.random(n) < quality[m]
            candidates[~listed, 0] = model_rng.integers(0, classes, int((~listed).sum()))
            # Each row's first k distinct candidates, the true class (if listed) first.
            order = np.argsort(candidates, axis=1, kind="stable")
            ranked = np.take_along_axis(candidates, order, axis=1)
            first = np.ones(ranked.shape, dtype=bool)
            first[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
            keep = np.zeros(candidates.shape, dtype=bool)
            np.put_along_axis(keep, order, first, axis=1)
            position = np.cumsum(keep, axis=1)
            keep &= position <= k
            chosen = candidates[keep].reshape(n, k)
            logits = model_rng.standard_normal((n, k)).astype(np.float32)
            logits[:, 0] += np.float32(2.5 * quality[m]) * listed
            weights = np.exp(logits)
            mass = model_rng.uniform(0.8, 0.99, (n, 1)).astype(np.float32)
            indices[start:start + n] = chosen
            probs[start:start + n] = weights / weights.sum(axis=1, keepdims=True) * mass
        np.savez(folder / f"m{m}.npz", indices=indices, probabilities=probs,
                 num_classes=np.int64(classes))
    pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "label": labels}).to_csv(
        folder / "labels.csv", index=False)
    np.save(folder / "folds.npy", rng.integers(0, FOLDS, rows))
    return {"rows": rows, "classes": classes, "models": models, "k": k,
            "top_k_gb": round(models * rows * k * 8 / 1e9, 3),
            "dense_gb": round(models * rows * classes * 4 / 1e9, 1)}


def measure(rows: int = ROWS, models: int = MODELS, k: int = K) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = generate(folder, rows, models, k)
        oof = []
        for m in range(models):
            oof += ["--oof", f"m{m}={folder / f'm{m}.npz'}"]
        oof += ["--labels", str(folder / "labels.csv"), "--folds", str(folder / "folds.npy")]
        runs = {}
        for metric in ("macro_f1", "accuracy"):
            runs[metric] = measure_command(["blend", "search", *oof, "--metric", metric,
                                            "--mode", "gmean", "-o",
                                            str(folder / f"{metric}.yml")])
        runs["macro_f1_fit_shifts"] = measure_command(
            ["blend", "search", *oof, "--metric", "macro_f1", "--mode", "gmean",
             "--fit-shifts", "-o", str(folder / "shifts.yml")])
    return {"data": data, "blend": runs, "goal_s": SEARCH_GOAL_S}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--models", type=int, default=MODELS)
    parser.add_argument("--k", type=int, default=K)
    args = parser.parse_args()
    print(json.dumps(measure(args.rows, args.models, args.k), indent=2))


if __name__ == "__main__":
    main()
