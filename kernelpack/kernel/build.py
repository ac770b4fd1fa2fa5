"""`kernelpack build`: ensemble YAML -> OUTDIR/kernel.py (one file; with `notebook`, kernel.ipynb
holding it in one cell), kernel-metadata.json and kernel-config.json (a readable copy of the
config embedded in the kernel)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import inference_core
from inference_core.config import EnsembleConfig
from inference_core.files import atomic_write

from ..bundler.bundle import GENERATED, Entry, bundle
from ..bundler.payload import DAMAGED, PAYLOAD_NAME, decode_payload, payload_pieces
from ..config import KernelSection, load_config
from ..errors import BuildError
from ..metadata import KERNEL_METADATA, slug_of, title_of
from ..templates import fill_template
from .folder import CONFIG_FILE, KERNEL_FILE
from .notebook import (
    NOTEBOOK_FILE,
    is_notebook,
    made_by_kernelpack,
    make_notebook,
    notebook_code,
)
from .user_code import code_locations
from .wheels import dataset_id, dataset_modules

ENTRY_NAME = "kernel_entry.py"
# First line of a kernel.py that carries a key: the entry is compressed inside kernel.py, so this
# says so in clear text, for `embeds_key` and for anyone reading the file.
KEY_MARKER = "# kernelpack: this kernel embeds a decryption key; keep it private"
# How render_entry writes a key (and any hand-made `bytes.fromhex` of 32 bytes), and the entry's
# KEY set to anything but None.
_KEY_LITERAL = re.compile(r"fromhex\(\s*[rbuRBU]*['\"]\s*(?:[0-9a-fA-F]\s*){64}['\"]\s*\)")
_ENTRY_KEY = re.compile(r"^KEY[ \t]*=[ \t]*(?![ \t]|None[ \t]*(?:#.*)?$)", re.M)


@dataclass
class BuildResult:
    kernel: Path
    metadata: Path
    size_bytes: int
    seconds: float
    warnings: tuple[str, ...] = ()  # the bundler's, each naming a file, a line and the fix
    # the user's code (--code): the modules carried, and one line for each left out
    code_modules: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()


def render_entry(config: EnsembleConfig, key: bytes | None = None,
                 user_code: Sequence[str] = ()) -> str:
    """The entry script with the runtime config (never the host-only `kernel` section), the
    user's modules to import before any model is built and, for a private kernel, the
    decryption key."""
    config_json = config.to_json()
    key_literal = "None" if key is None else f"bytes.fromhex({key.hex()!r})"
    return fill_template(ENTRY_NAME, {"CONFIG": f"json.loads({config_json!r})",
                                      "KEY": key_literal, "USER_CODE": repr(list(user_code))})


def _payload_files(text: str, where: str) -> dict[str, bytes]:
    """The files inside a bundled kernel.py's compressed payload (none for a plain script)."""
    pieces = payload_pieces(text)
    if pieces is None:
        if PAYLOAD_NAME in text:  # a bundle whose payload was rewritten: cannot be checked
            raise BuildError(f"{where}: its bundled payload cannot be found; it was edited or "
                             "damaged, build the kernel again")
        return {}
    try:
        return decode_payload(pieces)
    except DAMAGED as exc:
        raise BuildError(f"{where}: its bundled payload cannot be read ({type(exc).__name__}); "
                         "it was edited or damaged, build the kernel again") from None


def embeds_key(kernel_path: str | Path) -> bool:
    """True when a built kernel.py carries a decryption key (it must then stay private).

    Decided from the content, not from the marker line alone (which anyone can delete): the
    script itself and every file in its compressed payload are searched for a key literal, and
    the entry's KEY for anything but None."""
    if is_notebook(kernel_path):   # a notebook kernel: its code cells
        text = notebook_code(kernel_path)
    else:
        text = Path(kernel_path).read_text(encoding="utf-8", errors="replace")
    if text.startswith(KEY_MARKER) or _KEY_LITERAL.search(text):
        return True
    for name, content in _payload_files(text, str(kernel_path)).items():
        source = content.decode("utf-8", errors="replace")
        if _KEY_LITERAL.search(source):
            return True
        if name.rsplit("/", 1)[-1] == ENTRY_NAME and _ENTRY_KEY.search(source):
            return True
    return False


