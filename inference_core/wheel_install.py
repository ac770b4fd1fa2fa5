"""Install the wheel datasets attached to a kernel, offline, before the user's code imports.

A wheel dataset (written by `kernelpack wheels`) is a folder of wheels with MANIFEST_FILE, which
names the wheels to install and the CPython they were downloaded for. Each is installed with
`pip install --no-index --no-deps` (its dependencies are in the folder, the rest is on the image)
into one fresh folder under the temporary directory, put first on sys.path: the interpreter's own
site-packages is never touched (read-only on some images; under run-local it is the project's
own environment).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import DEFAULT_INPUT_ROOTS
from .errors import KernelError
from .inputs import source_patterns

MANIFEST_FILE = "kernelpack-wheels.json"
MANIFEST_FORMAT = 1
_PIP_TIMEOUT = 600
# A distribution name (PEP 508) and a version (PEP 440 characters).
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")


class WheelInstallError(KernelError):
    """An attached wheel dataset cannot be read or installed; the message names it and the fix."""


def running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def find_wheel_datasets(roots: Sequence[str]) -> list[Path]:
    """The folders holding a MANIFEST_FILE under the input roots, each real folder once: a
    source's own folder, in any of Kaggle's layouts, or one level inside it."""
    found: dict[str, Path] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for pattern in source_patterns():
            for manifest in sorted(root.glob(f"{pattern}/{MANIFEST_FILE}")):
                found.setdefault(os.path.realpath(manifest.parent), manifest.parent)
    return list(found.values())


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, checked: its format, its Python and each wheel's file, name and
    version (the files must be there)."""
    path = Path(folder) / MANIFEST_FILE
    fix = "rebuild the folder with `kernelpack wheels PKG -o DIR` and push it again"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WheelInstallError(f"{path}: cannot be read ({exc}); {fix}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise WheelInstallError(f"{path}: not a kernelpack wheel manifest of format "
                                f"{MANIFEST_FORMAT}; {fix}")
    wheels = manifest.get("wheels")
    if not isinstance(manifest.get("python"), str) or not isinstance(wheels, list) or not all(
            isinstance(w, dict) and all(isinstance(w.get(k), str) for k in ("file", "name",
                                                                            "version"))
            for w in wheels):
        raise WheelInstallError(f"{path}: needs `python` and `wheels` (each with file, name and "
                                f"version); {fix}")
    for wheel in wheels:
        # The name and version become pip arguments: nothing that could read as an option.
        if not (_NAME.fullmatch(wheel["name"]) and _VERSION.fullmatch(wheel["version"])):
            raise WheelInstallError(f"{path}: {wheel['name']!r} {wheel['version']!r} is not a "
                                    f"package name and version; {fix}")
        if os.sep in wheel["file"] or not (Path(folder) / wheel["file"]).is_file():
            raise WheelInstallError(f"{path}: lists {wheel['file']!r}, which is not in "
                                    f"{folder}; {fix}")
    return manifest


def _pip_environment() -> dict[str, str]:
    """The environment without pip settings: an install from the dataset alone, whatever the
    image's pip configuration says (indexes, constraints)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def install_wheel_dataset(folder: Path, target: Path) -> list[str]:
    """Install the wheels of one dataset into `target`; returns "name version" of each."""
    manifest = read_manifest(folder)
    if manifest["python"] != running_python():
        raise WheelInstallError(
            f"{folder}: its wheels are for CPython {manifest['python']}, but this kernel runs "
            f"Python {running_python()}; rebuild it with `kernelpack wheels ... --python "
            f"{running_python()}` and push a new version")
    pins = [f"{wheel['name']}=={wheel['version']}" for wheel in manifest["wheels"]]
    if not pins:
        return []
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
               "--only-binary=:all:", "--find-links", str(folder), "--target", str(target),
               "--quiet", "--no-warn-script-location", "--no-warn-conflicts", *pins]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=_pip_environment(),
                              timeout=_PIP_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WheelInstallError(f"{folder}: pip could not run ({exc}); check that this image "
                                "has pip") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines()
                 if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")] or lines or ["no output"]
        raise WheelInstallError(f"{folder}: pip install failed: {errors[-1]}; rebuild the "
                                f"folder with `kernelpack wheels ... --python {running_python()}`"
                                " and push a new version")
    return [f"{wheel['name']} {wheel['version']}" for wheel in manifest["wheels"]]


def install_wheel_datasets(roots: Sequence[str] | None = None,
                           log: Callable[[str], None] = print) -> Path | None:
    """Install every wheel dataset found under `roots` (default: Kaggle's) into one temporary
    folder, put it first on sys.path and log one line per dataset; None when none is attached.
    Raises WheelInstallError naming the dataset and the fix."""
    folders = find_wheel_datasets(roots or DEFAULT_INPUT_ROOTS)
    if not folders:
        return None
    target = Path(tempfile.mkdtemp(prefix="kernelpack-wheels-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    for folder in folders:
        installed = install_wheel_dataset(folder, target)
        log(f"wheels: installed {len(installed)} from {folder}: {', '.join(installed) or '-'}")
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    return target
