"""The user's own code (`build --code`), module by module: what the kernel needs of it.

A competitor's package as published holds more than its model: training scripts, fold makers,
experiment loggers, old transforms. Each module is judged by the imports that run when it is
imported (at module level, outside `try/except ImportError`, outside functions and `__main__`
blocks): they are *met* when they name the standard library, another met module of the user's
code, a package on the Kaggle image that has the names imported from it (albumentations 2.x
removed names that 0.x code imports), a pure-Python package installed here (it is vendored), or a
name the kernel gets elsewhere (a wheel dataset).

What goes into the kernel:
- the import closure of the *roots*: the `--code` packages and modules themselves (the kernel
  imports them) and the modules the checkpoints name (`package.module:callable` archs, the
  modules of custom albumentations classes); a module in it whose imports are not met is an error
  naming the chain of imports, the failing import and the fix;
- when the checkpoints are not known (no `--models`), every other module of the code whose
  imports are met too, since an arch may name any of them;
- the code's data files (read with importlib.resources or `Path(__file__).parent`).
Every module that stays out gets one line saying why; `--exclude PATTERN` leaves out what the
user knows is training-only. A top-level module that the code imports and that lies beside a
`--code` root (as `python` finds it there on the host) is the user's code too, carried module by
module as far as imports reach it.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError
from .image_packages import image_ships
from .imports import ImportRef, scan_imports
from .locate import EXTENSION_SUFFIXES, MAX_FILE_BYTES, Location, find_in_folders, find_installed

# `external(ref)`: None when an import of a third-party or standard module is met, else why not.
External = Callable[[ImportRef], "str | None"]


@dataclass(frozen=True)
class Module:
    """One importable module of the user's code: `name` ("imet.models"; a package's `__init__.py`
    is the package's name), `relative` its path in the bundle ("imet/models.py")."""

    name: str
    relative: str
    path: Path
    is_init: bool = False

    @property
    def package(self) -> str:
        """The package its relative imports start from ("" for a top-level module file)."""
        return self.name if self.is_init else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Edge:
    """An import of `target` (a module of the user's code) at `where` ("file:line"); only a
    `required` one runs when the importing module is imported."""

    target: str
    where: str
    required: bool


@dataclass
class _Node:
    module: Module
    refs: list[ImportRef] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    # the first import that cannot be met when the module is imported: "import x (f:3): why"
    problem: str | None = None
    # deferred or optional imports that cannot be met: (where, import, why)
    soft: list[tuple[str, str, str]] = field(default_factory=list)
    # third-party and standard-library imports, handed to the bundle's walk when carried
    external: list[tuple[ImportRef, str]] = field(default_factory=list)
    sibling: bool = False  # found beside a --code root, not inside one


@dataclass(frozen=True)
class Selection:
    """What the kernel carries of the user's code."""

    files: dict[str, bytes]
    modules: tuple[str, ...]
    # one line each: a module (or file) left out, and why
    left_out: tuple[str, ...]
    # "file:line: ..." warnings for carried modules (a deferred import that cannot be met)
    warnings: tuple[str, ...]
    # each carried module's imports outside the user's code: (import, "file:line")
    external: tuple[tuple[ImportRef, str], ...]
    # {module: why} for the modules left out, for the kernel's error if one is imported anyway
    reasons: dict[str, str]
    # the user's top-level packages and modules carried (the --code roots, the siblings reached)
    locations: tuple[Location, ...]


def _module_name(parts: Sequence[str]) -> str | None:
    """The dotted name of a file at `parts` (relative, with its suffix), None if not importable."""
    *folders, filename = parts
    stem = filename[:-3]
    names = folders if stem == "__init__" else [*folders, stem]
    return ".".join(names) if names and all(name.isidentifier() for name in names) else None


def _carried(relative: Path) -> bool:
    """False for caches and hidden files, which a kernel never needs."""
    return not any(part == "__pycache__" or part.startswith(".") for part in relative.parts) \
        and relative.suffix not in (".pyc", ".pyo")


