"""Blend memory for very wide outputs (figure 3 of `make bench`): 32,000 classes x 20,000 images
x 5 models, blended as the kernel does (batch by batch, weighted geometric mean) and written as a
top-5 submission, in a fresh process whose peak RSS is read.

The models' outputs are stood in for by one fixed block of probabilities per model (generating
3.2 billion fresh random numbers would time the random generator, not the blend); the blend does
the same arithmetic on them. Holding every model's full matrix, as the 2019 kernels did, would
need 5 x 20,000 x 32,000 x 4 bytes = 12.8 GB.

    .venv/bin/python -m benchmarks.wide_blend [--classes 32000] [--images 20000] [--models 5]
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

from benchmarks.common import peak_rss, reset_peak_rss
from inference_core.blend import BlendAccumulator
from inference_core.config import SubmissionSection
from inference_core.submission import SubmissionWriter

BATCH = 64


def blend_stream(classes: int, images: int, models: int, out: Path) -> float:
    rng = np.random.default_rng(0)
    blocks = []
    for _ in range(models):
        block = rng.random((BATCH, classes), dtype=np.float32) + 1e-3
        blocks.append(block / block.sum(axis=1, keepdims=True))
    submission = SubmissionSection(format="topk", k=5)
    began = time.perf_counter()
    with SubmissionWriter(out, submission, list(range(classes))) as writer:
        for start in range(0, images, BATCH):
            rows = min(BATCH, images - start)
            accumulator = BlendAccumulator(rows, classes, "gmean")
            for weight, block in enumerate(blocks, start=1):
                accumulator.add(block[:rows], float(weight))
            writer.write([f"img_{i}" for i in range(start, start + rows)], accumulator.result())
    return time.perf_counter() - began


def measure(classes: int = 32_000, images: int = 20_000, models: int = 5) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.wide_blend", "--one",
                          "--classes", str(classes), "--images", str(images), "--models",
                          str(models)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=32_000)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--one", action="store_true", help="measure in this process")
    args = parser.parse_args()
    if not args.one:
        print(json.dumps(measure(args.classes, args.images, args.models), indent=2))
        return
    reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        seconds = blend_stream(args.classes, args.images, args.models, Path(tmp) / "s.csv")
    print(json.dumps({"classes": args.classes, "images": args.images, "models": args.models,
                      "seconds": round(seconds, 1), "peak_rss_gb": round(peak_rss() / 1e9, 3)}))


if __name__ == "__main__":
    main()
