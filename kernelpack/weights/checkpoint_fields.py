"""A kernelpack checkpoint's plain fields (arch, num_classes, config) read without importing torch,
so that `kernelpack encrypt` starts at once.

`torch.save` writes a zip whose `ARCHIVE/data.pkl` pickles the checkpoint dict; each tensor in it
is a call to one of torch's rebuild functions on a storage kept in another zip member. Unpickling
with those calls replaced by placeholders gives the plain fields without reading any weight. Only a
pickle made of plain containers and tensors is read this way (a part of what
`torch.load(weights_only=True)` accepts); anything else, and torch's legacy non-zip format, goes to
`inference_core.checkpoint.load_checkpoint`, which reads it with torch or says what is wrong.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

from inference_core.model_config import CHECKPOINT_KEYS

_TENSOR_CALLS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}


class _NotPlain(Exception):
    """The pickle needs more than plain containers and tensors: torch.load decides."""


def _weight(*args: object) -> None:
    return None


class _FieldsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) in _TENSOR_CALLS or (module == "torch" and name.endswith("Storage")):
            return _weight
        raise _NotPlain(f"{module}.{name}")

    def persistent_load(self, pid: object) -> None:
        return None     # a storage: its bytes are never read


def _plain_fields(path: Path) -> dict | None:
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")
                       and n.count("/") == 1]
            if len(pickles) != 1:
                return None
            with archive.open(pickles[0]) as stream:
                checkpoint = _FieldsUnpickler(stream).load()
    except Exception:  # anything unexpected: torch.load reads the file and reports
        return None
    if not isinstance(checkpoint, dict) or not all(key in checkpoint for key in CHECKPOINT_KEYS):
        return None
    return {key: checkpoint[key] for key in ("arch", "num_classes", "config")}


def checkpoint_fields(path: str | Path) -> dict:
    """`{"arch", "num_classes", "config"}` of the checkpoint at `path`, without torch when the
    file is a plain kernelpack checkpoint; otherwise through `load_checkpoint` (CheckpointError
    for a missing file, a pickled model or a file that is not a checkpoint)."""
    fields = _plain_fields(Path(path)) if Path(path).is_file() else None
    if fields is None:
        from inference_core.checkpoint import load_checkpoint  # torch, only for the odd file

        # mapped, so the weights are not read; torch maps only its zip format
        checkpoint = load_checkpoint(path, mmap=zipfile.is_zipfile(path))
        fields = {key: checkpoint[key] for key in ("arch", "num_classes", "config")}
    return fields
