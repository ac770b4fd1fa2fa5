"""The user's own code (`--code PATH`, `kernel.code`): a package folder or a module file that
defines their architectures (`package.module:callable` archs, `@register_model` calls).

`kernelpack build` bundles each one beside inference_core, as far as the kernel needs it
(`bundler.closure`: training scripts whose imports the kernel cannot meet stay out), and the
kernel imports them before it builds any model; on the host, `import_user_code` imports them the
same way, so import-checkpoint and predict see the same architectures as the kernel.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from inference_core.errors import UserCodeError

from ..bundler.image_packages import image_ships
from ..bundler.locate import Location

# The runtime's own top-level name: user code named like it would replace it in the kernel.
RUNTIME_PACKAGE = "inference_core"


def code_location(path: str | Path, where: str | None = None) -> Location:
    """The package folder or module file (`.py`) at `path`. A folder without `__init__.py` that
    holds Python files is a namespace package (PEP 420), as many training repositories are.

    `where` names the setting in errors (default `--code PATH`)."""
    path = Path(path)
    where = where or f"--code {path}"
    fix = "pass a package folder or a module .py file"
    if not path.exists():
        raise UserCodeError(f"{where}: not found (looked for {path.resolve()}); {fix}")
    portions: tuple[Path, ...] = ()
    if path.is_dir():
        name = path.resolve().name
        if not (path / "__init__.py").is_file():
            if not any(path.rglob("*.py")):
                raise UserCodeError(f"{where}: the folder holds no .py file; {fix}")
            portions = (path.resolve(),)
    elif path.suffix == ".py":
        name = path.stem
    else:
        raise UserCodeError(f"{where}: not a Python module; {fix}")
    if not name.isidentifier():
        raise UserCodeError(f"{where}: {name!r} cannot be imported (not a Python identifier); "
                            "rename it")
    if name in sys.stdlib_module_names or name == RUNTIME_PACKAGE or image_ships(name):
        owner = ("kernelpack's runtime" if name == RUNTIME_PACKAGE else "the standard library"
                 if name in sys.stdlib_module_names else "the Kaggle image")
        raise UserCodeError(f"{where}: named {name!r} like a module of {owner}, which it would "
                            "replace in the kernel; rename it")
    taken = _taken_by(name, path.resolve())
    if taken is not None:
        raise UserCodeError(f"{where}: another module named {name!r} is {taken}, which it would "
                            "replace (or be replaced by); rename your package")
    return Location(name, path.resolve(), portions)


def _taken_by(name: str, place: Path) -> str | None:
    """Where another top-level module `name` lies, already imported or installed (found without
    importing it), when that is not `place`; None when there is none."""
    if name in sys.modules:
        places = _places(sys.modules[name])
        taken = "already imported (from {})"
    else:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a broken installation: not a name clash to report
            return None
        if spec is None:
            return None
        places = [Path(spec.origin).resolve()] if spec.origin and spec.has_location else []
        places += [Path(folder).resolve() for folder in spec.submodule_search_locations or ()]
        taken = "installed at {}"
    if not places or place in places or any(found.parent == place for found in places):
        return None
    return taken.format(", ".join(map(str, places)))


def code_locations(paths: Sequence[tuple[str | Path, str]]) -> list[Location]:
    """`code_location` of each `(path, where)`; two of them with one top-level name is an error."""
    locations: list[Location] = []
    seen: dict[str, str] = {}
    for path, where in paths:
        location = code_location(path, where)
        if location.name in seen and seen[location.name] != str(location.path):
            raise UserCodeError(f"{where}: named {location.name!r} like {seen[location.name]}; "
                                "two top-level modules cannot share a name, rename one")
        if location.name not in seen:
            seen[location.name] = str(location.path)
            locations.append(location)
    return locations


def import_user_code(paths: Sequence[str | Path]) -> None:
    """Import each package/module at `paths` on the host, as the kernel does: its parent folder
    goes on sys.path and its `@register_model` calls run. Raises UserCodeError for a missing
    path, a name another module has taken (`code_location`), or a module that fails to import."""
    from inference_core.model_factory import import_modules

    locations = code_locations([(path, f"--code {path}") for path in paths])
    # Every root is importable before any is imported, as in the kernel (where the bundle holds
    # them side by side): a package may import a helper passed after it.
    for location in locations:
        parent = str(location.path.parent)
        if parent not in sys.path:
            sys.path.insert(0, parent)
    import_modules([location.name for location in locations])


def _places(module: ModuleType) -> list[Path]:
    """Where an imported module lies: its file and that file's folder, or a namespace package's
    folders (it has no file)."""
    if file := getattr(module, "__file__", None):
        return [Path(file).resolve(), Path(file).resolve().parent]
    return [Path(folder).resolve() for folder in getattr(module, "__path__", ())]
