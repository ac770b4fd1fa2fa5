"""Bundle an entry script and every module it needs into one self-contained Python file.

The engine follows absolute imports from the entry. Each top-level name is, in this order:
left out (`exclude`); standard library (never inlined, so a build on 3.11 runs on 3.12); the
user's own code, found in the entry's folder or a `--path` dir (inlined whole, data files
included); an installed package to vendor (asked with `vendor`, or any one the Kaggle image does
not ship, see `kaggle_image`); or expected from the image. The output is deterministic (sorted
files, gzip without a timestamp), so identical inputs give byte-identical scripts. The runtime
side is `templates/bundle_bootstrap.py`.
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import read_template
from ..errors import BundleError
from .image_packages import image_ships
from .imports import ImportRef, scan_imports
from .locate import Location, files_of, find_in_folders, find_installed

PAYLOAD_LINE = 96
# Not in sys.stdlib_module_names, yet never a file to inline.
_ALWAYS_THERE = {"__main__"}


@dataclass(frozen=True)
class Entry:
    """The script a bundle runs as `__main__`.

    `path` is where it lies inside the bundle ("main.py", or "app/main.py" for module `app.main`
    of package `app`, which then runs like `python -m app.main`); `folder` is searched first for
    the modules it imports (its own folder, or the folder that holds its package)."""

    path: str
    source: bytes
    module: str | None = None
    folder: Path | None = None


@dataclass(frozen=True)
class Bundle:
    text: str
    files: tuple[str, ...]
    local: tuple[str, ...]
    vendored: tuple[str, ...]
    from_image: tuple[str, ...]
    # "name (where it is imported)": not found anywhere and not on the image list
    missing: tuple[str, ...]

    @property
    def size_bytes(self) -> int:
        return len(self.text.encode("utf-8"))


def read_entry(path: str | Path) -> Entry:
    """The entry script at `path`; inside a package (folders with `__init__.py`) it runs as
    that package's module, so its relative imports work."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: entry script not found; pass the .py file to bundle")
    parts, folder = [path.stem], path.parent.resolve()
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if len(parts) == 1:
        return Entry(path.name, path.read_bytes(), None, folder)
    if path.stem == "__init__" or not all(part.isidentifier() for part in parts):
        raise BundleError(f"{path}: cannot run as module {'.'.join(parts)!r}; use a module file "
                          "with an identifier name inside the package (e.g. pkg/__main__.py)")
    return Entry("/".join([*parts[:-1], path.name]), path.read_bytes(), ".".join(parts), folder)


def _is_stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name in _ALWAYS_THERE


@dataclass
class _Walk:
    """The import graph as it is discovered: what each top-level name resolved to."""

    folders: list[Path]
    vendor: set[str]
    exclude: set[str]
    files: dict[str, bytes] = field(default_factory=dict)
    local: dict[str, Location] = field(default_factory=dict)
    vendored: dict[str, Location] = field(default_factory=dict)
    from_image: set[str] = field(default_factory=set)
    missing: dict[str, str] = field(default_factory=dict)

    def decided(self, name: str) -> bool:
        return any(name in group for group in (self.local, self.vendored, self.from_image,
                                               self.missing, self.exclude))

    def need(self, ref: ImportRef, where: str) -> None:
        """Resolve the top-level name of `ref` (imported at `where`), inlining what it needs."""
        name = ref.top
        if self.decided(name):
            return
        if _is_stdlib(name):
            shadow = find_in_folders(name, self.folders)
            if shadow is not None:
                raise BundleError(
                    f"{shadow.path}: named like the standard library module {name!r} (imported "
                    f"at {where}), so it would shadow it; rename it, or move it into a package"
                )
            return
        location = find_in_folders(name, self.folders)
        if location is not None:
            self.local[name] = location
            self._add(location)
            return
        if ref.optional and name not in self.vendor:
            return  # a fallback import (inside try/except ImportError): the kernel copes
        if name not in self.vendor and image_ships(name):
            self.from_image.add(name)
            return
        location = find_installed(name)
        if location is None:
            if name in self.vendor:
                raise BundleError(f"--vendor {name}: not installed in this environment "
                                  f"({sys.executable}); pip install it here, then bundle again")
            self.missing[name] = where
            return
        self.vendored[name] = location
        self._add(location)

    def _add(self, location: Location) -> None:
        carried = files_of(location)
        self.files.update(carried)
        for relative, data in carried.items():
            if relative.endswith(".py"):
                self.scan(data, f"{location.path.parent / relative}", relative)

    def scan(self, source: bytes, filename: str, label: str) -> list[ImportRef]:
        try:
            refs = scan_imports(source, filename)
        except SyntaxError as exc:
            raise BundleError(f"{filename}:{exc.lineno}: does not parse under Python "
                              f"{sys.version_info[0]}.{sys.version_info[1]} ({exc.msg}); fix it, "
                              "or leave its package out with --exclude") from None
        for ref in refs:
            if ref.level == 0:
                self.need(ref, f"{label}:{ref.line}")
        return refs


