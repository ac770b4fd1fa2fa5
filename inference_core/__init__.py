"""inference_core: the runtime that kernelpack inlines into `kernel.py`.

It imports only what a Kaggle image ships (torch, torchvision, numpy, PIL, tqdm) and never
imports kernelpack. The names below load on first use, so that importing a light module
(`inference_core.kpenc`, `inference_core.config`) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TTA_OPS": "tta",
    "run_tta": "tta",
    "split_tta_outputs": "tta",
    "tta_batch": "tta",
    "BlendAccumulator": "blend",
    "load_checkpoint": "checkpoint",
    "model_from_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "EnsembleConfig": "config",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "KernelError": "errors",
    "TestSetError": "errors",
    "UnknownArchError": "errors",
    "create_model": "model_factory",
    "list_models": "model_factory",
    "register_model": "registry",
    "main": "runner",
    "run_kernel": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inference_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
