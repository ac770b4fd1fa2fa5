"""`-p/--path DIR`: a command's folder given the kaggle CLI's way (`kaggle datasets create -p
DIR`), beside the positional form. Given both ways, the two must name the same folder."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


class OneFolder(argparse.Action):
    """Stores a folder that may be given under several names (a positional and -p/--path, or
    -o and -p); a second, different folder is a usage error rather than a silent choice."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        if values is None:  # the positional, left out
            return
        given = getattr(namespace, self.dest, None)
        if given is not None and os.path.normpath(given) != os.path.normpath(str(values)):
            parser.error(f"two folders given, {given} and {values}; pass the folder once "
                         "(positionally or with -p/--path)")
        setattr(namespace, self.dest, values)


def add_folder_argument(parser: argparse.ArgumentParser, dest: str, help: str,
                        metavar: str = "DIR") -> None:
    """The positional folder `dest`, also accepted as -p/--path; wrap the command's handler in
    `needs_folder` (argparse cannot require one of a positional and an option)."""
    parser.add_argument(dest, nargs="?", action=OneFolder, default=None, metavar=metavar,
                        help=f"{help} (or -p {metavar})")
    parser.add_argument("-p", "--path", dest=dest, action=OneFolder, metavar=metavar,
                        help=f"the same {metavar}, as the kaggle CLI takes it")


def needs_folder(parser: argparse.ArgumentParser, dest: str,
                 handler: Callable[[argparse.Namespace], int], metavar: str = "DIR"
                 ) -> Callable[[argparse.Namespace], int]:
    """`handler`, run only once the folder `dest` was given one way or the other."""
    def run(args: argparse.Namespace) -> int:
        if getattr(args, dest) is None:
            parser.error(f"the folder is missing; pass it as {metavar} or with -p {metavar}")
        return handler(args)

    return run
