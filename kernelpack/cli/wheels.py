"""`kernelpack wheels`: download wheels for Kaggle's platform into a dataset folder."""

from __future__ import annotations

import argparse

from ..kernel.wheels import DEFAULT_PYTHON, PYTHONS
from .folders import OneFolder


def _wheels(args: argparse.Namespace) -> int:
    from ..kernel.wheels import build_wheel_dataset, platform_words

    print(f"downloading wheels for {platform_words(args.python)}")
    result = build_wheel_dataset(args.packages, args.output, python=args.python,
                                 dataset_id=args.id, title=args.title,
                                 on_line=lambda line: print(f"  | {line}", flush=True))
    print(f"wrote {len(result.wheels)} wheels and {result.manifest.name} to {result.folder}: "
          + ", ".join(f"{w['name']} {w['version']}" for w in result.wheels))
    if result.left_out:
        print("  left out (on the Kaggle image, or needed only by what is): "
              + ", ".join(f"{w['name']} {w['version']}" for w in result.left_out))
    print(f"next: `kernelpack dataset push {result.folder}`, then `kernelpack build CONFIG -o "
          f"OUT --wheels {result.folder}` (the dataset joins dataset_sources; the kernel "
          "installs its wheels before your code imports)")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "wheels", help="download wheels of packages the Kaggle image lacks (C extensions) into "
                       "a dataset folder the kernel installs offline")
    command.add_argument("packages", nargs="+", metavar="PKG[==VERSION]",
                         help="packages to download, with their dependencies (those on the "
                              "Kaggle image are left out)")
    command.add_argument("-o", "--output", "-p", "--path", dest="output", action=OneFolder,
                         required=True, metavar="DIR",
                         help="the dataset folder to write (wheels and kernelpack-wheels.json)")
    command.add_argument("--python", choices=PYTHONS, default=DEFAULT_PYTHON,
                         help=f"the kernel's CPython (default {DEFAULT_PYTHON}, Kaggle's image)")
    command.add_argument("--id", default=None, metavar="OWNER/SLUG",
                         help="dataset id: also write dataset-metadata.json (else `dataset push` "
                              "writes it)")
    command.add_argument("--title", default=None, help="dataset title (with --id)")
    command.set_defaults(handler=_wheels)
