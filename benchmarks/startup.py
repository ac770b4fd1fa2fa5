"""Kernel start-up to the first batch, excluding weight loading (figure 4 of `make bench`).

Builds a kernel for a small digits competition (two ResNet-18 checkpoints), runs it offline in the
sandbox, and reads its log: the time stamp of "first batch starts" (counted from the process's
start, so interpreter start-up, unpacking the bundle and `import torch` are in it) minus the time
that line reports for loading weights.

    .venv/bin/python -m benchmarks.startup [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import write_checkpoints, write_test_images
from kernelpack.kernel.build import build_kernel
from kernelpack.kernel.sandbox import run_local

FIRST_BATCH = re.compile(r"\[\s*([\d.]+)s\] first batch starts; ([\d.]+) s of the start-up")


def measure(runs: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_test_images(root / "input" / "comp" / "test", 16)
        names = write_checkpoints(root / "input" / "models", "torchvision.resnet18", 2, 128)
        config = root / "startup.yml"
        config.write_text("models:\n" + "".join(f"  - {{name: {n}}}\n" for n in names)
                          + "test: {images: comp/test, pattern: '*.jpg'}\n"
                            "submission: {format: multiclass}\n")
        build_kernel(config, root / "kernel")
        samples = []
        for _ in range(runs):
            result = run_local(root / "kernel", root / "input")
            log = result.log.read_text()
            match = FIRST_BATCH.search(log)
            if result.returncode != 0 or not match:
                raise RuntimeError(f"the start-up kernel failed:\n{log}")
            samples.append(float(match.group(1)) - float(match.group(2)))
    return {"seconds_median": round(statistics.median(samples), 2),
            "seconds_all": [round(s, 2) for s in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    print(json.dumps(measure(parser.parse_args().runs), indent=2))


if __name__ == "__main__":
    main()