def _check_included(module: str, walk: _Walk) -> None:
    """`--include a.b.c` must name a module that the bundle now carries (or the image has)."""
    top = module.split(".")[0]
    if _is_stdlib(top) or top in walk.missing:
        where = "the standard library" if _is_stdlib(top) else "in no --path folder and not " \
            "installed here"
        raise BundleError(f"--include {module}: {top} is {where}; include your own or vendored "
                          "modules, and add their folder with --path")
    stem = module.replace(".", "/")
    carried = {f"{stem}.py", f"{stem}/__init__.py"} & walk.files.keys()
    if "." in module and top not in walk.from_image | walk.exclude and not carried:
        raise BundleError(f"--include {module}: package {top} has no module {stem}.py or "
                          f"{stem}/__init__.py; check the name")


def encode_payload(files: dict[str, bytes]) -> str:
    """base64 of gzip(`[[path, size], ...]` as one JSON line, then the bytes in that order)."""
    names = sorted(files)
    index = json.dumps([[name, len(files[name])] for name in names], separators=(",", ":"))
    blob = index.encode("ascii") + b"\n" + b"".join(files[name] for name in names)
    return base64.b64encode(gzip.compress(blob, compresslevel=9, mtime=0)).decode("ascii")


def render(entry: Entry, files: dict[str, bytes]) -> str:
    """The single-file script that unpacks `files` (which include the entry) and runs it."""
    payload = encode_payload(files)
    lines = "\n".join(f"    {payload[i:i + PAYLOAD_LINE]!r}"
                      for i in range(0, len(payload), PAYLOAD_LINE))
    bootstrap = read_template("bundle_bootstrap.py")
    name = entry.path.rsplit("/", 1)[-1].replace("\n", " ")
    return (bootstrap.replace("__KERNELPACK_ENTRY_NAME__", name)
            .replace("__KERNELPACK_ENTRY__", repr((entry.path, entry.module)))
            .replace("__KERNELPACK_PAYLOAD__", lines))


def bundle(entry: Entry, paths: Sequence[str | Path] = (), vendor: Iterable[str] = (),
           include: Iterable[str] = (), exclude: Iterable[str] = (),
           code: Sequence[Location] = ()) -> Bundle:
    """Bundle `entry` with the modules it imports, found in `entry.folder` then `paths`.

    `vendor`: installed packages to inline even if the Kaggle image has them; `include`: modules
    only imported dynamically (`importlib.import_module(name)`); `exclude`: top-level names the
    kernel gets elsewhere (a wheel dataset); `code`: the user's own packages or modules, inlined
    whole whether or not anything imports them (`kernelpack build --code`). Raises BundleError
    with the fix for bad input."""
    folders = [] if entry.folder is None else [entry.folder]
    for path in map(Path, paths):
        if not path.is_dir():
            raise BundleError(f"--path {path}: not a folder; pass the folder that holds your "
                              "top-level packages or modules")
        folders.append(path.resolve())
    for name in vendor:
        if not name.isidentifier() or _is_stdlib(name):
            raise BundleError(f"--vendor {name}: name an installed top-level package (e.g. "
                              "pretrainedmodels), not a submodule or a standard library module")
    walk = _Walk(folders, set(vendor), set(exclude))
    for location in code:  # decided first: the user's module wins over an installed namesake
        walk.local[location.name] = location
        walk._add(location)

    if entry.module is not None:
        walk.need(ImportRef(entry.module, 0), entry.path)
    else:
        for ref in walk.scan(entry.source, entry.path, entry.path):
            if ref.level:
                raise BundleError(
                    f"{entry.path}:{ref.line}: relative import `from {'.' * ref.level}"
                    f"{ref.name} import ...` in a script outside a package; add an __init__.py "
                    "to its folder (it then runs like `python -m package.script`), or import "
                    "absolutely")
    for module in [*sorted(walk.vendor), *include]:
        walk.need(ImportRef(module, 0), f"--vendor/--include {module}")
    for module in include:
        _check_included(module, walk)

    files = dict(walk.files)
    if entry.module is None:
        clash = [name for name in files if name.split("/")[0] in
                 (entry.path, entry.path.removesuffix(".py"))]
        if clash:
            raise BundleError(f"{entry.path}: the entry script has the name of bundled module "
                              f"{clash[0]}; rename the script")
        files[entry.path] = entry.source
    return Bundle(
        text=render(entry, files),
        files=tuple(sorted(files)),
        local=tuple(sorted(walk.local)),
        vendored=tuple(sorted(walk.vendored)),
        from_image=tuple(sorted(walk.from_image)),
        missing=tuple(f"{name} ({where})" for name, where in sorted(walk.missing.items())),
    )


def write_bundle(entry_path: str | Path, output: str | Path, paths: Sequence[str | Path] = (),
                 vendor: Iterable[str] = (), include: Iterable[str] = (),
                 exclude: Iterable[str] = ()) -> Bundle:
    """`kernelpack bundle`: bundle the script at `entry_path` into the file `output`."""
    result = bundle(read_entry(entry_path), paths, vendor, include, exclude)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(result.text, encoding="utf-8")
    return result
