"""inference_core: the runtime that kernelpack inlines into `kernel.py`.

It imports only what a Kaggle image ships (torch, torchvision, numpy, PIL, tqdm) and never
imports kernelpack.
"""

from . import prototypes  # noqa: F401  (registers prototype_cnn)
from .blend import BlendAccumulator
from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import validate_config
from .errors import CheckpointError, ConfigError, KernelError, TestSetError, UnknownArchError
from .registry import create_model, list_models, register_model
from .runner import main, run_kernel
from .tta import TTA_OPS, run_tta, split_tta_outputs, tta_batch

__all__ = [
    "TTA_OPS",
    "BlendAccumulator",
    "CheckpointError",
    "ConfigError",
    "KernelError",
    "TestSetError",
    "UnknownArchError",
    "create_model",
    "list_models",
    "load_checkpoint",
    "main",
    "model_from_checkpoint",
    "register_model",
    "run_kernel",
    "run_tta",
    "save_checkpoint",
    "split_tta_outputs",
    "tta_batch",
    "validate_config",
]
