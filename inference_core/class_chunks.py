"""Very wide heads scored in class chunks: a prototype member's probabilities, chunk by chunk.

A prototype member (Herbarium 2020: 32,000 species) scores an image against every class
prototype. Its full row of scores is never made: the member's TTA views give embeddings
(images x dim), and the class scores come `class_chunk` classes at a time from the model's
`class_scores(embeddings, start, stop)`. Softmax probabilities stay exact in two passes:

    pass 1: log Z = logsumexp over the chunks (running `logaddexp` of each chunk's logsumexp)
    pass 2: p[:, chunk] = exp(scores[:, chunk] - log Z)

so a member holds images x chunk scores at a time, and each chunk's probabilities go straight
into the blend (`BlendAccumulator.add_columns`): blending with classifier members is exact.
Sigmoid and raw scores need no pass 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn


def scores_in_chunks(model: nn.Module) -> bool:
    """Whether `model` can be scored in class chunks: it has `embed` and `class_scores`."""
    return callable(getattr(model, "embed", None)) and callable(
        getattr(model, "class_scores", None))


class Embedder(nn.Module):
    """The model's embedding as a module of its own, so TTA runs on it as on any model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def class_slices(num_classes: int, chunk: int) -> list[slice]:
    return [slice(start, min(start + chunk, num_classes))
            for start in range(0, num_classes, chunk)]


def _scores(model: nn.Module, embeddings: torch.Tensor, columns: slice) -> torch.Tensor:
    return model.class_scores(embeddings, columns.start, columns.stop).float()


def log_normaliser(model: nn.Module, embeddings: torch.Tensor, slices: Sequence[slice]
                   ) -> torch.Tensor:
    """log sum_c exp(score_c) per row, one chunk of classes at a time."""
    total = None
    for columns in slices:
        part = torch.logsumexp(_scores(model, embeddings, columns), dim=1)
        total = part if total is None else torch.logaddexp(total, part)
    return total


def chunk_probabilities(model: nn.Module, views: Sequence[torch.Tensor], activation: str,
                        chunk: int) -> Iterator[tuple[slice, list[torch.Tensor]]]:
    """(columns, each view's activated outputs for those columns) over the model's classes, as
    `activation` over the full row would give them; `views` are the embeddings of its views."""
    slices = class_slices(model.num_classes, chunk)
    normalisers = ([log_normaliser(model, view, slices) for view in views]
                   if activation == "softmax" else [None] * len(views))
    for columns in slices:
        outputs = []
        for view, normaliser in zip(views, normalisers, strict=True):
            scores = _scores(model, view, columns)
            if activation == "softmax":
                scores = torch.exp(scores - normaliser[:, None])
            elif activation == "sigmoid":
                scores = scores.sigmoid()
            outputs.append(scores)
        yield columns, outputs
