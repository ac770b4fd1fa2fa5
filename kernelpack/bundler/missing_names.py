"""Names that old code imports from a package the Kaggle image ships, and that its version lacks.

2019 code imports names that later releases removed: albumentations 0.x's `IAAAdditiveGaussianNoise`
or `albumentations.imgaug`, `albumentations.pytorch.ToTensor`, torch's `torch._six`. The package is
on the image, so the import would only fail in the kernel, after the queue. The installed copy
here stands in for the image's (kernelpack's own environment pins the image's versions).

Judged from the installed source, without importing it (importing torch and albumentations costs
seconds): a name is there when it is a submodule, or when it appears as a word in the module's
file or anywhere in its package's source (packages re-export with `import *`). A name found
nowhere is gone. Only when the source cannot say (a module made at run time, a module-level
`__getattr__`) is the module imported and the name looked up, as `from module import name` would.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

from .imports import ImportRef

_LAZY = re.compile(rb"^def __getattr__\(", re.M)


@cache
def _package_folder(top: str) -> Path | None:
    """Where installed package `top` lies (found without importing it); None for a module file,
    a namespace package or an extension, whose source is judged by importing."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith("__init__.py"):
        return None
    return Path(spec.origin).parent


def _module_file(folder: Path, dotted: str) -> Path | None:
    """The source file of `dotted` (inside the package at `folder`), or None."""
    path = folder.joinpath(*dotted.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _source(path: Path) -> bytes:
    return path.read_bytes()


@cache
def _package_source(folder: Path) -> bytes:
    """All the Python source of a package, read once (torch: about 50 MB)."""
    return b"\n".join(_source(path) for path in sorted(folder.rglob("*.py")))


def _mentions(source: bytes, name: str) -> bool:
    return re.search(rb"\b" + re.escape(name.encode()) + rb"\b", source) is not None


@cache
def _imported(name: str) -> ModuleType | str | None:
    """The installed module `name`; a string when this version has no such module; None when
    it cannot be judged here (it fails for another reason)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.split(".")[0]
        missing = exc.name or ""
        inside = missing != top and (name == missing or name.startswith(f"{missing}."))
        return f"has no module {missing}" if inside and missing.startswith(f"{top}.") else None
    except Exception:  # a package broken here says nothing about the image's
        return None


@cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _version(top: str) -> str:
    """`albumentations 2.0.8`: the installed distribution's version, found without importing."""
    for distribution in _distributions().get(top, ()):
        try:
            return f"{top} {importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return top


def _absent_by_import(ref: ImportRef) -> list[str] | str | None:
    module = _imported(ref.name)
    if not isinstance(module, ModuleType):
        return module
    absent = []
    for name in ref.names:
        if hasattr(module, name):
            continue
        try:
            if importlib.util.find_spec(f"{ref.name}.{name}") is not None:
                continue  # a submodule, imported by the `from` statement
        except (ImportError, ValueError):
            pass
        absent.append(name)
    return absent


def _absent(ref: ImportRef) -> list[str] | str | None:
    """The names of `ref` this version lacks, "has no module X", or None (cannot say)."""
    folder = _package_folder(ref.top)
    if folder is None:
        return _absent_by_import(ref)
    path = _module_file(folder, ref.name)
    if path is None:
        # No such file: a removed module, unless its package makes it at run time (six.moves,
        # a module-level __getattr__) or it is compiled.
        parts = ref.name.split(".")
        depth = 1  # the first missing part: its parent is on disk
        while _module_file(folder, ".".join(parts[:depth + 1])) is not None:
            depth += 1
        parent_path = _module_file(folder, ".".join(parts[:depth]))
        last = parts[depth]
        if parent_path is None or _LAZY.search(_source(parent_path)) \
                or _mentions(_source(parent_path), last) \
                or any(parent_path.parent.glob(f"{last}.*")):
            return _absent_by_import(ref)
        return f"has no module {'.'.join(parts[:depth + 1])}"
    own = _source(path)
    if _LAZY.search(own):
        return _absent_by_import(ref)
    absent = []
    for name in ref.names:
        if _module_file(folder, f"{ref.name}.{name}") is not None or _mentions(own, name):
            continue
        if not _mentions(_package_source(folder), name):
            absent.append(name)
    return absent


def missing_names(ref: ImportRef) -> str | None:
    """Why `ref` (an absolute import of an installed package) fails with this version: a module
    or names it no longer has; None when it works, or cannot be judged here."""
    if not (ref.names or "." in ref.name):
        return None  # `import albumentations`: the package is there
    try:
        if importlib.util.find_spec(ref.top) is None:
            return None
    except (ImportError, ValueError):
        return None
    absent = _absent(ref)
    where = f"{_version(ref.top)} (installed here, standing in for the Kaggle image's)"
    if isinstance(absent, str):
        return f"{where} {absent}"
    if not absent:
        return None
    return (f"{where} has no {', '.join(absent)}; it was removed or renamed since the code was "
            "written")