def kernel_metadata(kernel: KernelSection, default_slug: str, notebook: bool = False) -> dict:
    """kernel-metadata.json as the kaggle client reads it (`kaggle kernels push -p OUTDIR`)."""
    kernel_id = kernel.id or f"INSERT_USERNAME/{default_slug}"
    slug = kernel_id.split("/", 1)[1]
    metadata = {
        "id": kernel_id,
        "title": kernel.title or title_of(slug),
        "code_file": NOTEBOOK_FILE if notebook else KERNEL_FILE,
        "language": "python",
        "kernel_type": "notebook" if notebook else "script",
        "is_private": kernel.is_private,
        "enable_gpu": kernel.gpu,
        "enable_tpu": kernel.tpu,
        "enable_internet": kernel.enable_internet,
        "dataset_sources": list(kernel.dataset_sources),
        "competition_sources": list(kernel.competition_sources),
        "kernel_sources": list(kernel.kernel_sources),
        "model_sources": list(kernel.model_sources),
    }
    if kernel.accelerator:  # the client sends it as the session's machine shape
        metadata["machine_shape"] = kernel.accelerator
    return metadata


def _imported_by(missing: Sequence[str], modules: Sequence[str]) -> list[str]:
    """The bundle's unresolved imports ("name (file:line)") made by the user's own `modules`;
    vendored packages have harmless ones (six's Python 2 fallbacks, optional extras)."""
    places = tuple(f"({name}/" for name in modules) + tuple(f"({name}.py:" for name in modules)
    return [item for item in missing if any(place in item for place in places)]


def check_user_imports(missing: Sequence[str], modules: Sequence[str], command: str) -> None:
    """BuildError for the first import of the user's `modules` that the bundle could not meet
    (`missing`, as `bundle` lists them), naming the fixes; `command` is the command that takes
    --wheels (`build`, `fanout`)."""
    unmet = _imported_by(missing, modules)
    if unmet:
        raise BuildError(
            f"import {unmet[0]}: neither on the Kaggle image nor installed here; "
            "install it here (pure-Python packages are then bundled), add your own module "
            "with --code PATH, get a C extension from a wheel dataset (`kernelpack wheels PKG "
            f"-o DIR`, then {command} with --wheels DIR), or make the import optional (inside "
            "try/except ImportError)")


def wheel_sources(kernel: KernelSection, wheels: Sequence[str | Path]) -> KernelSection:
    """The kernel section with the wheel datasets' ids (their dataset-metadata.json) among its
    dataset sources."""
    ids = [source for folder in wheels if (source := dataset_id(folder))]
    added = [source for source in dict.fromkeys(ids) if source not in kernel.dataset_sources]
    return dataclasses.replace(kernel, dataset_sources=(*kernel.dataset_sources, *added)) \
        if added else kernel


def _made_by_kernelpack(kernel: Path) -> bool:
    if is_notebook(kernel):
        return made_by_kernelpack(kernel)
    with open(kernel, encoding="utf-8", errors="replace") as handle:
        head = handle.read(len(KEY_MARKER) + len(GENERATED) + 1)
    return head.startswith((GENERATED, f"{KEY_MARKER}\n{GENERATED}"))


def _check_outdir(outdir: Path, code: Sequence, kernel_file: str = KERNEL_FILE) -> None:
    """`-o` must not overwrite a kernel file that kernelpack did not write, nor lie inside the
    user's code that the kernel bundles (the next build would carry the last kernel)."""
    target = outdir.resolve()
    for location in code:
        if location.holds(target) or location.holds(target / kernel_file):
            raise BuildError(f"-o {outdir}: lies inside your code {location.name} "
                             f"({location.path}), which the kernel bundles; write the kernel "
                             "elsewhere (e.g. -o build/)")
    kernel = outdir / kernel_file
    if kernel.is_symlink() or (kernel.exists() and not kernel.is_file()):
        raise BuildError(f"-o {outdir}: {kernel} exists and is not a plain file; pick another "
                         "folder")
    if kernel.is_file() and not _made_by_kernelpack(kernel):
        raise BuildError(f"-o {outdir}: {kernel} exists and was not written by kernelpack "
                         "(it would be overwritten); pick another folder or move it away")


