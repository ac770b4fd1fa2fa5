"""The `kernelpack` command: parses arguments, calls the library, prints, picks exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from inference_core.errors import KernelError

from . import __version__
from .build import build_kernel
from .errors import KernelpackError
from .sandbox import NETWORK_MODES, run_local


def _build(args: argparse.Namespace) -> int:
    result = build_kernel(args.config, args.output)
    print(f"wrote {result.kernel} ({result.size_bytes / 1024:.1f} KiB, built in "
          f"{result.seconds:.2f} s) and {result.metadata}")
    return 0


def _run_local(args: argparse.Namespace) -> int:
    result = run_local(args.kernel, args.input, root=args.root, budget=args.budget,
                       network=args.network, on_line=lambda line: print(f"  | {line}", flush=True))
    where = f"sandbox {result.root} (network cut: {result.network_cut}), log {result.log}"
    if result.timed_out:
        print(f"kernelpack: kernel killed at the {args.budget:g} s budget; {where}",
              file=sys.stderr)
        return 1
    if result.returncode != 0:
        print(f"kernelpack: kernel exited with code {result.returncode}; {where}",
              file=sys.stderr)
        return 1
    if result.submission is None:
        print(f"kernelpack: kernel finished but wrote no submission.csv; {where}",
              file=sys.stderr)
        return 1
    print(f"submission written: {result.submission} ({result.seconds:.1f} s; {where})")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernelpack",
        description="Bundle a PyTorch ensemble into one offline Kaggle kernel and rehearse it.",
    )
    parser.add_argument("--version", action="version", version=f"kernelpack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="bundle the runtime and a config into kernel.py")
    build.add_argument("config", help="ensemble YAML")
    build.add_argument("-o", "--output", required=True, help="output folder")
    build.set_defaults(handler=_build)

    run = commands.add_parser("run-local", help="run a built kernel offline, as Kaggle would")
    run.add_argument("kernel", help="folder written by `kernelpack build` (or its kernel.py)")
    run.add_argument("--input", required=True, help="folder laid out like /kaggle/input")
    run.add_argument("--budget", type=float, default=None,
                     help="wall-clock budget in seconds (kill the kernel after it)")
    run.add_argument("--root", default=None,
                     help="sandbox folder (default: KERNEL_DIR/sandbox, recreated each run)")
    run.add_argument("--network", choices=NETWORK_MODES, default="auto",
                     help="how to cut the network: a namespace (unshare), an in-process socket "
                          "guard, or auto (unshare where it works)")
    run.set_defaults(handler=_run_local)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (KernelpackError, KernelError) as exc:
        print(f"kernelpack: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
