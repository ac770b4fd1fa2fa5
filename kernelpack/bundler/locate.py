"""Where a top-level module lives on disk, and the files the bundle carries for it.

Two places are searched: folders of the user's own code (the entry's folder and `--path` dirs),
and the packages installed in this environment (for vendoring). A package is carried whole:
every module and every data file under its folder, so dynamic imports inside it and files read
with `importlib.resources` or `Path(__file__).parent` work unpacked.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError

# A compiled module is tied to one Python version and platform: it cannot travel as source.
EXTENSION_SUFFIXES = (".so", ".pyd")
# Kernels carry code; bigger files belong in a Kaggle dataset.
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Location:
    """Top-level module `name` is the package folder or module file `path`."""

    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.is_dir()


def find_in_folders(name: str, folders: Sequence[Path]) -> Location | None:
    """`name` in the first folder that has it, probed the way Python's path finder does."""
    for folder in folders:
        if (folder / name / "__init__.py").is_file():
            return Location(name, folder / name)
        compiled = sorted(p for p in folder.glob(f"{name}.*") if p.name.endswith(
            EXTENSION_SUFFIXES) and p.name.split(".")[0] == name)
        if compiled:
            return Location(name, compiled[0])
        if (folder / f"{name}.py").is_file():
            return Location(name, folder / f"{name}.py")
    return None


def find_installed(name: str) -> Location | None:
    """`name` as installed in the environment that runs kernelpack, or None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    locations = list(spec.submodule_search_locations or [])
    if spec.origin == "namespace" or len(locations) > 1:
        raise BundleError(
            f"{name}: an installed namespace package spread over {len(locations)} folders "
            f"({', '.join(locations)}) cannot be vendored; pass its folder with --path instead"
        )
    return Location(name, Path(locations[0]) if locations else Path(spec.origin))


def _compiled_error(path: Path, module: str, top: str) -> BundleError:
    return BundleError(
        f"{path}: {module} is a compiled extension module, which cannot be inlined into a "
        f"single-file kernel (it only loads on the Python and platform it was built for); build "
        f"a wheel of {top} (`pip wheel --no-deps`), upload it as a Kaggle dataset, install it in "
        f"the kernel with `pip install --no-index --find-links /kaggle/input/DATASET {top}`, "
        f"and bundle with --exclude {top}"
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
        paths = sorted(p for p in location.path.rglob("*") if p.is_file()
                       and _carried(p.relative_to(location.path)))
        files = {f"{location.name}/{p.relative_to(location.path).as_posix()}": p for p in paths}
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
