"""Deterministic test-time augmentation run as batched passes.

A view is named by an op (the names and their parameters are checked by
`inference_core.config.parse_tta_op`):

    identity, hflip, vflip, rot90, rot180, rot270, transpose    the geometric views
    center_crop:F, crop_tl:F, crop_tr:F, crop_bl:F, crop_br:F   a crop, resized back
    scale:F                                                      the whole input, resized by F
    random_crop:S#i (listed as random_crop:SxN: i = 0..N-1)      a seeded S x S crop, as it is
    random_crop_hflip:S#i (random_crop_hflip:SxN)                 the same crop, seeded mirror

Every view is computed from the prepared input tensor (NCHW, already resized and normalised).
A crop keeps h = round(F * H) rows and w = round(F * W) columns (at least 1 each) at the centre
(top = (H - h) // 2, left = (W - w) // 2) or at a corner, and is resized back to H x W with
`torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`: the model sees the crop
at its own input size, as the 2019 solutions fed a crop of an image resized to input / F.
`random_crop:S#i` is the 2019 solutions' test-time `RandomCrop(S)` made reproducible: an S x S
crop fed as it is (not resized back), whose position is drawn from seed i (`random_crop_box`), so
every run, the kernel's and `kernelpack predict`'s, sees the same N crops of an image of a given
size. `random_crop_hflip:S#i` is `RandomCrop(S)` then `RandomHorizontalFlip()`: crop i, mirrored
when a third draw from seed i is below 0.5 (`random_flip`). `scale:F` resizes the whole tensor
to round(F * H) x round(F * W) the same way (anti-aliased when F < 1), so the model must accept
that size (CNNs with global pooling do). Bilinear weights sum to 1, so resizing the normalised
tensor equals resizing the pixels before normalising.

Each op is a pair (apply, undo) on NCHW tensors. `tta_batch` stacks views of one shape into one
forward pass; `split_tta_outputs` cuts the output back into views and undoes the op on spatial
outputs (N, C, H, W), so every view lines up with the original image (a crop cannot be undone:
it saw only part of the image). Class scores (N, C) need no undo. `run_tta` does both, with one
pass per view shape (rot90, rot270 and transpose swap height and width on a non-square batch;
each scale has its own size).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import cache

import torch
import torch.nn.functional as F

from .config import (
    RANDOM_CROP,
    RANDOM_CROP_HFLIP,
    RANDOM_CROPS,
    TTA_CROP_OPS,
    TTA_OP_NAMES,
    parse_tta_op,
)
from .errors import KernelError

Op = Callable[[torch.Tensor], torch.Tensor]


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _rot(k: int) -> Op:
    return lambda x: torch.rot90(x, k, dims=(-2, -1))


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# (apply, undo) of each plain view, keyed by the names `config.TTA_OP_NAMES` validates:
# `strict` stops the import if a name is added there without its implementation here.
TTA_OPS: dict[str, tuple[Op, Op]] = dict(zip(TTA_OP_NAMES, (
    (_identity, _identity),  # identity
    (_hflip, _hflip),  # hflip
    (_vflip, _vflip),  # vflip
    (_rot(1), _rot(-1)),  # rot90
    (_rot(2), _rot(2)),  # rot180
    (_rot(3), _rot(1)),  # rot270
    (_transpose, _transpose),  # transpose
), strict=True))


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=shrinking)


def crop_box(op: str, fraction: float, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the crop `op` keeps of a height x width input."""
    h, w = max(1, round(fraction * height)), max(1, round(fraction * width))
    top = {"center_crop": (height - h) // 2, "crop_tl": 0, "crop_tr": 0}.get(op, height - h)
    left = {"center_crop": (width - w) // 2, "crop_tl": 0, "crop_bl": 0}.get(op, width - w)
    return top, left, h, w


def _crop(op: str, fraction: float) -> tuple[Op, Op]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        top, left, h, w = crop_box(op, fraction, height, width)
        return _resize(x[..., top:top + h, left:left + w], height, width)

    def undo(_: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"TTA op {op}:{fraction:g} saw only part of the image and cannot be "
                         "mapped back onto it; use flips, rotations or scale for spatial outputs")

    return apply, undo


@cache
def _seeded_draws(index: int) -> tuple[float, float, float]:
    """The first three numbers in [0, 1) that Python's `random.Random(index)` draws (the same
    on every machine and Python version): a seeded view's crop position, then its mirror."""
    draw = random.Random(index)
    return draw.random(), draw.random(), draw.random()


def random_crop_box(size: int, index: int, height: int, width: int, kind: str = RANDOM_CROP
                    ) -> tuple[int, int, int, int]:
    """(top, left, size, size) of seeded crop `index` of a height x width input: two numbers
    u, v in [0, 1) drawn by Python's `random.Random(index)` (the same on every machine and
    Python version), top = floor(u * (height - size + 1)), left = floor(v * (width - size + 1))."""
    if size > height or size > width:
        raise KernelError(f"TTA view {kind}:{size}#{index} needs a model input of at least "
                          f"{size} x {size} pixels, got {height} x {width}; resize to at least "
                          f"{size} in the preprocessing (e.g. resize shortest {size}) or crop "
                          "smaller")
    u, v, _ = _seeded_draws(index)
    return int(u * (height - size + 1)), int(v * (width - size + 1)), size, size


def random_flip(index: int) -> bool:
    """Whether seeded view `index` of `random_crop_hflip` is mirrored: the third number drawn by
    `random.Random(index)` (after the crop's two) is below 0.5, as RandomHorizontalFlip(p=0.5)
    flips when its draw is below p."""
    return _seeded_draws(index)[2] < 0.5


def _random_crop(kind: str, size: int, index: int) -> tuple[Op, Op]:
    mirrored = kind == RANDOM_CROP_HFLIP and random_flip(index)

    def apply(x: torch.Tensor) -> torch.Tensor:
        top, left, h, w = random_crop_box(size, index, *x.shape[-2:], kind)
        crop = x[..., top:top + h, left:left + w]
        return crop.flip(-1) if mirrored else crop

    def undo(_: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"TTA op {kind}:{size}#{index} saw only part of the image and "
                         "cannot be mapped back onto it; use flips, rotations or scale for "
                         "spatial outputs")

    return apply, undo


def _scale(factor: float) -> tuple[Op, Op]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return _resize(x, max(1, round(factor * height)), max(1, round(factor * width)))

    def undo(y: torch.Tensor) -> torch.Tensor:
        height, width = y.shape[-2:]
        return _resize(y, max(1, round(height / factor)), max(1, round(width / factor)))

    return apply, undo


@cache
def tta_op(op: str) -> tuple[Op, Op]:
    """(apply, undo) of a view op; raises ValueError naming a bad op."""
    kind, parameter = parse_tta_op(op)
    if kind in RANDOM_CROPS:
        return _random_crop(kind, *parameter)
    if kind in TTA_CROP_OPS:
        return _crop(kind, parameter)
    if kind == "scale":
        return _scale(parameter)
    return TTA_OPS[kind]


def tta_batch(images: torch.Tensor, ops: Sequence[str]) -> torch.Tensor:
    """All views of an NCHW batch, concatenated op after op: (len(ops) * N, C, H', W')."""
    views = [tta_op(op)[0](images) for op in ops]
    if len({view.shape for view in views}) > 1:
        raise ValueError(f"TTA ops {list(ops)} give views of different shapes; use run_tta, "
                         "which runs one pass per shape")
    return torch.cat(views)


def split_tta_outputs(outputs: torch.Tensor, ops: Sequence[str]) -> list[torch.Tensor]:
    """Cut a forward over `tta_batch` back into one output per op, each aligned to the input."""
    views = outputs.chunk(len(ops))
    if outputs.dim() == 4:
        return [tta_op(op)[1](view) for op, view in zip(ops, views, strict=True)]
    return list(views)


def run_tta(forward: Op, images: torch.Tensor, ops: Sequence[str]) -> list[torch.Tensor]:
    """`forward` over every view of `images`, undone, in the order of `ops`."""
    views = {op: tta_op(op)[0](images) for op in ops}
    passes: dict[torch.Size, list[str]] = {}
    for op in ops:
        passes.setdefault(views[op].shape, []).append(op)
    outputs: dict[str, torch.Tensor] = {}
    for same_shape in passes.values():
        batch = torch.cat([views[op] for op in same_shape])
        outputs.update(zip(same_shape, split_tta_outputs(forward(batch), same_shape),
                           strict=True))
    return [outputs[op] for op in ops]
