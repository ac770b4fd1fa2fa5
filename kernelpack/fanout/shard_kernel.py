"""A shard's kernel: `shard_entry.py` filled with the shard, the config, the key and the user's
modules, bundled with inference_core and the user's code (`--code`, `kernel.code`) into one
kernel.py, beside a kernel-metadata.json made from the config's kernel section (its sources,
accelerator and privacy) with the shard's own id and only the sources it needs (`sources`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from importlib import resources
from pathlib import Path

import inference_core
from inference_core.files import atomic_write

from ..bundler.bundle import Entry, bundle
from ..config import HostConfig
from ..errors import BuildError
from ..kernel.build import KEY_MARKER, check_user_imports, kernel_metadata
from ..kernel.user_code import code_locations
from ..metadata import KERNEL_METADATA, slug_of, title_of
from ..templates import fill
from .plan import Shard
from .sources import ShardSources

ENTRY_NAME = "fanout_shard_entry.py"
SLUG_BASE_CHARS = 24  # + "-" + the shard's name: within Kaggle's 50-character slugs


def _template() -> str:
    return resources.files(__package__).joinpath("shard_entry.py").read_text(encoding="utf-8")


class ShardKernels:
    """Writes the kernel folder of any shard of one fan-out (the same config, code and key)."""

    def __init__(self, host: HostConfig, config_path: Path, code: Sequence[str | Path],
                 key: bytes | None, owner: str, sources: ShardSources | None = None,
                 from_wheels: Sequence[str] = ()) -> None:
        if key is not None and not host.kernel.is_private:
            raise BuildError(f"{config_path}: kernel.is_private is false, and a shard kernel "
                             "that embeds the decryption key must be private; set "
                             "kernel.is_private: true, or fan out plain models without a key")
        self.host = host
        self.sources = sources  # None: every shard attaches every source of the config
        self.key = key
        self.owner = owner
        self.base = slug_of(config_path.stem)[:SLUG_BASE_CHARS].strip("-") or "fanout"
        self.locations = code_locations(
            [(config_path.parent / path, f"{config_path}: kernel.code[{i}] {path!r}")
             for i, path in enumerate(host.kernel.code)]
            + [(path, f"--code {path}") for path in code])
        self.modules = [location.name for location in self.locations]
        # Installed by the shard from its wheel datasets (`kernelpack wheels`), so not bundled.
        self.from_wheels = list(from_wheels)

    def _text(self, spec: dict) -> str:
        key = "None" if self.key is None else f"bytes.fromhex({self.key.hex()!r})"
        entry = fill(_template(), {"SHARD": f"json.loads({json.dumps(spec, sort_keys=True)!r})",
                                   "CONFIG": f"json.loads({self.host.ensemble.to_json()!r})",
                                   "KEY": key, "USER_CODE": repr(self.modules)},
                     "kernelpack/fanout/shard_entry.py")
        bundled = bundle(Entry(ENTRY_NAME, entry.encode("utf-8")),
                         vendor=[inference_core.__name__], code=self.locations,
                         exclude=self.from_wheels)
        check_user_imports(bundled.missing, self.modules, "fanout")
        return bundled.text if self.key is None else f"{KEY_MARKER}\n{bundled.text}"

    @cached_property
    def code_digest(self) -> str:
        """SHA-256 of the kernel every shard shares (runtime, entry, user code, config, key
        id), bundled with an empty shard: part of every shard's name."""
        return hashlib.sha256(self._text({}).encode("utf-8")).hexdigest()

    def ref(self, shard: Shard) -> str:
        return f"{self.owner}/{self.base}-{shard.name}"

    def write(self, shard: Shard, spec: dict, folder: Path) -> Path:
        """The shard's kernel folder (kernel.py, kernel-metadata.json) in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / "kernel.py", "w", encoding="utf-8",
                          private=self.key is not None) as handle:
            handle.write(self._text(spec))
        ref = self.ref(shard)
        metadata = kernel_metadata(self.host.kernel, ref.split("/", 1)[1])
        metadata.update(id=ref, title=title_of(ref.split("/", 1)[1]))
        if self.sources is not None:
            metadata.update(self.sources.for_shard(m.label for m in shard.members))
        (folder / KERNEL_METADATA).write_text(json.dumps(metadata, indent=2) + "\n",
                                              encoding="utf-8")
        return folder
