"""`kernelpack wheels`: a Kaggle dataset of wheels for packages the Kaggle image lacks (C
extensions, which cannot be inlined into a single-file kernel), installed by the kernel offline.

pip downloads wheels for Kaggle's platform (CPython 3.11 or 3.12 on manylinux x86_64) with their
dependencies. A wheel is on the image when the image ships (the bundler's list,
`bundler.image_packages`) the module named like it or every public module it installs; those are
left out, and so is what only they need (torch's CUDA wheels, say): the folder keeps the
requested packages and the dependencies they reach without passing through the image. A
requested package the image ships is refused, before the download where its name says so.

The folder gets the wheels, a manifest that the kernel reads (`inference_core.wheel_install`:
which wheels to install, for which Python) and, with `dataset_id`, the dataset-metadata.json
that `kernelpack dataset push` uploads it with.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference_core.errors import KernelError
from inference_core.wheel_install import MANIFEST_FILE, MANIFEST_FORMAT, read_manifest

from ..bundler.image_packages import canonical_name, image_ships
from ..errors import KernelpackError
from ..metadata import DATASET_METADATA, dataset_metadata, is_owner_slug

PYTHONS = ("3.11", "3.12")
DEFAULT_PYTHON = "3.12"  # the Kaggle image's
# Kaggle's image is Ubuntu 22.04 (glibc 2.35). pip does not expand a manylinux_2_X tag to the
# older ones it implies, so every one is named; manylinux2014 brings manylinux2010 and 1.
KAGGLE_GLIBC_MINOR = 35
PLATFORM = f"manylinux_2_{KAGGLE_GLIBC_MINOR}_x86_64"
_PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(KAGGLE_GLIBC_MINOR, 4, -1)),
              "manylinux2014_x86_64")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")


class WheelsError(KernelpackError):
    """`kernelpack wheels` cannot make a wheel dataset of these packages."""


@dataclass
class WheelDataset:
    folder: Path
    manifest: Path
    wheels: list[dict]      # installed by the kernel: file, name, version, modules
    left_out: list[dict]    # on the Kaggle image, or needed only by it: name, version, modules
    metadata: Path | None   # dataset-metadata.json, when a dataset id was given


def platform_words(python: str) -> str:
    return f"CPython {python}, manylinux x86_64, glibc 2.{KAGGLE_GLIBC_MINOR}"


def download_command(requirements: Sequence[str], python: str, dest: Path) -> list[str]:
    """`pip download` of wheels only, for Kaggle's platform and `python`, with dependencies."""
    platforms = [part for platform in _PLATFORMS for part in ("--platform", platform)]
    return [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--implementation",
            "cp", "--python-version", python, "--abi", f"cp{python.replace('.', '')}",
            *platforms, "--dest", str(dest), "--progress-bar", "off",
            "--disable-pip-version-check", *requirements]


def top_level_modules(wheel: Path) -> list[str]:
    """The importable top-level names a wheel installs (packages, modules, extension modules),
    read from its file list; `.dist-info`, `.data` and vendored `NAME.libs` folders are not."""
    with zipfile.ZipFile(wheel) as archive:
        heads = {name.split("/", 1)[0] for name in archive.namelist()}
    names = {head.split(".", 1)[0] if not head.endswith((".dist-info", ".data", ".libs"))
             else "" for head in heads}
    return sorted(name for name in names if name.isidentifier())


