"""The transforms: a decoded RGB uint8 image becomes a model's input tensor, by the steps its
`Preprocess` names (the built-in resizes, crops and pads in order, then mean/std; or the user's
albumentations or timm pipeline)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .pipelines import albumentations_pipeline, timm_pipeline
from .preprocess import SIZE_MULTIPLE, CenterCropStep, PadStep, Preprocess, ResizeStep, Step

_PIL_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
_CV2_FLAGS = {"nearest": "INTER_NEAREST", "bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC",
              "lanczos": "INTER_LANCZOS4", "area": "INTER_AREA"}


def target_size(height: int, width: int, step: ResizeStep | Preprocess) -> tuple[int, int]:
    """(height, width) a resize step (or a `Preprocess`'s single-step resize) makes of a
    height x width image."""
    if isinstance(step, Preprocess):
        step = step.resize_step
    size = step.size
    if step.mode == "stretch":
        return size, size
    if step.mode == "keep_aspect":
        scale = size / max(height, width)

        def snap(side: int) -> int:
            return max(SIZE_MULTIPLE, round(side * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)

        return (size, snap(width)) if height >= width else (snap(height), size)
    reference = max(height, width) if step.mode == "longest" else min(height, width)
    multiple = step.multiple
    to_int = math.floor if step.rounding == "floor" else round

    def scaled(side: int) -> int:
        if side == reference:
            return size
        # side * size / reference, in that order: torchvision's Resize computes it so.
        return max(multiple, to_int(side * size / reference / multiple) * multiple)

    return scaled(height), scaled(width)


def resize_image(image: np.ndarray, height: int, width: int, step: ResizeStep) -> np.ndarray:
    """The image resized by PIL or cv2, with the step's interpolation."""
    if step.backend == "cv2":
        import cv2

        flag = getattr(cv2, _CV2_FLAGS[step.interpolation])
        return cv2.resize(image, (width, height), interpolation=flag)
    resample = _PIL_FILTERS[step.interpolation]
    return np.array(Image.fromarray(image).resize((width, height), resample))


def apply_step(image: np.ndarray, step: Step) -> np.ndarray:
    """One built-in step on an HxWx3 uint8 image."""
    if isinstance(step, CenterCropStep):
        return center_crop(image, step.height, step.width)
    if isinstance(step, PadStep):
        return pad_to(image, step.height, step.width, step.fill)
    height, width = target_size(image.shape[0], image.shape[1], step)
    if (height, width) == image.shape[:2]:
        return image
    return resize_image(image, height, width, step)


def pad_to(image: np.ndarray, height: int, width: int, fill: tuple[int, int, int]) -> np.ndarray:
    """The image centred on a fill-coloured canvas at least height x width (the odd pixel goes
    to the bottom/right, as torchvision and albumentations do); never crops."""
    grow_h, grow_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if not grow_h and not grow_w:
        return image
    canvas = np.empty((image.shape[0] + grow_h, image.shape[1] + grow_w, 3), dtype=image.dtype)
    canvas[...] = np.array(fill, dtype=image.dtype)
    top, left = grow_h // 2, grow_w // 2
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision's CenterCrop: pad with black when the image is smaller, then crop at
    round((side - crop) / 2)."""
    image = pad_to(image, height, width, (0, 0, 0))
    top = round((image.shape[0] - height) / 2.0)
    left = round((image.shape[1] - width) / 2.0)
    return image[top:top + height, left:left + width]


def to_tensor(image: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """The model input for an HxWx3 uint8 RGB image: a 3xH'xW' float32 tensor."""
    if preprocess.albumentations is not None:
        return _chw_float(albumentations_pipeline(preprocess.albumentations)(image=image)["image"])
    if preprocess.timm is not None:
        return timm_pipeline(preprocess.timm)(Image.fromarray(image)).float()
    for step in preprocess.pixel_steps:
        image = apply_step(image, step)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


def _chw_float(output) -> torch.Tensor:
    """A pipeline's output (HWC array, or CHW tensor from ToTensorV2) as a float32 CHW tensor;
    its values are used as they are (the pipeline normalises)."""
    if isinstance(output, torch.Tensor):
        tensor = output if output.ndim == 3 else output.unsqueeze(0)
    else:
        array = np.asarray(output)
        array = array[:, :, None] if array.ndim == 2 else array
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return tensor.float()
