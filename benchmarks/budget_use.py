"""`budget_use`: with a budget that fits about half the ensemble, how much of it goes to model
work, and whether the run ends inside it (`make bench`).

Six random-weight ResNet-18 at 64 px x two TTA views (12 model views) on real JPEG test images,
through `inference_core.run_kernel` in this process. A first run with an unlimited budget
measures the start-up (discovery, loading) and the model work of the whole ensemble; the second
run gets the budget that fits the start-up and half that work, with the default 10 % margin:

    use = model work / usable budget,  usable budget = budget x (1 - margin)

where model work is the time from the first batch to the written submission (the probe, every
batch, the blend and the file), the same span for both runs. The goal is >= 0.85, inside the
budget, without fallback rows.

    .venv/bin/python -m benchmarks.budget_use [--images 240]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_checkpoints, write_test_images
from inference_core.config import EnsembleConfig
from inference_core.runner import run_kernel

MODELS, ARCH, SIZE, MARGIN = 6, "torchvision.resnet18", 64, 0.1


def _run(root: Path, names: list[str], budget: float, name: str) -> tuple[dict, list[str]]:
    config = EnsembleConfig.from_dict({
        "models": [{"name": n, "weight": 1.0 + i / 10} for i, n in enumerate(names)],
        "test": {"images": "comp/test", "pattern": "*.jpg"},
        "submission": {"format": "multiclass"}, "tta": ["identity", "hflip"],
        "batch_size": 32, "budget": {"seconds": budget, "margin": MARGIN},
        "input_roots": [str(root / "input")]})
    work = root / name
    work.mkdir()
    lines: list[str] = []
    started = time.monotonic()
    summary = run_kernel(config, work, log=lines.append, progress=False, started=started)
    return {"seconds": summary.seconds, "model_work": summary.predict_seconds,
            "fallback_rows": summary.fallback_rows, "left_out": list(summary.dropped),
            "added_back": list(summary.added)}, lines


def measure(images: int = 240) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_test_images(root / "input" / "comp" / "test", images, side=256)
        names = write_checkpoints(root / "input" / "models", ARCH, MODELS, SIZE)
        full, _ = _run(root, names, 1e6, "full")
        startup = full["seconds"] - full["model_work"]
        budget = (startup + full["model_work"] / 2) / (1 - MARGIN)
        half, lines = _run(root, names, budget, "half")
    usable = budget * (1 - MARGIN)
    plan = next(i for i, line in enumerate(lines) if line.startswith("plan:"))
    return {
        "value": round(half["model_work"] / usable, 3),
        "inside_budget": half["seconds"] < budget,
        "budget_seconds": round(budget, 2),
        "usable_seconds": round(usable, 2),
        "run_seconds": round(half["seconds"], 2),
        "model_work_seconds": round(half["model_work"], 2),
        "startup_seconds": round(half["seconds"] - half["model_work"], 2),
        "full_ensemble_model_work_seconds": round(full["model_work"], 2),
        "fallback_rows": half["fallback_rows"],
        "views_left_out_at_the_end": half["left_out"],
        "views_added_back": half["added_back"],
        "plan": lines[plan].splitlines()[0],
        "images": images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    print(json.dumps(measure(parser.parse_args().images), indent=2))


if __name__ == "__main__":
    main()
