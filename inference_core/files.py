"""File helpers shared by the kernel and the host: a file's SHA-256, and writing a file so that
its final name never holds half of it. Standard library only (this module runs in kernels)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes, read in blocks (memory stays small for any size)."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path` (`.NAME.partial`) for writing. On a clean exit it is
    flushed to disk and renamed to `path`, so `path` is always the old file or the whole new one
    (a crash, a full disk or a killed kernel leave no half file under it); on an error the
    temporary file is removed and the error passes on."""
    if "w" not in mode:
        raise ValueError(f"atomic_write opens files for writing ('w' or 'wb'), got mode {mode!r}")
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
