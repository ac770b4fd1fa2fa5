"""`kernelpack build`: ensemble YAML -> OUTDIR/kernel.py (one file), kernel-metadata.json and
kernel-config.json (a readable copy of the config embedded in kernel.py)."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import inference_core

from . import read_template
from .bundler.bundle import Entry, bundle
from .config import load_config
from .errors import BuildError
from .kaggle.constants import KERNEL_METADATA, slug_of, title_of
from .user_code import code_locations

KERNEL_FILE = "kernel.py"
METADATA_FILE = KERNEL_METADATA
CONFIG_FILE = "kernel-config.json"
ENTRY_NAME = "kernel_entry.py"
# First line of a kernel.py that carries a key: the entry is compressed inside kernel.py, so this
# says so in clear text, for `embeds_key` and for anyone reading the file.
KEY_MARKER = "# kernelpack: this kernel embeds a decryption key; keep it private"
# How render_entry writes a key (and any hand-made `bytes.fromhex` of 32 bytes), and the entry's
# KEY set to anything but None.
_KEY_LITERAL = re.compile(r"fromhex\(\s*[rbuRBU]*['\"]\s*(?:[0-9a-fA-F]\s*){64}['\"]\s*\)")
_ENTRY_KEY = re.compile(r"^KEY[ \t]*=[ \t]*(?![ \t]|None[ \t]*(?:#.*)?$)", re.M)
# The payload tuple of bundler/bundle.py's render (lines of base64 string literals).
_PAYLOAD = re.compile(r"^_KP_PAYLOAD = \(\n(.*?)^\)", re.M | re.S)
_PAYLOAD_PIECE = re.compile(r"'([A-Za-z0-9+/=]*)'")


@dataclass
class BuildResult:
    kernel: Path
    metadata: Path
    size_bytes: int
    seconds: float


def runtime_config(config: dict) -> dict:
    """What the kernel reads: everything but the host-only `kernel` section."""
    return {name: value for name, value in config.items() if name != "kernel"}


def render_entry(config: dict, key: bytes | None = None, user_code: Sequence[str] = ()) -> str:
    """The entry script with the runtime config, the user's modules to import before any model
    is built and, for a private kernel, the decryption key."""
    config_json = json.dumps(runtime_config(config), sort_keys=True, indent=1)
    template = read_template(ENTRY_NAME)
    key_literal = "None" if key is None else f"bytes.fromhex({key.hex()!r})"
    return (template.replace("__KERNELPACK_CONFIG_JSON__", repr(config_json))
            .replace("__KERNELPACK_KEY__", key_literal)
            .replace("__KERNELPACK_USER_CODE__", repr(list(user_code))))


def _payload_files(text: str, where: str) -> dict[str, bytes]:
    """The files inside a bundled kernel.py's compressed payload (none for a plain script)."""
    found = _PAYLOAD.search(text)
    if found is None:
        return {}
    try:
        data = gzip.decompress(base64.b64decode("".join(_PAYLOAD_PIECE.findall(found[1]))))
        index, _, blob = data.partition(b"\n")
        files, offset = {}, 0
        for name, size in json.loads(index):
            files[name] = blob[offset:offset + size]
            offset += size
    except (ValueError, TypeError, OSError, EOFError) as exc:
        raise BuildError(f"{where}: its bundled payload cannot be read ({type(exc).__name__}); "
                         "it was edited or damaged, build the kernel again") from None
    return files


def embeds_key(kernel_path: str | Path) -> bool:
    """True when a built kernel.py carries a decryption key (it must then stay private).

    Decided from the content, not from the marker line alone (which anyone can delete): the
    script itself and every file in its compressed payload are searched for a key literal, and
    the entry's KEY for anything but None."""
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


def kernel_metadata(kernel: dict, default_slug: str) -> dict:
    """kernel-metadata.json as the kaggle client reads it (`kaggle kernels push -p OUTDIR`)."""
    kernel_id = kernel["id"] or f"INSERT_USERNAME/{default_slug}"
    slug = kernel_id.split("/", 1)[1]
    metadata = {
        "id": kernel_id,
        "title": kernel["title"] or title_of(slug),
        "code_file": KERNEL_FILE,
        "language": "python",
        "kernel_type": "script",
        **{key: kernel[key] for key in ("is_private", "enable_gpu", "enable_internet",
                                        "dataset_sources", "competition_sources",
                                        "kernel_sources", "model_sources")},
    }
    if kernel["machine_shape"]:
        metadata["machine_shape"] = kernel["machine_shape"]
    return metadata


def _imported_by(missing: Sequence[str], modules: Sequence[str]) -> list[str]:
    """The bundle's unresolved imports ("name (file:line)") made by the user's own `modules`;
    vendored packages have harmless ones (six's Python 2 fallbacks, optional extras)."""
    places = tuple(f"({name}/" for name in modules) + tuple(f"({name}.py:" for name in modules)
    return [item for item in missing if any(place in item for place in places)]


def build_kernel(config_path: str | Path, outdir: str | Path, key: bytes | None = None,
                 code: Sequence[str | Path] = ()) -> BuildResult:
    """Validate the config, bundle inference_core with the rendered entry, write both files.

    With `key`, the kernel can decrypt .kpenc models; that is refused for a public kernel.
    `code`: the user's packages/modules (relative to the current folder), bundled whole with
    those of `kernel.code` (relative to the config file) and imported before the models."""
    start = time.perf_counter()
    config_path, outdir = Path(config_path), Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise BuildError(f"-o {outdir}: exists and is not a folder; pass the folder to write "
                         "kernel.py into (a new or existing folder)")
    config = load_config(config_path)
    if key is not None and not config["kernel"]["is_private"]:
        raise BuildError(
            f"{config_path}: kernel.is_private is false, and a public kernel must not embed the "
            "decryption key; set kernel.is_private: true, or build without a key"
        )
    locations = code_locations(
        [(config_path.parent / path, f"{config_path}: kernel.code[{i}] {path!r}")
         for i, path in enumerate(config["kernel"]["code"])]
        + [(path, f"--code {path}") for path in code])
    modules = [location.name for location in locations]
    entry = Entry(ENTRY_NAME, render_entry(config, key, modules).encode("utf-8"))
    bundled = bundle(entry, vendor=[inference_core.__name__], code=locations)
    missing = _imported_by(bundled.missing, modules)
    if missing:
        raise BuildError(
            f"import {missing[0]}: neither on the Kaggle image nor installed here; "
            "install it here (pure-Python packages are then bundled), add your own module "
            "with --code PATH, or make the import optional (inside try/except ImportError)")
    kernel_text = bundled.text
    if key is not None:
        kernel_text = f"{KEY_MARKER}\n{kernel_text}"
    slug = slug_of(config_path.stem)
    metadata = kernel_metadata(config["kernel"], slug)
    outdir.mkdir(parents=True, exist_ok=True)
    kernel_path = outdir / KERNEL_FILE
    kernel_path.write_text(kernel_text, encoding="utf-8")
    metadata_path = outdir / METADATA_FILE
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    # A readable copy of the embedded config (never the key), for people and `run-local`.
    (outdir / CONFIG_FILE).write_text(json.dumps(runtime_config(config), indent=2) + "\n",
                                      encoding="utf-8")
    return BuildResult(kernel_path, metadata_path, len(kernel_text.encode("utf-8")),
                       time.perf_counter() - start)
