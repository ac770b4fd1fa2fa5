"""The kernelpack checkpoint: `{arch, num_classes, config, state_dict}` in plain types.

Saved with `torch.save` and loaded with `torch.load(weights_only=True)`, so loading can never run
pickled code: `config` holds only str/int/float/bool/None/list/dict, `state_dict` only tensors.
What the fields mean, and their checks, are defined once, in `inference_core.model_config`
(`ModelConfig`); every reader of a checkpoint goes through it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, DamagedCheckpointError, KernelError
from .files import atomic_write
from .kpenc import decrypt_to_memory, is_kpenc, mappable_path
from .model_config import CHECKPOINT_KEYS, ModelConfig
from .model_factory import build_arch, withheld_class_count


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def make_checkpoint(config: ModelConfig, model: nn.Module) -> dict:
    """The checkpoint dict of `model`, described by `config`."""
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {"arch": config.arch, "num_classes": config.num_classes, "config": config.to_dict(),
            "state_dict": state_dict}


def save_checkpoint(path: str | os.PathLike, arch: str, num_classes: int, config: dict,
                    model: nn.Module) -> Path:
    """Check `config` (see ModelConfig; CheckpointError names the field) and write the checkpoint
    atomically (a partial file never carries the final name)."""
    path = Path(path)
    model_config = ModelConfig.from_checkpoint(
        {"arch": arch, "num_classes": num_classes, "config": config}, str(path))
    checkpoint = make_checkpoint(model_config, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        torch.save(checkpoint, handle)
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
        raise DamagedCheckpointError(
            f"{label}: cannot load with weights_only=True ({first_line}); convert it with "
            "`kernelpack import-checkpoint` or save it with inference_core.checkpoint."
            "save_checkpoint (plain types and a state_dict, not a pickled model)"
        ) from None
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in CHECKPOINT_KEYS):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise DamagedCheckpointError(
            f"{label}: not a kernelpack checkpoint (expected keys {list(CHECKPOINT_KEYS)}, "
            f"found {found}); convert it with `kernelpack import-checkpoint`"
        )
    return checkpoint


@dataclass(frozen=True)
class WeightMismatch:
    """How a state dict differs from what a model expects: key names and tensor shapes."""

    missing: list[str]
    unexpected: list[str]
    reshaped: list[tuple[str, tuple, tuple]]  # (key, shape in the file, shape in the model)

    @classmethod
    def between(cls, model: nn.Module, state_dict: dict) -> WeightMismatch:
        expected = model.state_dict()
        return cls(
            missing=[k for k in expected if k not in state_dict],
            unexpected=[k for k in state_dict if k not in expected],
            reshaped=[(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items()
                      if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)],
        )

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.reshaped)

    def describe(self, first: int = 3) -> str:
        """One line: counts, and the first few names of each kind."""
        def listed(items: list[str]) -> str:
            more = f", ... {len(items) - first} more" if len(items) > first else ""
            return ", ".join(items[:first]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {listed(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {listed(self.unexpected)}")
        if self.reshaped:
            parts.append(f"{len(self.reshaped)} of another shape: " + listed(
                [f"{k} {list(got)} in the file, {list(want)} in the model"
                 for k, got, want in self.reshaped]))
        return "; ".join(parts)


def build_model(config: ModelConfig, name: str) -> nn.Module:
    """The architecture of `config` with random weights; errors are prefixed with `name`."""
    try:
        return build_arch(config.arch, config.num_classes, config.model_kwargs,
                          config.classes_argument)
    except KernelError as exc:  # UnknownArchError, UserCodeError: same type, named checkpoint
        raise type(exc)(f"{name}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        # a model_kwargs key the builder does not take, a negative width, a head too large,
        # or a factory's own class-count parameter left without a value
        withheld = withheld_class_count(config.arch, config.classes_argument)
        fix = (f"set \"classes_argument\": \"{withheld[0]}\" in the checkpoint config (the "
               "factory takes no num_classes)" if withheld else
               "fix model_kwargs in the checkpoint config")
        raise CheckpointError(
            f"{name}: cannot build arch {config.arch!r} with model_kwargs "
            f"{config.model_kwargs} ({_first_line(exc)}); {fix}") from None
    except OSError as exc:
        # 2019 factories load pretrained weights when built (`pretrained=True` by default,
        # from the network or a file under ../input): the checkpoint's weights replace them,
        # and a kernel has no network.
        raise CheckpointError(
            f"{name}: building arch {config.arch!r} with model_kwargs {config.model_kwargs} "
            f"read the network or a file ({_first_line(exc)}): the factory loads pretrained "
            "weights when it builds; turn that off in model_kwargs (e.g. \"pretrained\": "
            "false): the checkpoint's own weights replace them, and the kernel runs offline"
        ) from None


def model_from_checkpoint(checkpoint: dict, name: str = "<checkpoint>",
                          config: ModelConfig | None = None) -> nn.Module:
    """Build the architecture, load the weights strictly and switch to eval mode. `config`:
    the checkpoint's ModelConfig when the caller has read it already (else it is read here)."""
    if config is None:
        config = ModelConfig.from_checkpoint(checkpoint, name)
    model = build_model(config, name)
    mismatch = WeightMismatch.between(model, checkpoint["state_dict"])
    if mismatch:
        raise CheckpointError(
            f"{name}: weights do not fit arch {config.arch!r} with {config.num_classes} classes "
            f"({mismatch.describe()}); check the arch and model_kwargs it was trained with"
        )
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval()
