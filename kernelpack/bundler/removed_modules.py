"""Standard library modules that Python 3.12 removed, with what replaces each.

Kaggle's image runs Python 3.12, so code that imports one of them fails there even when it bundles
(and runs) on 3.11. The bundler warns at bundle time, naming the file, the line and the fix.
Source: "What's New In Python 3.12", section Removed (PEP 594 and PEP 632).
"""

from __future__ import annotations

REMOVED_IN_312 = {
    "imp": "use importlib (importlib.util.spec_from_file_location and module_from_spec for "
           "imp.load_source, importlib.reload for imp.reload)",
    "distutils": "use setuptools (whose copy of distutils is all that is left there), "
                 "packaging.version.Version for LooseVersion/StrictVersion, shutil.which for "
                 "find_executable, sysconfig for paths",
    "asynchat": "use asyncio",
    "asyncore": "use asyncio",
    "smtpd": "use asyncio, or the aiosmtpd package",
}


def removal_warning(name: str, where: str) -> str | None:
    """The warning for `import name` at `where` ("file:line"), or None if it still exists."""
    top = name.split(".")[0]
    if top not in REMOVED_IN_312:
        return None
    return (f"{where}: `import {name}`: {top} was removed from the standard library in Python "
            f"3.12, which Kaggle runs; {REMOVED_IN_312[top]}")
