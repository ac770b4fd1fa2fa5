"""Where a path the config names by slug lies under an input root, in Kaggle's layouts.

Kaggle used to mount every source at `/kaggle/input/<slug>/` (the flat layout). Today it mounts a
competition at `competitions/<slug>/`, a dataset at `datasets/<owner>/<slug>/`, a Kaggle Model at
`models/<owner>/<model>/<framework>/<variation>/<version>/` and another notebook's output at
`notebooks/<owner>/<slug>/`, and some attachments still appear flat. A config names a path by its
slug (`imet-2019-fgvc6/test`, a model as `<model>/<framework>/...`), never by its owner, and the
path is found in whichever layout its source is mounted; a path named from the root as mounted
(`competitions/imet-2019-fgvc6/test`) is found as named. A slug mounted twice is an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import KernelError


@dataclass(frozen=True)
class Layout:
    name: str
    parent: tuple[str, ...]  # the folders above a source's slug folder; "*" is the owner
    depth: int = 0  # folders between the slug folder and the source's files (a model's three)


FLAT = Layout("flat", ())
LAYOUTS = (FLAT, Layout("competitions", ("competitions",)),
           Layout("datasets", ("datasets", "*")),
           Layout("models", ("models", "*"), depth=3),
           Layout("notebooks", ("notebooks", "*")))
_LAYOUT_FOLDERS = {layout.parent[0] for layout in LAYOUTS[1:]}


class InputLayoutError(KernelError):
    """A slug the config names is mounted more than once under the input root."""


@dataclass(frozen=True)
class InputPath:
    named: str  # as the config names it
    path: Path  # where it is (or would be, when it is not there)
    layout: str | None  # the layout it was found in; None: taken as named

    def describe(self, what: str) -> str:
        """One log line: where the config's `what` was found."""
        how = f"{self.layout} layout" if self.layout else "as named"
        return (f"input {what} {self.named!r}: {self.path} ({how}"
                + (")" if self.path.exists() else ", NOT FOUND)"))


def _mount_points(root: Path, layout: Layout, slug: str) -> Iterator[Path]:
    """Where `layout` would mount a source called `slug` under `root`, each that is there (a
    source is a folder)."""
    folders = [root]
    for part in layout.parent:
        if part == "*":  # the owner: any folder (listed, not globbed: a slug is no pattern)
            folders = [entry for folder in folders if folder.is_dir()
                       for entry in sorted(folder.iterdir()) if entry.is_dir()]
        else:
            folders = [folder / part for folder in folders]
    return (folder / slug for folder in folders if (folder / slug).is_dir())


def find_input(root: Path, named: str) -> InputPath:
    """Where the config's path `named` lies under the input root `root`: under the one source
    mounted as its first part (the slug), in any layout; as named when no source has that slug
    (an absolute path, a file at the root). Raises InputLayoutError when two sources share it."""
    if Path(named).is_absolute():
        return InputPath(named, Path(named), None)
    relative = named.strip("/")
    slug, _, rest = relative.partition("/")
    # Not named by a slug, or named from the root as mounted (`datasets/alice/x/...`).
    if slug in ("", ".", "..") or (slug in _LAYOUT_FOLDERS and os.path.exists(root / relative)):
        return InputPath(named, root / relative, None)
    # One source may be mounted at two points (a link, a bind mount): the same folder.
    mounts: dict[tuple[int, int], tuple[Layout, Path]] = {}
    for layout in LAYOUTS:
        for point in _mount_points(root, layout, slug):
            stat = point.stat()
            mounts.setdefault((stat.st_dev, stat.st_ino), (layout, point))
    if not mounts:
        return InputPath(named, root / relative, None)
    if len(mounts) > 1:
        points = [point.relative_to(root).as_posix() for _, point in mounts.values()]
        # At most one is flat: the others can be named from the root, unambiguously.
        example = next(point.relative_to(root).as_posix() for layout, point in mounts.values()
                       if layout is not FLAT)
        raise InputLayoutError(
            f"{named!r}: {len(points)} sources are mounted as {slug!r} under {root} ("
            + " and ".join(points) + "); attach only one of them to the kernel, or name the "
            f"path from the input root (e.g. {example}{'/' + rest if rest else ''})")
    [(layout, point)] = mounts.values()
    return InputPath(named, point / rest if rest else point, layout.name)


def as_named(relative: str) -> str:
    """A path relative to an input root as a config names it: its layout's folders and owner
    left out (`datasets/alice/imet-models/a.pt` -> `imet-models/a.pt`)."""
    parts = relative.strip("/").split("/")
    for layout in LAYOUTS[1:]:
        above = len(layout.parent)
        if len(parts) > above + 1 and all(
                part in ("*", found) for part, found in zip(layout.parent, parts, strict=False)):
            return "/".join(parts[above:])
    return "/".join(parts)


def source_patterns() -> list[str]:
    """Glob patterns, relative to an input root, of every source's folder in every layout and of
    the folders one level inside it. No deeper: that would list a whole competition (a
    million-image folder)."""
    patterns = []
    for layout in LAYOUTS:
        source = "/".join((*layout.parent, "*", *("*",) * layout.depth))
        patterns += [source, f"{source}/*"]
    return patterns
