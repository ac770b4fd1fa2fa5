"""Progress bars on long host-side work (uploads, encryption, large bundles, searches): when one
shows, and the bars themselves.

One rule for every command: a bar goes to stderr, only when stderr is a terminal and the user
did not pass --quiet, so a pipe, a log file or a test capture never gets bar lines. The CLI
applies the rule (`shows_progress`); library functions only take a `progress` flag and build
their bars here. tqdm is imported when a bar is built, so `kernelpack --help` stays light.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import IO, Any, BinaryIO


def shows_progress(quiet: bool, stream: IO[str] | None = None) -> bool:
    """Whether a command shows progress bars: not with --quiet, and only on a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return not quiet and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def byte_bar(total: int | None, desc: str, enabled: bool) -> Any:  # -> tqdm.tqdm
    """A bar counting bytes (shown as KiB/MiB/GiB and a rate) on stderr; a silent stand-in
    with the same methods when not `enabled`."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not enabled, dynamic_ncols=True)


# A step bar (a search's) shows only once its work has run this long: a search of a few hundred
# rows never draws one.
STEP_BAR_DELAY = 3.0


def step_bar(total: int, desc: str, enabled: bool) -> Any:  # -> tqdm.tqdm
    """A bar of `total` steps on stderr, shown after STEP_BAR_DELAY seconds; a silent stand-in
    with the same methods when not `enabled`."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not enabled,
                delay=STEP_BAR_DELAY, dynamic_ncols=True)


def show_best(bar: Any, metric: str, score: float) -> None:
    """The best score so far, beside a step bar."""
    bar.set_postfix_str(f"best {metric} {score:.4f}", refresh=False)


class ProgressReader:
    """A binary file whose reads advance `bar` by the bytes read (for code that reads a file
    itself, such as hashlib.file_digest)."""

    def __init__(self, stream: BinaryIO, bar: Any) -> None:
        self.stream, self.bar = stream, bar

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.bar.update(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        count = self.stream.readinto(buffer) or 0
        self.bar.update(count)
        return count


def sha256_with_progress(path: str | os.PathLike, bar: Any) -> str:
    """Hex SHA-256 of the file at `path` (as inference_core.files.sha256_file); reading it
    advances `bar` (a byte bar)."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(ProgressReader(stream, bar), "sha256").hexdigest()


class GrowingBar:
    """A byte bar over work found as it goes (its total grows), shown only once that total
    reaches `threshold`: a small job finishes without a bar, a large one shows how far it is."""

    def __init__(self, desc: str, threshold: int, enabled: bool) -> None:
        self.desc, self.threshold, self.enabled = desc, threshold, enabled
        self.total = self.done = 0
        self.bar: Any = None

    def grow(self, size: int) -> None:
        self.total += size
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()
        elif self.enabled and self.total >= self.threshold:
            self.bar = byte_bar(self.total, self.desc, True)
            self.bar.update(self.done)

    def advance(self, size: int) -> None:
        self.done += size
        if self.bar is not None:
            self.bar.update(size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
