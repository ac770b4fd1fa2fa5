"""`kernelpack fanout`: `predict --per-model [--folds]` run as many Kaggle kernels at once; the
work is in `kernelpack.fanout` (imported when the command runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..progress import shows_progress
from .kaggle import kaggle_target
from .numbers import finite_float, int_at_least


def _fanout(args: argparse.Namespace) -> int:
    from inference_core.kpenc import load_key

    from ..fanout.run import FanoutRequest, run_fanout

    request = FanoutRequest(
        config=args.config, images=args.images, output=args.output, sample=args.sample,
        models=args.models, per_model=args.per_model, folds=args.folds,
        kaggle_images=args.kaggle_images, code=args.code, wheels=args.wheels,
        key=load_key(args.key) if args.key else None, rows_per_shard=args.rows_per_shard,
        models_per_shard=args.models_per_shard, top_k=args.top_k, max_running=args.max_running,
        retries=args.retries, state=args.state, kaggle_url=args.kaggle_url,
        poll_seconds=args.poll_seconds)
    try:
        summary = run_fanout(request, log=(lambda _: None) if args.quiet else print,
                             progress=shows_progress(args.quiet))
    except KeyboardInterrupt:
        print("kernelpack: interrupted; the shards pushed keep running on Kaggle and the "
              "verified ones are kept: run the same command again to follow them and go on",
              file=sys.stderr)
        return 130
    print(f"shards: {summary.shards} ({summary.skipped} verified before, {summary.done} "
          f"verified now, {len(summary.failed)} failed; {summary.pushed} pushed, "
          f"{summary.retried} retried)")
    print(f"kernel time: {summary.run_seconds:.1f} s computing in the shard kernels, "
          f"{summary.session_seconds:.1f} s from push to checked output (queue and start-up "
          f"included), {summary.wall_seconds:.1f} s wall; quota left: {summary.quota}")
    for failure in summary.failed:
        print(f"FAILED {failure.shard}: {failure.reason}", file=sys.stderr)
        if failure.log_tail:
            print("  " + failure.log_tail.replace("\n", "\n  "), file=sys.stderr)
    if summary.failed:
        print(f"kernelpack: {len(summary.failed)} shards failed; nothing was written (no file "
              "is assembled with a shard missing); fix the cause and run the same command "
              "again: the verified shards are kept", file=sys.stderr)
        return 1
    for path in summary.written:
        print(f"wrote {path}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """`kernelpack fanout`."""
    fanout = commands.add_parser(
        "fanout", parents=[kaggle_target()],
        help="run `predict --per-model` as many Kaggle kernels, and assemble its files",
        description="Split predict's work (models x rows; out-of-fold with --folds) into "
                    "shards, run each as a Kaggle kernel with the kernel's own runtime, at "
                    "most --max-running at once, verify every output and write exactly the "
                    "files `kernelpack predict` writes. Run it again to resume: verified "
                    "shards are skipped, running ones followed, failed ones pushed again.")
    fanout.add_argument("config", type=Path, help="ensemble YAML (its kernel section names "
                                                  "the sources the shard kernels attach)")
    fanout.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="the images here, as for predict: the rows and their order")
    fanout.add_argument("--kaggle-images", default=None, metavar="PATH",
                        help="where the kernels find those images under their input (a slug "
                             "path such as digits/train); default: the config's test.images")
    fanout.add_argument("--sample", type=Path, default=None, metavar="CSV",
                        help="as for predict: the id column gives the rows and their order")
    fanout.add_argument("--models", type=Path, action="append", default=[], metavar="DIR",
                        help="the checkpoints here (hashed; each kernel checks its copy on "
                             "Kaggle is the same); default: the config's input_roots")
    fanout.add_argument("-o", "--output", type=Path, required=True, metavar="PREDS.npy",
                        help="as for predict (with --folds only the per-entry files)")
    fanout.add_argument("--per-model", action="store_true",
                        help="also write PREDS.<name>.npy for each config entry")
    fanout.add_argument("--folds", type=Path, default=None, metavar="FOLDS",
                        help="each row's fold: a folds group's fold model runs only on the "
                             "rows it held out, and PREDS.<name>.npy is out-of-fold")
    fanout.add_argument("--top-k", type=int_at_least(1), default=None, metavar="K",
                        help="as for predict: keep each row's K best classes, written as top-k "
                             ".npz files (-o PREDS.npz)")
    fanout.add_argument("--rows-per-shard", type=int_at_least(1), default=1000, metavar="N",
                        help="images per shard kernel (default 1000)")
    fanout.add_argument("--models-per-shard", type=int_at_least(1), default=1, metavar="N",
                        help="models per shard kernel, for test rows (default 1)")
    fanout.add_argument("--max-running", type=int_at_least(1), default=2, metavar="N",
                        help="shard kernels running at once (Kaggle's limit on GPU sessions; "
                             "default 2)")
    fanout.add_argument("--retries", type=int_at_least(0), default=2, metavar="N",
                        help="pushes again of a failed shard in one run (default 2)")
    fanout.add_argument("--state", type=Path, default=None, metavar="DIR",
                        help="what was pushed and verified (default: PREDS.fanout beside -o)")
    fanout.add_argument("--poll-seconds", type=finite_float(0.0, exclusive=True), default=10.0,
                        metavar="S", help="seconds between status checks (default 10)")
    fanout.add_argument("--code", action="append", default=[], metavar="PATH",
                        help="your own package folder or module file, bundled into every shard "
                             "(repeatable; kernel.code of the config too)")
    fanout.add_argument("--wheels", action="append", default=[], metavar="DIR",
                        help="a wheel dataset folder from `kernelpack wheels` (repeatable), as "
                             "for build: every shard attaches its dataset and installs its "
                             "packages instead of bundling them")
    fanout.add_argument("--key", default=None, metavar="KEYFILE",
                        help="key file, for .kpenc models (embedded: the kernels must be "
                             "private)")
    fanout.add_argument("--quiet", action="store_true", help="no log lines, no progress bar")
    fanout.set_defaults(handler=_fanout)
