"""Pack an entry script and the packages it needs into one self-contained Python file.

The output is deterministic (sorted paths, JSON with sorted keys, gzip with a zero timestamp), so
identical inputs give byte-identical kernels. The runtime side is `templates/bundle_bootstrap.py`.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

from . import TEMPLATES_DIR

PAYLOAD_LINE = 96
ENTRY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")


def package_sources(package_dir: Path) -> dict[str, str]:
    """`{"pkg/sub/mod.py": source}` for every module of a package directory, sorted by path."""
    root = package_dir.parent
    files = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in files}


def render_bundle(entry_name: str, entry_source: str, modules: dict[str, str]) -> str:
    """The single-file script that unpacks `modules` and runs `entry_source` as `__main__`."""
    if not ENTRY_NAME.match(entry_name) or entry_name in modules:
        raise ValueError(f"entry name {entry_name!r} must be a plain *.py file name that no "
                         "bundled module uses")
    sources = {**modules, entry_name: entry_source}
    blob = gzip.compress(json.dumps(sources, sort_keys=True).encode("utf-8"), mtime=0)
    text = base64.b64encode(blob).decode("ascii")
    lines = "\n".join(f"    {text[i:i + PAYLOAD_LINE]!r}" for i in range(0, len(text),
                                                                     PAYLOAD_LINE))
    bootstrap = (TEMPLATES_DIR / "bundle_bootstrap.py").read_text(encoding="utf-8")
    return bootstrap.replace("__KERNELPACK_PAYLOAD__", lines).replace("__KERNELPACK_ENTRY__",
                                                                     entry_name)
