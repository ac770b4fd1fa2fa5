"""The user's own preprocessing pipelines, rebuilt from what the checkpoint saved: an
albumentations pipeline from its `A.to_dict` dict, timm's eval transform from the model's resolved
data config. Each is held as canonical JSON text (`Preprocess.albumentations`, `.timm`).

Both libraries import only when a checkpoint names them, so that checking a checkpoint without
them needs neither (nor torch, nor cv2).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from functools import cache

_per_thread = threading.local()


def albumentations_pipeline(text: str):
    """The pipeline rebuilt (A.from_dict) once per thread that uses it: a transform keeps its
    last call's parameters on itself, so the loader threads do not share one."""
    pipelines = _per_thread.__dict__.setdefault("albumentations", {})
    if text not in pipelines:
        pipelines[text] = rebuild_albumentations(text)
    return pipelines[text]


def rebuild_albumentations(text: str):
    """A new albumentations pipeline from its saved dict (as JSON text)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
    import albumentations

    with warnings.catch_warnings():  # from_dict warns about its own serialised defaults
        warnings.simplefilter("ignore")
        pipeline = albumentations.from_dict(json.loads(text))
    if not callable(pipeline):
        raise TypeError(f"from_dict returned {type(pipeline).__name__}, not a transform")
    return pipeline


@cache
def timm_pipeline(text: str):
    """timm's own eval transform for the saved data config: the exact code that made the
    training-time validation pixels (resize rounding, crop modes, border fill)."""
    from timm.data import create_transform

    return create_transform(**json.loads(text), is_training=False)
