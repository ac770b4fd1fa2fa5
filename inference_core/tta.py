"""Deterministic test-time augmentation run as one concatenated batch.

Each op is a pair (apply, undo) on NCHW tensors. `tta_batch` stacks every view of a batch into one
forward pass; `split_tta_outputs` cuts the output back into views and undoes the geometric op on
spatial outputs (N, C, H, W), so every view lines up with the original image. Class scores (N, C)
need no undo. `run_tta` does both, with one pass per view shape: on a non-square batch, rot90,
rot270 and transpose swap height and width and cannot share a pass with the other views.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

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


TTA_OPS: dict[str, tuple[Op, Op]] = {
    "identity": (_identity, _identity),
    "hflip": (_hflip, _hflip),
    "vflip": (_vflip, _vflip),
    "rot90": (_rot(1), _rot(-1)),
    "rot180": (_rot(2), _rot(2)),
    "rot270": (_rot(3), _rot(1)),
    "transpose": (_transpose, _transpose),
}


SWAPS_HEIGHT_AND_WIDTH = frozenset({"rot90", "rot270", "transpose"})


def tta_batch(images: torch.Tensor, ops: Sequence[str]) -> torch.Tensor:
    """All views of an NCHW batch, concatenated op after op: (len(ops) * N, C, H', W')."""
    views = [TTA_OPS[op][0](images) for op in ops]
    if len({view.shape for view in views}) > 1:
        raise ValueError(f"TTA ops {list(ops)} give views of different shapes on a non-square "
                         "batch; use run_tta, which runs one pass per shape")
    return torch.cat(views)


def split_tta_outputs(outputs: torch.Tensor, ops: Sequence[str]) -> list[torch.Tensor]:
    """Cut a forward over `tta_batch` back into one output per op, each aligned to the input."""
    views = outputs.chunk(len(ops))
    if outputs.dim() == 4:
        return [TTA_OPS[op][1](view) for op, view in zip(ops, views, strict=True)]
    return list(views)


def run_tta(forward: Op, images: torch.Tensor, ops: Sequence[str]) -> list[torch.Tensor]:
    """`forward` over every view of `images`, undone, in the order of `ops`."""
    square = images.shape[-1] == images.shape[-2]
    passes: dict[bool, list[str]] = {}
    for op in ops:
        passes.setdefault(not square and op in SWAPS_HEIGHT_AND_WIDTH, []).append(op)
    outputs: dict[str, torch.Tensor] = {}
    for same_shape in passes.values():
        views = split_tta_outputs(forward(tta_batch(images, same_shape)), same_shape)
        outputs.update(zip(same_shape, views, strict=True))
    return [outputs[op] for op in ops]
