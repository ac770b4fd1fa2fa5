"""The host side of a Herbarium-sized out-of-fold fan-out with `--top-k`: every shard's output
checked (manifest, shapes, dtypes, SHA-256, class range) and the entries' top-k `.npz` files
assembled, from shard outputs written as the shard kernels write them.

    .venv/bin/python -m benchmarks.fanout_top_k [--rows 1000000] [--classes 32093] [--k 50]

The work is Herbarium 2020's training set cut as a fan-out cuts it: a folds group of 5 fold
models (each on its held-out fifth) and one plain model (on every row), `--rows-per-shard
20000`. The kernels themselves do not run (that is GPU time on Kaggle); their outputs are
random top-k lists of the right shape. Figures: the seconds and the peak RSS of checking and
assembling, which must stay proportional to rows x k (never rows x classes: 1M x 32,093 float64
would be 257 GB per model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, peak_rss, reset_peak_rss

ROWS_PER_SHARD = 20_000
FOLDS = 5


def _save(array: np.ndarray, path: Path) -> dict:
    from inference_core.files import sha256_file

    np.save(path, array)
    return {"file": path.name, "shape": list(array.shape), "dtype": str(array.dtype),
            "sha256": sha256_file(path)}


def _write_output(folder: Path, shard, rows, classes: int, k: int, rng) -> None:
    """A shard's output as its kernel writes it: per member, its rows' k best classes."""
    folder.mkdir(parents=True)
    n = len(shard.rows)
    members = []
    for index, member in enumerate(shard.members):
        indices = rng.integers(0, classes, (n, k), dtype=np.int32)
        probabilities = -np.sort(-rng.random((n, k)), axis=1)
        members.append({"label": member.label,
                        "indices": _save(indices, folder / f"member-{index}.indices.npy"),
                        "probabilities": _save(probabilities,
                                               folder / f"member-{index}.probabilities.npy")})
    manifest = {"format": 1, "shard": shard.name, "num_classes": classes, "members": members,
                "ids": [rows.ids[r] for r in shard.rows]}
    (folder / "shard.json").write_text(json.dumps(manifest))


def measure(n_rows: int, classes: int, k: int) -> dict:
    from kernelpack.fanout.assemble import assemble, check_output
    from kernelpack.fanout.plan import MemberWork, Rows, plan_shards

    rng = np.random.default_rng(0)
    folds = rng.integers(0, FOLDS, n_rows)
    members = [MemberWork(f"se50_f{f}", "se50", f, 1.0, f"{f:064d}") for f in range(FOLDS)]
    members.append(MemberWork("effnet", "effnet", None, 1.0, "f" * 64))
    rows = Rows(tuple(f"{i:07d}" for i in range(n_rows)),
                tuple(f"{i:07d}.jpg" for i in range(n_rows)), (1,) * n_rows)
    shards = plan_shards(members, rows, folds, config={}, code_digest="bench", images="train",
                         rows_per_shard=ROWS_PER_SHARD, models_per_shard=1, top_k=k)
    with tempfile.TemporaryDirectory(prefix="kp-fanout-top-k-") as scratch:
        done = []
        for shard in shards:
            folder = Path(scratch) / shard.name
            _write_output(folder, shard, rows, classes, k, rng)
            done.append((shard, folder))
        on_disk = sum(p.stat().st_size for p in Path(scratch).rglob("*.npy"))
        reset_peak_rss()
        began = time.perf_counter()
        for shard, folder in done:
            check_output(folder, shard, rows)
        checked = time.perf_counter() - began
        written = assemble(done, members, rows, mode="gmean", folds=folds, per_model=True,
                           output=Path(scratch) / "out" / "oof.npz", log=lambda _: None,
                           top_k=k)
        seconds = time.perf_counter() - began
        peak = peak_rss()
        sizes = {p.name: p.stat().st_size for p in written}
    return {"rows": n_rows, "classes": classes, "k": k, "shards": len(shards),
            "downloaded_gb": round(on_disk / 1e9, 2), "check_s": round(checked, 1),
            "check_and_assemble_s": round(seconds, 1), "peak_rss_gb": round(peak / 1e9, 2),
            "written": sizes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout_top_k",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=32_093)
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(json.dumps(measure(args.rows, args.classes, args.k), indent=2))


if __name__ == "__main__":
    main()