def build_kernel(config_path: str | Path, outdir: str | Path, key: bytes | None = None,
                 code: Sequence[str | Path] = (),
                 wheels: Sequence[str | Path] = (), progress: bool = False,
                 notebook: bool = False, exclude: Sequence[str] = (),
                 models: Sequence[str | Path] = ()) -> BuildResult:
    """Validate the config, bundle inference_core with the rendered entry, write both files.

    With `key`, the kernel can decrypt .kpenc models; that is refused for a public kernel.
    `code`: the user's packages/modules (relative to the current folder), with those of
    `kernel.code` (relative to the config file): imported before the models, and bundled as far
    as the kernel needs them (`bundler.closure`: a module whose imports cannot be met in the
    kernel is left out, one line each in `left_out`, unless the kernel needs it). `exclude`:
    --exclude patterns over the code's modules. `models`: folders of the config's checkpoints,
    whose archs and custom transforms name the modules the kernel needs (without them, every
    module whose imports can be met is carried).
    `wheels`: wheel dataset folders (`kernelpack wheels`): their packages are not bundled (the
    kernel installs them) and their dataset ids join dataset_sources. `progress`: a bar on
    stderr while bundling, when the code is large (see `bundler.bundle.PROGRESS_BYTES`).
    `notebook`: write kernel.ipynb (a notebook kernel) instead of kernel.py."""
    start = time.perf_counter()
    config_path, outdir = Path(config_path), Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise BuildError(f"-o {outdir}: exists and is not a folder; pass the folder to write "
                         "kernel.py into (a new or existing folder)")
    config = load_config(config_path)
    if key is not None and not config.kernel.is_private:
        raise BuildError(
            f"{config_path}: kernel.is_private is false, and a public kernel must not embed the "
            "decryption key; set kernel.is_private: true, or build without a key"
        )
    locations = code_locations(
        [(config_path.parent / path, f"{config_path}: kernel.code[{i}] {path!r}")
         for i, path in enumerate(config.kernel.code)]
        + [(path, f"--code {path}") for path in code])
    modules = [location.name for location in locations]
    kernel_file = NOTEBOOK_FILE if notebook else KERNEL_FILE
    _check_outdir(outdir, locations, kernel_file)
    entry = Entry(ENTRY_NAME, render_entry(config.ensemble, key, modules).encode("utf-8"))
    from_wheels = [name for folder in wheels for name in dataset_modules(folder)]
    if exclude and not locations:
        raise BuildError(f"--exclude {exclude[0]}: there is no code to leave modules out of; "
                         "pass your package with --code, or drop --exclude")
    named = None
    if models:
        from .named_modules import named_modules

        named = named_modules(config.ensemble, models, modules)
    bundled = bundle(entry, vendor=[inference_core.__name__], code=locations,
                     exclude=from_wheels, progress=progress, named=named,
                     code_exclude=exclude)
    check_user_imports(bundled.missing, modules, "build")
    kernel_text = bundled.text
    if key is not None:
        kernel_text = f"{KEY_MARKER}\n{kernel_text}"
    slug = slug_of(config_path.stem)
    metadata = kernel_metadata(wheel_sources(config.kernel, wheels), slug, notebook)
    outdir.mkdir(parents=True, exist_ok=True)
    if notebook:
        kernel_text = make_notebook(kernel_text, config_path, config, key is not None)
    # The other kind, from an earlier build, goes: the folder holds the kernel it describes.
    other = outdir / (KERNEL_FILE if notebook else NOTEBOOK_FILE)
    if other.is_file() and not other.is_symlink() and _made_by_kernelpack(other):
        other.unlink()
    kernel_path = outdir / kernel_file
    # A kernel that embeds a key is as secret as the key file: mode 0600 from its first byte.
    with atomic_write(kernel_path, "w", encoding="utf-8", private=key is not None) as handle:
        handle.write(kernel_text)
    metadata_path = outdir / KERNEL_METADATA
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    # A readable copy of the embedded config (never the key), for people and `run-local`.
    (outdir / CONFIG_FILE).write_text(json.dumps(config.ensemble.to_dict(), indent=2) + "\n",
                                      encoding="utf-8")
    return BuildResult(kernel_path, metadata_path, len(kernel_text.encode("utf-8")),
                       time.perf_counter() - start, tuple(bundled.warnings),
                       bundled.code_modules, bundled.left_out)
