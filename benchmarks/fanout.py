"""Fan-out wall time: `kernelpack fanout` of N shards against the local Kaggle service with 1, 2
and 4 workers (and as many shard kernels allowed to run at once), with the real `kaggle` client.

    .venv/bin/python -m benchmarks.fanout [--shards 8] [--workers 1,2,4]

Each worker count gets a fresh service, so no shard is reused. The workload is the digits
competition with two small_cnn models, cut into N shards (2 models x N/2 row slices); a shard
kernel's own time is mostly starting Python and torch, as a small shard's is on Kaggle. The
speed-up is the 1-worker wall time over the N-worker one: how close it gets to N-fold on this
machine's cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine

USER, KEY = "bench", "not-a-real-key"
CNN_CONFIG = {"input_size": 32, "resize": "stretch", "mean": [0.5] * 3, "std": [0.25] * 3,
              "activation": "softmax", "model_kwargs": {"width": 8}}
ENSEMBLE = f"""\
models:
  - {{name: cnn_a, weight: 2}}
  - {{name: cnn_b, weight: 1}}
test:
  images: digits/test
  sample_submission: digits/sample_submission.csv
submission: {{format: multiclass}}
blend: gmean
tta: [identity, hflip]
batch_size: 16
kernel: {{competition_sources: [digits], dataset_sources: [{USER}/bench-models]}}
"""


@contextlib.contextmanager
def _account(folder: Path):
    """A kaggle.json for USER, the client pointed at it; the environment restored after."""
    config = folder / "kaggle-config"
    config.mkdir(parents=True)
    (config / "kaggle.json").write_text(json.dumps({"username": USER, "key": KEY}))
    (config / "kaggle.json").chmod(0o600)
    saved = {name: os.environ.get(name) for name in ("KAGGLE_CONFIG_DIR", "HOME")}
    saved_tempdir = tempfile.tempdir
    os.environ.update(KAGGLE_CONFIG_DIR=str(config), HOME=str(folder))
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _workload(folder: Path) -> tuple[Path, Path, Path]:
    """The digits competition and two checkpoints; (competition, models, config)."""
    from examples.digits.prepare import make_competition
    from inference_core.checkpoint import save_checkpoint
    from inference_core.model_factory import create_model

    paths = make_competition(folder / "data", limit=240)
    models = folder / "bench-models"
    for seed, name in enumerate(("cnn_a", "cnn_b")):
        torch.manual_seed(seed)
        save_checkpoint(models / f"{name}.pt", "small_cnn", 10, {**CNN_CONFIG, "name": name},
                        create_model("small_cnn", num_classes=10, width=8))
    config = folder / "bench.yml"
    config.write_text(ENSEMBLE)
    return paths.competition_dir, models, config


def measure(shards: int, workers: int, folder: Path) -> dict:
    """Wall time of one fan-out of `shards` shards with `workers` workers (fresh service)."""
    from kernelpack.fanout.run import FanoutRequest, run_fanout
    from kernelpack.kaggle.service import KaggleService, add_competition
    from kernelpack.kaggle.session import KaggleSession

    folder.mkdir(parents=True)
    competition, models, config = _workload(folder)
    n_test = sum(1 for _ in (competition / "test").iterdir())
    rows_per_shard = -(-n_test // (shards // 2))
    with _account(folder), KaggleService(folder / "service", users={USER: KEY},
                                         flat_input=True, workers=workers) as service:
        add_competition(service.store.root, "digits", competition,
                        folder / "data" / "heldout" / "test_labels.csv")
        KaggleSession(service.url).push_dataset(models, wait=True)
        request = FanoutRequest(config=config, images=competition / "test",
                                sample=competition / "sample_submission.csv",
                                models=[models], output=folder / "out" / "preds.npy",
                                per_model=True, rows_per_shard=rows_per_shard,
                                max_running=workers, retries=0, kaggle_url=service.url,
                                poll_seconds=0.2)
        began = time.perf_counter()
        summary = run_fanout(request, log=lambda _: None, progress=False)
        wall = time.perf_counter() - began
    if summary.failed or summary.shards != shards:
        raise RuntimeError(f"fan-out of {shards} shards: {summary}")
    return {"workers": workers, "shards": summary.shards, "wall_s": round(wall, 2),
            "kernel_s": round(summary.run_seconds, 2)}


def measure_all(shards: int = 8, workers: tuple[int, ...] = (1, 2, 4)) -> dict:
    """Each worker count's figures and its speed-up over the first."""
    with tempfile.TemporaryDirectory(prefix="kp-fanout-bench-") as scratch:
        rows = [measure(shards, w, Path(scratch) / f"w{w}") for w in workers]
    for row in rows:
        row["speedup"] = round(rows[0]["wall_s"] / row["wall_s"], 2)
    return {"shards": shards, "runs": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8, help="an even number (default 8)")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated (default 1,2,4)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    figures = measure_all(args.shards, tuple(int(w) for w in args.workers.split(",")))
    for row in figures["runs"]:
        print(f"{row['shards']} shards, {row['workers']} workers: {row['wall_s']:.1f} s wall "
              f"({row['kernel_s']:.1f} s inside the shard kernels), speed-up "
              f"{row['speedup']:.2f}x")

if __name__ == "__main__":
    main()