class _Code:
    """The modules of the user's code, found on disk and read once."""

    def __init__(self, locations: Sequence[Location], grow: Callable[[int], None]) -> None:
        self.nodes: dict[str, _Node] = {}
        self.namespaces: set[str] = set()  # folders without __init__.py: packages with no file
        self.data: dict[str, Path] = {}  # non-Python files: bundle path -> file
        self.data_owner: dict[str, str] = {}  # bundle path -> the top-level name it belongs to
        self.unimportable: list[str] = []  # .py files no import can name
        self.compiled: dict[str, str] = {}  # module -> bundle path of a compiled extension
        self.tops: dict[str, Location] = {}
        self.grow = grow
        self.searched: dict[str, Location | None] = {}
        for location in locations:
            self.add(location, sibling=False)

    def add(self, location: Location, sibling: bool) -> None:
        self.tops[location.name] = location
        if not location.is_package:
            self._add_file(location.path, location.path.name, location.name, sibling)
            return
        if location.is_namespace:
            self.namespaces.add(location.name)
        for folder in location.portions or (location.path,):
            for path in sorted(folder.rglob("*")):
                inside = path.relative_to(folder)
                if not path.is_file() or not _carried(inside):
                    if path.is_dir() and _carried(inside) and not (path / "__init__.py").is_file():
                        self.namespaces.add(".".join((location.name, *inside.parts)))
                    continue
                relative = f"{location.name}/{inside.as_posix()}"
                self._add_file(path, relative, location.name, sibling)

    def _add_file(self, path: Path, relative: str, top: str, sibling: bool) -> None:
        parts = relative.split("/")
        if path.name.endswith(EXTENSION_SUFFIXES):
            name = _module_name([*parts[:-1], path.name.split(".")[0] + ".py"])
            if name is not None:
                self.compiled.setdefault(name, relative)
            return
        if path.suffix != ".py":
            if relative not in self.data:
                self.data[relative] = path
                self.data_owner[relative] = top
            return
        name = _module_name(parts)
        if name is None:
            self.unimportable.append(relative)
            return
        if name in self.nodes:  # an earlier namespace portion's file wins, as on import
            return
        module = Module(name, relative, path, parts[-1] == "__init__.py")
        self.nodes[name] = _Node(module, sibling=sibling)

    def has(self, name: str) -> bool:
        return name in self.nodes or name in self.namespaces or name in self.compiled


def _matches(module: Module, pattern: str) -> bool:
    """`--exclude` pattern: a glob over the dotted name (a package's name takes its modules
    with it) or the file's path, in the bundle ("imet/train.py") or inside its package
    ("train.py")."""
    inner = module.relative.split("/", 1)[-1] if "/" in module.relative else module.relative
    folder = pattern.rstrip("/")
    return any(fnmatch.fnmatchcase(text, pattern) for text in
               (module.name, module.relative, inner)) \
        or module.name.startswith(f"{pattern}.") \
        or module.relative.startswith(f"{folder}/") or inner.startswith(f"{folder}/")


