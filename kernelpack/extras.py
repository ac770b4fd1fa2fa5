"""kernelpack's optional parts (setup.cfg's extras): what each one installs, and the one line a
command that needs a missing one stops with, naming the extra to install.

The core never imports these packages at module level; a command that needs one checks for it
before it starts its work (`require`), so the user learns the install command first, not from a
traceback halfway through.
"""

from __future__ import annotations

from importlib.util import find_spec

from .errors import MissingExtraError

# extra -> the modules it provides (the import names, as `require` looks for them).
EXTRAS = {
    "notebook": ("nbformat", "nbclient", "ipykernel"),
    "cryptography": ("cryptography",),
    "pretrainedmodels": ("pretrainedmodels",),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    missing = []
    for module in EXTRAS[extra]:
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed install counts as missing
            found = False
        if not found:
            missing.append(module)
    return missing


def install_hint(extra: str) -> str:
    return f"pip install 'kernelpack[{extra}]'"


def require(extra: str, needed_for: str) -> None:
    """Raise MissingExtraError, one line naming what is missing and the extra that installs it,
    unless every module of `extra` is importable. `needed_for`: what the user asked for (e.g.
    "build --notebook")."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(f"{needed_for} needs {', '.join(missing)}, not installed; "
                                f"{install_hint(extra)}")
