"""Build time and memory of `kernelpack build --code` on a package as published (issue 25).

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python benchmarks/code_closure.py [--runs 5]

Runs `kernelpack build` in a fresh process (as a user does: nothing imported before), several
times, on the 2019-style packages of tests/code_2019 (eight modules, three of them training-only
with imports the Kaggle image cannot meet, pretrainedmodels vendored), and prints the median and
spread of the wall time, the peak memory of the process, and the machine with its load. The
imports of packages on the image (albumentations, torch) are judged from their installed source,
without importing them; `--import-names` shows what importing them instead would cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent / "tests" / "code_2019"
ROOTS = [CODE / "kp19_imet", CODE / "flat" / "kp19_net.py", CODE / "kp19_layers"]
CONFIG = {"models": [{"name": "imet"}], "test": {"images": "comp/test"},
          "submission": {"format": "probabilities"}, "kernel": {"id": "me/bench-closure"}}
# The same names judged by importing the modules, as a build without the source check would.
IMPORT_NAMES = """
import importlib, time
start = time.perf_counter()
for module in ("albumentations", "albumentations.pytorch", "torch", "torch.utils.data", "pandas"):
    importlib.import_module(module)
print(time.perf_counter() - start)
"""


def _build(tmp: Path, run: int) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one `kernelpack build` in a fresh interpreter."""
    command = [sys.executable, "-m", "kernelpack", "build", str(tmp / "ensemble.yml"), "-o",
               str(tmp / f"out{run}"), "--quiet", *[f"--code={root}" for root in ROOTS]]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - start
    return seconds, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def measure(runs: int = 5, import_names: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "ensemble.yml").write_text(json.dumps(CONFIG))
        _build(tmp, -1)  # warm-up: the disk cache
        timings = [_build(tmp, run) for run in range(runs)]
        kernels = {(tmp / f"out{run}" / "kernel.py").read_bytes() for run in range(runs)}
        assert len(kernels) == 1, "builds differ: the output is not deterministic"
    seconds = [wall for wall, _ in timings]
    figures = {"runs": runs, "build_seconds_median": round(statistics.median(seconds), 3),
               "build_seconds_min": round(min(seconds), 3),
               "build_seconds_max": round(max(seconds), 3),
               "peak_rss_mib": round(max(rss for _, rss in timings) / 1024, 1),
               "kernel_bytes": len(kernels.pop())}
    if import_names:
        done = subprocess.run([sys.executable, "-c", IMPORT_NAMES], check=True, text=True,
                              capture_output=True, env={**os.environ,
                                                        "NO_ALBUMENTATIONS_UPDATE": "1"})
        figures["import_instead_seconds"] = round(float(done.stdout), 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--import-names", action="store_true",
                        help="also time importing the image's packages the code names")
    args = parser.parse_args()
    figures = measure(args.runs, args.import_names)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"kernelpack build --code (tests/code_2019, 3 roots): median "
          f"{figures['build_seconds_median']} s ({figures['build_seconds_min']}-"
          f"{figures['build_seconds_max']} s, {figures['runs']} runs), peak RSS "
          f"{figures['peak_rss_mib']} MiB, kernel.py {figures['kernel_bytes']} bytes")
    if "import_instead_seconds" in figures:
        print(f"importing the image's packages instead: {figures['import_instead_seconds']} s")


if __name__ == "__main__":
    main()
