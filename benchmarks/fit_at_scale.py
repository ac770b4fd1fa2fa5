"""`blend search` and `threshold search` at iMet 2019's scale (figure of `make bench`): 109,237 OOF
rows x 1,103 classes x 7 models, `--metric f2`, 5 folds, each command in a fresh process whose
time and peak RSS are read.

The OOF set is generated, iMet-shaped, as memory-mapped float32 .npy files: class frequencies
with a long tail (Zipf), about 3 labels per row; seven models of different quality whose errors
share a common part (they are correlated, as models trained on the same images are), one of them
useless (its scores ignore the labels).

    .venv/bin/python -m benchmarks.fit_at_scale [--rows 109237] [--classes 1103] [--models 7]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmarks.common import peak_rss, reset_peak_rss

ROWS, CLASSES, MODELS, FOLDS = 109_237, 1_103, 7, 5
LABELS_PER_ROW = 3.0
CHUNK = 8192
# How far each model's logits move towards the truth; the last model is useless.
QUALITY = (3.0, 2.7, 2.5, 2.2, 2.0, 1.6, 0.0)
BLEND_GOAL_S, THRESHOLD_GOAL_S = 300, 120


def generate(folder: Path, rows: int, classes: int, models: int, seed: int = 0) -> dict:
    """Write labels.csv, folds.npy and m<k>.npy (memory-mapped float32) into `folder`."""
    rng = np.random.default_rng(seed)
    frequency = 1.0 / np.arange(1, classes + 1) ** 0.9
    frequency *= LABELS_PER_ROW / frequency.sum()
    frequency = np.minimum(frequency, 0.6)
    prior_logit = np.log(frequency / (1 - frequency)).astype(np.float32)
    quality = np.resize(np.array((*QUALITY[:models - 1], 0.0)), models)
    outputs = [np.lib.format.open_memmap(folder / f"m{k}.npy", mode="w+", dtype=np.float32,
                                         shape=(rows, classes)) for k in range(models)]
    labels = []
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        truth = rng.random((n, classes), dtype=np.float32) < frequency
        none = ~truth.any(axis=1)
        truth[none, rng.choice(classes, none.sum(), p=frequency / frequency.sum())] = True
        labels += [" ".join(map(str, np.flatnonzero(row))) for row in truth]
        shared = rng.standard_normal((n, classes), dtype=np.float32)
        for k, output in enumerate(outputs):
            noise = 0.6 * shared + 0.8 * rng.standard_normal((n, classes), dtype=np.float32)
            logit = prior_logit + noise * 1.5 + np.float32(quality[k]) * (truth - 0.3)
            output[start:start + n] = 1.0 / (1.0 + np.exp(-logit))
    for output in outputs:
        output.flush()
    pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "label": labels}).to_csv(
        folder / "labels.csv", index=False)
    np.save(folder / "folds.npy", rng.integers(0, FOLDS, rows))
    return {"rows": rows, "classes": classes, "models": models,
            "oof_gb": round(models * rows * classes * 4 / 1e9, 2),
            "labels_per_row": round(sum(len(t.split()) for t in labels) / rows, 2)}


def _oof_args(folder: Path, models: int) -> list[str]:
    args = []
    for k in range(models):
        args += ["--oof", f"m{k}={folder / f'm{k}.npy'}"]
    return [*args, "--labels", str(folder / "labels.csv"), "--folds", str(folder / "folds.npy")]


def _run_one(argv: list[str]) -> None:
    from kernelpack.cli.main import main as cli_main

    reset_peak_rss()
    began = time.perf_counter()
    code = cli_main(argv)
    print(json.dumps({"seconds": round(time.perf_counter() - began, 1), "code": code,
                      "peak_rss_gb": round(peak_rss() / 1e9, 2)}))


def measure_command(argv: list[str]) -> dict:
    """One kernelpack command in a fresh process: its seconds, exit code and peak RSS."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.fit_at_scale", "--one", *argv],
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(rows: int = ROWS, classes: int = CLASSES, models: int = MODELS) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = generate(folder, rows, classes, models)
        oof = _oof_args(folder, models)
        blend = {}
        for mode in ("mean", "gmean"):
            blend[mode] = measure_command(["blend", "search", *oof, "--metric", "f2",
                                            "--mode", mode, "-o",
                                            str(folder / f"blend_{mode}.yml")])
        # Per-model threshold shifts after the weights (gmean, where each shift changes the
        # blend's shape).
        blend["gmean_fit_shifts"] = measure_command(
            ["blend", "search", *oof, "--metric", "f2", "--mode", "gmean", "--fit-shifts",
             "-o", str(folder / "blend_shifts.yml")])
        fitted = yaml.safe_load((folder / "blend_mean.yml").read_text())
        # A config needs a test section to be a base; the search does not read it.
        base = folder / "base.yml"
        base.write_text(yaml.safe_dump({**fitted, "test": {"images": str(folder / "test")}}))
        threshold = measure_command(["threshold", "search", *oof, "--base", str(base),
                                      "-o", str(folder / "thresholds.yml"),
                                      "--report", str(folder / "thresholds.json")])
    memory_goal = round(1.5 * data["oof_gb"] + 1.0, 2)
    return {"data": data, "blend": blend, "threshold": threshold,
            "fitted_weights": [m.get("weight") for m in fitted["models"]],
            "memory_goal_gb": memory_goal}


def main() -> None:
    if sys.argv[1:2] == ["--one"]:  # one kernelpack command, measured in this process
        _run_one(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--classes", type=int, default=CLASSES)
    parser.add_argument("--models", type=int, default=MODELS)
    args = parser.parse_args()
    print(json.dumps(measure(args.rows, args.classes, args.models), indent=2))


if __name__ == "__main__":
    main()
