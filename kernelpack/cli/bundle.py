"""`kernelpack bundle`: the argparse wiring and the report; the work is `bundle.write_bundle`."""

from __future__ import annotations

import argparse
import sys
import time

from ..bundler.bundle import write_bundle
from ..progress import shows_progress


def _bundle(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = write_bundle(args.entry, args.output, args.path, args.vendor, args.include,
                          args.exclude, progress=shows_progress(args.quiet))
    seconds = time.perf_counter() - start
    print(f"wrote {args.output} ({result.size_bytes / 1024:.1f} KiB, {len(result.files)} files, "
          f"built in {seconds:.2f} s)")
    for label, names in (("your code", result.local), ("vendored", result.vendored),
                         ("expected from the Kaggle image", result.from_image)):
        if names:
            print(f"  {label}: {', '.join(names)}")
    for warning in result.warnings:
        print(f"kernelpack: warning: {warning}", file=sys.stderr)
    if result.missing:
        print("kernelpack: warning: imported but found nowhere and not on the Kaggle image "
              f"list (the kernel fails if it reaches them): {', '.join(result.missing)}",
              file=sys.stderr)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `bundle` to the `kernelpack` command's subparsers."""
    command = commands.add_parser(
        "bundle", help="bundle a script and the packages it imports into one .py file")
    command.add_argument("entry", help="the script to run, as `python ENTRY` runs it (with "
                                       "relative imports: as `python -m package.entry`)")
    command.add_argument("-o", "--output", required=True,
                         help="the single-file script to write (never the entry or a file "
                              "inside the code it bundles)")
    command.add_argument("-p", "--path", action="append", default=[], metavar="DIR",
                         help="a folder holding your top-level packages or modules (repeatable; "
                              "the entry's own folder is searched first)")
    command.add_argument("--vendor", action="append", default=[], metavar="PKG",
                         help="inline this installed pure-Python package even if the Kaggle "
                              "image has it (packages the image lacks are inlined anyway)")
    command.add_argument("--include", action="append", default=[], metavar="MODULE",
                         help="a module only imported dynamically, e.g. by "
                              "importlib.import_module (repeatable)")
    command.add_argument("--exclude", action="append", default=[], metavar="NAME",
                         help="a top-level package the kernel gets elsewhere (a wheel dataset); "
                              "never inlined")
    command.add_argument("--quiet", action="store_true",
                         help="no progress bar (one shows only for large inputs, on a terminal)")
    command.set_defaults(handler=_bundle)
