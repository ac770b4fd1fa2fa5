"""Where a top-level module lives on disk, and the files the bundle carries for it.

Two places are searched: folders of the user's own code (the entry's folder and `--path` dirs),
and the packages installed in this environment (for vendoring). A package is carried whole:
every module and every data file under its folder, so dynamic imports inside it and files read
with `importlib.resources` or `Path(__file__).parent` work unpacked. A namespace package (PEP
420: folders without `__init__.py`) is carried as the union of its portions, merged into one
folder, the first portion winning a file both have, as the import system resolves it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError

# A compiled module is tied to one Python version and platform: it cannot travel as source.
EXTENSION_SUFFIXES = (".so", ".pyd")
# Kernels carry code; bigger files belong in a Kaggle dataset.
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Location:
    """Top-level module `name` is the package folder or module file `path`; for a namespace
    package, `portions` are all its folders in path order (`path` is the first)."""

    name: str
    path: Path
    portions: tuple[Path, ...] = ()

    @property
    def is_package(self) -> bool:
        return self.path.is_dir()

    @property
    def is_namespace(self) -> bool:
        return bool(self.portions)

    def holds(self, path: Path) -> bool:
        """True when `path` is this module's file or lies under one of its folders."""
        return any(path == folder or folder in path.parents
                   for folder in self.portions or (self.path,))


def find_in_folders(name: str, folders: Sequence[Path]) -> Location | None:
    """`name` probed in `folders` the way Python's path finder does: the first regular package
    or module wins; otherwise the folders named `name` in all of them make a namespace package."""
    portions = []
    for folder in folders:
        if (folder / name / "__init__.py").is_file():
            return Location(name, folder / name)
        compiled = sorted(p for p in folder.glob(f"{name}.*") if p.name.endswith(
            EXTENSION_SUFFIXES) and p.name.split(".")[0] == name)
        if compiled:
            return Location(name, compiled[0])
        if (folder / f"{name}.py").is_file():
            return Location(name, folder / f"{name}.py")
        if (folder / name).is_dir():
            portions.append(folder / name)
    return Location(name, portions[0], tuple(portions)) if portions else None


@contextmanager
def _search_path(pythonpath: bool) -> Iterator[None]:
    """sys.path, or without `pythonpath` as `python -E` has it (no PYTHONPATH folders)."""
    extra = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    saved = sys.path[:]
    if not pythonpath and not sys.flags.ignore_environment:
        sys.path[:] = [p for p in saved if not p or os.path.abspath(p) not in extra]
    try:
        yield
    finally:
        sys.path[:] = saved


def _find_spec(name: str, pythonpath: bool) -> Location | None:
    try:
        with _search_path(pythonpath):
            spec = importlib.util.find_spec(name)
            # read inside: a namespace package's path is recomputed when sys.path changes
            locations = [Path(p) for p in (spec and spec.submodule_search_locations) or []]
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in ("built-in", "frozen"):
        return None
    if spec.origin in (None, "namespace"):  # a namespace package (origin None since 3.7)
        return Location(name, locations[0], tuple(locations)) if locations else None
    return Location(name, locations[0] if locations else Path(spec.origin))


def find_installed(name: str) -> Location | None:
    """`name` as installed in the environment that runs kernelpack, or None. An installed
    namespace package comes with all its portions. PYTHONPATH is a shell's setting, not what is
    installed: it is searched only for a name found nowhere else."""
    return _find_spec(name, pythonpath=False) or _find_spec(name, pythonpath=True)


def _compiled_error(path: Path, module: str, top: str) -> BundleError:
    return BundleError(
        f"{path}: {module} is a compiled extension module, which cannot be inlined into a "
        f"single-file kernel (it only loads on the Python and platform it was built for); get "
        f"its wheels for Kaggle with `kernelpack wheels PKG -o DIR` (PKG: the package that "
        f"provides {top}), upload it as a Kaggle dataset (`kernelpack dataset push DIR`), and "
        f"either build with --wheels DIR (the kernel installs it before your code) or bundle "
        f"with --exclude {top} and install it in your script (`pip install --no-index "
        f"--find-links /kaggle/input/DATASET PKG`)"
    )


def _carried(path: Path) -> bool:
    """False for caches and hidden files, which a kernel never needs."""
    return not any(part == "__pycache__" or part.startswith(".") for part in path.parts) \
        and path.suffix not in (".pyc", ".pyo")


def files_of(location: Location) -> dict[str, bytes]:
    """`{"pkg/sub/mod.py": bytes}` for everything the bundle must carry for `location`, sorted.

    Raises BundleError for a compiled extension module or a file too big for a kernel."""
    if not location.is_package:
        files = {location.path.name: location.path}
    else:
        files = {}
        for folder in location.portions or (location.path,):
            paths = sorted(p for p in folder.rglob("*") if p.is_file()
                           and _carried(p.relative_to(folder)))
            for path in paths:  # an earlier portion's file wins, as on import
                files.setdefault(f"{location.name}/{path.relative_to(folder).as_posix()}", path)
        files = dict(sorted(files.items()))
    for relative, path in files.items():  # check everything before reading anything
        if path.name.endswith(EXTENSION_SUFFIXES):
            module = ".".join([*relative.split("/")[:-1], path.name.split(".")[0]])
            raise _compiled_error(path, module, location.name)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BundleError(
                f"{path}: {size / 2**20:.1f} MiB is too big to carry inside kernel.py (limit "
                f"{MAX_FILE_BYTES / 2**20:.0f} MiB a file); put it in a Kaggle dataset and read "
                f"it from /kaggle/input, or move it out of package {location.name}"
            )
    return {relative: path.read_bytes() for relative, path in files.items()}
