"""File helpers shared by the kernel and the host: a file's SHA-256, reading a CSV as every
reader here does, and writing a file so that its final name never holds half of it. Standard
library only (this module runs in kernels)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def open_csv(path: str | os.PathLike) -> IO[str]:
    """A CSV file for reading, as UTF-8 with or without a byte-order mark (a spreadsheet saves
    one; pandas, which the host's searches use, skips it too)."""
    return open(path, newline="", encoding="utf-8-sig")


# Linux: a file with no name in a folder, given one only when it is complete (linkat).
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes, read in blocks (memory stays small for any size)."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _unnamed_file(folder: Path, permissions: int) -> int | None:
    """A descriptor of a new, nameless file in `folder`, or None where that is not possible
    (not Linux, a file system without O_TMPFILE, no /proc to name it through)."""
    if not _O_TMPFILE or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, _O_TMPFILE | os.O_WRONLY, permissions)
    except OSError:
        return None


def _link(fd: int, name: Path) -> None:
    """Give the nameless file `fd` the name `name`. A folder descriptor makes os.link use
    linkat(AT_SYMLINK_FOLLOW), which follows /proc/self/fd/N to the file itself."""
    folder = os.open(name.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(f"/proc/self/fd/{fd}", name.name, dst_dir_fd=folder)
    finally:
        os.close(folder)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                 newline: str | None = None, private: bool = False) -> Iterator[IO]:
    """Open a new file beside `path` for writing. On a clean exit it is flushed to disk and
    renamed to `path`, so `path` is always the old file or the whole new one (a crash, a full
    disk or a killed kernel leave no half file under it); on an error nothing is left and the
    error passes on.

    On Linux the data goes to a nameless file (O_TMPFILE) that gets a name only once complete, so
    no partial file is ever visible; elsewhere to `.NAME.partial`, removed on error. `private`:
    the file is created mode 0600 (decrypted weights, keys), never readable by others on the way.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write opens files for writing ('w' or 'wb'), got mode {mode!r}")
    path = Path(path)
    permissions = 0o600 if private else 0o666  # the process umask applies on top
    fd = _unnamed_file(path.parent, permissions)
    partial = None
    if fd is None:
        partial = path.with_name(f".{path.name}.partial")
        partial.unlink(missing_ok=True)  # a stale one may have other permissions
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, permissions)
    named = None
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            if partial is None:  # name the complete file, then move it over the target
                named = path.with_name(f".{path.name}.{os.urandom(6).hex()}.partial")
                _link(handle.fileno(), named)
        os.replace(named or partial, path)
    except BaseException:
        for leftover in (named, partial):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
