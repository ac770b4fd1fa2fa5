"""The two AES-GCM backends of `.kpenc` side by side: `cryptography` (the `kernelpack[cryptography]`
extra) and `pycryptodome` (a core dependency, and the Kaggle image's), sealing a file with
`encrypt_file` (reading and writing it included) and opening it with `decrypt_chunks` (to memory).

    .venv/bin/python -m benchmarks.aes_backends [--mib 256] [--repeats 3]

Figures in docs/install.md (Extras).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path

from benchmarks.common import machine
from inference_core.kpenc import KpencManifest, decrypt_chunks
from kernelpack.weights.encrypt import BACKENDS, encrypt_file


def measure(mib: int, repeats: int) -> dict[str, dict[str, float]]:
    """backend -> {"encrypt": MiB/s, "decrypt": MiB/s}, the best of `repeats`."""
    key = os.urandom(32)
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "plain.bin"
        source.write_bytes(os.urandom(mib * 2**20))
        for backend in BACKENDS:
            sealed = Path(folder) / f"{backend}.kpenc"
            sealing, opening = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                encrypt_file(source, key, sealed, KpencManifest(name="bench"), backend=backend)
                sealing.append(time.perf_counter() - start)
                start = time.perf_counter()
                for _ in decrypt_chunks(sealed, key, backend=backend):
                    pass
                opening.append(time.perf_counter() - start)
            figures[backend] = {"encrypt": mib / min(sealing), "decrypt": mib / min(opening)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    for backend, speed in measure(args.mib, args.repeats).items():
        package = "pycryptodome" if backend == "pycryptodome" else "cryptography"
        print(f"{backend} {metadata.version(package)}: encrypt {speed['encrypt']:,.0f} MiB/s, "
              f"decrypt {speed['decrypt']:,.0f} MiB/s ({args.mib} MiB, best of {args.repeats})")


if __name__ == "__main__":
    main()
