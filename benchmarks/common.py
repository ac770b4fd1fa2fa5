"""Helpers shared by the benchmarks: a test set of real images, checkpoints, memory readings."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inference_core.checkpoint import save_checkpoint
from inference_core.model_factory import create_model


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, load average {load:.1f}")


def write_test_images(folder: Path, count: int, side: int = 640) -> list[Path]:
    """`count` real handwritten digits (scikit-learn's), scaled up to `side` px and saved as
    JPEG, the size and format a Kaggle test image typically has."""
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits().images
    paths = []
    for i in range(count):
        grey = np.rint(digits[i % len(digits)] * (255.0 / 16.0)).astype(np.uint8)
        image = Image.fromarray(grey).resize((side, side), Image.Resampling.BILINEAR)
        path = folder / f"img_{i:05d}.jpg"
        image.convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def write_checkpoints(folder: Path, arch: str, count: int, input_size: int,
                      num_classes: int = 10) -> list[str]:
    """`count` seeded random-weight checkpoints of `arch`; returns their names."""
    names = []
    for i in range(count):
        torch.manual_seed(i)
        name = f"{arch.replace('.', '_')}_f{i}"
        save_checkpoint(folder / f"{name}.pt", arch, num_classes,
                        {"name": name, "fold": i, "input_size": input_size, "resize": "stretch",
                         "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                        create_model(arch, num_classes=num_classes))
        names.append(name)
    return names


def reset_peak_rss() -> int:
    """Reset the peak RSS (Linux) and return the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status("VmRSS")


def peak_rss() -> int:
    return _status("VmHWM")


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle
                    if line.startswith(field + ":"))
