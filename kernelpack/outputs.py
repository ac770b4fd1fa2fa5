"""Where a command writes: one check, run before any work by every command that writes a file,
that the output is a file it may write and none of the files the command reads (through links
too), so that no command ever replaces its own input."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import KernelpackError


def check_output_file(path: str | os.PathLike, option: str = "-o",
                      inputs: Iterable[str | os.PathLike | None] = (), *,
                      makes_folder: bool = False) -> Path:
    """`path` as a file to write: its folder must exist (unless the command `makes_folder`), it
    must not be a folder or a device, nor any of `inputs` (the files the command reads; None
    entries are skipped), which it would replace."""
    path = Path(path)
    if path.is_dir():
        raise KernelpackError(f"{option} {path}: is a folder; pass the path of the file to "
                              "write (e.g. inside that folder)")
    if path.exists() and not path.is_file():
        raise KernelpackError(f"{option} {path}: exists and is not a regular file; pass the "
                              "path of a file to write")
    if not makes_folder and not path.parent.is_dir():
        raise KernelpackError(f"{option} {path}: folder {path.parent} does not exist; create it "
                              "first (mkdir -p) or pick another path")
    if path.exists():
        for source in inputs:
            if source is not None and Path(source).is_file() and path.samefile(source):
                named = "" if Path(source) == path else f" ({source})"
                raise KernelpackError(f"{option} {path}: is the input file itself{named}, which "
                                      "would be replaced; write to another file")
    return path
