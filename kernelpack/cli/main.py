"""The `kernelpack` command: parses arguments, calls the library, prints, picks exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from inference_core.errors import KernelError

from .. import __version__
from ..errors import KernelpackError

# One module per command group, each with `add_commands(subparsers)`. They import only argparse
# and light modules at the top; a handler imports what it needs (torch included) when it runs,
# so `--help` and the commands that need no model start at once.
COMMAND_GROUPS = ("build", "keys", "search", "bundle", "kaggle", "checkpoints", "predict",
                  "wheels", "prototypes", "models", "fanout")


class _OneLineErrors(argparse.ArgumentParser):
    """A bad argument is one line (what is wrong, and where the help is), not the usage block;
    sub-commands inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="kernelpack",
        description="Bundle a PyTorch ensemble into one offline Kaggle kernel and rehearse it.",
    )
    parser.add_argument("--version", action="version", version=f"kernelpack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for group in COMMAND_GROUPS:
        importlib.import_module(f".{group}", __package__).add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (KernelpackError, KernelError) as exc:
        print(f"kernelpack: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the system refused (disk full, no permission) where no check did
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"kernelpack: error: {where}{exc.strerror or exc}; check the path, its permissions "
              "and the free space", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kernelpack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
