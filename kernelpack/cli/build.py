"""`kernelpack build` and `kernelpack run-local`: make a kernel, and run it as Kaggle would."""

from __future__ import annotations

import argparse
import sys

from ..kernel.sandbox import NETWORK_MODES
from ..progress import shows_progress
from .folders import OneFolder, add_folder_argument, needs_folder
from .numbers import finite_float


def _build(args: argparse.Namespace) -> int:
    from inference_core.kpenc import load_key

    from ..kernel.build import build_kernel

    key = load_key(args.key) if args.key else None
    result = build_kernel(args.config, args.output, key=key, code=args.code, wheels=args.wheels,
                          progress=shows_progress(args.quiet), notebook=args.notebook,
                          exclude=args.exclude, models=args.models)
    print(f"wrote {result.kernel} ({result.size_bytes / 1024:.1f} KiB, built in "
          f"{result.seconds:.2f} s) and {result.metadata}")
    if result.code_modules:
        shown = result.code_modules[:12]
        more = f", and {len(result.code_modules) - len(shown)} more" \
            if len(result.code_modules) > len(shown) else ""
        print(f"  your code: {len(result.code_modules)} modules ({', '.join(shown)}{more})")
    for line in result.left_out:
        print(f"  left out {line}")
    for warning in result.warnings:
        print(f"kernelpack: warning: {warning}", file=sys.stderr)
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from ..kernel.sandbox import run_local

    try:
        result = run_local(args.kernel, args.input, root=args.root, budget=args.budget,
                           network=args.network, test_dir=args.test_dir,
                           on_line=lambda line: print(f"  | {line}", flush=True),
                           python=args.python)
    except KeyboardInterrupt:
        print("kernelpack: run-local interrupted (Ctrl-C); the kernel was stopped with it",
              file=sys.stderr)
        return 130
    where = f"sandbox {result.root} (network {result.network}), log {result.log}" + (
        f", kernel run by {result.python}" if result.python else "")
    if result.timed_out:
        print(f"kernelpack: {result.stopped}; {where}", file=sys.stderr)
        return 1
    if result.returncode != 0:
        print(f"kernelpack: kernel exited with code {result.returncode} "
              f"({result.last_line()}); {where}", file=sys.stderr)
        return 1
    if result.submission is None:
        print(f"kernelpack: kernel finished but wrote no {result.submission_file}; {where}",
              file=sys.stderr)
        return 1
    executed = f", executed notebook {result.notebook}" if result.notebook else ""
    print(f"submission written: {result.submission} ({result.seconds:.1f} s; {where}{executed})")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser("build", help="bundle the runtime and a config into kernel.py")
    build.add_argument("config", help="ensemble YAML")
    build.add_argument("-o", "--output", "-p", "--path", dest="output", action=OneFolder,
                       required=True, metavar="DIR", help="output folder")
    build.add_argument("--key", default=None,
                       help="key file: embed it so the kernel decrypts .kpenc models "
                            "(refused unless kernel.is_private is true)")
    build.add_argument("--wheels", action="append", default=[], metavar="DIR",
                       help="a wheel dataset folder from `kernelpack wheels` (repeatable): its "
                            "packages are installed by the kernel, not bundled, and its dataset "
                            "joins dataset_sources")
    build.add_argument("--code", action="append", default=[], metavar="PATH",
                       help="your own package folder or module file (repeatable; also: "
                            "kernel.code), imported before the models are built, for `package."
                            "module:callable` archs, custom transforms and @register_model "
                            "calls: bundled as far as the kernel needs it (a module whose "
                            "imports the kernel cannot meet is left out, with one line)")
    build.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                       help="leave these modules of your code out (repeatable): a glob over "
                            "module names or paths (imet.train, 'scripts/*', train.py)")
    build.add_argument("--models", action="append", default=[], metavar="DIR",
                       help="the folder of the config's checkpoints (repeatable): the modules "
                            "their archs and custom transforms name are then checked to import "
                            "in the kernel, and only what they need is bundled")
    build.add_argument("--notebook", action="store_true",
                       help="write kernel.ipynb, a notebook kernel (a cell saying what it is, "
                            "then the bundle in one code cell), instead of kernel.py")
    build.add_argument("--quiet", action="store_true",
                       help="no progress bar (one shows only for large --code, on a terminal)")
    build.set_defaults(handler=_build)

    run = commands.add_parser("run-local", help="run a built kernel offline, as Kaggle would")
    add_folder_argument(run, "kernel", "folder written by `kernelpack build` (or its kernel.py "
                                       "or kernel.ipynb)")
    run.add_argument("--input", required=True, help="folder laid out like /kaggle/input")
    run.add_argument("--budget", type=finite_float(0.0, exclusive=True), default=None,
                     help="wall-clock budget in seconds (kill the kernel after it)")
    run.add_argument("--root", default=None,
                     help="sandbox folder (default: KERNEL_DIR/sandbox, recreated each run)")
    run.add_argument("--test-dir", default=None,
                     help="swap in this folder of test images (and a matching sample "
                          "submission), as Kaggle swaps in the hidden test set at rerun")
    run.add_argument("--network", choices=NETWORK_MODES, default="auto",
                     help="how to cut the network: a namespace (unshare), an in-process socket "
                          "guard, or auto (unshare where it works)")
    run.add_argument("--python", default=None, metavar="PYTHON",
                     help="run a script kernel with this interpreter instead of this one: a "
                          "Python set up like Kaggle's image (its version, e.g. 3.12, and "
                          "packages), to rehearse the kernel where Kaggle runs it")
    run.set_defaults(handler=needs_folder(run, "kernel", _run_local))
