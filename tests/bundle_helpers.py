"""Helpers for the bundler tests: fixture trees on disk, and runs the way Kaggle runs a script
(a fresh `python -I`, an empty working directory, a private TMPDIR, the network cut)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kernelpack.sandbox import network_namespace_available


def python312() -> str | None:
    found = shutil.which("python3.12")
    candidates = [found] if found else []
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    for candidate in candidates:
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def run_offline(script: Path, workdir: Path, python: str = sys.executable,
                tmpdir: Path | None = None, args: tuple[str, ...] = ()
                ) -> subprocess.CompletedProcess:
    """`python -I script` from `workdir`, with the network namespace cut where the system allows."""
    command = [python, "-I", *args, str(script)]
    if network_namespace_available():
        command = ["unshare", "-n", "--", *command]
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmpdir or workdir),
           "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=120,
                          env=env)


def empty_dirs(root: Path) -> tuple[Path, Path]:
    """A fresh working directory and a fresh TMPDIR under `root`."""
    work, temp = root / "working", root / "tmp"
    work.mkdir(parents=True)
    temp.mkdir()
    return work, temp
