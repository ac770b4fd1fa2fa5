"""Bundle an entry script and every module it needs into one self-contained Python file.

The engine follows absolute imports from the entry. Each top-level name is, in this order:
left out (`exclude`); standard library (never inlined, so a build on 3.11 runs on 3.12); the
user's own code, found in the entry's folder or a `--path` dir (inlined whole, data files
included; namespace packages too); an installed package to vendor (asked with `vendor`, or any
one the Kaggle image does not ship, see `image_packages`); or expected from the image. The output
is deterministic (sorted files, gzip without a timestamp), so identical inputs give
byte-identical scripts. The runtime side is `templates/bundle_bootstrap.py`.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import read_template
from ..errors import BundleError
from ..progress import GrowingBar
from .image_packages import image_ships
from .imports import ImportRef, scan_imports
from .locate import Location, files_of, find_in_folders, find_installed
from .removed_modules import REMOVED_IN_312, removal_warning

PAYLOAD_LINE = 96
# Python source to scan for imports past which bundling shows a progress bar (scanning runs at
# about 1-2 MiB/s): a script and the kernel runtime take well under a second and show none.
PROGRESS_BYTES = 1 << 20
# Not in sys.stdlib_module_names, yet never a file to inline.
_ALWAYS_THERE = {"__main__"}


@dataclass(frozen=True)
class Entry:
    """The script a bundle runs as `__main__`.

    `path` is where it lies inside the bundle ("main.py", or "app/main.py" for module `app.main`
    of package `app`, which then runs like `python -m app.main`); `folder` is searched first for
    the modules it imports (its own folder, or the folder that holds its package). A script entry
    runs from memory: it is only written to disk when a module imports it back by name."""

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
    # "file:line: problem; fix" for imports that bundle but would fail or change on Kaggle
    warnings: tuple[str, ...] = ()
    # where the carried code lies on this machine (`-o` must not write there)
    origins: tuple[Location, ...] = ()

    @property
    def size_bytes(self) -> int:
        return len(self.text.encode("utf-8"))


def _scan(source: bytes, filename: str) -> list[ImportRef]:
    try:
        return scan_imports(source, filename)
    except SyntaxError as exc:
        raise BundleError(f"{filename}:{exc.lineno}: does not parse under Python "
                          f"{sys.version_info[0]}.{sys.version_info[1]} ({exc.msg}); fix it, "
                          "or leave its package out with --exclude") from None


def read_entry(path: str | Path) -> Entry:
    """The entry script at `path`, to run as its author runs it.

    It runs as `python PATH` does: its own folder first on the path, so the modules beside it are
    top-level and can import it back by name (even inside a folder with `__init__.py`, and
    whatever the file's suffix). An entry inside a package that imports relatively, or imports
    its own package by name, runs as `python -m package.module` does, from the folder above the
    package: that is the only way its author can have run it."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: entry script not found; pass the .py file to bundle")
    source = path.read_bytes()
    refs = _scan(source, str(path))
    relative = [ref for ref in refs if ref.level]
    script = Entry(path.name, source, None, path.parent.resolve())
    parts, folder = [path.stem], script.folder
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    as_module = path.suffix == ".py" and path.stem != "__init__" \
        and all(part.isidentifier() for part in parts)
    imports_itself = as_module and any(ref.level == 0 and ref.top == parts[0] for ref in refs)
    if len(parts) == 1 or not (relative or imports_itself):
        return script  # a relative import outside a package: bundle() names the line and fix
    if not as_module:
        raise BundleError(f"{path}:{relative[0].line}: a relative import needs the entry to run "
                          f"as a module of its package, and {path.name!r} cannot be one; use a "
                          ".py file with an identifier name inside the package (e.g. "
                          "pkg/__main__.py), or import absolutely")
    return Entry("/".join([*parts[:-1], path.name]), source, ".".join(parts), folder)


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
    warnings: dict[str, None] = field(default_factory=dict)  # ordered, without repeats
    # fallback imports in the user's code that resolve here: {name: where}, judged at the end
    fallbacks: dict[str, str] = field(default_factory=dict)
    # the Python source carried and scanned, in bytes
    bar: GrowingBar = field(default_factory=lambda: GrowingBar("", 0, enabled=False))

    def decided(self, name: str) -> bool:
        return any(name in group for group in (self.local, self.vendored, self.from_image,
                                               self.missing, self.exclude))

    def need(self, ref: ImportRef, where: str, own: bool = True) -> None:
        """Resolve the top-level name of `ref` (imported at `where`, in the user's own code when
        `own`), inlining what it needs."""
        name = ref.top
        if self.decided(name):
            return
        if _is_stdlib(name) or name in REMOVED_IN_312:
            shadow = find_in_folders(name, self.folders)
            if shadow is not None and not shadow.is_namespace:  # a bare folder never shadows
                raise BundleError(
                    f"{shadow.path}: named like the standard library module {name!r} (imported "
                    f"at {where}), so it would shadow it; rename it, or move it into a package"
                )
            return
        location = find_in_folders(name, self.folders)
        if location is not None:
            self.local[name] = location
            self._add(location, own=True)
            return
        if ref.optional and name not in self.vendor:
            # A fallback import (inside try/except ImportError): the kernel copes without it.
            if own and not image_ships(name) and name not in self.fallbacks \
                    and find_installed(name) is not None:
                self.fallbacks[name] = f"{where}: `import {ref.name}`"
            return
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
        self._add(location, own=False)

    def _add(self, location: Location, own: bool) -> None:
        carried = files_of(location)
        self.files.update(carried)
        sources = {relative: data for relative, data in carried.items()
                   if relative.endswith(".py")}
        self.bar.grow(sum(map(len, sources.values())))
        for relative, data in sources.items():
            self.scan(data, str(location.path.parent / relative), relative, own)
            self.bar.advance(len(data))

    def scan(self, source: bytes, filename: str, label: str, own: bool = True
             ) -> list[ImportRef]:
        refs = _scan(source, filename)
        for ref in refs:
            if ref.level == 0:
                warning = None if ref.optional else removal_warning(ref.name, f"{label}:{ref.line}")
                if warning:
                    self.warnings[warning] = None
                self.need(ref, f"{label}:{ref.line}", own)
        return refs

    def report(self) -> tuple[str, ...]:
        """The warnings, then the fallback imports that resolve here but stayed out."""
        left_out = [f"{where} sits under try/except ImportError and {name} is installed here, "
                    "but it is neither bundled nor on the Kaggle image, so the kernel takes the "
                    f"except branch there; bundle it with --vendor {name} (or --exclude {name} "
                    "to say that is meant)"
                    for name, where in self.fallbacks.items()
                    if not self.decided(name)]
        return (*self.warnings, *left_out)


