"""Herbarium scale (`make bench` part `herbarium`): 32,000 classes, 512-d prototypes, a test set
of 20,000 images fed as embeddings, 2 prototype members (cosine and squared Euclidean, fp16
prototypes as a checkpoint stores them) + 1 classifier member (a 512 -> 32,000 linear head),
weighted-mean blend, written as a top-5 submission.

The members run through the kernel's own `EnsemblePredictor.predict`, batch by batch, into the
blend and the submission writer; their backbone is the identity, so what is measured is the
class scoring, the softmax, the blend and the top-k, not a CNN. Two ways, each in a fresh
process whose peak RSS is read:

- chunked: the runtime's default (`class_chunk: 8192`): a prototype member never holds more
  than images x chunk scores (`inference_core.class_chunks`);
- unchunked: `class_chunk: 0`, the baseline: each prototype member's forward makes its full
  images x 32,000 score matrix, as every classifier does.

    .venv/bin/python -m benchmarks.herbarium [--images 20000] [--batch 256]
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
import torch
from torch import nn

from benchmarks.common import peak_rss, reset_peak_rss
from inference_core.blend import BlendAccumulator
from inference_core.budget import rank_units
from inference_core.config import DEFAULT_CLASS_CHUNK, SubmissionSection
from inference_core.predict import EnsemblePredictor, Member, PreparedBatch
from inference_core.preprocess import Preprocess
from inference_core.prototypes import PrototypeNet
from inference_core.submission import SubmissionWriter

CLASSES, DIM, K = 32_000, 512, 5
# One input group for all three members; its settings do not matter, the batches are prepared
# here as embeddings.
GROUP = Preprocess(1, "stretch", (0.0,) * 3, (1.0,) * 3)


def members() -> list[Member]:
    torch.manual_seed(0)
    prototype_members = []
    for name, metric, temperature in (("proto_cos", "cosine", 0.05),
                                      ("proto_sqeuclid", "sqeuclidean", 8.0)):
        model = PrototypeNet(nn.Identity(), DIM, CLASSES, metric, temperature)
        model.prototypes = torch.randn(CLASSES, DIM).half()  # as a checkpoint stores them
        prototype_members.append(Member(name, model.eval(), GROUP, 1.0, 0.0, ["identity"],
                                        "softmax", CLASSES, None))
    head = nn.Linear(DIM, CLASSES).eval()
    return [*prototype_members,
            Member("classifier", head, GROUP, 1.0, 0.0, ["identity"], "softmax", CLASSES, None)]


def run(images: int, batch: int, class_chunk: int, out: Path) -> tuple[float, int]:
    """(seconds, peak RSS in bytes before the first batch: torch, the three members)."""
    ensemble = members()
    predictor = EnsemblePredictor(ensemble, "fp32", [torch.device("cpu")],
                                  class_chunk=class_chunk)
    active = set(rank_units([(m.name, m.weight, m.tta) for m in ensemble]))
    submission = SubmissionSection(format="topk", k=K)
    generator = torch.Generator().manual_seed(1)
    set_up = peak_rss()
    began = time.perf_counter()
    with torch.inference_mode(), SubmissionWriter(out, submission, range(CLASSES)) as writer:
        for start in range(0, images, batch):
            rows = min(batch, images - start)
            embeddings = torch.randn(rows, DIM, generator=generator)
            prepared = PreparedBatch(np.arange(rows), {GROUP: list(embeddings)}, [], 0.0)
            accumulator = BlendAccumulator(rows, CLASSES, "mean")
            predictor.predict(prepared, active, accumulator)
            writer.write([f"img_{i}" for i in range(start, start + rows)], accumulator.result())
    return time.perf_counter() - began, set_up


def measure_one(images: int, batch: int, class_chunk: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.herbarium", "--one",
                          "--images", str(images), "--batch", str(batch),
                          "--class-chunk", str(class_chunk)],
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(images: int = 20_000, batch: int = 256) -> dict:
    chunked = measure_one(images, batch, DEFAULT_CLASS_CHUNK)
    unchunked = measure_one(images, batch, 0)
    return {"images": images, "batch": batch, "classes": CLASSES, "dim": DIM, "k": K,
            "chunked": chunked, "unchunked": unchunked,
            "throughput_vs_unchunked": round(chunked["images_per_second"]
                                             / unchunked["images_per_second"], 3),
            "same_submission": chunked["submission_sha256"] == unchunked["submission_sha256"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--class-chunk", type=int, default=DEFAULT_CLASS_CHUNK)
    parser.add_argument("--one", action="store_true", help="one way, in this process")
    args = parser.parse_args()
    if not args.one:
        print(json.dumps(measure(args.images, args.batch), indent=2))
        return
    import hashlib

    reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "submission.csv"
        seconds, set_up = run(args.images, args.batch, args.class_chunk, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(json.dumps({"class_chunk": args.class_chunk, "seconds": round(seconds, 1),
                      "images_per_second": round(args.images / seconds, 1),
                      "peak_rss_gb": round(peak_rss() / 1e9, 3),
                      # what the batches added to the peak, beyond torch and the members
                      "scoring_rss_gb": round((peak_rss() - set_up) / 1e9, 3),
                      "submission_sha256": digest}))


if __name__ == "__main__":
    main()
