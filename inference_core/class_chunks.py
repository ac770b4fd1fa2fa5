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
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """log sum_c exp(score_c) per row, one chunk of classes at a time, and the scores of the
    last chunk (pass 2 starts with them instead of scoring that chunk again)."""
    total = scores = None
    for columns in slices:
        scores = _scores(model, embeddings, columns)
        part = torch.logsumexp(scores, dim=1)
        total = part if total is None else torch.logaddexp(total, part)
    return total, scores


def chunk_probabilities(model: nn.Module, views: Sequence[torch.Tensor], activation: str,
                        chunk: int) -> Iterator[tuple[slice, list[torch.Tensor]]]:
    """(columns, each view's activated outputs for those columns) over the model's classes, as
    `activation` over the full row would give them; `views` are the embeddings of its views.
    Chunks come last one first: with softmax, that one's scores are still at hand."""
    slices = class_slices(model.num_classes, chunk)
    passes = ([log_normaliser(model, view, slices) for view in views]
              if activation == "softmax" else [(None, None)] * len(views))
    for columns in reversed(slices):
        outputs = []
        for view, (normaliser, last_scores) in zip(views, passes, strict=True):
            scores = last_scores if last_scores is not None else _scores(model, view, columns)
            if activation == "softmax":  # in place: the scores are this function's own
                scores = scores.sub_(normaliser[:, None]).exp_()
            elif activation == "sigmoid":
                scores = scores.sigmoid_()
            outputs.append(scores)
        passes = [(normaliser, None) for normaliser, _ in passes]  # last chunk done: free it
        yield columns, outputs