def requirements_of(wheel: Path) -> list[str]:
    """The canonical names of the distributions a wheel's METADATA requires (`Requires-Dist`),
    whatever their markers: pip has already decided which of them this platform needs."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next((name for name in archive.namelist()
                         if name.count("/") == 1 and name.endswith(".dist-info/METADATA")), None)
        text = archive.read(metadata).decode("utf-8", "replace") if metadata else ""
    head = text.split("\n\n", 1)[0]      # the headers; the long description follows
    return sorted({canonical_name(found[0]) for line in head.splitlines()
                   if line.startswith("Requires-Dist:")
                   and (found := _NAME.match(line.removeprefix("Requires-Dist:").strip()))})


def _wheel_entry(wheel: Path) -> dict:
    name, version = wheel.name.split("-")[:2]
    return {"file": wheel.name, "name": name, "version": version,
            "modules": top_level_modules(wheel)}


def _module_named_like(distribution: str) -> str:
    return canonical_name(distribution).replace("-", "_")


def _on_image(entry: dict) -> bool:
    """The image ships the module named like the distribution (torch, whose wheel also holds
    torchgen), or every public module the wheel installs (cv2 of opencv-python)."""
    public = [name for name in entry["modules"] if not name.startswith("_")]
    return image_ships(_module_named_like(entry["name"])) or (
        bool(public) and all(image_ships(name) for name in public))


def _needed(entries: Sequence[tuple[Path, dict]], asked: set[str]) -> set[str]:
    """The canonical names of the requested wheels and of the dependencies they reach without
    passing through a wheel on the image (what only the image's packages need stays out)."""
    by_name = {canonical_name(entry["name"]): (path, entry) for path, entry in entries}
    missing = sorted(asked - set(by_name))
    if missing:     # never a dataset without what was asked for that looks fine
        raise WheelsError(f"{missing[0]}: pip downloaded no wheel of that name (it got "
                          f"{', '.join(sorted(by_name)) or 'none'}); name the package as it is "
                          "published")
    needed, todo = set(), sorted(asked)
    while todo:
        name = todo.pop()
        path, entry = by_name[name]
        if name in needed or (_on_image(entry) and name not in asked):
            continue
        needed.add(name)
        todo += [dependency for dependency in requirements_of(path) if dependency in by_name]
    return needed


def _refuse_image_package(name: str, modules: Sequence[str]) -> WheelsError:
    return WheelsError(f"{name}: the Kaggle image ships it already ({', '.join(modules)}); "
                       "import it in the kernel as it is, and name only packages the image lacks")


def _run_pip(command: list[str], on_line: Callable[[str], None] | None) -> list[str]:
    """Run pip, passing each output line to `on_line`; returns its lines, raising on failure."""
    lines = []
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True)
    except OSError as exc:
        raise WheelsError(f"pip cannot run ({exc}); install pip into this Python "
                          f"({sys.executable} -m ensurepip)") from None
    with process:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if on_line:
                on_line(lines[-1])
    if process.returncode != 0:
        raise _pip_failure(lines, command)
    return lines


def _pip_failure(lines: list[str], command: list[str]) -> WheelsError:
    python = command[command.index("--python-version") + 1]
    for line in lines:
        found = _NO_MATCH.search(line)
        if found:
            package = found[1]
            return WheelsError(
                f"{package}: no wheel for Kaggle's platform ({platform_words(python)}) on the "
                "package index (it has only a source distribution, wheels for other platforms, "
                f"or no such version); pick a version that has one, or build the wheel on Linux "
                f"x86_64 with CPython {python} (`pip wheel {package} -w DIR`, e.g. in a Kaggle "
                "notebook) and run again with PIP_FIND_LINKS=DIR")
    errors = [line.strip() for line in lines if line.strip().startswith("ERROR:")]
    last = (errors or [line for line in lines if line.strip()] or ["no output"])[-1]
    return WheelsError(f"pip download failed: {last.strip()}; check the package names and "
                       "versions, and that the package index is reachable")


def _check_arguments(requirements: Sequence[str], python: str, dataset_id: str | None) -> None:
    if not requirements:
        raise WheelsError("no package named; pass one or more, e.g. `kernelpack wheels "
                          "PKG==VERSION -o DIR`")
    for requirement in requirements:
        if not _NAME.match(requirement):
            raise WheelsError(f"{requirement!r}: not a package requirement; pass NAME or "
                              "NAME==VERSION")
    if python not in PYTHONS:
        raise WheelsError(f"--python {python}: Kaggle kernels run CPython "
                          f"{' or '.join(PYTHONS)}; pick one (default {DEFAULT_PYTHON})")
    if dataset_id is not None and not is_owner_slug(dataset_id):
        raise WheelsError(f"--id {dataset_id}: must be OWNER/dataset-slug (lower case, digits "
                          "and '-')")


