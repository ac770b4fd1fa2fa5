"""Decrypt benchmark: .kpenc throughput against raw AES-GCM and Fernet, and the peak memory of
decrypt-and-load against a plain `torch.load` of the same checkpoint.

    .venv/bin/python -m benchmarks.decrypt [--mib 256] [--json results.json]

Throughput: best of 3 runs on a file of random bytes (in the page cache). "raw AES-GCM" is one
`AESGCM.decrypt` call over the whole ciphertext already in memory (the ceiling: no file reading,
no chunking); "Fernet" decrypts the whole file held in memory (AES-128-CBC + HMAC + base64), as
earlier tools did. Memory: each load runs in a fresh process that has already imported torch;
the figure is its peak RSS growth (VmHWM minus the RSS after `import torch`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks.common import peak_rss, reset_peak_rss
from inference_core.checkpoint import load_checkpoint
from inference_core.kpenc import KpencManifest, decrypt_to_memory
from kernelpack.weights.encrypt import encrypt_checkpoint, encrypt_file

KEY = bytes(range(32))

def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput(mib: int, workdir: Path) -> dict:
    size = mib * 1024 * 1024
    plain = os.urandom(size)
    source = workdir / "plain.bin"
    source.write_bytes(plain)
    sealed = workdir / "plain.kpenc"
    encrypt_file(source, KEY, sealed, KpencManifest(name="bench"))

    def kpenc(backend: str):
        def run():
            with decrypt_to_memory(sealed, KEY, backend=backend) as handle:
                assert handle.seek(0, 2) == size
        return run

    nonce = os.urandom(12)
    ciphertext = AESGCM(KEY).encrypt(nonce, plain, b"")
    fernet = Fernet(Fernet.generate_key())
    token = fernet.encrypt(plain)
    seconds = {
        "kpenc_cryptography": best_of(3, kpenc("cryptography")),
        "kpenc_pycryptodome": best_of(3, kpenc("pycryptodome")),
        "raw_aesgcm_in_memory": best_of(3, lambda: AESGCM(KEY).decrypt(nonce, ciphertext, b"")),
        "fernet_whole_file": best_of(3, lambda: fernet.decrypt(token)),
    }
    return {name: {"seconds": round(s, 3), "mb_per_s": round(size / s / 1e6, 1)}
            for name, s in seconds.items()}


def load_once(kind: str, path: str) -> tuple[int, int]:
    """Peak RSS growth and peak RSS, in bytes, of one load in this (fresh) process."""
    import torch

    base = reset_peak_rss()
    if kind == "plain_torch_load":
        state = torch.load(path, weights_only=True)
    else:
        state = load_checkpoint(path, key=KEY)
    sum(t.sum().item() for t in state["state_dict"].values())  # touch every page
    return peak_rss() - base, peak_rss()


def memory(mib: int, workdir: Path) -> dict:
    import torch

    from inference_core.checkpoint import save_checkpoint

    # A checkpoint of `mib` MiB of float32 weights in 16 tensors.
    per_tensor = mib * 1024 * 1024 // 4 // 16
    model = torch.nn.ParameterDict({f"w{i}": torch.nn.Parameter(torch.randn(per_tensor))
                                    for i in range(16)})
    plain = save_checkpoint(workdir / "big.pt", "small_cnn", 2, {"name": "big"}, model)
    del model
    sealed = workdir / "big.kpenc"
    encrypt_checkpoint(plain, KEY, sealed)
    result = {}
    for kind, path in (("plain_torch_load", plain), ("kpenc_decrypt_and_load", sealed)):
        out = subprocess.run([sys.executable, "-m", "benchmarks.decrypt", "--load", kind,
                              str(path)], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent).stdout.split()
        result[kind] = {"rss_growth_mb": round(int(out[0]) / 1e6), "peak_rss_mb":
                        round(int(out[1]) / 1e6)}
    result["ratio"] = round(result["kpenc_decrypt_and_load"]["rss_growth_mb"]
                            / result["plain_torch_load"]["rss_growth_mb"], 2)
    return result


def measure(mib: int = 256) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        figures = {"mib": mib, "throughput": throughput(mib, Path(tmp))}
        raw = figures["throughput"]["raw_aesgcm_in_memory"]["mb_per_s"]
        ours = figures["throughput"]["kpenc_cryptography"]["mb_per_s"]
        figures["kpenc_vs_raw"] = round(ours / raw, 2)
        figures["memory"] = memory(mib, Path(tmp))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--load", nargs=2, metavar=("KIND", "PATH"),
                        help="(internal) measure one load in this process")
    args = parser.parse_args()
    if args.load:
        print(*load_once(*args.load))
        return
    figures = measure(args.mib)
    print(f"decrypt {args.mib} MiB (best of 3)")
    for name, row in figures["throughput"].items():
        print(f"  {name:<24} {row['seconds']:>7.3f} s  {row['mb_per_s']:>8.1f} MB/s")
    print(f"  .kpenc / raw AES-GCM      {figures['kpenc_vs_raw']:.0%}   (goal >= 70%)")
    mem = figures["memory"]
    print(f"peak memory, {args.mib} MiB checkpoint (RSS growth after import torch)")
    for name in ("plain_torch_load", "kpenc_decrypt_and_load"):
        print(f"  {name:<24} {mem[name]['rss_growth_mb']:>6} MB   "
              f"(peak {mem[name]['peak_rss_mb']} MB)")
    print(f"  ratio                    {mem['ratio']:.2f}x  (goal <= 1.2x)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