def _check_included(module: str, walk: _Walk) -> None:
    """`--include a.b.c` must name a module that the bundle now carries (or the image has)."""
    top = module.split(".")[0]
    if _is_stdlib(top) or top in walk.missing:
        where = "the standard library" if _is_stdlib(top) else "neither beside the entry nor " \
            "in a --path folder, and not installed here"
        raise BundleError(f"--include {module}: {top} is {where}; include your own or vendored "
                          "modules, and add their folder with --path")
    stem = module.replace(".", "/")
    carried = any(name in (f"{stem}.py", f"{stem}/__init__.py") or name.startswith(f"{stem}/")
                  for name in walk.files)  # the last: a namespace package's folder
    if "." in module and top not in walk.from_image | walk.exclude and not carried:
        raise BundleError(f"--include {module}: package {top} has no module {stem}.py or "
                          f"{stem}/__init__.py; check the name")


def encode_payload(files: dict[str, bytes]) -> str:
    """base64 of gzip(`[[path, size], ...]` as one JSON line, then the bytes in that order)."""
    names = sorted(files)
    index = json.dumps([[name, len(files[name])] for name in names], separators=(",", ":"))
    blob = index.encode("ascii") + b"\n" + b"".join(files[name] for name in names)
    return base64.b64encode(gzip.compress(blob, compresslevel=9, mtime=0)).decode("ascii")


def render(entry: Entry, files: dict[str, bytes], on_disk: bool = False,
           vendored: Sequence[str] = (), namespaces: Sequence[str] = ()) -> str:
    """The single-file script that unpacks `files` (which include the entry) and runs it.

    `on_disk`: a script entry is also written out (a module imports it by name); `vendored`:
    top-level third-party names whose compile warnings the kernel silences; `namespaces`:
    top-level namespace packages, found in the bundle before anywhere else."""
    payload = encode_payload(files)
    lines = "\n".join(f"    {payload[i:i + PAYLOAD_LINE]!r}"
                      for i in range(0, len(payload), PAYLOAD_LINE))
    bootstrap = read_template("bundle_bootstrap.py")
    name = entry.path.rsplit("/", 1)[-1].replace("\n", " ")
    # The entry's `#!` line leads the bundle too, so `./bundle.py` runs as `./entry` did.
    first = entry.source.split(b"\n", 1)[0].rstrip(b"\r")
    shebang = first.decode("utf-8", "replace") + "\n" if first.startswith(b"#!") else ""
    return shebang + (bootstrap.replace("__KERNELPACK_ENTRY_NAME__", name)
            .replace("__KERNELPACK_ENTRY__", repr((entry.path, entry.module, on_disk)))
            .replace("__KERNELPACK_VENDORED__", repr(tuple(vendored)))
            .replace("__KERNELPACK_NAMESPACES__", repr(tuple(namespaces)))
            .replace("__KERNELPACK_PAYLOAD__", lines))


