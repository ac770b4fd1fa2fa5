"""Helpers for the bundler tests: fixture trees on disk, and runs the way Kaggle runs a script
(a fresh `python -I`, an empty working directory, a private TMPDIR, the network cut)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from kernelpack.kernel.sandbox import network_namespace_available


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


def python_without(hidden: set[str], root: Path) -> Path:
    """A Python whose only site-packages is a view of this environment's without the top-level
    packages `hidden` (and their dist-info) and without this project's editable hook: an image
    that lacks them, as Kaggle's lacks pretrainedmodels. It is a minimal venv (pyvenv.cfg and a
    link to the base interpreter), so nothing is patched inside the interpreter itself."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = root / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    view.mkdir(parents=True)
    for item in sorted(site.iterdir()):
        top = item.name.split("-")[0].split(".")[0]
        if top not in hidden | {"kernelpack"} and not item.name.startswith("__editable__"):
            (view / item.name).symlink_to(item)
    base = Path(sys._base_executable).resolve()
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to(base)
    (root / "pyvenv.cfg").write_text(f"home = {base.parent}\ninclude-system-site-packages = "
                                     "false\n")
    return root / "bin" / "python"
