"""The kernelpack checkpoint: `{arch, num_classes, config, state_dict}` in plain types.

Saved with `torch.save` and loaded with `torch.load(weights_only=True)`, so loading can never run
pickled code: `config` holds only str/int/float/bool/None/list/dict, `state_dict` only tensors.
`config` carries what inference needs beside the weights: the model's `name` and `fold`, its
`input_size`, `resize` mode, normalisation `mean`/`std`, `activation`, `classes`, and the
`model_kwargs` the architecture was built with (e.g. `{"width": 16}` for small_cnn).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .kpenc import decrypt_to_memory, is_kpenc, mappable_path
from .registry import create_model

CHECKPOINT_KEYS = ("arch", "num_classes", "config", "state_dict")

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    raise TypeError(
        f"{where}: {type(value).__name__} is not a plain type; "
        "use str/int/float/bool/None/list/dict so the checkpoint loads with weights_only=True"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def make_checkpoint(arch: str, num_classes: int, config: dict, model: nn.Module) -> dict:
    """The checkpoint dict for `model`; raises TypeError if `config` holds non-plain values."""
    _check_plain(config, "config")
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {"arch": arch, "num_classes": int(num_classes), "config": dict(config),
            "state_dict": state_dict}


def save_checkpoint(path: str | os.PathLike, arch: str, num_classes: int, config: dict,
                    model: nn.Module) -> Path:
    """Write the checkpoint atomically (a partial file never carries the final name)."""
    path = Path(path)
    checkpoint = make_checkpoint(arch, num_classes, config, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(source: str | os.PathLike | bytes, name: str | None = None,
                    key: bytes | None = None, mmap: bool = False) -> dict:
    """Read a checkpoint from a path (plain or .kpenc, decrypted in memory with `key`) or from
    bytes already in memory. `mmap` maps a plain file's tensors instead of reading them."""
    label = name or (str(source) if not isinstance(source, bytes) else "<checkpoint bytes>")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise CheckpointError(f"{label}: checkpoint file not found; check the model path")
    if not isinstance(source, bytes) and is_kpenc(source):
        if key is None:
            raise CheckpointError(f"{label}: the model is encrypted but no key was given; build "
                                  "the kernel with `kernelpack build --key KEYFILE`")
        with decrypt_to_memory(source, key) as plain:
            # mmap maps the tensors straight from the in-memory file: no second copy.
            mapped = mappable_path(plain)
            return _load(mapped or plain, label, mmap=mapped is not None)
    if isinstance(source, bytes):
        return _load(io.BytesIO(source), label, mmap=False)
    return _load(source, label, mmap=mmap)


def _load(source, label: str, mmap: bool) -> dict:
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first_line = _first_line(exc)
        raise CheckpointError(
            f"{label}: cannot load with weights_only=True ({first_line}); save it with "
            "inference_core.checkpoint.save_checkpoint (plain types and a state_dict, "
            "not a pickled model)"
        ) from None
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in CHECKPOINT_KEYS):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{label}: not a kernelpack checkpoint (expected keys {list(CHECKPOINT_KEYS)}, "
            f"found {found}); save it with inference_core.checkpoint.save_checkpoint"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict, name: str = "<checkpoint>") -> nn.Module:
    """Build the architecture, load the weights strictly and switch to eval mode."""
    kwargs = checkpoint["config"].get("model_kwargs") or {}
    model = create_model(checkpoint["arch"], checkpoint["num_classes"], **kwargs)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{name}: weights do not fit arch {checkpoint['arch']!r} with "
            f"{checkpoint['num_classes']} classes ({_first_line(exc)}); "
            "check the arch it was trained with"
        ) from None
    return model.eval()