def _previous_wheels(folder: Path) -> list[str]:
    """The wheels a manifest already in `folder` lists (replaced by this run)."""
    if not (folder / MANIFEST_FILE).is_file():
        return []
    try:
        return [wheel["file"] for wheel in read_manifest(folder)["wheels"]]
    except KernelError:  # an unreadable old manifest is overwritten, its wheels left alone
        return []


def _write_metadata(folder: Path, dataset_id: str, title: str | None) -> Path:
    dataset_metadata(folder, dataset_id, title, default_owner="")  # an existing file is kept
    return folder / DATASET_METADATA


def build_wheel_dataset(requirements: Sequence[str], outdir: str | Path, *,
                        python: str = DEFAULT_PYTHON, dataset_id: str | None = None,
                        title: str | None = None,
                        on_line: Callable[[str], None] | None = None) -> WheelDataset:
    """Download `requirements` (NAME or NAME==VERSION) and their dependencies as wheels for
    Kaggle's platform into `outdir`, leaving out what the Kaggle image ships, and write the
    manifest (and dataset-metadata.json with `dataset_id`). pip's own configuration (indexes,
    find-links) applies. Raises WheelsError naming the package and the fix."""
    _check_arguments(requirements, python, dataset_id)
    folder = Path(outdir)
    if folder.exists() and not folder.is_dir():
        raise WheelsError(f"-o {folder}: exists and is not a folder; pass a folder")
    asked = {canonical_name(_NAME.match(r)[0]) for r in requirements}
    for name in sorted(asked):   # torch would be gigabytes of download for nothing
        if image_ships(_module_named_like(name)):
            raise _refuse_image_package(name, [_module_named_like(name)])
    with tempfile.TemporaryDirectory(prefix="kernelpack-wheels-") as download:
        _run_pip(download_command(requirements, python, Path(download)), on_line)
        downloaded = sorted(Path(download).glob("*.whl"))
        entries = [(path, _wheel_entry(path)) for path in downloaded]
        for _, entry in entries:
            if canonical_name(entry["name"]) in asked and _on_image(entry):
                raise _refuse_image_package(entry["name"], entry["modules"])
        needed = _needed(entries, asked)
        kept = [(path, entry) for path, entry in entries
                if canonical_name(entry["name"]) in needed]
        left_out = [{k: entry[k] for k in ("name", "version", "modules")}
                    for _, entry in entries if canonical_name(entry["name"]) not in needed]
        folder.mkdir(parents=True, exist_ok=True)
        for stale in _previous_wheels(folder):
            (folder / stale).unlink(missing_ok=True)
        for path, _ in kept:
            shutil.copyfile(path, folder / path.name)
    manifest = {"format": MANIFEST_FORMAT, "python": python, "platform": PLATFORM,
                "requested": list(requirements), "wheels": [entry for _, entry in kept],
                "left_out": left_out}
    manifest_path = folder / MANIFEST_FILE
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    metadata = _write_metadata(folder, dataset_id, title) if dataset_id else None
    return WheelDataset(folder, manifest_path, manifest["wheels"], left_out, metadata)


def dataset_modules(folder: str | Path) -> list[str]:
    """The top-level modules a wheel dataset folder provides to the kernel (for the bundler,
    which must not look for them here)."""
    try:
        manifest = read_manifest(Path(folder))
    except KernelError as exc:  # the runtime's WheelInstallError, with the fix in its message
        raise WheelsError(f"--wheels {folder}: {exc}") from None
    return sorted({name for wheel in manifest["wheels"] for name in wheel.get("modules", ())})


def dataset_id(folder: str | Path) -> str | None:
    """The id in a wheel dataset folder's dataset-metadata.json, or None when it has none."""
    path = Path(folder) / DATASET_METADATA
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get("id") if path.is_file() else None
    except (OSError, ValueError, AttributeError) as exc:
        raise WheelsError(f"--wheels {folder}: {path} cannot be read ({exc}); fix it or delete "
                          "it") from None
    return found if isinstance(found, str) and "/" in found else None