def _walk_from(entry: Entry, walk: _Walk, code: Sequence[Location], include: Iterable[str]
               ) -> None:
    """Follow the imports of `entry`, `code` and `include` (and of what they carry)."""
    for location in code:  # decided first: the user's module wins over an installed namesake
        walk.local[location.name] = location
        walk._add(location, own=True)

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


def bundle(entry: Entry, paths: Sequence[str | Path] = (), vendor: Iterable[str] = (),
           include: Iterable[str] = (), exclude: Iterable[str] = (),
           code: Sequence[Location] = (), progress: bool = False) -> Bundle:
    """Bundle `entry` with the modules it imports, found in `entry.folder` then `paths`.

    `vendor`: installed packages to inline even if the Kaggle image has them; `include`: modules
    only imported dynamically (`importlib.import_module(name)`); `exclude`: top-level names the
    kernel gets elsewhere (a wheel dataset); `code`: the user's own packages or modules, inlined
    whole whether or not anything imports them (`kernelpack build --code`); `progress`: show a
    bar on stderr once the code to scan passes PROGRESS_BYTES. Raises BundleError with the fix
    for bad input."""
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
    walk = _Walk(folders, set(vendor), set(exclude),
                 bar=GrowingBar("bundle: scan imports", PROGRESS_BYTES, progress))
    try:
        _walk_from(entry, walk, code, include)
    finally:
        walk.bar.close()
    files = dict(walk.files)
    # A module that imports the entry back by name carried its file: then it goes on disk too.
    on_disk = entry.module is None and entry.path in files
    if entry.module is None and files.setdefault(entry.path, entry.source) != entry.source:
        raise BundleError(f"{entry.path}: the entry script has the name of another bundled "
                          "module; rename the script")
    origins = {**walk.local, **walk.vendored}
    return Bundle(
        text=render(entry, files, on_disk, sorted(walk.vendored),
                    sorted(name for name, where in origins.items() if where.is_namespace)),
        files=tuple(sorted(files)),
        local=tuple(sorted(walk.local)),
        vendored=tuple(sorted(walk.vendored)),
        from_image=tuple(sorted(walk.from_image)),
        missing=tuple(f"{name} ({where})" for name, where in sorted(walk.missing.items())),
        warnings=walk.report(),
        origins=tuple(origins[name] for name in sorted(origins)),
    )


def _check_output(output: Path, entry_path: Path, result: Bundle) -> None:
    """`-o` must not overwrite the entry or land inside the code it bundles (the next bundle
    would carry it, or the source would be lost)."""
    target = output.resolve()
    if target.is_dir():
        raise BundleError(f"-o {output}: is a folder; pass the file to write (e.g. -o "
                          f"{output / 'kernel.py'})")
    if target == entry_path.resolve():
        raise BundleError(f"-o {output}: is the entry script itself; write the bundle to "
                          "another file (e.g. -o build/kernel.py)")
    for location in result.origins:
        if location.holds(target):
            raise BundleError(f"-o {output}: lies inside {location.name} ({location.path}), "
                              "which the bundle carries; write it outside the bundled code "
                              "(e.g. -o build/kernel.py)")


def write_bundle(entry_path: str | Path, output: str | Path, paths: Sequence[str | Path] = (),
                 vendor: Iterable[str] = (), include: Iterable[str] = (),
                 exclude: Iterable[str] = (), progress: bool = False) -> Bundle:
    """`kernelpack bundle`: bundle the script at `entry_path` into the file `output`."""
    result = bundle(read_entry(entry_path), paths, vendor, include, exclude, progress=progress)
    output = Path(output)
    _check_output(output, Path(entry_path), result)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(result.text, encoding="utf-8")
    if result.text.startswith("#!") and os.access(entry_path, os.X_OK):  # runnable as the entry
        output.chmod(output.stat().st_mode | 0o111)
    return result