class _Selector:
    def __init__(self, locations: Sequence[Location], folders: Sequence[Path],
                 external: External, exclude: Sequence[str], grow: Callable[[int], None],
                 advance: Callable[[int], None]) -> None:
        self.code = _Code(locations, grow)
        self.folders = list(folders)
        self.external = external
        self.exclude = list(exclude)
        self.advance = advance
        self.parsed: set[str] = set()
        self.linked: set[str] = set()

    # -- reading -------------------------------------------------------------------------
    def parse_all(self) -> None:
        pending = [name for name in self.code.nodes if name not in self.parsed]
        self.code.grow(sum(self.code.nodes[name].module.path.stat().st_size for name in pending))
        for name in pending:
            self._parse(self.code.nodes[name])

    def _parse(self, node: _Node) -> None:
        self.parsed.add(node.module.name)
        source = node.module.path.read_bytes()
        try:
            node.refs = scan_imports(source, str(node.module.path))
        except SyntaxError as exc:
            node.problem = (f"{node.module.relative}:{exc.lineno}: does not parse under Python "
                            f"{sys.version_info[0]}.{sys.version_info[1]} ({exc.msg})")
        self.advance(len(source))

    def _sibling(self, top: str) -> bool:
        """Find top-level module `top` beside a --code root (regular modules and packages, as
        the path finder takes them first); True when it is the user's code now."""
        if top in self.code.tops:
            return True
        if top not in self.code.searched:
            found = find_in_folders(top, self.folders)
            if found is not None and found.is_namespace and _installed_elsewhere(top):
                found = None  # a bare folder never shadows an installed package
            self.code.searched[top] = found
            if found is not None:
                self.code.add(found, sibling=True)
                self.parse_all()
        return self.code.searched[top] is not None

    # -- resolving -----------------------------------------------------------------------
    def link(self) -> None:
        """Each module's imports: edges to the user's code, or external checks."""
        while True:
            pending = [node for name, node in self.code.nodes.items() if name not in self.linked]
            if not pending:
                return
            for node in pending:
                self.linked.add(node.module.name)
                self._link(node)

    def _link(self, node: _Node) -> None:
        module = node.module
        parent = module.name.rpartition(".")[0]
        if parent in self.code.nodes:  # importing a.b.c runs a/__init__.py first
            node.edges.append(Edge(parent, f"{module.relative}, its package", True))
        for ref in node.refs:
            where = f"{module.relative}:{ref.line}"
            required = not (ref.optional or ref.deferred)
            shown = _shown(ref)
            if ref.level:
                base = module.package.split(".") if module.package else []
                if ref.level > len(base):
                    self._fail(node, required, where, shown, "a relative import outside a "
                               "package")
                    continue
                base = base[:len(base) - ref.level + 1]
                target = ".".join([*base, *([ref.name] if ref.name else [])])
                self._user(node, target, ref, where, shown, required)
            elif ref.top not in sys.stdlib_module_names and self._sibling(ref.top):
                self._user(node, ref.name, ref, where, shown, required)
            else:
                node.external.append((ref, where))
                problem = self.external(ref)
                if problem is not None:
                    self._fail(node, required, where, shown, problem)

    def _user(self, node: _Node, target: str, ref: ImportRef, where: str, shown: str,
              required: bool) -> None:
        parts = target.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name in self.code.nodes:
                node.edges.append(Edge(name, where, required))
            elif name in self.code.compiled:
                self._fail(node, required, where, shown, f"{self.code.compiled[name]} is a "
                           "compiled extension module, which cannot travel inside kernel.py")
                return
            elif name not in self.code.namespaces:
                self._fail(node, required, where, shown, f"your code has no module {name} "
                           f"({name.replace('.', '/')}.py)")
                return
        for imported in ref.names:  # `from pkg import submodule` imports it
            name = f"{target}.{imported}"
            if name in self.code.nodes:
                node.edges.append(Edge(name, where, required))

    @staticmethod
    def _fail(node: _Node, required: bool, where: str, shown: str, problem: str) -> None:
        if not required:
            node.soft.append((where, shown, problem))
        elif node.problem is None:
            node.problem = f"{shown} ({where}): {problem}"

    # -- judging -------------------------------------------------------------------------
    def excluded(self) -> dict[str, str]:
        """{module: the --exclude pattern that leaves it out}; a pattern matching nothing is
        an error."""
        out: dict[str, str] = {}
        for pattern in self.exclude:
            hits = [name for name, node in self.code.nodes.items()
                    if _matches(node.module, pattern)]
            hits += [relative for relative in self.code.data
                     if _matches(Module("", relative, Path()), pattern)]
            if not hits:
                raise BundleError(f"--exclude {pattern}: matches no module or file of your code "
                                  f"({', '.join(sorted(self.code.tops))}); give a module name "
                                  "(imet.train, imet.scripts.*) or a path inside the code "
                                  "(imet/train.py, train.py, scripts/*)")
            for name in hits:
                out.setdefault(name, pattern)
        return out

    def unmet(self, excluded: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """({module: why it cannot be imported in the kernel}, {module: the failing import at
        the end of the chain}), following required imports."""
        why: dict[str, str] = {}
        cause: dict[str, str] = {}
        for name, node in self.code.nodes.items():
            if name in excluded:
                why[name] = cause[name] = f"left out with --exclude {excluded[name]}"
            elif node.problem is not None:
                why[name] = cause[name] = node.problem
        changed = True
        while changed:
            changed = False
            for name, node in self.code.nodes.items():
                if name in why:
                    continue
                for edge in node.edges:
                    if edge.required and edge.target in why:
                        why[name] = f"imports {edge.target} ({edge.where}), which is left out"
                        cause[name] = cause[edge.target]
                        changed = True
                        break
        return why, cause

    def closure(self, roots: Iterable[str], required_only: bool) -> dict[str, str | None]:
        """{module: the module that first imported it (None for a root)}, breadth first."""
        seen: dict[str, str | None] = {}
        queue = [root for root in roots if root in self.code.nodes]
        for root in queue:
            seen.setdefault(root, None)
        while queue:
            name = queue.pop(0)
            for edge in self.code.nodes[name].edges:
                if (edge.required or not required_only) and edge.target not in seen:
                    seen[edge.target] = name
                    queue.append(edge.target)
        return seen


def _installed_elsewhere(top: str) -> bool:
    """True when `top` is on the Kaggle image or installed here as a regular package or module
    (which Python prefers to a bare folder of that name)."""
    if image_ships(top):
        return True
    installed = find_installed(top)
    return installed is not None and not installed.is_namespace


def _chain(closure: dict[str, str | None], name: str) -> list[str]:
    chain = [name]
    while closure[chain[-1]] is not None:
        chain.append(closure[chain[-1]])  # type: ignore[arg-type]
    return chain[::-1]


def select_code(locations: Sequence[Location], external: External,
                named: dict[str, str] | None = None, exclude: Sequence[str] = (),
                grow: Callable[[int], None] = lambda _: None,
                advance: Callable[[int], None] = lambda _: None) -> Selection:
    """What the kernel carries of the user's code at `locations` (the `--code` roots).

    `external(ref)` judges an import outside the user's code (None when met). `named`:
    {module: who names it (a checkpoint's arch, a transform)}, the modules the checkpoints name;
    None when they are not known (then every module whose imports are met is carried).
    `exclude`: --exclude patterns. `grow`/`advance`: the progress bar's source bytes.
    Raises BundleError for a module the kernel needs that cannot be imported there."""
    folders = list(dict.fromkeys(location.path.parent for location in locations))
    selector = _Selector(locations, folders, external, exclude, grow, advance)
    selector.parse_all()
    selector.link()
    code = selector.code
    excluded = selector.excluded()
    why, cause = selector.unmet(excluded)

    roots: dict[str, str] = {}
    for location in locations:
        if location.name in code.nodes:  # the kernel imports each root (none for a namespace)
            roots[location.name] = f"--code {location.path}"
    for module, who in (named or {}).items():
        selector._sibling(module.split(".")[0])
        if not code.has(module):
            raise BundleError(f"{who}: names module {module}, which is not in your code "
                              f"({', '.join(sorted(code.tops))}); pass its package with --code")
        if module in code.nodes:
            selector.link()
            why, cause = selector.unmet(excluded)
            roots.setdefault(module, who)
    required = selector.closure(roots, required_only=True)
    # The module where the import fails (not one that only imports it), nearest a root first.
    failing = [name for name in required if name in why and why[name] == cause[name]]
    if failing:
        name = failing[0]
        chain = _chain(required, name)
        via = f" (imported as {' -> '.join(chain)})" if len(chain) > 1 else ""
        if name in excluded:
            raise BundleError(f"--exclude {excluded[name]}: leaves out {name}, which the kernel "
                              f"imports{via}, for {roots[chain[0]]}; exclude less")
        raise BundleError(
            f"{cause[name]}; {name} is needed in the kernel{via}, for {roots[chain[0]]}; "
            "install the package here (pure-Python packages are then bundled), get a C "
            "extension from a wheel dataset (`kernelpack wheels PKG -o DIR`, then build or "
            "fanout with --wheels DIR), vendor the code it needs into yours, or make the import "
            "optional (move it into the function that uses it, or under try/except "
            "ImportError)")
    everything = selector.closure(roots, required_only=False)
    if named is None:
        for name in code.nodes:
            if not code.nodes[name].sibling:
                everything.setdefault(name, None)
    carried = sorted(name for name in everything if name not in why)

    left_out, unneeded = [], []
    for name, node in code.nodes.items():
        if name in carried or (node.sibling and name not in everything):
            continue
        if name in why:
            left_out.append(f"{node.module.relative} ({name}): {why[name]}")
        else:
            unneeded.append(name)
    if unneeded:
        left_out.append(f"{', '.join(unneeded)}: not imported by the modules the kernel imports "
                        f"({', '.join(roots)})")
    if code.unimportable:
        shown = ", ".join(code.unimportable[:5]) + (f", and {len(code.unimportable) - 5} more"
                                                    if len(code.unimportable) > 5 else "")
        left_out.append(f"{shown}: no import can name them (a file or folder name that is not a "
                        "Python identifier)")
    tops = sorted({name.split(".")[0] for name in carried} | {
        location.name for location in locations})
    files: dict[str, bytes] = {}
    for name in carried:
        files[code.nodes[name].module.relative] = code.nodes[name].module.path.read_bytes()
    too_big = []
    for relative, path in sorted(code.data.items()):
        if code.data_owner[relative] not in tops or relative in excluded:
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            too_big.append(f"{relative} ({size / 2**20:.1f} MiB)")
            continue
        files[relative] = path.read_bytes()
    if too_big:  # one line for them all: a repository may hold thousands of images
        shown = ", ".join(too_big[:5]) + (f", and {len(too_big) - 5} more"
                                          if len(too_big) > 5 else "")
        left_out.append(f"{shown}: too big to carry inside kernel.py (limit "
                        f"{MAX_FILE_BYTES / 2**20:.0f} MiB a file); read them from a Kaggle "
                        "dataset if the model needs them, or --exclude them")
    warnings = [f"{where}: `{shown}` runs only when called, and {problem}; the kernel fails if "
                "it gets there"
                for name in carried for where, shown, problem in code.nodes[name].soft
                if _is_deferred(code.nodes[name], where)]
    external = tuple(item for name in carried for item in code.nodes[name].external
                     if not _soft_unmet(code.nodes[name], item[1]))
    return Selection(files=dict(sorted(files.items())), modules=tuple(carried),
                     left_out=tuple(left_out), warnings=tuple(warnings), external=external,
                     reasons={name: why.get(name, "not imported by the modules the kernel "
                                                  "imports") for name in code.nodes
                              if name not in carried
                              and not (code.nodes[name].sibling and name not in everything)},
                     locations=tuple(code.tops[name] for name in tops))


def _shown(ref: ImportRef) -> str:
    """The import statement, short: `from a.b import c, d, ...`."""
    if not (ref.level or ref.names):
        return f"import {ref.name}"
    names = ", ".join(ref.names[:2]) + (", ..." if len(ref.names) > 2 else "")
    return f"from {'.' * ref.level}{ref.name} import {names or '*'}"


def _is_deferred(node: _Node, where: str) -> bool:
    line = int(where.rsplit(":", 1)[1])
    return any(ref.line == line and ref.in_function and not ref.optional for ref in node.refs)


def _soft_unmet(node: _Node, where: str) -> bool:
    """An import that cannot be met and need not be: not handed to the bundle's walk."""
    return any(soft_where == where for soft_where, _, _ in node.soft)
