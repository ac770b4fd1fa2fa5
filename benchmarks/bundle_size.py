"""Size and build time of a kernel: inference_core plus vendored pretrainedmodels (issue 3's goal:
at most 250 KB, built in under 2 s).

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python benchmarks/bundle_size.py [--runs 7]

Builds a kernel with `kernelpack build` from a minimal ensemble config, several times, and prints
the kernel's size, what each bundled package adds to it, the median and spread of the build time,
and the machine it ran on (with its load, since timings on a shared VM drift).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kernelpack.bundler.bundle import Entry, bundle
from kernelpack.bundler.locate import files_of, find_installed
from kernelpack.bundler.payload import encode_payload
from kernelpack.kernel.build import ENTRY_NAME, build_kernel

CONFIG = """\
models:
  - {name: se50_f0, path: my-models/se50_f0.pt}
test: {images: my-competition/test}
submission: {format: multilabel}
kernel: {id: me/bench-kernel}
"""


def _shares() -> dict[str, tuple[int, int]]:
    """(raw bytes, encoded bytes when compressed on its own) of each package build bundles; the
    encoded figures are an estimate, as packages compressed together share some of the gain."""
    result = bundle(Entry(ENTRY_NAME, b"from inference_core.runner import main\n"),
                    vendor=["inference_core"])
    shares = {}
    for name in result.vendored:
        files = files_of(find_installed(name))
        shares[name] = (sum(map(len, files.values())), len(encode_payload(files)))
    return shares


def measure(runs: int = 7) -> dict:
    """Size of the runtime kernel, each bundled package's share, and build times."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "ensemble.yml"
        config.write_text(CONFIG)
        build_kernel(config, Path(tmp) / "warm")  # first build pays for imports and disk cache
        seconds, size = [], 0
        for run in range(runs):
            start = time.perf_counter()
            result = build_kernel(config, Path(tmp) / f"out{run}")
            seconds.append(time.perf_counter() - start)
            size = result.size_bytes
        kernel_text = result.kernel.read_bytes()
        assert all((Path(tmp) / f"out{run}" / "kernel.py").read_bytes() == kernel_text
                   for run in range(runs)), "builds differ: the output is not deterministic"
    return {"kernel_bytes": size, "build_seconds_median": round(statistics.median(seconds), 3),
            "build_seconds_min": round(min(seconds), 3),
            "build_seconds_max": round(max(seconds), 3), "runs": runs, "shares": _shares()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    figures = measure(args.runs)
    size, shares = figures["kernel_bytes"], figures["shares"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"kernel.py: {size} bytes ({size / 1024:.1f} KiB); goal <= 250 KB")
    for name, (raw, encoded) in sorted(shares.items(), key=lambda item: -item[1][1]):
        print(f"  {name:<18} {raw / 1024:6.1f} KiB of files -> ~{encoded / 1024:5.1f} KiB "
              "encoded alone")
    print(f"build (kernelpack build, {args.runs} runs): median "
          f"{figures['build_seconds_median']:.3f} s, min {figures['build_seconds_min']:.3f} s, "
          f"max {figures['build_seconds_max']:.3f} s; goal < 2 s")
    sys.exit(0 if size <= 250_000 and figures["build_seconds_median"] < 2 else 1)


if __name__ == "__main__":
    main()
